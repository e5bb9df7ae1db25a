"""Benchmark: what emulation costs. One recipe built for this host's architecture and for aarch64, in
one run, each from an empty cache (so the bootstrap counts), booted until its guest agent answers:
seconds per stage and per phase for both, and the ratio of the foreign build to the native one.

The recipe is the one tests/integration/test_arm64.py builds: Debian 12 with the cloud kernel, a
package installed (hello) and a file written. Domains and volumes are removed afterwards.

    .venv/bin/python bench/arch.py [--only-foreign]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cleanup import remove  # noqa: E402

RECIPE = """[image]
name = "{name}"
arch = "{arch}"
[base.bootstrap]
suite = "bookworm"
kernel = "linux-image-cloud-{debian}"
[disk]
size = "2G"
[[steps]]
install = ["hello"]
[[steps]]
write = {{ path = "/etc/imagebuilder-arch", content = "{arch}\\n" }}
[output]
pool = "default"
[domain]
memory = "1G"
network = "none"
wait = "agent"
timeout = "15m"
"""
DEBIAN = {"x86_64": "amd64", "aarch64": "arm64"}


def build(arch: str, work: Path) -> tuple[float, dict]:
    """A cold build of the recipe for arch, deployed; its wall time and manifest."""
    name = f"bench-arch-{arch}"
    recipe, manifest, cache = work / f"{arch}.toml", work / f"{arch}.manifest.json", work / f"cache-{arch}"
    recipe.write_text(RECIPE.format(name=name, arch=arch, debian=DEBIAN[arch]))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagebuilder.cli", "build", str(recipe), "--cache-dir", str(cache),
                           "--manifest", str(manifest), "--force"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    remove(name)
    if proc.returncode != 0:
        sys.exit(f"the {arch} build failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(manifest.read_text())


def rows(document: dict) -> dict[str, float]:
    """Stage and phase seconds of a manifest: 'fetch', 'customize', 'customize / launch' …"""
    found = dict(document["timings"])
    for record in document.get("phases", []):
        key = f"{record['stage']} / {record['phase'].split(' (')[0]}"
        found[key] = found.get(key, 0.0) + record["seconds"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    native = platform.machine()
    with tempfile.TemporaryDirectory(prefix="bench-arch-", dir="/var/tmp") as scratch:
        work = Path(scratch)
        results = {arch: build(arch, work) for arch in (native, "aarch64" if native != "aarch64" else "x86_64")}
    (here, (here_wall, here_doc)), (there, (there_wall, there_doc)) = results.items()
    here_rows, there_rows = rows(here_doc), rows(there_doc)
    print(f"{'stage / phase':34} {here:>9} {there:>9} {'ratio':>7}   ({here_doc['accelerator']} here, "
          f"{there_doc['domain']['accelerator']} for {there})")
    for key in dict.fromkeys([*here_rows, *there_rows]):
        mine, theirs = here_rows.get(key, 0.0), there_rows.get(key, 0.0)
        ratio = f"{theirs / mine:6.1f}x" if mine >= 0.05 else "      -"
        label = key if " / " not in key else "  " + key.split(" / ", 1)[1]
        print(f"{label:34} {mine:9.1f} {theirs:9.1f} {ratio}")
    print(f"{'wall (command line)':34} {here_wall:9.1f} {there_wall:9.1f} {there_wall / here_wall:6.1f}x")


if __name__ == "__main__":
    main()
