"""Base images from http, https and file URLs.

Streamed (never held in memory), hashed while read, decompressed by suffix on the fly,
verified against a pinned checksum or a (signed) checksum file, and cached by digest.
A pinned checksum already in the cache costs no request; otherwise the cache index's
ETag/Last-Modified make a conditional request, and a 304 costs no download. A dropped
connection resumes with an HTTP Range request; a server that ignores Range restarts cleanly.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import requests

from imagebuilder import disk, files, gpg
from imagebuilder.cache import Cache
from imagebuilder.errors import SourceError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources import checksums, stream
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.source import Identity, Source, source

CHUNK = 1 << 20
TIMEOUT = (15, 60)
ATTEMPTS = 5


@dataclass(frozen=True)
class Verification:
    """How a download is checked: a pinned checksum, a checksum file (optionally signed), or nothing."""

    checksum: str | None = None
    checksum_url: str | None = None
    signature_url: str | None = None
    keyring: Path | None = None


def fetch(url: str, verification: Verification | str | None, cache: Cache, reporter: Reporter,
          session: requests.Session | None = None) -> BaseImage:
    """The (decompressed) image at url, from the cache when it is known to be current."""
    if not isinstance(verification, Verification):
        verification = Verification(checksum=verification)
    http = session or requests.Session()
    expected = _expected_checksum(url, verification, http, reporter)
    # By content when it is known: builds whose bases have the same checksum under different URLs
    # (mirrors) wait for one download instead of making two.
    with cache.lock(f"image:{expected}" if expected else f"url:{url}"):
        if expected:
            cached = cache.lookup("images", expected.replace(":", "-"))
            if cached:
                reporter.info(f"base image {_name(url)} found in the cache ({expected[:19]}…)")
                return _base(cached, url, expected)
        else:
            revalidated = _revalidate(url, cache, http, reporter)
            if revalidated:
                return revalidated
        return _download_into_cache(url, expected, cache, http, reporter)


def _name(url: str) -> str:
    return Path(unquote(urlparse(url).path)).name or url


def _base(path: Path, url: str, digest: str) -> BaseImage:
    fmt, size = disk.probe(path)
    return BaseImage(path=path, kind="disk", digest=digest, source=url, format=fmt, virtual_size=size)


def _expected_checksum(url: str, verification: Verification, http: requests.Session,
                       reporter: Reporter) -> str | None:
    if verification.checksum or not verification.checksum_url:
        return verification.checksum
    sums_url = urljoin(url, verification.checksum_url)
    text = _small_get(sums_url, http)
    if verification.keyring:
        signature = _small_get(urljoin(url, verification.signature_url), http, binary=True)
        with tempfile.TemporaryDirectory(prefix="imagebuilder-") as scratch:
            data_path, sig_path = Path(scratch) / "sums", Path(scratch) / "sums.sig"
            data_path.write_text(text)
            sig_path.write_bytes(signature)
            gpg.verify_detached(data_path, sig_path, [verification.keyring], sums_url)
        reporter.info(f"checksum file {_name(sums_url)}: good signature")
    try:
        return checksums.find(text, _name(url))
    except ValueError:
        raise SourceError(f"{_name(url)} is not listed in {sums_url}") from None


def _small_get(url: str, http: requests.Session, binary: bool = False):
    parsed = urlparse(url)
    try:
        if parsed.scheme == "file":
            data = Path(unquote(parsed.path)).read_bytes()
        else:
            response = http.get(url, timeout=TIMEOUT)
            response.raise_for_status()
            data = response.content
    except (requests.RequestException, OSError) as exc:
        raise SourceError(f"cannot fetch {url}: {exc}") from None
    return data if binary else data.decode("utf-8", errors="replace")


def identify(url: str, verification: Verification | str | None, cache: Cache, reporter: Reporter,
             session: requests.Session | None = None) -> str | None:
    """The digest of the image at url now, when it is known without downloading it: a pinned
    checksum, the checksum file's entry, or the cached copy's digest after a 304; else None."""
    if not isinstance(verification, Verification):
        verification = Verification(checksum=verification)
    http = session or requests.Session()
    expected = _expected_checksum(url, verification, http, reporter)
    if expected:
        return expected
    current = _unchanged_copy(url, cache, http)
    if current is None:
        return None
    reporter.info(f"base image {_name(url)} is unchanged upstream (304)")
    return current[1]["digest"]


def _revalidate(url: str, cache: Cache, http: requests.Session, reporter: Reporter) -> BaseImage | None:
    """With no checksum to go by: ask the server whether the cached copy is still current."""
    current = _unchanged_copy(url, cache, http)
    if current is None:
        return None
    cached, record = current
    reporter.info(f"base image {_name(url)} is unchanged upstream (304); using the cached copy")
    return _base(cached, url, record["digest"])


def _unchanged_copy(url: str, cache: Cache, http: requests.Session) -> tuple[Path, dict] | None:
    """The cached copy of url and its index record, if a conditional request says it is current."""
    with cache.index() as index:
        record = index.get(url)
    if not record or urlparse(url).scheme == "file":
        return None
    cached = cache.lookup(*record["entry"].split("/", 1))
    if not cached:
        return None
    headers = {}
    if record.get("etag"):
        headers["If-None-Match"] = record["etag"]
    if record.get("last_modified"):
        headers["If-Modified-Since"] = record["last_modified"]
    if not headers:
        return None
    try:
        response = http.get(url, headers=headers, stream=True, timeout=TIMEOUT)
        response.close()
    except requests.RequestException as exc:
        raise SourceError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 304:
        return None
    return cached, record


def _download_into_cache(url: str, expected: str | None, cache: Cache, http: requests.Session,
                         reporter: Reporter) -> BaseImage:
    algo = expected.split(":", 1)[0] if expected else "sha256"
    with cache.writing("images") as tmp:
        download = _Download(url, algo, http, reporter)
        try:
            download.run(tmp)
        except OSError as exc:  # writing into the cache failed (reading the network is a SourceError)
            if exc.errno in files.NO_SPACE:
                raise files.no_space(tmp.parent, f"the download of {_name(url)}") from None
            raise SourceError(f"downloading {url} into {tmp.parent} failed: {exc}") from None
        actual = f"{algo}:{download.hasher.hexdigest()}"
        if expected and actual != expected:
            raise SourceError(f"checksum mismatch for {url}: expected {expected}, got {actual}")
        name = actual.replace(":", "-")
        final = cache.commit(tmp, "images", name)
    with cache.index() as index:
        index[url] = {"entry": f"images/{name}", "digest": actual, "etag": download.etag,
                      "last_modified": download.last_modified, "fetched": time.time()}
    return _base(final, url, actual)


class _Download:
    """One download: hashes the bytes as published, writes them decompressed and sparse."""

    def __init__(self, url: str, algo: str, http: requests.Session, reporter: Reporter):
        self.url, self.algo, self.http, self.reporter = url, algo, http, reporter
        self.hasher = hashlib.new(algo)
        self.received = 0
        self.etag: str | None = None
        self.last_modified: str | None = None

    def run(self, dest: Path) -> None:
        with open(dest, "r+b") as handle:
            writer = stream.SparseWriter(handle)
            decoder = stream.Decoder(_name(self.url))
            transfer = None
            stalled = 0
            for attempt in range(1, ATTEMPTS + 1):
                before = self.received
                try:
                    chunks, total, resumed = self._open()
                    if not resumed and self.received:
                        self.reporter.info("the server does not resume downloads; starting over")
                        self.hasher, self.received = hashlib.new(self.algo), 0
                        writer.reset()
                        decoder = stream.Decoder(_name(self.url))
                    if transfer is None:
                        transfer = self.reporter.transfer(f"download {_name(self.url)}", total)
                    for chunk in chunks:
                        self.hasher.update(chunk)
                        self.received += len(chunk)
                        for piece in decoder.feed(chunk):
                            writer.write(piece)
                        transfer.set(self.received)
                    break
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                    stalled = 0 if self.received > before else stalled + 1
                    if attempt == ATTEMPTS or stalled >= 2:
                        raise SourceError(f"downloading {self.url} failed after {attempt} attempts: {exc}") from None
                    self.reporter.info(f"download interrupted ({type(exc).__name__}); resuming "
                                       f"at byte {self.received} (attempt {attempt + 1} of {ATTEMPTS})")
                    time.sleep(min(2 ** (attempt - 1), 8))
                except (OSError, EOFError, ValueError) as exc:
                    if isinstance(exc, OSError) and exc.errno in files.NO_SPACE:
                        raise
                    raise SourceError(f"downloading {self.url} failed: {exc}") from None
            if not decoder.complete:
                raise SourceError(f"{self.url} ends before its compressed data does (truncated file?)")
            writer.close()
            if transfer:
                transfer.finish()

    def _open(self) -> tuple[Iterator[bytes], int | None, bool]:
        """(chunks, total size, resumed?) from the current position."""
        parsed = urlparse(self.url)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
            if not path.is_file():
                raise SourceError(f"{self.url}: no such file")
            return _read_file(path, self.received), path.stat().st_size, self.received > 0
        headers = {}
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
            if self.etag:
                headers["If-Range"] = self.etag
        response = self.http.get(self.url, headers=headers, stream=True, timeout=TIMEOUT)
        try:
            response.raise_for_status()
        except requests.HTTPError as exc:
            raise SourceError(f"cannot download {self.url}: {exc}") from None
        resumed = response.status_code == 206
        if not self.received or not resumed:
            self.etag = response.headers.get("ETag")
            self.last_modified = response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        total = int(length) + (self.received if resumed else 0) if length and length.isdigit() else None
        return response.iter_content(CHUNK), total, resumed


def _read_file(path: Path, offset: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(CHUNK):
            yield chunk


@source("url")
class UrlSource(Source):
    """[base] url: known by its pinned checksum, its checksum file's entry or a 304 for the cached copy."""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        base = recipe.base
        check = Verification(base.checksum, base.checksum_url, base.signature_url, base.keyring)
        return Identity(identify(base.url, check, cache, reporter))

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        # The digest pins the download, so no checksum file is read again. It is None only for
        # checksum = "none" with no cached copy a 304 vouched for: then the fetch asks under its lock.
        return fetch(recipe.base.url, known.digest, cache, reporter)

    def cache_entry(self, digest: str) -> tuple[str, str]:
        return "images", digest.replace(":", "-")
