"""Base images from KubeVirt containerDisks in a registry: `[base] oci = "registry/team/web@sha256:…"`.

A pinned digest is the checksum: skopeo checks the manifest against it and every layer against the
manifest, and the disk is cached by that digest, so a pinned base found in the cache costs no
request. A tag alone is resolved to its current digest at every build (one manifest request, the
registry's answer to "has it changed?"), which is what `build --if-changed` compares.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from imagebuilder import disk, registry
from imagebuilder.cache import Cache
from imagebuilder.errors import SourceError
from imagebuilder.ocilayout import Layout
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources import stream
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.source import Identity, Source, source

CHUNK = 1 << 20


def identify(ref: str, reporter: Reporter) -> str:
    """The digest the reference means now: the pinned one, else the tag's (one manifest request)."""
    parsed = registry.parse_reference(ref)
    if parsed.digest:
        return parsed.digest
    try:
        _, digest = registry.manifest(parsed.pinned)
    except registry.RegistryError as exc:
        raise SourceError(f"cannot resolve the base {ref}: {exc.message}", hint=exc.hint) from None
    reporter.info(f"base {ref} is {digest[:19]}…")
    return digest


def cache_name(digest: str) -> str:
    """The cache entry (under images/) of the disk of the containerDisk with this manifest digest."""
    return "oci-" + digest.replace(":", "-")


def fetch(ref: str, digest: str, cache: Cache, reporter: Reporter) -> BaseImage:
    """The disk of the containerDisk at ref with this digest, from the cache or pulled now."""
    parsed = registry.parse_reference(ref)
    source = f"oci:{parsed.repo}@{digest}"
    with cache.lock(f"image:{digest}"):
        cached = cache.lookup("images", cache_name(digest))
        if cached:
            reporter.info(f"base {ref} found in the cache ({digest[:19]}…)")
        else:
            reporter.info(f"pulling the containerDisk {parsed.repo}@{digest[:19]}…")
            with cache.writing("images") as tmp, \
                    tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".oci-") as scratch:
                try:
                    registry.pull_layout(f"{parsed.repo}@{digest}", Path(scratch), "base")
                except registry.RegistryError as exc:
                    raise SourceError(f"cannot pull the base {ref}: {exc.message}", hint=exc.hint) from None
                extract_disk(Layout(Path(scratch)), tmp)
                cached = cache.commit(tmp, "images", cache_name(digest))
    fmt, size = disk.probe(cached)
    return BaseImage(path=cached, kind="disk", digest=digest, source=source, format=fmt, virtual_size=size)


def extract_disk(layout: Layout, dest: Path) -> str:
    """Write the disk image under /disk of the image in layout to dest; returns its name in the image.
    The last layer that has one wins, as in the container's filesystem."""
    document, _ = layout.manifest("base")
    found = None
    for layer in document.get("layers", []):
        with open(layout.blob_path(layer["digest"]), "rb") as blob:
            name = _copy_disk(_decompressed(blob, layer["mediaType"]), dest)
        found = name or found
    if found is None:
        raise SourceError("the image has no disk under /disk: not a KubeVirt containerDisk")
    return found


class _Stream(io.RawIOBase):
    """A read-only raw stream over decompressed chunks (each handed on without copying it whole)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.pending = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        while not self.pending:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.pending = memoryview(chunk)
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _decompressed(blob: BinaryIO, media_type: str) -> io.BufferedReader:
    suffix = ".zst" if "zstd" in media_type else ".gz" if "gzip" in media_type else ""
    decoder = stream.Decoder(f"layer{suffix}")
    pieces = (piece for chunk in iter(lambda: blob.read(CHUNK), b"") for piece in decoder.feed(chunk))
    return io.BufferedReader(_Stream(pieces), CHUNK)


def _copy_disk(stream: io.BufferedReader, dest: Path) -> str | None:
    """Copy the regular file under disk/ in the tar stream to dest; its name, or None if there is none."""
    found = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[arg-type]
        for member in tar:
            name = member.name.lstrip("./")
            if member.isfile() and name.startswith("disk/") and "/" not in name[5:]:
                source = tar.extractfile(member)
                assert source is not None
                with open(dest, "wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                found = name
    return found


@source("oci")
class OciSource(Source):
    """[base] oci: known by its pinned digest or its tag's current one."""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        return Identity(identify(recipe.base.oci, reporter))

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        return fetch(recipe.base.oci, known.digest, cache, reporter)

    def cache_entry(self, digest: str) -> tuple[str, str]:
        return "images", cache_name(digest)
