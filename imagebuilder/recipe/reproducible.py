"""[reproducible]: what a build records so that two builds can be shown to have made the same files."""

from __future__ import annotations

from imagebuilder.recipe.tables import Table


def parse_reproducible(table: Table | None) -> bool:
    """[reproducible] tree_digest: record the digest of the image's file tree (contents, modes,
    owners, link targets, xattrs; not times) in the manifest. It reads every file once: about half a
    minute for a small Debian under TCG, so it is off unless asked for."""
    if table is None:
        return False
    wanted = table.get("tree_digest", bool, False)
    table.finish()
    return wanted
