"""Unit tests first, then heaviest modules first. Each test module's time in a recorded run of the whole suite is kept in
tests/module-times.json; sorting the modules by it, with `--dist loadfile` handing whole modules to
the workers in that order, is longest-processing-time-first scheduling: the two workers end close
together instead of one running the demo alone at the end, and a module's fixtures are set up on
one worker only. Tests inside a module, and modules of equal weight, keep pytest-randomly's order.
The unit tests (a minute of one core in all) go before everything: on a cold machine they fill the
minutes in which the workers would wait for the session's images (tests/integration/images.py),
whose bootstraps leave a core idle while they download.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

TIMES = Path(__file__).with_name("module-times.json")


def module_of(nodeid: str) -> str:
    """The module part of a test id: `tests/unit/test_x.py::test_y` -> `tests/unit/test_x.py`."""
    return nodeid.split("::", 1)[0]


def load(path: Path = TIMES) -> dict[str, float]:
    """Recorded seconds per module; empty when none were recorded."""
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}


def heaviest_first(items: list[pytest.Item], seconds: dict[str, float]) -> None:
    """Reorder items, in place and stably: unit test modules first, then by their module's recorded
    time, longest first."""
    items.sort(key=lambda item: (not item.nodeid.startswith("tests/unit/"), -seconds.get(module_of(item.nodeid), 0.0)))


class Recorder:
    """Adds up setup, call and teardown per module and merges the sums into a times file at the end."""

    def __init__(self, path: Path = TIMES) -> None:
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[module_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        merged = load(self.path) | {module: round(s, 1) for module, s in self.seconds.items()}
        ordered = dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))
        self.path.write_text(json.dumps(ordered, indent=1) + "\n")
