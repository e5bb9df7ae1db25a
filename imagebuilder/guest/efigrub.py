"""GRUB for UEFI on an image of another architecture, made without running the guest's programs.

grub-install and update-grub run dozens of the guest's programs; through qemu-user in an appliance
that is itself emulated (TCG) each start costs about a second, and the two took over five minutes
for an aarch64 image here. What they produce for a removable-media UEFI boot is small and known:
the host's grub-mkimage (it makes images for any target from that target's modules, which the
guest's GRUB package holds) builds EFI/BOOT/BOOTAA64.EFI with the early configuration grub-install
would embed, the modules are copied to /boot/grub, and grub.cfg is written from the same settings
update-grub reads. update-grub in the guest rewrites grub.cfg at its first kernel update.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from pathlib import Path

from imagebuilder.arches import Arch
from imagebuilder.errors import GuestError
from imagebuilder.guest.context import GuestContext
from imagebuilder.run import run

EFI_NAMES = {"arm64-efi": "BOOTAA64.EFI", "x86_64-efi": "BOOTX64.EFI"}
CORE_MODULES = ("part_gpt", "ext2", "search_fs_uuid")  # what finds /boot/grub; the rest load from there
MKIMAGE_SECONDS = 120


def install(ctx: GuestContext, arch: Arch, root_uuid: str, kernel_options: str) -> None:
    """GRUB for arch's UEFI target on the mounted image (root at /, the ESP at /boot/efi), booting the
    newest kernel in /boot from the filesystem root_uuid with kernel_options."""
    g = ctx.g
    target = next(t for t in arch.grub_targets if t.endswith("-efi"))
    modules = f"/usr/lib/grub/{target}"
    if not g.is_dir(modules):
        raise GuestError(f"the image has no GRUB modules for {target} ({modules})",
                         hint=f"install the GRUB package for {arch.name} UEFI in the base image")
    kernel = newest_kernel(g.ls("/boot"))
    g.mkdir_p("/boot/grub")
    g.cp_a(modules, "/boot/grub/")
    with tempfile.TemporaryDirectory(prefix="imagebuilder-grub-") as scratch:
        work = Path(scratch)
        g.tar_out(modules, str(work / "modules.tar"))
        _extract_flat(work / "modules.tar", work / target)
        (work / "load.cfg").write_text(f"search.fs_uuid {root_uuid} root\nset prefix=($root)'/boot/grub'\n")
        image = work / EFI_NAMES[target]
        run(["grub-mkimage", "-O", target, "-d", str(work / target), "-c", str(work / "load.cfg"),
             "-p", "/boot/grub", "-o", str(image), *CORE_MODULES], timeout=MKIMAGE_SECONDS)
        g.mkdir_p("/boot/efi/EFI/BOOT")
        g.upload(str(image), f"/boot/efi/EFI/BOOT/{image.name}")
    g.write("/boot/grub/grub.cfg", grub_cfg(root_uuid, kernel, kernel_options, _pretty_name(g)))


def _extract_flat(archive: Path, where: Path) -> None:
    """The regular files at the top of archive (GRUB's module directory is flat), into where; links,
    subdirectories and names that climb out are left alone (the archive comes from the image)."""
    where.mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if member.isfile() and name and "/" not in name and name not in (".", ".."):
                source = tar.extractfile(member)
                if source is not None:
                    (where / name).write_bytes(source.read())


def newest_kernel(names: list[str]) -> str:
    """The version of the newest vmlinuz-VERSION among /boot's names; GuestError if there is none."""
    versions = [name.removeprefix("vmlinuz-") for name in names if name.startswith("vmlinuz-")]
    if not versions:
        raise GuestError("the image has no kernel in /boot (vmlinuz-VERSION)")
    return max(versions, key=lambda v: [int(p) if p.isdigit() else p for p in re.split(r"[.+~-]", v) if p])


def grub_cfg(root_uuid: str, kernel: str, options: str, title: str) -> str:
    """The grub.cfg of one kernel on the root filesystem root_uuid, console on screen and serial line."""
    return f"""# Written by imagebuilder (the guest's update-grub rewrites it at the next kernel update).
set default=0
set timeout=1
serial --speed=115200
terminal_input console serial
terminal_output console serial
insmod part_gpt
insmod ext2
insmod gzio
search --no-floppy --fs-uuid --set=root {root_uuid}
menuentry '{title}, with Linux {kernel}' {{
\tlinux\t/boot/vmlinuz-{kernel} root=UUID={root_uuid} ro {options}
\tinitrd\t/boot/initrd.img-{kernel}
}}
"""


def _pretty_name(g) -> str:  # noqa: ANN001
    for line in g.read_file("/etc/os-release").decode(errors="replace").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"').replace("'", "")
    return "Linux"
