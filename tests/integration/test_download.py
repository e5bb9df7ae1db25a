"""URL sources against a real HTTP server on 127.0.0.1 serving real disk images made here."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import os
import subprocess

import pytest

from imagebuilder.cache import Cache
from imagebuilder.errors import SourceError
from imagebuilder.progress import Reporter
from imagebuilder.sources.url import Verification, fetch
from tests.integration.httpserver import FileServer
from tests.signing import make_key

pytestmark = pytest.mark.integration

MiB = 1 << 20


def digest(path, algo="sha256") -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 48 MiB ext4 disk image holding 6 MiB of random data, plain and compressed, with checksum files."""
    root = tmp_path_factory.mktemp("served")
    content = root / "content"
    content.mkdir()
    (content / "random.bin").write_bytes(os.urandom(6 * MiB))
    image = root / "disk.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(image), "48M"], check=True)
    subprocess.run(["xz", "-1", "-k", "-T2", str(image)], check=True)
    subprocess.run(["zstd", "-q", "-1", "-k", str(image)], check=True)
    (root / "disk.raw.gz").write_bytes(gzip.compress(image.read_bytes(), compresslevel=1))
    (root / "disk.raw.bz2").write_bytes(bz2.compress(image.read_bytes(), compresslevel=1))
    names = ["disk.raw", "disk.raw.xz", "disk.raw.zst", "disk.raw.gz", "disk.raw.bz2"]
    (root / "SHA256SUMS").write_text("".join(f"{digest(root / n)}  {n}\n" for n in names))
    (root / "SHA512SUMS").write_text("".join(f"SHA512 ({n}) = {digest(root / n, 'sha512')}\n" for n in names))
    with FileServer(root) as server:
        yield server, root, image


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache")


def quiet() -> Reporter:
    return Reporter(mode="plain", stream=io.StringIO())


def cache_files(cache: Cache) -> list[str]:
    return sorted(p.name for p in (cache.root / "images").glob("*")) if (cache.root / "images").exists() else []


def test_pinned_checksum_is_cached_and_costs_no_second_request(served, cache):
    server, root, image = served
    pinned = f"sha256:{digest(image)}"
    first = fetch(server.url("disk.raw"), pinned, cache, quiet())
    assert digest(first.path) == digest(image) and first.format == "raw"
    requests_before = len(server.log)
    second = fetch(server.url("disk.raw"), pinned, cache, quiet())
    assert second.path == first.path
    assert len(server.log) == requests_before


@pytest.mark.parametrize("name, sums", [("disk.raw.xz", "SHA256SUMS"), ("disk.raw.zst", "SHA512SUMS"),
                                        ("disk.raw.gz", "SHA256SUMS"), ("disk.raw.bz2", "SHA512SUMS")])
def test_compressed_image_verified_by_checksum_file(served, cache, name, sums):
    server, root, image = served
    base = fetch(server.url(name), Verification(checksum_url=sums), cache, quiet())
    assert digest(base.path) == digest(image)
    algo = "sha256" if sums == "SHA256SUMS" else "sha512"
    assert base.digest == f"{algo}:{digest(root / name, algo)}"
    assert os.stat(base.path).st_blocks * 512 < 20 * MiB, "zeros must stay holes"


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory, served):
    """A throwaway GPG key; SHA256SUMS.sig is its detached signature of SHA256SUMS."""
    _server, root, _image = served
    key = make_key(tmp_path_factory.mktemp("signer"))
    key.detach_sign(root / "SHA256SUMS", root / "SHA256SUMS.sig")
    (root / "TAMPERED").write_text((root / "SHA256SUMS").read_text().replace("disk.raw\n", "disk.raw \n"))
    return key.public


def test_signed_checksum_file(served, cache, signing_key):
    server, _root, image = served
    check = Verification(checksum_url="SHA256SUMS", signature_url="SHA256SUMS.sig", keyring=signing_key)
    base = fetch(server.url("disk.raw.xz"), check, cache, quiet())
    assert digest(base.path) == digest(image)


def test_bad_signature_is_fatal_and_caches_nothing(served, cache, signing_key):
    server, _root, _image = served
    check = Verification(checksum_url="TAMPERED", signature_url="SHA256SUMS.sig", keyring=signing_key)
    with pytest.raises(SourceError, match="signature of .*TAMPERED is not valid"):
        fetch(server.url("disk.raw.xz"), check, cache, quiet())
    assert cache_files(cache) == []


