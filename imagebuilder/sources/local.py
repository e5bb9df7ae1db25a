"""A base image that is a file on this host, used in place (never modified)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imagebuilder import disk
from imagebuilder.sources.base import BaseImage


def fetch(path: Path) -> BaseImage:
    """Describe a local image: its format, size and sha256 (read in chunks)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    fmt, size = disk.probe(path)
    return BaseImage(path=path, kind="disk", digest=f"sha256:{hasher.hexdigest()}", source=str(path),
                     format=fmt, virtual_size=size)
