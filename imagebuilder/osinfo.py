"""libosinfo facts about the guest OS: its id for the domain metadata, its minimum memory.

libguestfs inspection names the OS by its libosinfo short id (`debian12`). The database the
`osinfo-db` package installs maps that to the full id (`http://debian.org/debian/12`) and holds
resource minimums. An OS newer than the installed database is still named, from the id pattern
its family has always used, so the metadata does not depend on how recent osinfo-db is.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Families whose libosinfo ids follow one pattern from release to release.
_PATTERNS = (
    (re.compile(r"^debian(\d+)$"), "http://debian.org/debian/{}"),
    (re.compile(r"^ubuntu(\d+\.\d+)$"), "http://ubuntu.com/ubuntu/{}"),
    (re.compile(r"^fedora(\d+)$"), "http://fedoraproject.org/fedora/{}"),
    (re.compile(r"^rhel(\d+\.\d+)$"), "http://redhat.com/rhel/{}"),
    (re.compile(r"^centos-stream(\d+)$"), "http://centos.org/centos-stream/{}"),
    (re.compile(r"^almalinux(\d+)$"), "http://almalinux.org/almalinux/{}"),
    (re.compile(r"^rocky(\d+)$"), "http://rockylinux.org/rocky/{}"),
    (re.compile(r"^alpinelinux(\d+\.\d+)$"), "http://alpinelinux.org/alpinelinux/{}"),
)


@dataclass(frozen=True)
class OsInfo:
    """What we use from one libosinfo OS entry."""

    id: str
    short_id: str
    minimum_ram: int | None = None
    recommended_ram: int | None = None
    in_database: bool = True


def database_dirs() -> list[Path]:
    """Where libosinfo looks for its database, in its order (system, local, user)."""
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path(os.environ.get("OSINFO_SYSTEM_DIR", "/usr/share/osinfo")),
            Path(os.environ.get("OSINFO_LOCAL_DIR", "/usr/local/share/osinfo")),
            Path(os.environ.get("OSINFO_USER_DIR", home / "osinfo"))]


def _ram(entry: ET.Element, kind: str) -> int | None:
    values = [int(text) for res in entry.findall("resources")
              if res.get("arch") in ("all", "x86_64") and (text := res.findtext(f"{kind}/ram"))]
    return max(values) if values else None


@functools.lru_cache(maxsize=4)
def _load(dirs: tuple[Path, ...]) -> dict[str, OsInfo]:
    table: dict[str, OsInfo] = {}
    for base in dirs:
        for path in sorted((base / "os").glob("**/*.xml")):
            try:
                root = ET.parse(path).getroot()
            except (ET.ParseError, OSError) as exc:
                log.debug("skipping %s: %s", path, exc)
                continue
            for entry in root.findall("os"):
                info_id = entry.get("id")
                if not info_id:
                    continue
                for short in entry.findall("short-id"):
                    if short.text:
                        table[short.text] = OsInfo(info_id, short.text, _ram(entry, "minimum"),
                                                   _ram(entry, "recommended"))
    return table


def lookup(short_id: str, dirs: list[Path] | None = None) -> OsInfo | None:
    """The libosinfo entry for a short id such as `debian12`; None if neither known nor derivable."""
    if not short_id or short_id == "unknown":
        return None
    found = _load(tuple(dirs or database_dirs())).get(short_id)
    if found:
        return found
    for pattern, template in _PATTERNS:
        match = pattern.match(short_id)
        if match:
            return OsInfo(template.format(match.group(1)), short_id, in_database=False)
    return None


def resolve(text: str, dirs: list[Path] | None = None) -> str | None:
    """A full libosinfo id for `text`: a full id (URL) is kept, a short id is looked up."""
    if "://" in text:
        return text
    found = lookup(text, dirs)
    return found.id if found else None
