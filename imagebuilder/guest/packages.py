"""Each guest package manager's command lines (chosen by libguestfs inspection), and who to blame.

Commands are argument vectors: they run in the guest through `env` without a shell, so package
names are never pasted into shell text. The same steps as virt-customize's: refresh the package
lists once, then install / remove / upgrade, non-interactively.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from imagebuilder.errors import GuestError

_APT_OPTS = ("-q", "-y", "-o", "Dpkg::Options::=--force-confnew")


@dataclass(frozen=True)
class Manager:
    """How one package manager refreshes, installs, removes and upgrades; `blame` finds failed names."""

    name: str
    env: tuple[str, ...]
    refresh: tuple[str, ...] | None
    install: tuple[str, ...]
    uninstall: tuple[str, ...]
    upgrade: tuple[str, ...]
    blame: tuple[str, ...]

    def argv(self, action: str, packages: tuple[str, ...] = (), options: tuple[str, ...] = ()) -> list[str]:
        """`env VAR=… manager … OPTIONS PACKAGES` for action (refresh, install, uninstall, upgrade)."""
        base = {"refresh": self.refresh, "install": self.install, "uninstall": self.uninstall,
                "upgrade": self.upgrade}[action]
        if base is None:
            raise ValueError(f"{self.name} has no separate {action} step")
        return ["env", *self.env, *base, *options, *packages]


MANAGERS = {m.name: m for m in (
    Manager("apt", ("DEBIAN_FRONTEND=noninteractive",), ("apt-get", *_APT_OPTS, "update"),
            ("apt-get", *_APT_OPTS, "install"), ("apt-get", *_APT_OPTS, "remove"),
            ("apt-get", *_APT_OPTS, "upgrade"),
            (r"Unable to locate package (\S+)", r"Package '?([^'\s]+)'? has no installation candidate",
             r"Version '[^']*' for '([^']+)' was not found", r"Couldn't find any package by \S+ '([^']+)'")),
    Manager("dnf", (), None, ("dnf", "-y", "install"), ("dnf", "-y", "remove"), ("dnf", "-y", "--best", "upgrade"),
            (r"No match for argument: (\S+)", r"Unable to find a match: (.+)$")),
    Manager("yum", (), None, ("yum", "-y", "install"), ("yum", "-y", "remove"), ("yum", "-y", "update"),
            (r"No package (\S+) available",)),
    Manager("zypper", (), None, ("zypper", "-n", "in", "-l"), ("zypper", "-n", "rm"), ("zypper", "-n", "update", "-l"),
            (r"'([^']+)' not found in package names", r"No provider of '([^']+)' found")),
    Manager("apk", (), ("apk", "update"), ("apk", "add"), ("apk", "del"), ("apk", "upgrade"),
            (r"^\s*(\S+) \(no such package\)",)),
    Manager("pacman", (), ("pacman", "-Sy", "--noconfirm"), ("pacman", "-S", "--noconfirm", "--needed"),
            ("pacman", "-R", "--noconfirm"), ("pacman", "-Su", "--noconfirm"),
            (r"target not found: (\S+)",)),
)}


def manager(name: str) -> Manager:
    """The manager inspection reported; GuestError if imagebuilder does not drive it."""
    found = MANAGERS.get(name)
    if found is None:
        raise GuestError(f"package manager '{name}' is not supported "
                         f"(supported: {', '.join(MANAGERS)})")
    return found


def blame(mgr: Manager, message: str, packages: tuple[str, ...]) -> list[str]:
    """The packages the manager's error output names as the ones that failed (maybe none)."""
    named: list[str] = []
    for pattern in mgr.blame:
        for match in re.finditer(pattern, message, re.MULTILINE):
            for word in re.split(r"[\s,]+", match.group(1).strip()):
                if word and word not in named:
                    named.append(word)
    wanted = {_bare(p): p for p in packages}
    return [wanted.get(_bare(n), n) for n in named]


def _bare(package: str) -> str:
    return re.split(r"[=<>]", package, maxsplit=1)[0]


def firstboot_script(mgr: Manager, packages: tuple[str, ...]) -> str:
    """A shell script that installs packages at first boot, retrying while the network comes up."""
    lines = ["#!/bin/sh", "# installs packages at first boot (imagebuilder firstboot_install)", "set -u"]
    attempt = "n=0; until {cmd}; do n=$((n+1)); [ $n -ge 10 ] && exit 1; sleep 6; done"
    if mgr.refresh:
        lines.append(attempt.format(cmd=shlex.join(mgr.argv("refresh"))))
    lines.append(attempt.format(cmd=shlex.join(mgr.argv("install", packages))))
    return "\n".join(lines) + "\n"
