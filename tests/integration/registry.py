"""A container registry on 127.0.0.1 for the tests: Debian's docker-registry (the CNCF distribution
registry) on a free port, storing into a temp dir, with a user and password (htpasswd, bcrypt) that
reach skopeo only through an auth file ($REGISTRY_AUTH_FILE), and a registries.conf that marks it
plain HTTP. Its access log tells what crossed the wire (blob uploads and downloads, with sizes).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

USER = "ibtest"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<size>\d+)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRegistry:
    """`with LocalRegistry() as reg:`; reg.host is 127.0.0.1:PORT, reg.env the environment skopeo needs."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="ibtest-registry-"))
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(18)
        self.proc: subprocess.Popen | None = None
        auth = self.workdir / "auth.json"
        token = base64.b64encode(f"{USER}:{self.password}".encode()).decode()
        auth.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        auth.chmod(0o600)
        conf = self.workdir / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{self.host}"\ninsecure = true\n')
        self.env = {"REGISTRY_AUTH_FILE": str(auth), "CONTAINERS_REGISTRIES_CONF": str(conf)}

    def start(self, timeout: float = 60.0) -> None:
        """Start the registry and wait until it answers (401 without credentials); RuntimeError if it does not."""
        if shutil.which("docker-registry") is None:
            raise RuntimeError("docker-registry is not installed (scripts/setup.sh installs it)")
        htpasswd = self.workdir / "htpasswd"
        htpasswd.write_text(f"{USER}:{crypt.crypt(self.password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: {secrets.token_hex(16)}\n"
            f"auth:\n  htpasswd:\n    realm: ibtest\n    path: {htpasswd}\n")
        with open(self.workdir / "registry.log", "wb") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}: {self.log()[-1500:]}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=5)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry does not answer at {self.host}: {self.log()[-1500:]}")
            time.sleep(0.2)

    def log(self) -> str:
        """What the registry wrote: its access log among the rest."""
        return (self.workdir / "registry.log").read_text(errors="replace")

    def requests(self) -> list[dict]:
        """Every request the access log shows: method, path, status and body bytes sent back."""
        return [{**m.groupdict(), "size": int(m["size"])} for m in _ACCESS.finditer(self.log())]

    def stop(self) -> None:
        """Stop the registry and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
