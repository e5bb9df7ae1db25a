"""The on-disk cache: content-addressed base images, bootstrap results, checkpoints, and packages.

Entries appear only complete (temp file, then rename); concurrent builds serialize on file
locks; every use touches an entry's mtime, which is what `cache prune` goes by. A small
index maps URLs to digests and the validators (ETag, Last-Modified) seen. An entry of `packages`
is a directory (one distribution, release and architecture; see guest/pkgcache.py), pruned whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "IMAGEBUILDER_CACHE_DIR"
KINDS = ("images", "bootstrap", "stages", "packages")
TREES = ("packages",)  # the kinds whose entries are directories


def default_dir() -> Path:
    """$IMAGEBUILDER_CACHE_DIR, else $XDG_CACHE_HOME/imagebuilder, else ~/.cache/imagebuilder."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "imagebuilder"


STALE_AFTER = 60.0  # seconds: a younger partial file may belong to a writer that is about to lock it


def sweep_partials(directory: Path) -> list[Path]:
    """Delete the partial files in directory that no living writer holds (see Cache.writing)."""
    swept = []
    for path in directory.glob(".partial-*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < STALE_AFTER:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a writer holds it
        else:
            path.unlink(missing_ok=True)
            swept.append(path)
        finally:
            os.close(fd)
    return swept


def _allocated(path: Path) -> int:
    """The bytes a file, or the files under a directory, take on disk (a file gone meanwhile counts 0)."""
    total = 0
    for item in path.rglob("*") if path.is_dir() else [path]:
        try:
            info = item.lstat()
        except OSError:
            continue
        total += info.st_blocks * 512 if stat.S_ISREG(info.st_mode) else 0
    return total


@dataclass(frozen=True)
class Entry:
    """One cached file, for listing and pruning."""

    kind: str
    name: str
    path: Path
    size: int
    last_used: float
    urls: tuple[str, ...]


class Cache:
    """A cache rooted at `root`."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_dir()

    def path(self, kind: str, name: str) -> Path:
        """Where entry `name` of `kind` lives, whether or not it exists."""
        return self.root / kind / name

    def lookup(self, kind: str, name: str) -> Path | None:
        """The entry's path if it exists; marks it as used."""
        path = self.path(kind, name)
        if not path.is_file():
            return None
        os.utime(path)
        return path

    @contextmanager
    def writing(self, kind: str) -> Iterator[Path]:
        """A temporary path in the cache's filesystem; removed on exit unless `commit` moved it.

        The writer holds a lock on it while it lives, so the partial files of a writer that was
        killed (kill -9, a power cut) are told apart and swept away by the next writer.
        """
        directory = self.root / kind
        directory.mkdir(parents=True, exist_ok=True)
        sweep_partials(directory)
        fd, name = tempfile.mkstemp(prefix=".partial-", dir=directory)
        tmp = Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)
            os.close(fd)

    def commit(self, tmp: Path, kind: str, name: str) -> Path:
        """Atomically publish a temporary file as entry `name`."""
        final = self.path(kind, name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        return final

    @contextmanager
    def lock(self, key: str, on_wait: Callable[[], object] | None = None) -> Iterator[None]:
        """Hold an exclusive lock named by key (one download or bootstrap of a thing at a time);
        `on_wait` is called first if another process holds it (to say what we are waiting for)."""
        directory = self.root / "locks"
        directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        with open(directory / name, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def index(self) -> Iterator[dict[str, Any]]:
        """The URL index, locked, read and written back atomically."""
        path = self.root / "index.json"
        with self.lock("index.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            yield data
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".index.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)

    def entries(self) -> list[Entry]:
        """Every complete entry, most recently used first."""
        with self.index() as index:
            urls: dict[str, list[str]] = {}
            for url, record in index.items():
                urls.setdefault(record.get("entry", ""), []).append(url)
        found = []
        for kind in KINDS:
            directory = self.root / kind
            for path in directory.glob("*") if directory.is_dir() else []:
                if path.name.startswith(".") or not (path.is_dir() if kind in TREES else path.is_file()):
                    continue
                found.append(Entry(kind, path.name, path, _allocated(path), path.stat().st_mtime,
                                   tuple(sorted(urls.get(f"{kind}/{path.name}", [])))))
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def prune(self, older_than: float | None = None, keep: int | None = None) -> list[Entry]:
        """Delete entries unused for `older_than` seconds and/or beyond the `keep` most recent; return them."""
        now = time.time()
        doomed = []
        for position, entry in enumerate(self.entries()):
            too_old = older_than is not None and now - entry.last_used > older_than
            too_many = keep is not None and position >= keep
            if too_old or too_many:
                doomed.append(entry)
        for entry in doomed:
            with self.lock(f"{entry.kind}/{entry.name}"):
                if entry.path.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    entry.path.unlink(missing_ok=True)
        with self.index() as index:
            gone = {f"{e.kind}/{e.name}" for e in doomed}
            for url in [u for u, r in index.items() if r.get("entry") in gone]:
                del index[url]
        return doomed
