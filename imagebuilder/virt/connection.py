"""Opening a libvirt connection and telling whether it reaches this host."""

from __future__ import annotations

import logging
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


@contextmanager
def connect(uri: str) -> Iterator[libvirt.virConnect]:
    """Open a read-write connection to `uri` and close it when the block ends."""
    libvirt.registerErrorHandler(_log_libvirt_error, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HostError(
            f"cannot connect to libvirt at {uri}: {exc.get_error_message()}",
            hint=f"is libvirtd (or virtqemud) running, and may this user use it? "
                 f"`virsh -c {uri} list` tells",
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
