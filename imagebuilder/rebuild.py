"""Rebuilding only what changed: checkpoints of the stages, and whether the outputs of an earlier
build already hold this build's result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from imagebuilder.cache import Cache
from imagebuilder.manifest import Manifest
from imagebuilder.stages import Stage


def checkpoint(cache: Cache, stage: Stage) -> Path:
    """Where the image as it is after `stage` is kept."""
    return cache.path("stages", f"{stage.key}.qcow2")


def resume_point(stages: list[Stage], cache: Cache) -> int | None:
    """The index of the latest checkpointed stage whose image is in the cache, if any."""
    for index in range(len(stages) - 1, -1, -1):
        if stages[index].checkpoint and cache.lookup("stages", f"{stages[index].key}.qcow2"):
            return index
    return None


def stamp(path: str | Path) -> list[int] | None:
    """Size and modification time of a local file: cheap evidence that nobody changed it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _link(path: Path) -> str | None:
    return os.readlink(path) if path.is_symlink() else None


def why_not_current(earlier: Manifest | None, final_key: str, requested: Any,
                    volume_exists, domain_exists, pushed_exists=None) -> str | None:  # noqa: ANN001 - lookups
    """None if the earlier build's outputs hold this build's result unchanged; else the reason."""
    if earlier is None:
        return "no earlier build"
    if (earlier.stages or [{}])[-1].get("key") != final_key:
        return "an input changed"
    if earlier.requested != requested:
        changed = [key for key in requested if earlier.requested.get(key) != requested[key]]
        return "the [domain] settings changed" if changed == ["domain_settings"] else "the outputs asked for changed"
    for output in earlier.outputs:
        if output["type"] == "file":
            if stamp(output["path"]) != output.get("stamp"):
                return f"{output['path']} changed or is gone"
        elif output["type"] == "oci":
            if pushed_exists is None or not pushed_exists(output):
                return f"{output['ref']} no longer names the image pushed"
        elif not volume_exists(output):
            return f"volume {output['pool']}/{output['volume']} is gone"
        elif output.get("alias") and _link(Path(output["path"]).with_name(output["alias"])) != \
                (named := output.get("alias_names", output["volume"])):
            return f"the alias {output['pool']}/{output['alias']} no longer names {named}"
        elif output.get("stamp") and not earlier.domain and stamp(output["path"]) != output["stamp"]:
            return f"volume {output['pool']}/{output['volume']} changed"
    if earlier.domain and not domain_exists(earlier.domain):
        return "the domain is gone"
    return None
