"""Which records go to which pushed image, under which media type (the registry side is in
tests/integration/test_publish.py)."""

from __future__ import annotations

from pathlib import Path

from imagebuilder.ocilayout import Descriptor
from imagebuilder.progress import Reporter
from imagebuilder.publish import containerdisk
from imagebuilder.publish.elsewhere import Elsewhere
from imagebuilder.undo import Undo


def _reporter(tmp_path: Path) -> Reporter:
    return Reporter("plain", stream=open(tmp_path / "log", "w"))


def test_each_pushed_image_gets_the_sboms_and_the_provenance_as_referrers(monkeypatch, tmp_path):
    calls = []

    def attach(repo, subject, files, scratch):
        calls.append((repo, subject, [(f.path.name, f.media_type) for f in files]))
        return [f"sha256:{len(calls):064x}"]

    monkeypatch.setattr(containerdisk, "attach", attach)
    outputs = [{"type": "file", "path": "/x.qcow2"},
               {"type": "oci", "ref": "127.0.0.1:5000/golden/web:1", "digest": "sha256:" + "a" * 64, "size": 612}]
    written = {"packages": 3, "spdx": {"path": str(tmp_path / "web.spdx.json"), "sha256": "b" * 64},
               "cyclonedx": {"path": str(tmp_path / "web.cdx.json"), "sha256": "c" * 64},
               "provenance": {"path": str(tmp_path / "web.intoto.jsonl"), "sha256": "d" * 64}}
    reporter = _reporter(tmp_path)
    undo = Undo(reporter)
    Elsewhere.attach_records(outputs, written, tmp_path, undo, reporter)
    assert calls == [("127.0.0.1:5000/golden/web",
                      Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 612),
                      [("web.spdx.json", "application/spdx+json"), ("web.cdx.json", "application/vnd.cyclonedx+json"),
                       ("web.intoto.jsonl", "application/vnd.in-toto.provenance+dsse")])]
    assert outputs[1]["referrers"] == ["sha256:" + "1".zfill(64)] and "referrers" not in outputs[0]
    assert "attached web.spdx.json, web.cdx.json, web.intoto.jsonl to 127.0.0.1:5000/golden/web:1" in \
        (tmp_path / "log").read_text()


def test_an_unsigned_build_attaches_its_sboms_only_and_nothing_without_a_push(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(containerdisk, "attach", lambda repo, subject, files, scratch: seen.append(files) or [])
    written = {"spdx": {"path": str(tmp_path / "a.spdx.json")}, "cyclonedx": {"path": str(tmp_path / "a.cdx.json")}}
    reporter = _reporter(tmp_path)
    Elsewhere.attach_records([{"type": "file"}], written, tmp_path, Undo(reporter), reporter)
    assert seen == []
    Elsewhere.attach_records([{"type": "oci", "ref": "r.example/a:1", "digest": "sha256:" + "e" * 64, "size": 1}],
                             written, tmp_path, Undo(reporter), reporter)
    assert [[f.media_type for f in files] for files in seen] == [["application/spdx+json",
                                                                  "application/vnd.cyclonedx+json"]]
