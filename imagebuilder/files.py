"""Files on the host: hashing one in chunks, and making a finished file visible under its final
name, atomically, without clobbering a stranger's."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from imagebuilder.errors import HostError


def file_digest(path: Path, algo: str = "sha256") -> str:
    """ALGO:HEX digest of a file (sha256 unless told), read in chunks."""
    hasher = hashlib.new(algo)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return f"{algo}:{hasher.hexdigest()}"


def place(src: Path, dst: Path, replace: bool) -> None:
    """Rename src (finished) to dst on the same filesystem, atomically.

    replace=False: FileExistsError if dst exists, even one that appeared a moment ago (another build
    of the same output, say); checking first and renaming after would overwrite it. A hard link makes
    the name only if it is free; the filesystems that have no hard links fall back to check-and-rename.
    """
    if replace:
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if dst.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.replace(src, dst)
        return
    os.unlink(src)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXT = "No space left on device"


def no_space(directory: Path, what: str) -> HostError:
    """The error for a full filesystem: where, what was being written, and what to do."""
    return HostError(f"no space left on the filesystem of {directory} while writing {what}",
                     hint="free space there (`imagebuilder cache prune` empties the cache), or choose a "
                          "larger place: --cache-dir for downloads, -o or [output] for the image, another pool")
