"""Whether an earlier build's outputs hold this build's result, and why not; no VM."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from imagebuilder import pipeline
from imagebuilder.manifest import Manifest
from imagebuilder.progress import Reporter
from imagebuilder.rebuild import why_not_current
from imagebuilder.undo import Undo
from tests.unit import recipes

REQUESTED = {"file": None, "volumes": [["qemu:///system", "default", "web-{n}.qcow2"]], "domain": "web",
             "domain_settings": "aaaa"}


def earlier(tmp_path: Path, **changes) -> dict:
    (tmp_path / "web-3.qcow2").write_bytes(b"image")
    (tmp_path / "web.qcow2").symlink_to("web-3.qcow2")
    document = {"stages": [{"key": "final"}], "requested": dict(REQUESTED), "domain": {"name": "web"},
                "outputs": [{"type": "volume", "uri": "qemu:///system", "pool": "default", "volume": "web-3.qcow2",
                             "path": str(tmp_path / "web-3.qcow2"), "alias": "web.qcow2"}]}
    document.update(changes)
    return document


def reason(document, requested=REQUESTED, volume=True, domain=True):
    return why_not_current(Manifest.from_json(document), "final", requested, lambda _o: volume, lambda _d: domain)


def test_nothing_changed_means_up_to_date(tmp_path):
    assert reason(earlier(tmp_path)) is None


@pytest.mark.parametrize("requested, volume, domain, expected", [
    ({**REQUESTED, "domain_settings": "bbbb"}, True, True, "the [domain] settings changed"),
    ({**REQUESTED, "domain": "db"}, True, True, "the outputs asked for changed"),
    (REQUESTED, False, True, "volume default/web-3.qcow2 is gone"),
    (REQUESTED, True, False, "the domain is gone"),
])
def test_each_reason_to_build_is_named(tmp_path, requested, volume, domain, expected):
    assert reason(earlier(tmp_path), requested, volume, domain) == expected


def test_a_moved_alias_is_a_reason_unless_the_manifest_holds_it_there(tmp_path):
    document = earlier(tmp_path)
    os.remove(tmp_path / "web.qcow2")
    (tmp_path / "web.qcow2").symlink_to("web-1.qcow2")
    assert reason(document) == "the alias default/web.qcow2 no longer names web-3.qcow2"
    document["outputs"][0]["alias_names"] = "web-1.qcow2"
    assert reason(document) is None


def _job(tmp_path, text):
    return pipeline._Build(recipes.load(tmp_path, text), pipeline.BuildOptions(cache_dir=tmp_path / "cache"),
                           Reporter("plain"), Undo(Reporter("plain")), ExitStack())


def test_a_changed_domain_is_rebuilt_but_replaces_its_own_outputs_without_force(tmp_path):
    before = _job(tmp_path, '[domain]\nmemory = "1G"\n')
    after = _job(tmp_path, '[domain]\nmemory = "2G"\n')
    assert before.requested()["domain_settings"] != after.requested()["domain_settings"]
    assert after.replaces_own(Manifest(requested=before.requested()))
    assert not _job(tmp_path, '[domain]\nname = "other"\n').replaces_own(Manifest(requested=before.requested()))
