"""Disk layout work in the appliance: a bootable disk from a root tarball, and growing the root partition."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagebuilder import arches
from imagebuilder.arches import Arch
from imagebuilder.errors import GuestError
from imagebuilder.guest import efigrub
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.session import Drive
from imagebuilder.run import run

BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_SECTORS = 128 * 2048
ROOTFS = "rootfs"  # the label of the bootstrap's root filesystem, attached read-only while laying out
SQUASH_SECONDS = 600  # bound on sqfstar (3 s for a 700 MB Debian root here)
SOURCE = "/.imagebuilder-rootfs"  # where it is mounted in the new root while its files are copied
KERNEL_OPTIONS = "console=tty0 console={console},115200n8 net.ifnames=0"
_GRUB_DEFAULTS = {
    "GRUB_TIMEOUT": "1",
    "GRUB_CMDLINE_LINUX_DEFAULT": f'"{KERNEL_OPTIONS}"',
    "GRUB_TERMINAL": '"console serial"',
    "GRUB_SERIAL_COMMAND": '"serial --speed=115200"',
}
_INTERFACES = """auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""


@contextmanager
def rootfs_drive(tarball: Path, where: Path) -> Iterator[Drive]:
    """The bootstrap tarball as a read-only squashfs drive for the appliance, made beside the work
    image (sqfstar, a few seconds natively) and removed afterwards. The appliance copies the files
    from its block device: under TCG that takes a third of the time of unpacking the tarball through
    libguestfs's file channel (tar_in). sqfstar keeps owners, modes, links and user/security
    xattrs but no POSIX ACLs; a Debian root's only ones, on /var/log/journal, are set again by
    systemd-tmpfiles at boot."""
    with tempfile.TemporaryDirectory(dir=where, prefix=".rootfs-") as scratch:
        image = Path(scratch) / "rootfs.sqfs"
        with open(tarball, "rb") as source:
            run(["sqfstar", "-comp", "lz4", "-quiet", str(image)], stdin=source, timeout=SQUASH_SECONDS)
        yield Drive(image, "raw", label=ROOTFS, readonly=True)


def install_rootfs(ctx: GuestContext, hostname: str, arch: Arch) -> None:
    """Lay out the blank disk so it boots under every firmware of arch (BIOS and UEFI alike on x86_64),
    copy the root filesystem from the drive labelled ROOTFS (see rootfs_drive), install GRUB.

    GPT with, where the arch has a BIOS, a BIOS boot partition (GRUB's core image for BIOS), an EFI
    system partition (GRUB at the removable-media path, so no NVRAM entry is needed) and an ext4 root
    last, where growing it later is an in-place operation.
    """
    g = ctx.g
    disk = g.device()
    g.part_init(disk, "gpt")
    start = 2048
    if arch.has_bios:
        g.part_add(disk, "p", start, 4095)
        g.part_set_gpt_type(disk, 1, BIOS_BOOT_TYPE)
        start = 4096
    g.part_add(disk, "p", start, start + ESP_SECTORS - 1)
    esp_number = len(g.part_list(disk))
    g.part_set_gpt_type(disk, esp_number, ESP_TYPE)
    g.part_add(disk, "p", start + ESP_SECTORS, -34)
    esp, root = f"{disk}{esp_number}", f"{disk}{esp_number + 1}"
    g.mkfs("vfat", esp)
    g.mkfs("ext4", root)
    g.mount(root, "/")
    ctx.reporter.info("copying the root filesystem")
    g.mkdir(SOURCE)
    g.mount_ro(g.device(ROOTFS), SOURCE)
    g.cp_a(f"{SOURCE}/.", "/")
    g.umount(SOURCE)
    g.rmdir(SOURCE)
    g.mkdir_p("/boot/efi")
    g.mount(esp, "/boot/efi")
    g.write("/etc/fstab", f"UUID={g.vfs_uuid(root)} / ext4 errors=remount-ro 0 1\n"
                          f"UUID={g.vfs_uuid(esp)} /boot/efi vfat umask=0077 0 1\n")
    g.write("/etc/hostname", hostname + "\n")
    g.write("/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    g.write("/etc/network/interfaces", _INTERFACES)
    # grub-pc's postinst writes /etc/default/grub from grub2-common's template; the EFI-only -bin
    # packages have no such script, so an aarch64 root has only the template
    defaults = next((g.read_file(path).decode() for path in ("/etc/default/grub", "/usr/share/grub/default/grub")
                     if g.is_file(path)), "GRUB_DEFAULT=0\n")
    g.write("/etc/default/grub", _grub_defaults(defaults, arch.console))
    if arches.foreign(arch.name):  # the guest's grub-install and update-grub would take minutes here
        ctx.reporter.info(f"making the GRUB boot loader for UEFI ({arch.name}) with this host's grub-mkimage")
        efigrub.install(ctx, arch, g.vfs_uuid(root), KERNEL_OPTIONS.format(console=arch.console))
        return
    for target in arch.grub_targets:
        if target == "i386-pc":
            # grub-install runs inside the appliance, where the kernel may have named the image's disk
            # differently from libguestfs's API (the appliance's own disk can be /dev/sda there).
            device = g.kernel_device()
            ctx.reporter.info(f"installing the GRUB boot loader for BIOS (on {device}, the image's disk in the "
                              "appliance)")
            g.command(["grub-install", "--target=i386-pc", device])
        else:
            ctx.reporter.info(f"installing the GRUB boot loader for UEFI ({target})")
            g.command(["grub-install", f"--target={target}", "--efi-directory=/boot/efi", "--removable",
                       "--no-nvram"])
    g.command(["grub-mkconfig", "-o", "/boot/grub/grub.cfg"])  # what update-grub runs


def _grub_defaults(text: str, console: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0].strip() not in _GRUB_DEFAULTS]
    lines += [f"{key}={value.format(console=console)}" for key, value in _GRUB_DEFAULTS.items()]
    return "\n".join(lines) + "\n"


