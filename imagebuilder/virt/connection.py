"""Opening a libvirt connection and telling whether it reaches this host."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import libvirt

from imagebuilder.errors import HostError

log = logging.getLogger(__name__)


def _log_libvirt_error(_ctx: object, error: list) -> None:
    # Every libvirtError still reaches its caller; this only stops libvirt's default handler
    # from printing each one to stderr (a poll of a booting guest's agent fails many times).
    log.debug("libvirt: %s", error[2])


_events_lock = threading.Lock()
_events_running = False


def _run_events() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.warning("libvirt event loop iteration failed")
            time.sleep(0.1)


def ensure_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread, once per process.

    Connections opened afterwards get keepalive (a dead remote host is noticed instead of hanging)
    and can deliver stream events (the console). It must run before the connection is opened.
    """
    global _events_running
    with _events_lock:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_events, name="libvirt-events", daemon=True).start()
        _events_running = True


@contextmanager
def connect(uri: str | None) -> Iterator[libvirt.virConnect]:
    """Open a read-write connection to `uri` and close it when the block ends.

    `uri=None` lets libvirt choose as virsh does: $LIBVIRT_DEFAULT_URI, then its configured default.
    """
    libvirt.registerErrorHandler(_log_libvirt_error, None)
    ensure_event_loop()
    shown = uri or os.environ.get("LIBVIRT_DEFAULT_URI") or "libvirt's default URI"
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        check = f"virsh -c {uri} list" if uri else "virsh list"
        raise HostError(
            f"cannot connect to libvirt at {shown}: {exc.get_error_message()}",
            hint=f"is libvirtd (or virtqemud) running, and may this user use it? `{check}` tells",
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def is_local(conn: libvirt.virConnect) -> bool:
    """True if the connection's driver runs on this host, so pool paths are our paths."""
    parts = urlsplit(conn.getURI())
    driver = parts.scheme.split("+", 1)[0]
    return not parts.hostname and driver != "test"
