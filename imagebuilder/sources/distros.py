"""The distributions a bootstrap can make, told apart by their suite names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Distribution:
    """What differs between the distributions mmdebstrap can make."""

    name: str
    suites: tuple[str, ...]
    kernel: str                      # the generic kernel package; {arch} is dpkg's name of the architecture
    components: str
    mirror: str
    keyring: str | None = None
    ports_mirror: str | None = None  # the mirror of architectures other than x86 (Ubuntu's "ports")

    def kernel_for(self, debian_arch: str) -> str:
        """The generic kernel package for an architecture (dpkg's name: amd64, arm64)."""
        return self.kernel.format(arch=debian_arch)

    def mirror_for(self, arch: str) -> str:
        """The default mirror for an architecture (libvirt's name: x86_64, aarch64)."""
        return self.mirror if arch in ("x86_64", "i686") or not self.ports_mirror else self.ports_mirror


DISTRIBUTIONS = (
    Distribution("debian", ("bullseye", "bookworm", "trixie", "forky", "sid", "unstable", "testing", "stable"),
                 "linux-image-{arch}", "main", "http://deb.debian.org/debian"),
    Distribution("ubuntu", ("focal", "jammy", "noble", "oracular", "plucky", "questing"),
                 "linux-image-virtual", "main,universe", "http://archive.ubuntu.com/ubuntu",
                 "/usr/share/keyrings/ubuntu-archive-keyring.gpg", "http://ports.ubuntu.com/ubuntu-ports"),
)


def distribution(suite: str) -> Distribution:
    """The distribution a suite belongs to; ValueError naming the known suites otherwise."""
    for dist in DISTRIBUTIONS:
        if suite in dist.suites:
            return dist
    known = ", ".join(s for d in DISTRIBUTIONS for s in d.suites)
    raise ValueError(f"unknown suite '{suite}' (known: {known})")
