"""The libguestfs handle: one appliance, errors turned into GuestError naming the call."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import guestfs

from imagebuilder.errors import GuestError

log = logging.getLogger(__name__)


class GuestSession:
    """A launched appliance with one disk attached; use as a context manager (shutdown, then close).

    Every guestfs call made through this object raises GuestError('NAME: message') on failure.
    """

    def __init__(self, disk: Path, fmt: str, accel: str, network: bool, readonly: bool = False,
                 more: tuple[Path, ...] = ()):
        self.disk, self.fmt, self.accel, self.network, self.readonly = disk, fmt, accel, network, readonly
        self.more = more  # further disks of the same format (/dev/sdb …): the clones of one launch
        self._g: Any = None
        self._abort: AbortOnSignal | None = None

    def __enter__(self) -> GuestSession:
        g = guestfs.GuestFS(python_return_dict=True)
        self._g = g
        self._abort = AbortOnSignal()  # a Ctrl-C or SIGTERM ends the appliance at once, even mid-call
        try:
            g.set_backend("direct")
            if self.accel == "tcg":
                g.set_backend_settings(["force_tcg"])
            g.set_network(self.network)
            for disk in (self.disk, *self.more):
                if self.readonly:
                    g.add_drive_opts(str(disk), format=self.fmt, readonly=True)
                else:
                    g.add_drive_opts(str(disk), format=self.fmt, cachemode="unsafe", discard="besteffort")
            log.debug("launching the libguestfs appliance (%s)", self.accel)
            g.launch()
        except RuntimeError as exc:
            self._close()
            raise GuestError(f"starting the libguestfs appliance failed: {exc}",
                             hint="run libguestfs-test-tool to see what is wrong") from None
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._g is None:
            return
        try:
            if exc_type is None:
                self._g.shutdown()
        except RuntimeError as err:
            self._close()
            raise GuestError(f"shutting down the appliance failed: {err}") from None
        self._close()

    def _close(self) -> None:
        g, self._g = self._g, None
        abort, self._abort = self._abort, None
        try:
            if g is not None:
                g.close()
        finally:
            if abort is not None:
                abort.stop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._g, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except RuntimeError as exc:
                raise GuestError(f"{name}: {exc}") from None

        return call


class AbortOnSignal:
    """While an appliance runs, SIGINT or SIGTERM kills its qemu at once.

    Python runs signal handlers between bytecodes only, never inside a libguestfs call: without this
    a Ctrl-C (or the SIGTERM of `systemctl stop`) would wait for the launch or for a long step such as
    an install to finish. A thread waits on the signal wakeup fd; on SIGINT or SIGTERM it kills the qemu
    children of this process, the libguestfs call under way returns with an error, and the signal's
    own exception (KeyboardInterrupt, Interrupted) then stops the build, which cleans up as usual.
    Inactive outside the main thread, or when something else owns the wakeup fd.
    """

    def __init__(self) -> None:
        self._read = self._write = -1
        self._thread: threading.Thread | None = None
        if threading.current_thread() is not threading.main_thread():
            return
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        if previous != -1:  # someone else's: give it back and stay out of the way
            signal.set_wakeup_fd(previous)
            self._close_pipe()
            return
        self._thread = threading.Thread(target=self._watch, name="appliance-abort", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while data := os.read(self._read, 64):
            if signal.SIGINT in data or signal.SIGTERM in data:
                _kill_qemu_children()
                return

    def stop(self) -> None:
        """Stop watching (the appliance is closed)."""
        if self._thread is None:
            return
        signal.set_wakeup_fd(-1)
        os.close(self._write)  # the watcher reads EOF and ends
        self._write = -1
        self._thread.join(timeout=5)
        self._thread = None
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._read, self._write):
            if fd != -1:
                os.close(fd)
        self._read = self._write = -1


def _kill_qemu_children() -> None:
    """SIGKILL this process's children that are qemu (the appliance); supermin and others are spared."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in map(int, children):
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("qemu"):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