def test_checksum_mismatch_caches_nothing(served, cache):
    server, _root, image = served
    wrong = "sha256:" + "0" * 64
    with pytest.raises(SourceError, match="checksum mismatch"):
        fetch(server.url("disk.raw.zst"), wrong, cache, quiet())
    assert cache_files(cache) == []


def test_interrupted_download_resumes_with_range(served, cache):
    server, root, image = served
    server.log.clear()
    server.behaviour.cut_after["/disk.raw.xz"] = 3 * MiB
    base = fetch(server.url("disk.raw.xz"), Verification(checksum_url="SHA256SUMS"), cache, quiet())
    assert digest(base.path) == digest(image)
    image_requests = [r for r in server.log if r.path == "/disk.raw.xz"]
    assert [r.status for r in image_requests] == [200, 206]
    assert image_requests[1].range == f"bytes={3 * MiB}-"
    assert server.sent("disk.raw.xz") == (root / "disk.raw.xz").stat().st_size


def test_server_ignoring_range_restarts_cleanly(served, cache):
    server, root, image = served
    server.log.clear()
    server.behaviour.ignore_range = True
    server.behaviour.cut_after["/disk.raw.zst"] = 2 * MiB
    try:
        base = fetch(server.url("disk.raw.zst"), Verification(checksum_url="SHA256SUMS"), cache, quiet())
    finally:
        server.behaviour.ignore_range = False
    assert digest(base.path) == digest(image)
    image_requests = [r for r in server.log if r.path == "/disk.raw.zst"]
    assert [r.status for r in image_requests] == [200, 200]
    assert image_requests[1].range is not None
    assert server.sent("disk.raw.zst") == 2 * MiB + (root / "disk.raw.zst").stat().st_size


def test_unpinned_url_revalidates_with_304_and_no_body(served, cache):
    server, _root, image = served
    first = fetch(server.url("disk.raw"), None, cache, quiet())
    server.log.clear()
    second = fetch(server.url("disk.raw"), None, cache, quiet())
    assert second.path == first.path and second.digest == first.digest == f"sha256:{digest(image)}"
    assert [(r.status, r.sent) for r in server.log] == [(304, 0)]


def test_unreachable_server_is_a_source_error(cache):
    with pytest.raises(SourceError, match="failed after|cannot"):
        fetch("http://127.0.0.1:9/none.img", "sha256:" + "0" * 64, cache, quiet())
    assert cache_files(cache) == []


def test_imagebuilder_mirror_names_the_bootstrap_mirror(tmp_path):
    """$IMAGEBUILDER_MIRROR is the Debian mirror a bootstrap uses when the recipe names none: `plan`
    asks it (and only it) for the suite's Release file; a recipe's own mirror wins over it."""
    from tests.integration.conftest import run_cli
    mirror = tmp_path / "mirror"
    (mirror / "dists" / "bookworm").mkdir(parents=True)
    (mirror / "dists" / "bookworm" / "Release").write_text("Origin: Debian\nDate: Sun, 29 Nov 2026 00:00:00 UTC\n")
    recipe = tmp_path / "boot.toml"
    recipe.write_text('[image]\nname = "mirrored"\n[base.bootstrap]\nsuite = "bookworm"\n[output]\npath = "x.qcow2"\n')
    with FileServer(mirror) as server:
        env = {"IMAGEBUILDER_MIRROR": server.url("").rstrip("/")}
        proc = run_cli("plan", str(recipe), "--cache-dir", str(tmp_path / "cache"), env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert [entry.path for entry in server.log] == ["/dists/bookworm/Release"]
        recipe.write_text(recipe.read_text().replace('suite = "bookworm"\n',
                                                     f'suite = "bookworm"\nmirror = "{server.url("own")}"\n'))
        proc = run_cli("plan", str(recipe), "--cache-dir", str(tmp_path / "cache"), env=env, timeout=120)
        assert proc.returncode == 1 and "/own/dists/bookworm/Release" in proc.stderr  # its own, not served
        assert [entry.path for entry in server.log][-1] == "/own/dists/bookworm/Release"
