"""Checksum files: GNU `HASH  NAME` and BSD `SHA256 (NAME) = HASH` lines, as in SHA256SUMS."""

from __future__ import annotations

import re

_BSD = re.compile(r"^(SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$")
_GNU = re.compile(r"^([0-9a-fA-F]+)\s+\*?(.+)$")
_ALGO_BY_LENGTH = {64: "sha256", 128: "sha512"}


def find(text: str, filename: str) -> str:
    """The `algo:hex` checksum listed for filename; ValueError if it is not listed."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bsd = _BSD.match(line)
        if bsd:
            algo, name, digest = bsd.group(1).lower(), bsd.group(2), bsd.group(3)
        else:
            gnu = _GNU.match(line)
            if not gnu:
                continue
            digest, name = gnu.group(1), gnu.group(2).strip()
            algo = _ALGO_BY_LENGTH.get(len(digest))
        if name.lstrip("./") == filename and algo and len(digest) == {"sha256": 64, "sha512": 128}[algo]:
            return f"{algo}:{digest.lower()}"
    raise ValueError(f"{filename} is not listed")
