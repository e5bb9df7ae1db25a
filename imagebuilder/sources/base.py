"""What every source hands to the next stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BaseImage:
    """A fetched base: a disk image (`kind='disk'`) or a root filesystem tarball (`kind='rootfs'`)."""

    path: Path
    kind: str
    digest: str
    source: str
    format: str = "raw"
    virtual_size: int = 0
    expand: str | None = None      # the partition to grow (a template's expand=, e.g. /dev/sda3)
    lvexpand: str | None = None    # the logical volume to grow (a template's lvexpand=)
