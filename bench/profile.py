"""Benchmark: where the demo's time goes, stage by stage and phase by phase (launch, inspection, each
step, sysprep, SBOM reading, conversion, boot wait …), as its build manifest records them.

Builds recipes/demo.toml under another name (so a demo of yours is left alone) into the `default`
pool, boots it until its guest agent answers, prints the table of `imagebuilder build -v`, then
removes the domain and its volumes. With --rebuild it then changes the demo's timezone step (the
second step, before the package install) and builds again with the same cache, printing that
build's table too: what a rebuild after an early change costs.

    .venv/bin/python bench/profile.py [--cache-dir DIR] [--rebuild]

Without --cache-dir the cache is a new empty directory, removed afterwards: the first build is a
new user's (bootstrap included). With it, the cache is kept, so a second run shows a warm cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cleanup import remove  # noqa: E402
from imagebuilder.timings import table  # noqa: E402


def demo_recipe(name: str, timezone: str | None = None) -> str:
    """recipes/demo.toml under another name (its volumes too), optionally with another timezone."""
    text = (ROOT / "recipes" / "demo.toml").read_text()
    text = re.sub(r'^name = "demo"$', f'name = "{name}"', text, flags=re.MULTILINE)
    text = text.replace('volume = "demo-{date}-{n}.qcow2"', f'volume = "{name}-{{date}}-{{n}}.qcow2"')
    if timezone:
        text = re.sub(r'^timezone = ".*"$', f'timezone = "{timezone}"', text, flags=re.MULTILINE)
    return text


def build(recipe: Path, cache: Path, manifest: Path) -> tuple[float, dict]:
    """One build through the command line; its wall time and its manifest."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagebuilder.cli", "build", str(recipe), "--cache-dir", str(cache),
                           "--manifest", str(manifest), "--force"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"the build failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(manifest.read_text())


def show(title: str, seconds: float, document: dict) -> None:
    print(f"\n{title}: {seconds:.1f} s wall ({document['accelerator']})")
    print("\n".join(table(document["timings"], document.get("phases", []))))
    downloaded = document.get("packages", {})
    if downloaded:
        print(f"package cache: {json.dumps(downloaded, sort_keys=True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="a cache to use and keep (default: a new empty one)")
    parser.add_argument("--rebuild", action="store_true", help="then change an early step and build again")
    options = parser.parse_args()
    name = f"ibprofile-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="ib-bench-profile-", dir="/var/tmp"))
    cache = options.cache_dir or work / "cache"
    try:
        recipe = work / "demo.toml"
        recipe.write_text(demo_recipe(name))
        show("demo build", *build(recipe, cache, work / "first.manifest.json"))
        if options.rebuild:
            recipe.write_text(demo_recipe(name, timezone="Europe/Berlin"))
            show("rebuild after the timezone step changed", *build(recipe, cache, work / "second.manifest.json"))
    finally:
        remove(name)
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
