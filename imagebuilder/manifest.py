"""The build manifest: inputs, digests, outputs and timings, as JSON beside the image."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imagebuilder import __version__, stages
from imagebuilder.recipe import Recipe
from imagebuilder.sources.base import BaseImage


def state_dir() -> Path:
    """$XDG_STATE_HOME/imagebuilder (default ~/.local/state/imagebuilder)."""
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "imagebuilder"


def default_path(recipe: Recipe, file_output: Path | None, pool: str | None) -> Path:
    """NAME.manifest.json beside a file output; for a pool-only output, in the state directory."""
    if file_output is not None:
        return file_output.parent / f"{recipe.name}.manifest.json"
    return state_dir() / "manifests" / (pool or "default") / f"{recipe.name}.manifest.json"


def make(recipe: Recipe, base: BaseImage, accel: str, os_facts: dict[str, str],
         outputs: list[dict[str, Any]], domain: dict[str, Any] | None, timings: dict[str, float]) -> dict[str, Any]:
    """The manifest document. It holds step descriptions, never secrets."""
    return {
        "imagebuilder": __version__,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": {"file": str(recipe.file), "sha256": recipe.digest},
        "base": {"kind": base.kind, "source": base.source, "digest": base.digest},
        "accelerator": accel,
        "os": {k: v for k, v in os_facts.items() if k != "root"},
        "steps": [step.record() for step in recipe.steps],  # descriptions, lines, host file digests
        "sysprep": list(recipe.sysprep),
        "outputs": outputs,
        "domain": domain,
        "timings": timings,
        "not_reproducible": not_reproducible(recipe),
    }


def not_reproducible(recipe: Recipe) -> list[str]:
    """What differs between two builds of the same recipe and pinned base, so that nobody expects
    the image digests to match: the inputs (recipe, base, host files) have equal digests."""
    notes = ["built time and timings",
             "image digest: the filesystem journal, file times and superblock written during the build "
             "([reproducible] tree_digest compares the files themselves)"]
    if recipe.domain is not None:
        notes.append("domain UUID and generated MAC addresses")
    for step in recipe.steps:
        if not stages.cacheable(step.arg):
            notes.append(f"{step.describe()} (a new password every build)")
    if any(step.op in ("install", "update", "run", "run_command", "firstboot_install") for step in recipe.steps):
        notes.append("package installs and commands: whatever the mirror or the command gives at build time")
    return notes


def write(document: dict[str, Any], path: Path) -> None:
    """Write the manifest atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
