"""The on-disk cache: content-addressed base images and bootstrap results, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_VAR = "IMAGEBUILDER_CACHE_DIR"


def default_dir() -> Path:
    """$IMAGEBUILDER_CACHE_DIR, else $XDG_CACHE_HOME/imagebuilder, else ~/.cache/imagebuilder."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "imagebuilder"


class Cache:
    """A cache rooted at `root`; entries appear only complete (temp file, then rename)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_dir()

    def path(self, kind: str, name: str) -> Path:
        """Where entry `name` of `kind` ('images', 'bootstrap') lives, whether or not it exists."""
        return self.root / kind / name

    def lookup(self, kind: str, name: str) -> Path | None:
        """The entry's path if it exists."""
        path = self.path(kind, name)
        return path if path.is_file() else None

    @contextmanager
    def writing(self, kind: str) -> Iterator[Path]:
        """A temporary path in the cache's filesystem; removed on exit unless moved away by `commit`."""
        directory = self.root / kind
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".partial-", dir=directory)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def commit(self, tmp: Path, kind: str, name: str) -> Path:
        """Atomically publish a temporary file as entry `name`."""
        final = self.path(kind, name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        return final
