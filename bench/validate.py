"""Benchmark: `imagebuilder validate` time against the number of steps, for recipes and commands files.

Writes a recipe of N `mkdir` steps, and a recipe whose one step is `commands_from_file` naming a
file of N `mkdir` commands, and times validating each in-process, best of three runs:
`recipe.load`, the call `imagebuilder validate` makes (the CLI's start-up, about 0.3 s, is left
out). Prints the seconds, the time per step and the time per step against the smallest size's: a
ratio that stays near 1 as N grows is linear growth. Goal: a recipe of 2,000 steps in under a second.

    .venv/bin/python bench/validate.py [--sizes 100,1000,2000,5000,10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagebuilder import recipe  # noqa: E402

HEAD = '[image]\nname = "bench-validate"\n[base.bootstrap]\n'


def write_inputs(work: Path, kind: str, steps: int) -> Path:
    """The recipe to validate: N steps of its own, or one commands file of N commands."""
    path = work / f"{kind}-{steps}.toml"
    if kind == "recipe":
        path.write_text(HEAD + "".join(f'[[steps]]\nmkdir = "/srv/d{i}"\n' for i in range(steps)))
    else:
        commands = work / f"{steps}.cmds"
        commands.write_text("".join(f"mkdir /srv/d{i}\n" for i in range(steps)))
        path.write_text(HEAD + f'[[steps]]\ncommands_from_file = "{commands.name}"\n')
    return path


def timed_load(path: Path, runs: int = 3) -> float:
    """The best of `runs` validations of the recipe at `path`, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        recipe.load(path)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,2000,5000,10000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
        timed_load(write_inputs(Path(scratch), "commands", 1))  # imports and caches warm, outside the table
        print(f"{'input':14} {'steps':>7} {'seconds':>9} {'ms/step':>8} {'per step vs first':>18}")
        for kind in ("recipe", "commands file"):
            first = None
            for steps in sizes:
                seconds = timed_load(write_inputs(Path(scratch), kind.split()[0], steps))
                per_step = seconds / steps
                first = first or per_step
                print(f"{kind:14} {steps:7,d} {seconds:9.3f} {per_step * 1000:8.3f} {per_step / first:17.1f}x")


if __name__ == "__main__":
    main()
