"""A kind of [base] (url, oci, path, bootstrap, template), declared once with `@source(kind)` in the
module that fetches it: what the base is now without fetching it, the fetch that starts from that,
and where the local cache keeps it. `sources.kinds` imports them all and looks one up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imagebuilder.cache import Cache
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources.base import BaseImage


@dataclass(frozen=True)
class Identity:
    """What the base is now, found without fetching it: its digest (None when only a download can tell)
    and what else the fetch starts from instead of asking again (a template's choice)."""

    digest: str | None
    found: Any = None


class Source:
    """One kind of base. Subclasses are declared with `@source(kind)`; one instance serves every build."""

    kind = ""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        """The recipe's base as it is now, as far as it can be known without downloading or making it."""
        raise NotImplementedError

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        """The base that identify found, from the cache when possible."""
        raise NotImplementedError

    def cache_entry(self, digest: str) -> tuple[str, str] | None:
        """Where the local cache keeps a base of this digest (None: nothing to share, as for a local path)."""
        return None


SOURCES: dict[str, Source] = {}


def source(kind: str) -> Callable[[type[Source]], type[Source]]:
    """Register the decorated Source subclass as the one for [base] `kind`."""
    def register(cls: type[Source]) -> type[Source]:
        if kind in SOURCES:
            raise RuntimeError(f"base source {kind} is declared twice")
        cls.kind = kind
        SOURCES[kind] = cls()
        return cls
    return register
