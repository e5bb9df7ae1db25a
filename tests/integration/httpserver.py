"""A small HTTP file server on 127.0.0.1 for download tests.

It supports Range (unless told to ignore it), ETag/Last-Modified validators with 304 answers,
can cut a response off after some bytes or hold it there until the test says go, and records every request with the body bytes it sent
(before answering it, so that a client that has its answer finds the request in the log).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 64 << 10
HOLD_LIMIT = 600  # seconds a held response waits at most for the test to release it


@dataclass
class Served:
    """What the server did for one request."""

    path: str
    status: int
    range: str | None
    sent: int


@dataclass
class Behaviour:
    """Knobs a test turns."""

    ignore_range: bool = False
    cut_after: dict[str, int] = field(default_factory=dict)   # path -> bytes, applies once
    delay: float = 0.0                                         # seconds to pause after each 64 KiB sent
    hold_after: dict[str, int] = field(default_factory=dict)   # path -> bytes: then wait for `release`
    held: threading.Event = field(default_factory=threading.Event)      # set once a response is held
    release: threading.Event = field(default_factory=threading.Event)   # set by the test to go on

    def hold(self, path: str, after: int) -> None:
        """Hold the next response for path after `after` body bytes, until `release` is set."""
        self.held.clear()
        self.release.clear()
        self.hold_after[path] = after


class FileServer:
    """Serves `root`; use as a context manager; `url(name)` gives a file's URL."""

    def __init__(self, root: Path):
        self.root = root
        self.log: list[Served] = []
        self.behaviour = Behaviour()
        self.sending: dict[str, int] = {}  # path -> body bytes sent so far, finished requests or not
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def sent(self, name: str) -> int:
        """Body bytes sent for a path over all requests."""
        return sum(r.sent for r in self.log if r.path == f"/{name}")

    def _handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        path = self.root / request.path.lstrip("/")
        if not path.is_file():
            self.log.append(Served(request.path, 404, None, 0))
            request.send_error(404)
            return
        stat = path.stat()
        etag = '"' + hashlib.sha256(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()[:16] + '"'
        modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        wanted = request.headers.get("Range")
        if request.headers.get("If-None-Match") == etag:
            self.log.append(Served(request.path, 304, wanted, 0))
            request.send_response(304)
            request.send_header("ETag", etag)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        start = 0
        match = re.match(r"bytes=(\d+)-$", wanted or "")
        if match and not self.behaviour.ignore_range:
            start = int(match.group(1))
        size = stat.st_size
        served = Served(request.path, 206 if start else 200, wanted, 0)
        self.log.append(served)
        request.send_response(served.status)
        if start:
            request.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        if not self.behaviour.ignore_range:
            request.send_header("Accept-Ranges", "bytes")
        request.send_header("Content-Length", str(size - start))
        request.send_header("ETag", etag)
        request.send_header("Last-Modified", modified)
        request.end_headers()
        limit = self.behaviour.cut_after.pop(request.path, None)
        hold = self.behaviour.hold_after.pop(request.path, None)
        with open(path, "rb") as handle:
            handle.seek(start)
            while chunk := handle.read(CHUNK):
                if limit is not None and served.sent + len(chunk) > limit:
                    chunk = chunk[: limit - served.sent]
                try:
                    request.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                served.sent += len(chunk)
                self.sending[request.path] = self.sending.get(request.path, 0) + len(chunk)
                if self.behaviour.delay:
                    time.sleep(self.behaviour.delay)
                if hold is not None and served.sent >= hold:
                    hold = None
                    self.behaviour.held.set()
                    self.behaviour.release.wait(HOLD_LIMIT)
                if limit is not None and served.sent >= limit:
                    request.close_connection = True
                    break
