"""The Debian images the integration tests start from, built once by `imagebuilder build` and kept on
disk under TEST_HOME, named by everything that shapes them (see image_key).

Every integration test needs the base image, and a cold CI machine has none: `python -m
tests.integration.images` (started in the background when a session begins, see tests/conftest.py)
builds all of them at once while the first tests run. A test worker that needs one before it is
ready waits for it on its lock; one that finds no image (the background build failed) builds it
itself, so that the failure is reported by a test.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_HOME = Path(os.environ.get("IMAGEBUILDER_TEST_HOME", "/var/tmp/imagebuilder-tests"))
CACHE = TEST_HOME / "cache"  # the cache the test builds share (kept across sessions: bootstrap tarballs)
RECIPES = {"base": ROOT / "tests" / "integration" / "recipes" / "base.toml",
           "cloud-init": ROOT / "tests" / "integration" / "recipes" / "cloud-init.toml"}


def image(name: str) -> Path:
    """The image called name in RECIPES, built unless an earlier session or another worker made it."""
    recipe = RECIPES[name]
    return build_once(recipe, TEST_HOME / f"{name}-{image_key(recipe)}.qcow2")


def image_key(recipe: Path) -> str:
    """Everything that shapes an image the tests build once and keep: its recipe, all of imagebuilder's
    code, and the versions of the tools that make it (an image an older version of any of them made
    is not reused)."""
    inputs = hashlib.sha256(recipe.read_bytes())
    for module in sorted((ROOT / "imagebuilder").rglob("*.py")):
        inputs.update(str(module.relative_to(ROOT)).encode() + b"\0" + module.read_bytes())
    tools = subprocess.run(["dpkg-query", "-W", "mmdebstrap", "libguestfs0", "qemu-system-x86", "supermin"],
                           capture_output=True, text=True, check=True).stdout
    inputs.update(tools.encode())
    return inputs.hexdigest()[:16]


def build_once(recipe: Path, target: Path) -> Path:
    """target, built from recipe unless it exists; the first to ask builds it, the others wait."""
    from tests.integration.conftest import run_cli
    with made_once(target):
        if not target.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            proc = run_cli("build", str(recipe), "--output", str(target), "--cache-dir", str(CACHE),
                           "--manifest", str(target.with_suffix(".manifest.json")), timeout=840)
            assert proc.returncode == 0, proc.stderr
        target.chmod(0o644)
    return target


@contextmanager
def made_once(target: Path) -> Iterator[None]:
    """Held by one process (test worker or background build) at a time while it makes target. The wait
    is bounded by the holder's build (run_cli's timeout, then SIGTERM and SIGKILL) and, for a test, by
    its pytest-timeout."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> int:
    """Build every image at once (each one's build is mostly one busy core)."""
    with ThreadPoolExecutor(len(RECIPES)) as pool:
        futures = {name: pool.submit(image, name) for name in RECIPES}
    failed = {name: future.exception() for name, future in futures.items() if future.exception() is not None}
    for name, error in failed.items():
        print(f"{name}: {str(error)[-2000:]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
