"""What a benchmark that deploys leaves behind, removed: its domain and its volumes in `default`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagebuilder.virt.connection import connect  # noqa: E402
from imagebuilder.virt.domain import remove_domain  # noqa: E402
from imagebuilder.virt.storage import delete_volume, ensure_pool  # noqa: E402


def remove(name: str) -> None:
    """The domain called name and every volume of the default pool whose name starts with it."""
    with connect("qemu:///system") as conn:
        remove_domain(conn, name)
        pool, _ = ensure_pool(conn, "default")
        pool.refresh(0)
        for volume in pool.listVolumes():
            if volume.startswith(name):
                delete_volume(pool, volume)
