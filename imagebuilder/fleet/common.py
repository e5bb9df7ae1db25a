"""What the fleet's commands share: which recipe has machines, how a domain is known as one of this
fleet's (its labels), the golden image's manifest, and clean-up of a failed run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from imagebuilder import manifest, osinfo
from imagebuilder.errors import InputError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.undo import Undo
from imagebuilder.virt import clone as virt_clone

ROLE = "clone"


def require_fleet(recipe: Recipe) -> None:
    """InputError unless the recipe has machines."""
    if not recipe.machines:
        raise InputError(f"{recipe.file}: the recipe has no machines; add [[machines]] entries or a [fleet] "
                         "section (or use `imagebuilder build` for a single domain)")


def golden_label(recipe: Recipe) -> str:
    """POOL/VOLUME of the recipe's golden volume, as the machines' metadata names it."""
    return f"{recipe.output.pool}/{recipe.output.volume}"


def ours(dom: libvirt.virDomain, golden: str, machine: str) -> dict[str, str] | None:
    """The domain's labels if this fleet made it, else None."""
    found = virt_clone.labels(dom)
    if found.get("role") == ROLE and found.get("golden") == golden and found.get("machine") == machine:
        return found
    return None


@contextmanager
def undoing(reporter: Reporter) -> Iterator[Undo]:
    """An Undo that removes what was made if the block fails. Enter it after the connection its
    actions use, so that it finishes before that connection closes."""
    undo = Undo(reporter)
    try:
        yield undo
    except BaseException:
        undo.finish(failed=True)
        raise
    undo.finish(failed=False)


def manifest_of(recipe: Recipe) -> manifest.Manifest | None:
    """The manifest of the recipe's last build into its pool, if there is one to read."""
    return manifest.previous(manifest.default_path(recipe, None, recipe.output.pool))


def manifest_osinfo(recipe: Recipe) -> str | None:
    """The libosinfo id of the golden image's OS, as its build's manifest records it."""
    document = manifest_of(recipe)
    short = document.os.get("osinfo") if document else None
    found = osinfo.lookup(short) if isinstance(short, str) and short else None
    return found.id if found else None
