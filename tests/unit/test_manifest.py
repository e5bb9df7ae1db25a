"""The manifest: equal input digests for equal inputs, a list of what is not reproducible, and the record
that round-trips through JSON with the keys it always had."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagebuilder import manifest, recipe
from imagebuilder.errors import InputError
from imagebuilder.manifest import Manifest
from imagebuilder.sources.base import BaseImage

TEXT = """[image]
name = "web"
[base]
url = "http://127.0.0.1:8000/base.qcow2"
checksum = "sha256:{digest}"
[[steps]]
upload = "app.conf:/etc/app.conf"
[[steps]]
root_password = {{ random = "root.pw" }}
"""


def make(tmp_path) -> Manifest:
    path = tmp_path / "recipe.toml"
    path.write_text(TEXT.format(digest="a" * 64))
    loaded = recipe.load(path)
    base = BaseImage(Path("/cache/x"), "disk", f"sha256:{'a' * 64}", loaded.base.url, "qcow2", 1 << 30)
    return manifest.make(loaded, base, "tcg", {}, [], None, {"fetch": 1.0})


def test_same_inputs_same_input_digests(tmp_path):
    (tmp_path / "app.conf").write_text("listen 80\n")
    first, second = make(tmp_path), make(tmp_path)
    for key in ("recipe", "base", "steps", "sysprep"):
        assert getattr(first, key) == getattr(second, key)
    assert first.steps[0]["host_files"][0]["sha256"]


def test_what_is_not_reproducible_is_said(tmp_path):
    (tmp_path / "app.conf").write_text("listen 80\n")
    notes = make(tmp_path).not_reproducible
    assert "built time and timings" in notes
    assert any(note.startswith("root_password: random") for note in notes)


# The keys a build wrote before the manifest had a version (read from manifest.make and pipeline.run then):
# those it always wrote, and those it wrote only when they applied.
ALWAYS = {"imagebuilder", "built", "recipe", "base", "accelerator", "os", "steps", "sysprep", "outputs", "domain",
          "timings", "not_reproducible", "accelerator_reason", "stages", "requested", "records", "phases"}
WHEN_SET = {"versions": [{"n": 1}], "held": 1, "shared_cache": {"from": [], "to": None}, "package_cache": {"key": "k"}}


def test_a_build_writes_the_keys_it_always_wrote_and_the_version(tmp_path):
    (tmp_path / "app.conf").write_text("listen 80\n")
    document = make(tmp_path)
    assert set(document.to_json()) == ALWAYS | {"schema", "arch"}  # arch: since images of other architectures
    assert document.arch == "x86_64"
    for key, value in WHEN_SET.items():
        setattr(document, key, value)
    assert set(document.to_json()) == ALWAYS | set(WHEN_SET) | {"schema", "arch"}
    assert document.to_json()["schema"] == manifest.SCHEMA == 1


def test_save_then_load_gives_the_same_manifest(tmp_path):
    (tmp_path / "app.conf").write_text("listen 80\n")
    document = make(tmp_path)
    document.versions, document.held = [{"n": 1, "volumes": ["web-1.qcow2"]}], 1
    document.save(tmp_path / "web.manifest.json")
    assert Manifest.load(tmp_path / "web.manifest.json") == document
    assert not list(tmp_path.glob("*.tmp"))


def test_a_manifest_from_before_the_version_loads_as_version_0_and_saves_with_its_keys(tmp_path):
    old = {key: None if key == "domain" else f"{key} value" if key in ("imagebuilder", "built", "accelerator",
                                                                        "accelerator_reason") else {} for key in ALWAYS}
    old.update(outputs=[{"type": "file", "path": "/x.qcow2"}], stages=[{"key": "k"}], a_newer_key={"kept": True})
    path = tmp_path / "old.manifest.json"
    path.write_text(json.dumps(old))
    loaded = Manifest.load(path)
    assert loaded.schema == 0 and loaded.outputs == old["outputs"] and loaded.extra == {"a_newer_key": {"kept": True}}
    loaded.save(path)
    assert json.loads(path.read_text()) == {**old, "schema": manifest.SCHEMA}


def test_missing_keys_take_their_defaults_and_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"stages": [{"key": "final"}]}')
    loaded = Manifest.load(path)
    assert (loaded.schema, loaded.outputs, loaded.versions, loaded.held, loaded.domain) == (0, [], [], None, None)
    path.write_text(json.dumps({"schema": manifest.SCHEMA + 1}))
    with pytest.raises(InputError, match="newer than this imagebuilder"):
        manifest.previous(path)
    path.write_text("[]")
    assert manifest.previous(path) is None and manifest.previous(tmp_path / "absent.json") is None
