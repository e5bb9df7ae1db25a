"""Base images from http, https and file URLs: streamed, hashed while read, verified, cached by digest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from imagebuilder import disk
from imagebuilder.cache import Cache
from imagebuilder.errors import SourceError
from imagebuilder.progress import Reporter
from imagebuilder.sources.base import BaseImage

CHUNK = 1 << 20
TIMEOUT = (15, 60)


def fetch(url: str, checksum: str | None, cache: Cache, reporter: Reporter) -> BaseImage:
    """Return the image at url from the cache, downloading and verifying it first if needed.

    With a pinned checksum a cached copy is used without any request.
    """
    algo, expected = checksum.split(":", 1) if checksum else ("sha256", None)
    if expected:
        cached = cache.lookup("images", f"{algo}-{expected}")
        if cached:
            reporter.info(f"base image {url} found in the cache ({algo}:{expected[:12]}…)")
            return _base(cached, url, f"{algo}:{expected}")
    with cache.writing("images") as tmp:
        actual = _download(url, tmp, algo, reporter)
        if expected and actual != expected:
            raise SourceError(f"checksum mismatch for {url}: expected {algo}:{expected}, got {algo}:{actual}")
        final = cache.commit(tmp, "images", f"{algo}-{actual}")
    return _base(final, url, f"{algo}:{actual}")


def _base(path: Path, url: str, digest: str) -> BaseImage:
    fmt, size = disk.probe(path)
    return BaseImage(path=path, kind="disk", digest=digest, source=url, format=fmt, virtual_size=size)


def _download(url: str, dest: Path, algo: str, reporter: Reporter) -> str:
    """Stream url into dest, returning the hex digest of the bytes."""
    hasher = hashlib.new(algo)
    chunks, total = _open(url)
    transfer = reporter.transfer(f"download {Path(urlparse(url).path).name}", total)
    try:
        with open(dest, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                hasher.update(chunk)
                transfer.advance(len(chunk))
    except (requests.RequestException, OSError) as exc:
        raise SourceError(f"downloading {url} failed: {exc}") from None
    transfer.finish()
    return hasher.hexdigest()


def _open(url: str) -> tuple[Iterator[bytes], int | None]:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.is_file():
            raise SourceError(f"{url}: no such file")
        return _read_file(path), path.stat().st_size
    try:
        response = requests.get(url, stream=True, timeout=TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise SourceError(f"cannot download {url}: {exc}") from None
    length = response.headers.get("Content-Length")
    return response.iter_content(CHUNK), int(length) if length and length.isdigit() else None


def _read_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
