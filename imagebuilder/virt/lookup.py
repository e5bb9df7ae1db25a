"""Looking things up in libvirt when "there is none" is an answer: only libvirt's "not found" error
codes mean absent; any other failure (a lost connection, a permission) tells nothing, so it is an
error, never taken for "absent"."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

import libvirt

from imagebuilder.errors import VirtError

T = TypeVar("T")

NO_DOMAIN = (libvirt.VIR_ERR_NO_DOMAIN,)
NO_POOL = (libvirt.VIR_ERR_NO_STORAGE_POOL,)
NO_VOLUME = (libvirt.VIR_ERR_NO_STORAGE_VOL,)
NO_NETWORK = (libvirt.VIR_ERR_NO_NETWORK,)


def virt_error(what: str, exc: libvirt.libvirtError) -> VirtError:
    """`what` failed, with libvirt's message, and a hint when the connection to libvirt was lost."""
    hint = None
    if exc.get_error_domain() == libvirt.VIR_FROM_RPC or exc.get_error_code() in (
            libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN):
        hint = "the connection to libvirt was lost: is libvirtd still running there? Then build again"
    return VirtError(f"{what}: {exc.get_error_message()}", hint=hint)


def lookup_or_none(fn: Callable[[str], T], name: str, not_found_codes: Collection[int], what: str) -> T | None:
    """`fn(name)`, or None when libvirt answers with one of `not_found_codes`; VirtError naming the
    `what` (domain, storage pool, …) and `name` for any other libvirt error."""
    try:
        return fn(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in not_found_codes:
            return None
        raise virt_error(f"cannot look up {what} {name}", exc) from None
