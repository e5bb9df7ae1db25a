"""A build that is not up to date asks about its base once: the check and the fetch share what identifying
it found (no second checksum file, index, Release file or conditional request)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from contextlib import ExitStack

import pytest

from imagebuilder import disk, manifest, pipeline, recipe
from imagebuilder.progress import Reporter
from imagebuilder.sources import bootstrap
from imagebuilder.undo import Undo
from tests.integration.httpserver import FileServer


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A small image and its SHA256SUMS over HTTP on 127.0.0.1 (probed without qemu-img); yields
    (server, the image's bytes)."""
    monkeypatch.setattr(disk, "probe", lambda path: ("raw", path.stat().st_size))  # no qemu-img in unit tests
    root = tmp_path / "served"
    root.mkdir()
    data = os.urandom(4096)
    (root / "disk.img").write_bytes(data)
    (root / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  disk.img\n")
    with FileServer(root) as server:
        yield server, data


def rebuilt(tmp_path, base: str) -> tuple[recipe.Recipe, pipeline.BuildOptions]:
    """A recipe with this [base], and options naming an earlier manifest that holds another result."""
    path = tmp_path / "recipe.toml"
    path.write_text(f'[image]\nname = "web"\n\n[base]\n{base}\n\n[output]\npath = "out.qcow2"\n')
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"stages": [{"name": "base", "key": "another result", "own": "another base"}]}))
    return recipe.load(path), pipeline.BuildOptions(cache_dir=tmp_path / "cache", manifest_path=earlier)


def not_current(tmp_path, base: str, reporter: Reporter) -> pipeline._Build:
    """A build whose check has identified the base and found the build not up to date."""
    loaded, options = rebuilt(tmp_path, base)
    job = pipeline._Build(loaded, options, reporter, Undo(reporter), ExitStack())
    assert job.current(manifest.previous(options.manifest_path)) is None
    return job


def quiet() -> Reporter:
    return Reporter("plain", io.StringIO())


def test_url_base_reads_its_checksum_file_once(tmp_path, served):
    server, data = served
    job = not_current(tmp_path, f'url = "{server.url("disk.img")}"\nchecksum_url = "SHA256SUMS"', quiet())
    assert job.fetch().digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert [r.path for r in server.log] == ["/SHA256SUMS", "/disk.img"]


def test_unpinned_url_base_asks_the_server_once(tmp_path, served):
    server, data = served
    base = f'url = "{server.url("disk.img")}"\nchecksum = "none"'
    not_current(tmp_path, base, quiet()).fetch()  # the image is in the cache, with its ETag
    server.log.clear()
    said = io.StringIO()
    again = not_current(tmp_path, base, Reporter("plain", said))
    assert again.fetch().digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert [(r.path, r.status) for r in server.log] == [("/disk.img", 304)]
    assert said.getvalue().count("disk.img is unchanged upstream (304)") == 1


def test_template_base_reads_the_index_once_and_says_so_once(tmp_path, served):
    server, data = served
    (tmp_path / "served" / "index").write_text(
        f"[tiny]\narch=x86_64\nfile=disk.img\nchecksum[sha512]={hashlib.sha512(data).hexdigest()}\n"
        f"format=raw\nsize={len(data)}\n")
    said = io.StringIO()
    job = not_current(tmp_path, f'template = "tiny"\nrepo = "{server.url("index")}"', Reporter("plain", said))
    assert job.fetch().source == f"template:tiny@x86_64 {server.url('disk.img')}"
    assert [r.path for r in server.log] == ["/index", "/disk.img"]
    assert said.getvalue().count("template tiny (x86_64") == 1
    assert said.getvalue().count("its index is not verified") == 1


def test_bootstrap_base_reads_the_release_file_once(tmp_path, served, monkeypatch):
    server, _data = served
    (tmp_path / "served" / "dists" / "bookworm").mkdir(parents=True)
    (tmp_path / "served" / "dists" / "bookworm" / "Release").write_text("Date: Sat, 08 Nov 2025 10:00:00 UTC\n")

    def mmdebstrap(argv, **_kwargs):
        if argv[1:] == ["--version"]:
            return subprocess.CompletedProcess(argv, 0, "mmdebstrap 1.5.7\n", "")
        open(argv[-2], "wb").close()  # the target tarball
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(bootstrap, "run", mmdebstrap)
    job = not_current(tmp_path, f'[base.bootstrap]\nmirror = "{server.url("")}"', quiet())
    assert job.fetch().kind == "rootfs"
    assert [r.path for r in server.log] == ["/dists/bookworm/Release"]


def test_local_base_is_described_by_the_digest_the_check_found(tmp_path, served):
    _server, data = served
    job = not_current(tmp_path, f'path = "{tmp_path / "served" / "disk.img"}"', quiet())
    assert job.fetch().digest == f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_plan_identifies_the_base_without_downloading_it(tmp_path, served):
    server, _data = served
    loaded, options = rebuilt(tmp_path, f'url = "{server.url("disk.img")}"\nchecksum_url = "SHA256SUMS"')
    planned = pipeline.plan(loaded, options, quiet())
    assert (planned["up_to_date"], planned["reason"]) == (False, "an input changed")
    base = planned["stages"][0]
    assert (base["name"], base["status"], base["why"]) == ("base", "will run", "its inputs changed")
    assert [r.path for r in server.log] == ["/SHA256SUMS"]
