"""Undo actions for a build: temporary files always go, created objects go when the build fails."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from imagebuilder.progress import Reporter


class Undo:
    """A stack of clean-up actions, run newest first; a failing action is reported, not hidden."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self._temporary: list[tuple[str, Callable[[], object]]] = []
        self._created: list[tuple[str, Callable[[], object]]] = []

    def temporary(self, what: str, action: Callable[[], object]) -> None:
        """Register clean-up that runs at the end of every build, failed or not."""
        self._temporary.append((what, action))

    def created(self, what: str, action: Callable[[], object]) -> None:
        """Register removal of something this build created; runs only if the build fails."""
        self._created.append((what, action))

    def finish(self, failed: bool, keep_created: bool = False) -> None:
        """Run the temporary clean-ups, and on failure the removals (unless keep_created)."""
        actions = list(self._temporary)
        if failed and not keep_created:
            actions += self._created
        elif failed:
            for what, _ in self._created:
                self.reporter.info(f"kept after failure (--keep-on-failure): {what}")
        self._temporary, self._created = [], []
        with self._shielded():
            for what, action in reversed(actions):
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - every clean-up must get its turn
                    self.reporter.info(f"clean-up of {what} failed: {exc}")

    @contextmanager
    def _shielded(self) -> Iterator[None]:
        """Let a second Ctrl-C or SIGTERM not cut the clean-up short: it is noted, not raised."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        saved = {sig: handler for sig, handler in saved.items() if handler is not None}  # None: set outside Python

        def note(signum: int, _frame: object) -> None:
            self.reporter.info(f"{signal.Signals(signum).name} received during clean-up; finishing the clean-up first")

        for sig in saved:
            signal.signal(sig, note)
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
