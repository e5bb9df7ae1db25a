"""Shell command lines of each guest package manager, chosen by libguestfs inspection."""

from __future__ import annotations

import shlex

from imagebuilder.errors import GuestError

_APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Options::=--force-confnew"

_INSTALL = {
    "apt": f"{_APT} update && {_APT} install {{pkgs}}",
    "dnf": "dnf -y install {pkgs}",
    "yum": "yum -y install {pkgs}",
    "zypper": "zypper -n in -l {pkgs}",
    "apk": "apk update && apk add {pkgs}",
    "pacman": "pacman -Sy --noconfirm {pkgs}",
}


def install_command(manager: str, packages: tuple[str, ...]) -> str:
    """The shell line that installs packages with the guest's package manager."""
    template = _INSTALL.get(manager)
    if template is None:
        raise GuestError(f"installing packages is not supported for package manager '{manager}'")
    return template.format(pkgs=" ".join(shlex.quote(p) for p in packages))
