"""Running a foreign guest's programs in the libguestfs appliance through qemu-user.

libguestfs runs a guest's programs (install, run, grub-install …) chrooted in the appliance, whose
kernel is the host's: an aarch64 program there fails with "Exec format error". For an image of
another architecture the build's one appliance gets Debian's static qemu-user emulator as a small
read-only drive (a tar archive: block devices hold whole sectors, tar pads to them), unpacks it into
the appliance's own /tmp and registers it with the appliance kernel's binfmt_misc, flag F: the kernel
opens the emulator at registration, so programs run chrooted in the guest find it although it is
not in the guest. Nothing of it is ever written to the image; the registration ends with the appliance.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagebuilder.arches import Arch
from imagebuilder.errors import HostError

LABEL = "emulator"  # the drive's label in the appliance
# qemu-user's CPU model, from the environment of each program it runs. Its default ("max") emulates
# pointer authentication, which Debian's arm64 programs use in every function; a model without it
# runs them about 15 % faster in the appliance (`apt-cache policy` rebuilding apt's cache: 54.7 s
# under max, 46.8 s as a Cortex-A57; starting a program, about a second, is the same under both).
CPU_VARIABLE = "QEMU_CPU"
_WHERE = "/tmp/imagebuilder-emulation"  # in the appliance, outside the guest's /sysroot
QEMU_USER = "/usr/bin/qemu-{}-static"


def emulator(arch: Arch) -> Path:
    """The host's static qemu-user binary for arch; HostError with the package to install otherwise."""
    path = Path(QEMU_USER.format(arch.name))
    if not path.is_file():
        raise HostError(f"{path} is missing: customizing an {arch.name} image on this "
                        "host runs its programs through qemu-user",
                        hint="install Debian's qemu-user-static (scripts/setup.sh does)")
    return path


def entry_name(arch: Arch) -> str:
    """The binfmt_misc entry registered in the appliance."""
    return f"imagebuilder-{arch.name}"


@contextmanager
def emulator_drive(arch: Arch, where: Path) -> Iterator[Path]:
    """A tar archive holding the emulator, made in a scratch directory under where, removed afterwards.

    The emulator is named like Debian's binfmt wrapper (NAME-binfmt-P): Debian's qemu reads that name
    as "the kernel preserved argv[0]", so programs see their own argv[0]."""
    source = emulator(arch)
    with tempfile.TemporaryDirectory(dir=where, prefix=".emulator-") as scratch:
        archive = Path(scratch) / "emulator.tar"
        with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(source, arcname=f"{arch.name}-binfmt-P", recursive=False)
        yield archive


def environment(arch: Arch) -> dict[str, str]:
    """What a program started through qemu-user for arch needs in its environment (the CPU model)."""
    return {CPU_VARIABLE: arch.cpu_model} if arch.cpu_model else {}


def appliance_append(arch: Arch, existing: str | None) -> str:
    """The appliance kernel's command line with environment(arch) added: Linux hands the name=value
    words it does not know to init as its environment, from which the libguestfs daemon, and every
    guest program it runs, inherit them."""
    words = [f"{name}={value}" for name, value in environment(arch).items()]
    return " ".join(([existing] if existing else []) + words)


def registration(arch: Arch) -> str:
    """The line written to binfmt_misc's register file: the arch's ELF header, the emulator, flags P and F."""
    return f":{entry_name(arch)}:M::{arch.elf_magic}:{arch.elf_mask}:{_WHERE}/{arch.name}-binfmt-P:PF"


def enable(g: Any, arch: Arch) -> None:
    """Unpack the emulator drive in the appliance and register it with its kernel (see the module's text).
    `g` is a launched GuestSession with the drive labelled LABEL attached."""
    script = (f"set -e; mkdir -p {_WHERE}; tar -xf /dev/disk/guestfs/{LABEL} -C {_WHERE}; "
              "test -e /proc/sys/fs/binfmt_misc/register || "
              "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
              f"printf '%s' '{registration(arch)}' > /proc/sys/fs/binfmt_misc/register; "
              f"cat /proc/sys/fs/binfmt_misc/{entry_name(arch)}")
    state = g.debug("sh", [script])
    if "enabled" not in state:
        raise HostError(f"registering qemu-user for {arch.name} in the libguestfs appliance failed: {state.strip()}")
