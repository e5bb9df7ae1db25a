"""The libguestfs handle: one appliance, watched while it boots, errors turned into GuestError naming the call."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import guestfs

from imagebuilder import accel as accelerator
from imagebuilder.arches import Arch
from imagebuilder.errors import GuestError, Interrupted
from imagebuilder.guest import emulation
from imagebuilder.guest.launch import LaunchWatch, qemu_children

log = logging.getLogger(__name__)


IMAGE = "image"  # the label of the disk being built; others are labelled too (clonea, cloneb, …)


def label(prefix: str, index: int) -> str:
    """A drive label for the index-th of several disks (from 1): libguestfs takes letters only."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


@dataclass(frozen=True)
class Drive:
    """A disk to attach. Its label names it inside the appliance too (/dev/disk/guestfs/LABEL), so
    programs run there reach the right disk whatever order the appliance's kernel found them in."""

    path: Path
    fmt: str
    label: str = IMAGE
    readonly: bool = False


class GuestSession:
    """A launched appliance with the drives attached; use as a context manager (shutdown, then close).

    Every guestfs call made through this object raises GuestError('NAME: message') on failure.
    The launch is watched (see launch.LaunchWatch); under KVM, a launch that hangs or dies before the
    appliance's kernel runs is tried again once under TCG, and KVM is marked unusable on this host.
    `accel` says afterwards what the appliance really ran under. With `emulate`, the guest's programs
    are of that (foreign) architecture and run through qemu-user (see emulation.py).
    """

    def __init__(self, drives: Drive | Sequence[Drive], accel: str, network: bool,
                 say: Callable[[str], None] | None = None, emulate: Arch | None = None):
        self.drives = (drives,) if isinstance(drives, Drive) else tuple(drives)
        self.accel, self.network, self.emulate = accel, network, emulate
        self.say = say or log.warning
        self._g: Any = None
        self._abort: AbortOnSignal | None = None
        self._devices: dict[str, str] = {}
        self._scratch = ExitStack()

    def __enter__(self) -> GuestSession:
        self._abort = AbortOnSignal()  # a Ctrl-C or SIGTERM ends the appliance at once, even mid-call
        try:
            if self.emulate is not None:
                archive = self._scratch.enter_context(emulation.emulator_drive(self.emulate,
                                                                               Path(tempfile.gettempdir())))
                self.drives += (Drive(archive, "raw", label=emulation.LABEL, readonly=True),)
            try:
                self._launch(accelerator.effective(self.accel))
            except _KvmLaunchFailed as failed:
                self.say(f"the libguestfs appliance did not boot under KVM ({failed}); trying again under TCG")
                self._launch("tcg")
                accelerator.demote(f"the libguestfs appliance did not boot under KVM: {failed}")
                self.say("KVM is marked unusable on this host; later builds use TCG (`imagebuilder doctor` "
                         "tells more)")
            if self.emulate is not None:
                emulation.enable(self, self.emulate)
        except BaseException:
            self._close()
            raise
        return self

    def _launch(self, accel: str) -> None:
        """Attach the drives and launch under accel, watched; GuestError (or _KvmLaunchFailed) if it fails."""
        g = self._g = guestfs.GuestFS(python_return_dict=True)
        watch = LaunchWatch(_bound(accel), guestfs.EVENT_APPLIANCE)
        try:
            g.set_backend("direct")
            if accel == "tcg":
                g.set_backend_settings(["force_tcg"])
            g.set_network(self.network)
            if self.emulate is not None:
                g.set_append(emulation.appliance_append(self.emulate, g.get_append()))
            for drive in self.drives:
                options = {"readonly": True} if drive.readonly else {"cachemode": "unsafe", "discard": "besteffort"}
                g.add_drive_opts(str(drive.path), format=drive.fmt, label=drive.label, **options)
            g.set_verbose(True)  # the console is what the watchdog watches; the callback keeps it off stderr
            handle = g.set_event_callback(watch.event, guestfs.EVENT_APPLIANCE | guestfs.EVENT_LIBRARY)
            log.debug("launching the libguestfs appliance (%s)", accel)
            with watch, _quiet_interrupts():
                g.launch()
        except RuntimeError as exc:
            self._close_handle()
            self._signal_again()
            first = (str(exc).strip().splitlines() or ["it failed"])[0]
            if watch.stalled:
                message = f"its console showed nothing new for {watch.seconds:.0f}s (last: {watch.last_words()!r})"
            else:
                message = f"{first}; last on its console: {watch.last_words()!r}"
            if accel == "kvm" and (watch.stalled or not watch.banner):
                raise _KvmLaunchFailed(message) from None
            raise GuestError(f"starting the libguestfs appliance failed: {message}",
                             hint="run libguestfs-test-tool to see what is wrong") from None
        self._signal_again()
        g.set_verbose(False)
        # The appliance, started verbose, goes on logging to its console; without a callback libguestfs
        # would print that on stderr. Not a Python function, where a signal's exception would be lost
        # (see launch.py): "".format takes any arguments and does nothing.
        g.delete_event_callback(handle)
        g.set_event_callback("".format, guestfs.EVENT_APPLIANCE | guestfs.EVENT_LIBRARY)
        self.accel = accel

    def _signal_again(self) -> None:
        """Deliver again a SIGINT or SIGTERM that came during launch(): its exception may have been
        raised inside the event callback, where libguestfs drops it."""
        if self._abort is not None and self._abort.seen is not None:
            signal.raise_signal(self._abort.seen)

    def device(self, label: str = IMAGE) -> str:
        """The API name (/dev/sdX) of the disk with this label."""
        if not self._devices:
            self._devices = self.list_disk_labels()
        return self._devices[label]

    def kernel_device(self, label: str = IMAGE) -> str:
        """The appliance kernel's own name of the disk with this label, for programs run in the guest
        (libguestfs translates device names for its API calls only). Needs a mounted root with readlink."""
        return self.command(["readlink", "-f", f"/dev/disk/guestfs/{label}"]).strip()

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

    def _close_handle(self) -> None:
        g, self._g = self._g, None
        if g is not None:
            g.close()

    def _close(self) -> None:
        abort, self._abort = self._abort, None
        try:
            self._close_handle()
        finally:
            self._scratch.close()
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


@contextmanager
def _quiet_interrupts() -> Iterator[None]:
    """While launch() runs, a signal's exception raised in the event callback is printed by libguestfs
    through sys.excepthook: keep that quiet (the signal is delivered again afterwards)."""
    previous = sys.excepthook

    def hook(kind, value, trace) -> None:  # noqa: ANN001
        if not issubclass(kind, (KeyboardInterrupt, Interrupted)):
            previous(kind, value, trace)

    sys.excepthook = hook
    try:
        yield
    finally:
        sys.excepthook = previous


def _bound(accel: str) -> float | None:
    """How long the appliance's console may stay silent while it boots: the watchdog's bound under KVM;
    under TCG, where nothing is left to fall back to, four times that (TCG is slow, never stuck)."""
    seconds = accelerator.watchdog_seconds()
    return seconds if accel == "kvm" or seconds is None else seconds * 4


class _KvmLaunchFailed(Exception):
    """The appliance hung, or died before its kernel ran, under KVM: worth a try under TCG."""


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
        self.seen: signal.Signals | None = None  # the signal that came
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
            for sig in (signal.SIGINT, signal.SIGTERM):
                if sig in data:
                    self.seen = sig
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
    for pid in qemu_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
