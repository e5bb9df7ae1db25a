"""The package cache across builds, for real: a rebuild after an early step changed downloads no package
the first build fetched, and neither image holds any of the cache.

The guest's apt goes through an HTTP proxy on the host's 127.0.0.1 that counts what it relays: the
appliance's user network (libguestfs runs qemu with `-netdev user,net=169.254.0.0/16`) reaches the
host's loopback at its gateway address, 169.254.2.2. The proxy setting is a plain recipe step.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse

import pytest

from imagebuilder.guest.pkgcache import MOUNT
from tests.integration.conftest import run_cli
from tests.integration.helpers import each_guest

pytestmark = pytest.mark.integration

HOST = "169.254.2.2"  # the host's 127.0.0.1 as the appliance sees it
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length"}

RECIPE = """
[image]
name = "pkgcache"

[base]
path = "{base}"

[sysprep]
enabled = false    # its package-manager-cache would hide a cache left in the image

[[steps]]
write = {{ path = "/etc/apt/apt.conf.d/01proxy", content = "Acquire::http::Proxy \\"http://{host}:{port}\\";\\n" }}
[[steps]]
write = "/etc/motd:{motd}"
[[steps]]
install = ["tree", "bc"]

[output]
path = "{output}"
"""


class CountingProxy(http.server.ThreadingHTTPServer):
    """A forward HTTP proxy on 127.0.0.1 (GET only, which is all apt asks) that records the path and the
    body bytes of every answer it relays."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.relayed: list[tuple[str, int]] = []
        self.port = self.server_address[1]

    def debs(self, since: int = 0) -> dict[str, int]:
        """The .deb files relayed (after the first `since` answers), with their bytes."""
        return {urllib.parse.unquote(path.rsplit("/", 1)[1]): sent for path, sent in self.relayed[since:]
                if path.endswith(".deb")}

    def __enter__(self) -> CountingProxy:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # apt keeps its connection and pipelines its requests

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        try:
            upstream.request("GET", url.path + (f"?{url.query}" if url.query else ""),
                             headers={k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP})
            answer = upstream.getresponse()
            body = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.relayed.append((url.path, len(body)))

    def log_message(self, *_args: object) -> None:
        pass


def _state(g) -> dict[str, object]:
    """What a mounted guest holds of the packages, the early step and the cache."""
    status = g.cat("/var/lib/dpkg/status")
    return {"installed": sorted(p for p in ("tree", "bc") if f"Package: {p}\nStatus: install ok installed" in status),
            "motd": g.cat("/etc/motd"),
            "cache": [*g.glob_expand("/var/cache/apt/archives/*.deb"), *g.glob_expand("/var/cache/apt/*.bin"),
                      *([MOUNT] if g.exists(MOUNT) else [])],
            "lists": bool(g.glob_expand("/var/lib/apt/lists/*_Packages"))}


def test_a_rebuild_after_an_early_change_downloads_no_package_again(tmp_path, base_image):
    cache, output = tmp_path / "cache", tmp_path / "out" / "pkgcache.qcow2"
    recipe, first_image = tmp_path / "pkgcache.toml", tmp_path / "first.qcow2"
    manifest = output.with_name("pkgcache.manifest.json")
    with CountingProxy() as proxy:
        def build(motd: str) -> dict[str, object]:
            recipe.write_text(RECIPE.format(base=base_image, host=HOST, port=proxy.port, motd=motd, output=output))
            proc = run_cli("build", str(recipe), "--cache-dir", str(cache))
            assert proc.returncode == 0, proc.stderr[-4000:]
            return json.loads(manifest.read_text())

        first = build("one")
        output.rename(first_image)
        fetched, after_first = proxy.debs(), len(proxy.relayed)
        second = build("two")
        again = proxy.debs(after_first)

    assert {name.split("_")[0] for name in fetched} >= {"tree", "bc"}, proxy.relayed
    assert first["package_cache"] == {"key": "debian~bookworm~x86_64", "reused": 0, "reused_bytes": 0,
                                      "fetched": len(fetched), "fetched_bytes": sum(fetched.values())}
    assert again == {}, "packages the first build fetched were downloaded again"
    assert second["package_cache"] == {"key": "debian~bookworm~x86_64", "reused": len(fetched),
                                       "reused_bytes": sum(fetched.values()), "fetched": 0, "fetched_bytes": 0}
    lists = [sum(n for path, n in part if not path.endswith(".deb"))
             for part in (proxy.relayed[:after_first], proxy.relayed[after_first:])]
    print(f"proxy relayed: build 1 {sum(fetched.values())} bytes of packages, {lists[0]} of lists; "
          f"build 2 {sum(again.values())} of packages, {lists[1]} of lists")

    states = each_guest((first_image, output), _state)
    for state, motd in zip(states, ("one", "two")):
        assert state == {"installed": ["bc", "tree"], "motd": motd, "cache": [], "lists": True}
    assert list((cache / "work").iterdir()) == [], "the scratch disks are gone"
    kept = [p.name for p in (cache / "packages" / "debian~bookworm~x86_64" / "archives").iterdir()]
    assert sorted(name.split("_")[0] for name in kept) == sorted(name.split("_")[0] for name in fetched)
