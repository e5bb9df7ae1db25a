"""The libguestfs handle: one appliance, errors turned into GuestError naming the call."""

from __future__ import annotations

import logging
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

    def __init__(self, disk: Path, fmt: str, accel: str, network: bool, readonly: bool = False):
        self.disk, self.fmt, self.accel, self.network, self.readonly = disk, fmt, accel, network, readonly
        self._g: Any = None

    def __enter__(self) -> GuestSession:
        g = guestfs.GuestFS(python_return_dict=True)
        self._g = g
        try:
            g.set_backend("direct")
            if self.accel == "tcg":
                g.set_backend_settings(["force_tcg"])
            g.set_network(self.network)
            if self.readonly:
                g.add_drive_opts(str(self.disk), format=self.fmt, readonly=True)
            else:
                g.add_drive_opts(str(self.disk), format=self.fmt, cachemode="unsafe", discard="besteffort")
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
        if g is not None:
            g.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._g, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except RuntimeError as exc:
                raise GuestError(f"{name}: {exc}") from None

        return call
