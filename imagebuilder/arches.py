"""The CPU architectures an image can be built for, and what differs between them.

Plain values, no libvirt or libguestfs: the recipe is checked against them, the bootstrap, the
layout and the domain XML are written from them. An image of another architecture than the host's
is built through qemu-user (guest/emulation.py) and boots under TCG.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """One architecture: its names in each tool, and the virtual machine it boots in."""

    name: str                        # libguestfs's, libvirt's and the recipe's name (uname -m)
    debian: str                      # dpkg's name, for mmdebstrap --architectures
    grub_packages: tuple[str, ...]   # the GRUB builds the bootstrap installs
    grub_targets: tuple[str, ...]    # grub-install --target values, "i386-pc" meaning BIOS
    console: str                     # the serial console's kernel name
    firmwares: tuple[str, ...]       # what it can boot from, the first being the default
    machines: tuple[str, ...]        # the first is the default; any other machine type is refused for it
    cpu_model: str | None            # the model QEMU emulates under TCG (None: QEMU's default)
    video: str                       # the default video device
    elf_magic: str                   # binfmt_misc's magic and mask for its ELF executables
    elf_mask: str

    @property
    def has_bios(self) -> bool:
        """Whether it boots from a BIOS (then the disk gets a BIOS boot partition too)."""
        return "bios" in self.firmwares


_ELF64_LE = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00"
_ELF_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff"

ARCHES = {
    "x86_64": Arch("x86_64", "amd64", ("grub-pc", "grub-efi-amd64-bin"), ("i386-pc", "x86_64-efi"), "ttyS0",
                   ("bios", "efi"), ("pc", "q35"), None, "vga",
                   _ELF64_LE + r"\x3e\x00", _ELF_MASK + r"\xff\xff"),
    "aarch64": Arch("aarch64", "arm64", ("grub-efi-arm64-bin", "grub2-common"), ("arm64-efi",), "ttyAMA0",
                    ("efi",), ("virt",), "cortex-a57", "none",
                    _ELF64_LE + r"\xb7\x00", _ELF_MASK + r"\xff\xff"),
}


def host() -> Arch:
    """The architecture of this machine (and of the libguestfs appliance)."""
    return lookup(platform.machine())


def lookup(name: str) -> Arch:
    """The architecture called name (or dpkg's name for it: amd64, arm64); ValueError naming the known
    ones otherwise."""
    for arch in ARCHES.values():
        if name in (arch.name, arch.debian):
            return arch
    raise ValueError(f"'{name}' is not an architecture imagebuilder builds for (known: {', '.join(ARCHES)})")


def foreign(name: str) -> bool:
    """Whether an image of this architecture needs emulation here (qemu-user to customize, TCG to boot)."""
    return name != platform.machine()


def domain_accel(name: str, offered: str) -> str:
    """The accelerator a domain of this architecture gets on this host: what the host offers for its own
    architecture, TCG for any other (KVM runs only the host's instruction set)."""
    return "tcg" if foreign(name) else offered
