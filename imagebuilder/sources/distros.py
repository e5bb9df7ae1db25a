"""The distributions a bootstrap can make, told apart by their suite names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Distribution:
    """What differs between the distributions mmdebstrap can make."""

    name: str
    suites: tuple[str, ...]
    kernel: str
    components: str
    mirror: str
    keyring: str | None = None


DISTRIBUTIONS = (
    Distribution("debian", ("bullseye", "bookworm", "trixie", "forky", "sid", "unstable", "testing", "stable"),
                 "linux-image-amd64", "main", "http://deb.debian.org/debian"),
    Distribution("ubuntu", ("focal", "jammy", "noble", "oracular", "plucky", "questing"),
                 "linux-image-virtual", "main,universe", "http://archive.ubuntu.com/ubuntu",
                 "/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
)


def distribution(suite: str) -> Distribution:
    """The distribution a suite belongs to; ValueError naming the known suites otherwise."""
    for dist in DISTRIBUTIONS:
        if suite in dist.suites:
            return dist
    known = ", ".join(s for d in DISTRIBUTIONS for s in d.suites)
    raise ValueError(f"unknown suite '{suite}' (known: {known})")
