"""The guest's serial console through a libvirt stream: for `imagebuilder vm console` and for
waiting on console text where no log file can be read (remote hosts).

The stream is non-blocking and driven by libvirt's event loop (see connection.ensure_event_loop),
so the same code works for local and remote connections.
"""

from __future__ import annotations

import logging
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable

import libvirt

from imagebuilder.errors import VirtError

log = logging.getLogger(__name__)

ESCAPE = b"\x1d"  # Ctrl-], as in virsh and telnet
_EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
           | libvirt.VIR_STREAM_EVENT_HANGUP)


class ConsoleTap:
    """An open console stream: guest output goes to `sink` (from the event thread), `send` types."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                 sink: Callable[[bytes], None], force: bool = False):
        self.sink = sink
        self.closed = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()
        self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
            self.stream.eventAddCallback(_EVENTS, self._on_event, None)
        except libvirt.libvirtError as exc:
            self._abort()
            hint = None
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED:
                hint = "another client holds the console; --force takes it over"
            raise VirtError(f"cannot open the console of {dom.name()}: {exc.get_error_message()}",
                            hint=hint) from None

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(64 * 1024)
                except libvirt.libvirtError as exc:
                    self._end(f"console stream failed: {exc.get_error_message()}")
                    return
                if data == -2:  # nothing more for now
                    break
                if not data:
                    self._end("the console closed (the domain stopped?)")
                    return
                self.sink(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end("the console closed (the domain stopped?)")

    def _end(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()

    def send(self, data: bytes, timeout: float = 10.0) -> None:
        """Type `data` into the console; VirtError if the console has closed."""
        deadline = time.monotonic() + timeout
        while data:
            if self.closed.is_set():
                raise VirtError(self.reason)
            with self._lock:
                try:
                    sent = self.stream.send(data)
                except libvirt.libvirtError as exc:
                    raise VirtError(f"cannot write to the console: {exc.get_error_message()}") from None
            if sent == -2:
                if time.monotonic() > deadline:
                    raise VirtError("the console does not take input")
                time.sleep(0.01)
                continue
            data = data[sent:]

    def close(self) -> None:
        """Stop the callbacks and end the stream; errors are logged, not raised."""
        self._end("closed")
        try:
            self.stream.eventRemoveCallback()
        except libvirt.libvirtError as exc:
            log.debug("removing the console callback: %s", exc.get_error_message())
        try:
            self.stream.finish()
        except libvirt.libvirtError:
            self._abort()

    def _abort(self) -> None:
        try:
            self.stream.abort()
        except libvirt.libvirtError as exc:
            log.debug("aborting the console stream: %s", exc.get_error_message())

    def __enter__(self) -> ConsoleTap:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def attach(conn: libvirt.virConnect, dom: libvirt.virDomain, stdin_fd: int = 0, stdout_fd: int = 1,
           force: bool = False) -> str:
    """Connect the terminal (or any pair of file descriptors) to the console until Ctrl-] or EOF.

    Returns why it ended. At a terminal, input is passed raw (Ctrl-C goes to the guest).
    """
    def write_out(data: bytes) -> None:
        try:
            os.write(stdout_fd, data)
        except OSError:
            pass  # the reader went away; the loop below ends on its own

    saved = None
    if os.isatty(stdin_fd):
        saved = termios.tcgetattr(stdin_fd)
    with ConsoleTap(conn, dom, write_out, force=force) as tap:
        try:
            if saved is not None:
                tty.setraw(stdin_fd)
            return _pump(tap, stdin_fd)
        finally:
            if saved is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)


def _pump(tap: ConsoleTap, stdin_fd: int) -> str:
    while not tap.closed.is_set():
        ready, _, _ = select.select([stdin_fd], [], [], 0.2)
        if not ready:
            continue
        data = os.read(stdin_fd, 4096)
        if not data:
            return "end of input"
        head, escape, _ = data.partition(ESCAPE)
        if head:
            tap.send(head)
        if escape:
            return "escape"
    return tap.reason
