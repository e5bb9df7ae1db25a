"""Progress reporting: a bar at a terminal, plain lines otherwise, JSON lines with --json."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TextIO

from imagebuilder.timings import Phases


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Reporter:
    """Tells the user what the build is doing; `mode` is 'tty', 'plain' or 'json'."""

    def __init__(self, mode: str | None = None, stream: TextIO | None = None, verbose: bool = False):
        self.stream = stream or sys.stderr
        if mode is None:
            mode = "tty" if self.stream.isatty() else "plain"
        self.mode = mode
        self.timings: dict[str, float] = {}
        self.phases = Phases(on_end=self._phase_done if verbose else None)

    def event(self, kind: str, **fields: object) -> None:
        """Emit one event: a JSON line in json mode, a readable line otherwise."""
        if self.mode == "json":
            print(json.dumps({"event": kind, **fields}, sort_keys=True), file=sys.stdout, flush=True)
            return
        text = fields.get("message") or " ".join(f"{k}={v}" for k, v in fields.items())
        prefix = f"[{fields['stage']}] " if "stage" in fields and kind != "stage" else ""
        print(f"{prefix}{text}", file=self.stream, flush=True)

    def info(self, message: str, **fields: object) -> None:
        """A line of information."""
        self.event("info", message=message, **fields)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a pipeline stage and announce its start and end."""
        start = time.monotonic()
        self.event("stage", stage=name, state="start", message=f"==> {name}")
        outer, self.phases.stage = self.phases.stage, name
        try:
            yield
        finally:
            self.phases.stage = outer
            self.timings[name] = round(time.monotonic() - start, 3)
        self.event("stage", stage=name, state="done", seconds=self.timings[name],
                   message=f"    {name} done in {self.timings[name]:.1f}s")

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Time a part of the current stage (launch, a step, the boot wait …): see timings.py."""
        return self.phases.phase(name)

    def _phase_done(self, record: dict[str, object]) -> None:
        self.event("phase", stage=record["stage"], phase=record["phase"], seconds=record["seconds"],
                   message=f"time: {record['phase']} {record['seconds']:.1f}s")

    def transfer(self, what: str, total: int | None) -> Transfer:
        """A progress counter for a byte stream (download, upload, conversion)."""
        return Transfer(self, what, total)


class Transfer:
    """Counts bytes of one transfer and renders them at a sensible rate."""

    def __init__(self, reporter: Reporter, what: str, total: int | None):
        self.reporter, self.what, self.total = reporter, what, total
        self.done = 0
        self.start = self._last = time.monotonic()
        self._last_fraction = -1.0

    def advance(self, nbytes: int) -> None:
        """Add nbytes to the count."""
        self.set(self.done + nbytes)

    def set(self, done: int) -> None:
        """Set the count to done bytes."""
        self.done = done
        now = time.monotonic()
        mode = self.reporter.mode
        interval = 0.2 if mode == "tty" else 5.0
        if now - self._last < interval:
            return
        self._last = now
        self._render(final=False)

    def finish(self) -> None:
        """Render the final state."""
        self._render(final=True)

    def _render(self, final: bool) -> None:
        rep, elapsed = self.reporter, max(time.monotonic() - self.start, 1e-6)
        rate = self.done / elapsed
        if rep.mode == "json":
            rep.event("progress", what=self.what, done=self.done, total=self.total, final=final)
            return
        if self.total:
            frac = min(self.done / self.total, 1.0)
            size = f"{_human(self.done)}/{_human(self.total)}"
        else:
            frac, size = None, _human(self.done)
        if rep.mode == "tty":
            bar = ""
            if frac is not None:
                filled = int(frac * 30)
                bar = "[" + "#" * filled + "-" * (30 - filled) + f"] {frac:4.0%} "
            end = "\n" if final else "\r"
            rep.stream.write(f"\r    {self.what}: {bar}{size} {_human(rate)}/s\x1b[K{end}")
            rep.stream.flush()
        else:
            pct = f" {frac:.0%}" if frac is not None else ""
            print(f"    {self.what}:{pct} {size} ({_human(rate)}/s)", file=rep.stream, flush=True)
