"""A TCP proxy on 127.0.0.1 that can hold what a client sends, for tests that must act while a
transfer is under way (a signal in the middle of an upload) without racing it."""

from __future__ import annotations

import socket
import threading

HOLD_LIMIT = 600  # seconds a held direction waits at most for the test to release it


class HoldingProxy:
    """Forwards 127.0.0.1:`port` to `target`; after `hold(n)`, once a connection has sent n more bytes
    towards the target, that direction stops (`held` is set) until `release` is set."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.held = threading.Event()
        self.release = threading.Event()
        self._hold_after: int | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False

    def hold(self, after: int) -> None:
        """Hold the next `after` bytes from now on, in any connection's client-to-target direction."""
        self.held.clear()
        self.release.clear()
        self._hold_after = after

    def __enter__(self) -> HoldingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed = True
        self.release.set()
        for sock in [self._listener, *self._sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while data := source.recv(64 << 10):
                if outbound and self._hold_after is not None:
                    self._hold_after -= len(data)
                    if self._hold_after <= 0:
                        self._hold_after = None
                        self.held.set()
                        self.release.wait(HOLD_LIMIT)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
