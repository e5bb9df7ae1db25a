"""The build manifest: inputs, digests, outputs and timings, as JSON beside the image.

`Manifest` is the record; `schema` is the format it was read in. Manifests written before the version
key existed load as version 0 (the same keys, less `schema`); a manifest of a newer format than this
imagebuilder knows is refused rather than read with the wrong meaning. Saving writes this version's
format: missing keys take their defaults, and keys it does not know are kept as they are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imagebuilder import __version__, stages
from imagebuilder.errors import InputError
from imagebuilder.recipe import Recipe
from imagebuilder.sources.base import BaseImage

SCHEMA = 1  # the format this imagebuilder writes; 0: written before the manifest had a version
_ABSENT_WHEN = {"versions": [], "held": None, "shared_cache": None, "package_cache": None,  # then left out
                "arch": ""}  # a manifest written before images had an arch of their own


@dataclass
class Manifest:
    """What a build made and from what. Outputs, steps, stages and versions stay JSON records (their
    keys depend on their type); `extra` holds the keys a newer imagebuilder wrote."""

    schema: int = SCHEMA                                          # as read; saved as SCHEMA
    imagebuilder: str = ""
    built: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)          # file, sha256
    base: dict[str, Any] = field(default_factory=dict)            # kind, source, digest
    arch: str = ""                                                # the image's architecture (x86_64, aarch64)
    accelerator: str = ""
    accelerator_reason: str = ""
    os: dict[str, Any] = field(default_factory=dict)              # the guest's facts (osinfo, …)
    steps: list[dict[str, Any]] = field(default_factory=list)     # descriptions, lines, host file digests
    sysprep: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)   # one record per file, volume, push …
    domain: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    not_reproducible: list[str] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)    # name, key, own
    requested: dict[str, Any] = field(default_factory=dict)       # the outputs asked for (rebuild compares)
    records: dict[str, Any] = field(default_factory=dict)         # SBOMs and provenance beside the manifest
    versions: list[dict[str, Any]] = field(default_factory=list)  # of a versioned volume name, oldest first
    held: int | None = None                                       # the version `versions --use` holds
    shared_cache: dict[str, Any] | None = None
    package_cache: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: Any) -> Manifest:
        """The manifest a JSON document holds; ValueError if it is not one, InputError if it is newer."""
        if not isinstance(document, dict):
            raise ValueError("a manifest is a JSON object")
        schema = document.get("schema", 0)
        if not isinstance(schema, int):
            raise ValueError(f"the manifest's schema {schema!r} is not a number")
        if schema > SCHEMA:
            raise InputError(f"the manifest's format {schema} is newer than this imagebuilder's ({SCHEMA})",
                             hint="use the imagebuilder that wrote it, or give another --manifest")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {key: value for key, value in document.items() if key in known}
        return cls(**{**values, "schema": schema}, extra={k: v for k, v in document.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The JSON document in this version's format: every field (the optional ones only when set),
        and the unknown keys."""
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"} | {"schema": SCHEMA}
        document = {k: v for k, v in document.items() if k not in _ABSENT_WHEN or v != _ABSENT_WHEN[k]}
        return {**self.extra, **document}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at path (OSError, ValueError when it is missing or not one)."""
        return cls.from_json(json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        """Write the manifest atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def main_output(self) -> dict[str, Any] | None:
        """The output the alias of a versioned volume name points into, if the build made one."""
        return next((o for o in self.outputs if o.get("alias")), None)


def previous(path: Path) -> Manifest | None:
    """The manifest an earlier build left at path, if there is one to read."""
    try:
        return Manifest.load(path)
    except (OSError, ValueError):
        return None


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
         outputs: list[dict[str, Any]], domain: dict[str, Any] | None, timings: dict[str, float]) -> Manifest:
    """The manifest of a build. It holds step descriptions, never secrets."""
    return Manifest(
        imagebuilder=__version__,
        built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        recipe={"file": str(recipe.file), "sha256": recipe.digest},
        base={"kind": base.kind, "source": base.source, "digest": base.digest},
        arch=recipe.base.arch,
        accelerator=accel,
        os={k: v for k, v in os_facts.items() if k != "root"},
        steps=[step.record() for step in recipe.steps],
        sysprep=list(recipe.sysprep),
        outputs=outputs,
        domain=domain,
        timings=timings,
        not_reproducible=not_reproducible(recipe),
    )


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
