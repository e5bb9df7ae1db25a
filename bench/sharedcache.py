"""Benchmark: two runners, two empty caches, one registry. The first builds a two-step recipe with a
checkpoint after the first step and pushes it (--cache-to); the second pulls it (--cache-from) and
runs only the step after it. Prints both wall times, their ratio and the bytes pulled.

    .venv/bin/python bench/sharedcache.py [--image PATH]

Starts Debian's docker-registry on 127.0.0.1 (tests/integration/registry.py) for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseimage import newest_test_base

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.registry import LocalRegistry  # noqa: E402

RECIPE = """[image]
name = "bench-shared"
[base]
path = "{image}"
[[steps]]
hostname = "bench"
checkpoint = true
[[steps]]
write = "/etc/motd:benchmark"
"""


def timed_build(recipe: Path, work: Path, env: dict[str, str], *options: str) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagebuilder.cli", "build", str(recipe), "-o",
                           str(work / "out.qcow2"), "--cache-dir", str(work / "cache"), *options],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    return time.monotonic() - start, json.loads((work / "bench-shared.manifest.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    image = (parser.parse_args().image or newest_test_base()).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as scratch, LocalRegistry() as registry:
        work = Path(scratch)
        recipe, secret = work / "recipe.toml", work / "stage-key"
        recipe.write_text(RECIPE.format(image=image))
        secret.write_text(os.urandom(24).hex())
        repo = f"{registry.host}/bench/cache"
        common = ("--cache-secret-file", str(secret))
        (work / "one").mkdir()
        (work / "two").mkdir()
        first, _ = timed_build(recipe, work / "one", registry.env, *common, "--cache-to", repo)
        second, document = timed_build(recipe, work / "two", registry.env, *common, "--cache-from", repo)
    pulled = sum(item["bytes"] for item in document["shared_cache"]["pulled"])
    print(f"{'runner':36} {'seconds':>8} {'of first':>9}")
    print(f"{'first (empty cache, pushes)':36} {first:8.1f} {1:9.1%}")
    print(f"{'second (empty cache, pulls)':36} {second:8.1f} {second / first:9.1%}")
    print(f"pulled from the registry: {pulled >> 20} MiB")


if __name__ == "__main__":
    main()
