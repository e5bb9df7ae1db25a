"""A watchdog on the libguestfs appliance's boot: no console output for a while means a hang.

Under KVM on some hosts the appliance's kernel never runs: qemu spins at full CPU after
"Booting from ROM..." and launch() would wait for many minutes. With verbose on, libguestfs hands
every console line to an event callback; the watchdog arms once the appliance's qemu exists and
kills that qemu when the console stays silent for the bound, so launch() returns with an error.

Python runs a signal's handler at the next bytecode of the main thread, which during launch() may
be inside this callback, where libguestfs prints and drops the KeyboardInterrupt; session.py raises
the signal again once launch() returns (see AbortOnSignal.seen).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

BANNER = "Linux version"
log = logging.getLogger(__name__)


class LaunchWatch:
    """Use around launch(): register `watch.event` for the appliance and library events, then
    `with watch: g.launch()`. Afterwards `stalled` tells whether it fired, `banner` whether the
    appliance's kernel started, `last_words()` what its console showed last."""

    def __init__(self, seconds: float | None, console_event: int):
        self.seconds, self.console_event = seconds, console_event
        self.stalled = False
        self.banner = False
        self.lines: deque[str] = deque(maxlen=3)
        self._partial = ""
        self._continued = False  # the last line ended with a backslash
        self._qemu = False  # the console lines are qemu's (supermin's messages come before)
        self._last = time.monotonic()
        self._armed = False
        self._before = qemu_children()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def event(self, event: int, _handle: int, buf: str, _array: list) -> None:
        """libguestfs event callback: a piece of the appliance's console output (the appliance event),
        or one of libguestfs's own messages (logged for -v)."""
        if event != self.console_event:
            log.debug("libguestfs: %s", buf.rstrip())
            return
        self._last = time.monotonic()
        self._take(buf)

    def last_words(self) -> str:
        """The last line the console showed, for messages."""
        return self.lines[-1] if self.lines else "nothing"

    def __enter__(self) -> LaunchWatch:
        if self.seconds:
            self._thread = threading.Thread(target=self._watch, name="appliance-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        assert self.seconds is not None
        while not self._done.wait(timeout=min(1.0, self.seconds / 4)):
            ours = qemu_children() - self._before
            if not ours:  # supermin may still be building the appliance: nothing to watch yet
                self._last = time.monotonic()
                continue
            if not self._armed:
                self._armed, self._last = True, time.monotonic()
            if time.monotonic() - self._last > self.seconds:
                self.stalled = True
                for pid in ours:
                    _kill(pid)
                return

    def _take(self, buf: str) -> None:
        text = self._partial + buf
        *lines, self._partial = text.replace("\r", "\n").split("\n")
        self._partial = self._partial[-400:]
        for line in lines:
            line = "".join(c for c in line if c.isprintable()).strip()
            continued, self._continued = self._continued, line.endswith("\\")
            if continued and not self._continued:  # the end of the qemu command line libguestfs echoes:
                self._qemu = True                  # what follows is the appliance's console
            elif self._qemu and line:
                self.lines.append(line[:160])
                self.banner = self.banner or BANNER in line


def qemu_children() -> set[int]:
    """The pids of this process's children that are qemu."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in map(int, children):
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("qemu"):
                    found.add(pid)
            except OSError:
                continue
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
