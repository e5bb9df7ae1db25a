"""Benchmark: image bytes transferred by a cold and a repeated build of the same URL recipe.

Serves a base image over HTTP on 127.0.0.1 (default: the integration tests' cached Debian base),
builds the same recipe twice with a fresh cache, once with a pinned checksum and once with
`checksum = "none"` (conditional revalidation), and prints bytes sent and wall times.

    .venv/bin/python bench/fetch.py [--image PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseimage import newest_test_base

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagebuilder.files import file_digest  # noqa: E402
from tests.integration.httpserver import FileServer  # noqa: E402

RECIPE = """[image]
name = "bench-fetch"
[base]
url = "{url}"
checksum = "{checksum}"
[output]
path = "{out}"
[sysprep]
enabled = false
"""


def build(recipe: Path, cache: Path) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "imagebuilder.cli", "build", str(recipe), "--force",
                    "--cache-dir", str(cache)], check=True, capture_output=True, cwd=ROOT)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    image = parser.parse_args().image or newest_test_base()
    digest = file_digest(image).split(":", 1)[1]
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as scratch, FileServer(image.parent) as server:
        work = Path(scratch)
        print(f"image: {image} ({image.stat().st_size / 2**20:.0f} MiB)")
        print(f"{'verification':14} {'build':7} {'bytes sent':>14} {'seconds':>8}")
        for label, checksum in (("pinned", f"sha256:{digest}"), ("revalidated", "none")):
            recipe = work / f"{label}.toml"
            recipe.write_text(RECIPE.format(url=server.url(image.name), checksum=checksum, out=work / "out.qcow2"))
            cache = work / f"cache-{label}"
            for run in ("cold", "repeat"):
                before = server.sent(image.name)
                seconds = build(recipe, cache)
                print(f"{label:14} {run:7} {server.sent(image.name) - before:14,d} {seconds:8.1f}")


if __name__ == "__main__":
    main()
