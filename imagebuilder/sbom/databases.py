"""Package databases read as text: dpkg's status file and apk's installed database.

libguestfs's inspect_list_applications2 lists name, version and architecture; these add what it
leaves out: the source package, the maintainer (the supplier), the homepage and, for apk, the licence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from debian.deb822 import Deb822

from imagebuilder.sbom.model import Package

_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^)]+)\))?$")


def deb822(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a deb822 file (dpkg status, Debian copyright), read by python-debian: field
    names in lower case, continuation lines unindented (a lone '.' stands for an empty line)."""
    for paragraph in Deb822.iter_paragraphs(text.splitlines(keepends=True)):
        yield {name.lower(): "\n".join(_unfold(line) for line in value.split("\n")).strip("\n")
               for name, value in paragraph.items()}


def _unfold(line: str) -> str:
    stripped = line.strip()
    return "" if stripped == "." else stripped


def parse_dpkg_status(text: str) -> list[Package]:
    """The installed packages in /var/lib/dpkg/status (Status 'install ok installed' only)."""
    packages = []
    for fields in deb822(text):
        if fields.get("status", "").split()[-1:] != ["installed"] or "package" not in fields:
            continue
        name, version = fields["package"], fields.get("version", "")
        source, source_version = name, ""
        match = _SOURCE.match(fields.get("source", ""))
        if match:
            source = match["name"]
            source_version = match["version"] or ""
        epoch = version.split(":", 1)[0] if ":" in version else "0"
        packages.append(Package(
            name=name, version=version, arch=fields.get("architecture", ""), source=source,
            source_version=source_version if source_version != version else "",
            supplier=fields.get("maintainer", ""), homepage=fields.get("homepage", ""),
            summary=fields.get("description", "").split("\n", 1)[0], epoch=int(epoch) if epoch.isdigit() else 0))
    return packages


def parse_apk_installed(text: str) -> list[Package]:
    """The packages in /lib/apk/db/installed: P name, V version, A arch, o origin, m maintainer,
    U url, T description, L licence (SPDX identifiers, as Alpine writes them)."""
    packages = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:].strip()
        if "P" not in fields:
            continue
        packages.append(Package(
            name=fields["P"], version=fields.get("V", ""), arch=fields.get("A", ""),
            source=fields.get("o", fields["P"]), supplier=fields.get("m", ""), homepage=fields.get("U", ""),
            summary=fields.get("T", ""), licence=fields.get("L") or None))
    return packages
