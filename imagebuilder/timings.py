"""Where a build's time goes: the phases inside its stages (launch, inspection, each step, sysprep,
SBOM reading, conversion, boot wait …), for the manifest, `build -v` and bench/profile.py.

A stage (preflight, fetch, prepare, customize, …) is timed by the Reporter; a phase is a named
part of one, timed here. Phases do not nest: each is a stretch of wall time inside the stage that
was running when it started, so their sum never exceeds the stage's time (the rest is `other`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Phases:
    """The phases of one build, in the order they ended."""

    records: list[dict[str, Any]] = field(default_factory=list)
    stage: str = "build"  # the stage now running (set by Reporter.stage)
    on_end: Callable[[dict[str, Any]], None] | None = None  # told of each phase as it ends (`build -v`)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase `name` of the current stage (recorded even when the block fails)."""
        start = time.monotonic()
        try:
            yield
        finally:
            record = {"stage": self.stage, "phase": name, "seconds": round(time.monotonic() - start, 3)}
            self.records.append(record)
            if self.on_end is not None:
                self.on_end(record)


def table(stages: dict[str, float], phases: list[dict[str, Any]]) -> list[str]:
    """Lines of a table: each stage with its seconds, its phases under it, and what the phases leave
    unaccounted (`other`); phases of the same name in a stage (several launches) are added up."""
    lines = [f"{'stage / phase':34} {'seconds':>8} {'share':>6}"]
    total = sum(stages.values()) or 1.0
    for stage, seconds in stages.items():
        lines.append(f"{stage:34} {seconds:8.1f} {seconds / total:6.1%}")
        summed: dict[str, float] = {}
        for record in phases:
            if record["stage"] == stage:
                summed[record["phase"]] = summed.get(record["phase"], 0.0) + record["seconds"]
        if not summed:
            continue
        for name, part in summed.items():
            lines.append(f"  {name:32} {part:8.1f} {part / total:6.1%}")
        rest = seconds - sum(summed.values())
        if rest >= 0.05:
            lines.append(f"  {'other':32} {rest:8.1f} {rest / total:6.1%}")
    lines.append(f"{'total':34} {sum(stages.values()):8.1f}")
    return lines
