"""Rolling back a versioned output: hold its alias at an earlier version (builds go on making new
versions, but leave the alias, and retention never deletes the held one), or release the hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagebuilder import manifest, versions
from imagebuilder.errors import BuildError, InputError
from imagebuilder.manifest import Manifest
from imagebuilder.pipeline import BuildOptions, outputs_locked
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.undo import Undo
from imagebuilder.deploy import retention
from imagebuilder.virt import connection, domain, storage

NEWEST = "newest"


def use(recipe: Recipe, choice: str, manifest_path: Path | None, reporter: Reporter) -> str:
    """Point the recipe's alias at version `choice` (a build number: held there) or at the newest
    version (`newest`: the hold released); returns the volume it names now."""
    with outputs_locked(recipe, BuildOptions(manifest_path=manifest_path), reporter) as path:
        document = manifest.previous(path)
        main = _main_output(document, path)
        entry, held = _chosen(document.versions, choice, main)
        name = versions.volume_of(entry, main["uri"], main["pool"])
        with connection.connect(main["uri"]) as conn:
            pool = storage.find_pool(conn, main["pool"])
            if pool is None or storage.find_volume(pool, name) is None:
                raise BuildError(f"version {entry['n']} ({name}) is not in pool {main['pool']} any more")
            undo = Undo(reporter)
            retention.point_alias(pool, Path(main["path"]).parent, main["alias"], name, undo)
            undo.finish(failed=False)
            dom_name = (document.domain or {}).get("name")
            dom = domain.find(conn, dom_name) if dom_name else None
            running = dom is not None and bool(dom.isActive())
        main["alias_names"] = name
        document.held = held
        document.save(path)
    if running:
        reporter.info(f"domain {dom_name} still runs the version it booted; restart it to boot {name}")
    return name


def _main_output(document: Manifest | None, path: Path) -> dict[str, Any]:
    if not document or not document.versions:
        raise InputError(f"no versions recorded in {path}: build the recipe first")
    main = document.main_output()
    if main is None:
        raise InputError(f"the last build recorded in {path} made no alias")
    return main


def _chosen(history: list[dict[str, Any]], choice: str, main: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The version asked for and the hold to record (None for the newest)."""
    there = [e for e in history if versions.volume_of(e, main["uri"], main["pool"])]
    if not there:
        raise InputError(f"no version is left in pool {main['pool']}")
    if choice == NEWEST:
        return there[-1], None
    if not choice.isdigit():
        raise InputError(f"--use {choice}: give a version number (see `imagebuilder versions`) or '{NEWEST}'")
    entry = next((e for e in there if e["n"] == int(choice)), None)
    if entry is None:
        present = ", ".join(str(e["n"]) for e in there)
        raise InputError(f"--use {choice}: no such version in pool {main['pool']}; present: {present}")
    return entry, (None if entry is there[-1] else entry["n"])
