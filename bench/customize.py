"""Benchmark: the same 10-operation customization through imagebuilder and through virt-customize.

Both start from the same base image and make a new, customized image from it, cold (a new
libguestfs appliance each, nothing cached but the appliance itself and the base image in the page
cache, which both get), under the same accelerator (TCG unless --accel kvm):

* imagebuilder: `imagebuilder convert bench/customize.cmds --base BASE`, then
  `imagebuilder build RECIPE -o OUT.qcow2 --no-cache` (prepare = qemu-img convert of the base,
  customize, manifest; sysprep is off in a converted recipe, as virt-customize does none);
* virt-customize: `cp BASE OUT.qcow2`, then `virt-customize -a OUT.qcow2 --commands-from-file
  bench/customize.cmds` (with LIBGUESTFS_BACKEND_SETTINGS=force_tcg under TCG).

It prints the wall time of each (and of virt-customize without its copy) and the ratio
imagebuilder / virt-customize; the goal is at most 1.1. The commands need no network, so
imagebuilder leaves the appliance network off while virt-customize turns it on by default, as
users run it; `--no-network` passes virt-customize that option too.

    .venv/bin/python bench/customize.py [--base IMAGE.qcow2] [--rounds N] [--no-network]

Without --base it takes the newest Debian 12 base image the integration tests made
(/var/tmp/imagebuilder-tests/base-*.qcow2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseimage import newest_test_base

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ROOT / "bench" / "customize.cmds"
FILES = {
    "motd": "Built for the customize benchmark.\n",
    "id.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k bench@imagebuilder\n",
}


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def warm(path: Path) -> None:
    """Read the base once, so that neither tool pays for the first read from disk."""
    with open(path, "rb") as handle:
        while handle.read(8 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="a qcow2 Linux image (default: the test base image)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tool, alternating (default 1)")
    parser.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    parser.add_argument("--no-network", action="store_true", help="give virt-customize --no-network as well")
    options = parser.parse_args()
    base = (options.base or newest_test_base()).resolve()
    operations = [ln for ln in COMMANDS.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    work = Path(tempfile.mkdtemp(prefix="ib-bench-customize-", dir="/var/tmp"))
    try:
        for name, content in FILES.items():
            (work / name).write_text(content)
        shutil.copy(COMMANDS, work / "customize.cmds")
        python = sys.executable
        env = {**os.environ, "PYTHONPATH": str(ROOT), "IMAGEBUILDER_ACCEL": options.accel}
        if options.accel == "tcg":
            env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        recipe = subprocess.run([python, "-m", "imagebuilder.cli", "convert", "customize.cmds", "--base", str(base),
                                 "--name", "bench"], cwd=work, env=env, capture_output=True, text=True, check=True)
        (work / "bench.toml").write_text(recipe.stdout)
        warm(base)

        ours, theirs, theirs_alone = [], [], []
        for round_ in range(options.rounds):
            out = work / "ib.qcow2"
            out.unlink(missing_ok=True)
            ours.append(timed([python, "-m", "imagebuilder.cli", "build", "bench.toml", "-o", str(out),
                               "--cache-dir", str(work / "cache"), "--manifest", str(work / "bench.manifest.json"),
                               "--force", "--no-cache"], work, env))
            out.unlink()

            copy = work / "vc.qcow2"
            start = time.monotonic()
            shutil.copyfile(base, copy)
            copied = time.monotonic() - start
            argv = ["virt-customize", "-q", "-a", str(copy), "--commands-from-file", "customize.cmds"]
            if options.no_network:
                argv.insert(1, "--no-network")
            alone = timed(argv, work, env)
            theirs_alone.append(alone)
            theirs.append(copied + alone)
            copy.unlink()
            print(f"round {round_ + 1}: imagebuilder {ours[-1]:.1f}s, virt-customize {alone:.1f}s "
                  f"(+{copied:.1f}s for the copy)", flush=True)
    finally:
        shutil.rmtree(work)

    ib, vc, vc_alone = (statistics.median(x) for x in (ours, theirs, theirs_alone))
    print(f"\n{len(operations)} operations on {base.name} ({options.accel}, "
          f"virt-customize network {'off' if options.no_network else 'on (its default)'}), "
          f"median of {options.rounds} round(s):")
    print(f"  imagebuilder convert + build -o     {ib:6.1f} s")
    print(f"  cp + virt-customize                 {vc:6.1f} s")
    print(f"  virt-customize alone (no copy)      {vc_alone:6.1f} s")
    print(f"  ratio imagebuilder / virt-customize {ib / vc:6.2f}   (goal <= 1.10)")
    print(f"  ratio against virt-customize alone  {ib / vc_alone:6.2f}")


if __name__ == "__main__":
    main()