def expand_root(ctx: GuestContext, hint: str | None = None, lv_hint: str | None = None) -> str:
    """Grow the last partition to the end of the (already enlarged) disk, and what it holds.

    Like `virt-resize --expand` for the common layout where the root partition is the last one;
    the partition is grown in place, so no data is copied. `hint` (a template's `expand=`, such as
    /dev/sda3) names the partition to grow; it must be the last one. When that partition is an
    LVM physical volume, the volume group grows and the logical volume `lv_hint` (or the one that
    holds the root filesystem) takes the new space, like `--lv-expand`. Returns what was grown.
    """
    g = ctx.g
    disk = g.device()
    parts = g.part_list(disk)
    if not parts:
        raise GuestError("the disk has no partition table to expand")
    last = _partition_to_expand(parts, hint)
    partition = f"{disk}{last['part_num']}"
    fstype = g.vfs_type(partition)
    if fstype != "LVM2_member" and fstype not in _GROWABLE:
        raise GuestError(f"cannot expand {partition}: it holds '{fstype or 'no filesystem'}', "
                         "and expansion needs the root filesystem (or its LVM volume) on the last partition")
    sectors = g.blockdev_getsz(disk)
    if g.part_get_parttype(disk) == "gpt":
        g.part_expand_gpt(disk)
        end = sectors - 34
    else:
        end = sectors - 1
    g.part_resize(disk, last["part_num"], end)
    if fstype != "LVM2_member":
        _grow_filesystem(g, partition, fstype)
        return partition
    g.pvresize(partition)
    volume = lv_hint or _root_logical_volume(g)
    g.lvresize_free(volume, 100)
    _grow_filesystem(g, volume, g.vfs_type(volume))
    return f"{partition} and {volume}"


_GROWABLE = ("ext2", "ext3", "ext4", "xfs", "btrfs")


def _grow_filesystem(g, device: str, fstype: str) -> None:
    """Grow the filesystem on device to fill it."""
    if fstype not in _GROWABLE:
        raise GuestError(f"cannot grow {device}: '{fstype or 'no filesystem'}' is not ext2/3/4, xfs or btrfs")
    if fstype.startswith("ext"):
        g.e2fsck_f(device)
        g.resize2fs(device)
        return
    g.mount(device, "/")
    if fstype == "btrfs":
        g.btrfs_filesystem_resize("/")
    else:
        g.xfs_growfs("/")
    g.umount("/")


def _root_logical_volume(g) -> str:
    """The logical volume that inspection finds the root filesystem on."""
    roots = [root for root in g.inspect_os() if root in g.lvs()]
    if len(roots) != 1:
        raise GuestError("the last partition is an LVM volume, but no single logical volume holds the root "
                         "filesystem; name it with the template's lvexpand")
    return roots[0]


_HINT = re.compile(r"/dev/(?:sd|hd|vd|xvd)a([0-9]+)")


def _partition_to_expand(parts: list[dict], hint: str | None) -> dict:
    """The partition a hint names (checked to be the last one), or the last partition without a hint."""
    last = max(parts, key=lambda p: p["part_start"])
    if hint is None:
        return last
    match = _HINT.fullmatch(hint)
    if not match:
        raise GuestError(f"the template's expand hint '{hint}' is not a partition of the first disk "
                         "(such as /dev/sda3)")
    chosen = next((p for p in parts if p["part_num"] == int(match.group(1))), None)
    if chosen is None:
        numbers = ", ".join(f"/dev/sda{p['part_num']}" for p in sorted(parts, key=lambda p: p["part_num"]))
        raise GuestError(f"the template's expand hint {hint} names no partition of the disk ({numbers})")
    if chosen is not last:
        raise GuestError(f"the template's expand hint {hint} is not the last partition (/dev/sda{last['part_num']} "
                         "follows it); growing it would mean moving partitions, which imagebuilder does not do")
    return chosen
