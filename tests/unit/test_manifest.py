"""The manifest: equal input digests for equal inputs, and a list of what is not reproducible."""

from __future__ import annotations

from pathlib import Path

from imagebuilder import manifest, recipe
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


def make(tmp_path) -> dict:
    path = tmp_path / "recipe.toml"
    path.write_text(TEXT.format(digest="a" * 64))
    loaded = recipe.load(path)
    base = BaseImage(Path("/cache/x"), "disk", f"sha256:{'a' * 64}", loaded.base.url, "qcow2", 1 << 30)
    return manifest.make(loaded, base, "tcg", {}, [], None, {"fetch": 1.0})


def test_same_inputs_same_input_digests(tmp_path):
    (tmp_path / "app.conf").write_text("listen 80\n")
    first, second = make(tmp_path), make(tmp_path)
    for key in ("recipe", "base", "steps", "sysprep"):
        assert first[key] == second[key]
    assert first["steps"][0]["host_files"][0]["sha256"]


def test_what_is_not_reproducible_is_said(tmp_path):
    (tmp_path / "app.conf").write_text("listen 80\n")
    notes = make(tmp_path)["not_reproducible"]
    assert "built time and timings" in notes
    assert any(note.startswith("root_password: random") for note in notes)
