"""Benchmark: cold build, no-change rebuild and last-step-changed rebuild of one recipe, in one run.

The recipe's first step installs packages (so it checkpoints by default); the last step sets the
host name, which the third build changes. Prints the three wall times and their ratios to the cold
build. Goals: no-change rebuild under 2 s and under 5 % of cold; last-step-changed under 40 %.

    .venv/bin/python bench/rebuild.py [--image PATH]
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

RECIPE = """[image]
name = "bench-rebuild"
[base]
path = "{image}"
[[steps]]
install = ["tree", "jq"]
[[steps]]
write = "/etc/motd:benchmark"
[[steps]]
hostname = "{hostname}"
[output]
path = "out/bench.qcow2"
"""


def timed_build(recipe: Path, cache: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagebuilder.cli", "build", str(recipe), "--cache-dir", str(cache)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    image = (parser.parse_args().image or newest_test_base()).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as scratch:
        work = Path(scratch)
        recipe, cache = work / "recipe.toml", work / "cache"
        recipe.write_text(RECIPE.format(image=image, hostname="one"))
        cold = timed_build(recipe, cache)
        unchanged = timed_build(recipe, cache)
        recipe.write_text(RECIPE.format(image=image, hostname="two"))
        last_step = timed_build(recipe, cache)
    print(f"{'build':28} {'seconds':>8} {'of cold':>8}")
    for label, seconds in (("cold", cold), ("no change", unchanged), ("last step changed", last_step)):
        print(f"{label:28} {seconds:8.1f} {seconds / cold:8.1%}")


if __name__ == "__main__":
    main()
