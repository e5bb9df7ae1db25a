"""Publishing and the shared cache without a VM: index entries, references, and a registry that is down."""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from imagebuilder import registry, sharedcache
from imagebuilder.cache import Cache
from imagebuilder.errors import InputError
from imagebuilder.progress import Reporter
from imagebuilder.publish import repo
from imagebuilder.recipe.model import RepoOutput, SharedCacheSettings
from imagebuilder.stages import Stage

INDEX = "# a repository\n[other]\nfile=other.xz\nrevision=4\n\n[web]\nfile=web-2.qcow2.xz\nrevision=2\narch=x86_64\nsize=1\n\n[last]\nfile=x\n"


def test_the_entry_is_replaced_and_the_others_stay_as_they_were():
    entry = repo.entry_text(RepoOutput(Path("/r"), "web"), {"file": "web-3.qcow2.xz", "revision": 3, "notes": "a\nb",
                                                           "expand": None})
    assert entry == "[web]\nfile=web-3.qcow2.xz\nrevision=3\nnotes=a\n b\n"
    text = repo.replace_entry(INDEX, "web", entry)
    assert text == INDEX.replace("[web]\nfile=web-2.qcow2.xz\nrevision=2\narch=x86_64\nsize=1\n", entry)
    assert repo.replace_entry("", "web", entry) == entry
    assert repo.replace_entry("[a]\nfile=x\n", "web", entry) == "[a]\nfile=x\n\n" + entry


def test_the_next_revision_follows_the_index():
    assert repo.previous(INDEX, "web") == (2, "web-2.qcow2.xz")
    assert repo.previous(INDEX, "new") == (0, None)


def test_references():
    assert registry.parse_reference("r.example:5000/a/b:1@sha256:" + "a" * 64).pinned == "r.example:5000/a/b@sha256:" + "a" * 64
    assert registry.parse_reference("r.example/a/b").pinned == "r.example/a/b:latest"
    for bad in ("ubuntu", "r.example/a/b:", "user:pw@r.example/a:1"):
        with pytest.raises(ValueError):
            registry.parse_reference(bad)
    assert registry.check_repository("docker://r.example/team/cache") == "r.example/team/cache"


def test_a_shared_cache_needs_the_shared_secret(tmp_path):
    recipe = SimpleNamespace(cache=SharedCacheSettings(sources=("r.example/c",)))
    options = SimpleNamespace(cache_from=(), cache_to=None, cache_secret_file=None)
    with pytest.raises(InputError, match="needs the key secret its machines share"):
        sharedcache.open_shared(recipe, options, Cache(tmp_path), Reporter("plain", io.StringIO()))
    (tmp_path / "short").write_text("abc")
    options.cache_secret_file = tmp_path / "short"
    with pytest.raises(InputError, match="shorter than 16 bytes"):
        sharedcache.open_shared(recipe, options, Cache(tmp_path), Reporter("plain", io.StringIO()))


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is installed by scripts/setup.sh")
def test_a_registry_that_cannot_be_reached_means_a_local_build_and_says_so(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = io.StringIO()
    shared = sharedcache.SharedCache([f"127.0.0.1:{port}/cache"], f"127.0.0.1:{port}/cache", b"s" * 32,
                                     Cache(tmp_path), Reporter("plain", out))
    stage = Stage("step 1 (hostname)", "ab" * 32, "x", checkpoint=True)
    shared.pull_checkpoint([stage], None)
    checkpoint = tmp_path / "stages" / f"{stage.key}.qcow2"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"image")
    shared.push(stage, "stages", checkpoint)
    assert not (tmp_path / "stages" / f"{stage.key}.qcow2.partial").exists()
    assert shared.record()["unreachable"] == [f"127.0.0.1:{port}/cache"]
    assert shared.pulled == shared.pushed == []
    assert out.getvalue().count("building locally") == 1, out.getvalue()


def test_the_ovf_envelope_describes_the_machine():
    import xml.etree.ElementTree as ET
    from imagebuilder.publish import ova
    from imagebuilder.recipe.model import Domain, Interface
    spec = Domain(name="web", memory=2 << 30, vcpus=4,
                  interfaces=(Interface(network="default"), Interface(bridge="br0", model="e1000")))
    root = ET.fromstring(ova.envelope("web", spec, {"distro": "debian"}, "web-disk1.vmdk", 123, 8 << 30))
    ns = "{http://schemas.dmtf.org/ovf/envelope/1}"
    assert [child.tag.removeprefix(ns) for child in root] == ["References", "DiskSection", "NetworkSection",
                                                              "VirtualSystem"]
    assert root.find(f"{ns}VirtualSystem/{ns}OperatingSystemSection").get(f"{ns}id") == "96"
    assert [n.get(f"{ns}name") for n in root.iter(f"{ns}Network")] == ["default", "br0"]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_containerdisk_layer_round_trips(tmp_path, compression):
    import tarfile
    from imagebuilder.publish import containerdisk
    from imagebuilder.sources import oci
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(bytes(range(256)) * 40000)
    with open(tmp_path / "layer", "wb") as out:
        digest, diff_id, size = containerdisk.write_layer(disk, "web.qcow2", out, compression)
    assert size == (tmp_path / "layer").stat().st_size and (digest == diff_id) == (compression == "none")
    media_type = containerdisk.LAYER_TYPES[compression]
    with open(tmp_path / "layer", "rb") as blob:
        assert oci._copy_disk(oci._decompressed(blob, media_type), tmp_path / "back") == "disk/web.qcow2"
    assert (tmp_path / "back").read_bytes() == disk.read_bytes()
    if compression == "gzip":
        with tarfile.open(tmp_path / "layer") as tar:
            assert [(m.name, m.uid, m.gid, m.mode, m.mtime) for m in tar] == [
                ("disk", 107, 107, 0o555, 0), ("disk/web.qcow2", 107, 107, 0o440, 0)]
