"""A base image that is a file on this host, used in place (never modified)."""

from __future__ import annotations

from pathlib import Path

from imagebuilder import disk
from imagebuilder.cache import Cache
from imagebuilder.files import file_digest
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.source import Identity, Source, source


def identify(path: Path, cache: Cache) -> str:
    """The image's sha256, hashed once and then remembered while its size, mtime and inode stay the same."""
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    marker = f"local:{path.resolve()}"
    with cache.index() as index:
        record = index.get(marker)
    if record and record.get("stamp") == stamp:
        return record["digest"]
    digest = file_digest(path)
    with cache.index() as index:
        index[marker] = {"digest": digest, "stamp": stamp}
    return digest


def fetch(path: Path, digest: str) -> BaseImage:
    """Describe a local image: its format and size, and the sha256 identify gave."""
    fmt, size = disk.probe(path)
    return BaseImage(path=path, kind="disk", digest=digest, source=str(path), format=fmt, virtual_size=size)


@source("path")
class LocalSource(Source):
    """[base] path: known by the file's sha256; used in place, so there is nothing to cache or share."""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        return Identity(identify(recipe.base.path, cache))

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        return fetch(recipe.base.path, known.digest)
