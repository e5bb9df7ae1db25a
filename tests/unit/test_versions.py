"""Versioned volume names: templates, the build number, what retention removes, and the recipe's
[output] keys for them; no VM."""

from __future__ import annotations

import io
import os
from datetime import datetime

import libvirt
import pytest

from imagebuilder import versions
from imagebuilder.errors import BuildError
from imagebuilder.progress import Reporter
from imagebuilder.undo import Undo
from imagebuilder.deploy import retention
from imagebuilder.deploy.hosts import Host
from tests.unit import recipes

WHEN = datetime(2026, 11, 26, 3, 4, 5)
DIGEST = "sha256:" + "ab12" * 16


def test_render_fills_every_placeholder():
    name = versions.render("web-{date}-{time}-{digest}-{n}.qcow2", WHEN, DIGEST, 7)
    assert name == "web-20261126-030405-ab12ab12ab12-7.qcow2"


def test_matches_only_names_the_template_gives():
    template = "web-{date}-{n}.qcow2"
    assert versions.matches(template, "web-20261126-12.qcow2")
    assert not versions.matches(template, "web.qcow2")
    assert not versions.matches(template, "web-2026-1.qcow2")  # the date has eight digits
    assert not versions.matches(template, "web-20261126-1.qcow2.bak")
    assert versions.matches("a.b-{n}", "a.b-3") and not versions.matches("a.b-{n}", "aXb-3")  # dots are literal


@pytest.mark.parametrize("template, problem", [
    ("web-{build}.qcow2", "unknown placeholder {build}"),
    ("web-{n:03}.qcow2", "unknown placeholder {n}"),
    ("web-{n.qcow2", "unmatched brace"),
    ("web-}.qcow2", "unmatched brace"),
])
def test_bad_templates_are_named(template, problem):
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        versions.fields(template)


def test_plain_names_are_not_templates():
    assert not versions.is_template("web.qcow2")
    assert versions.is_template("web-{n}.qcow2")


def test_next_number_counts_past_every_recorded_version_deleted_or_not():
    history = [{"n": 1, "state": "deleted"}, {"n": 4, "state": "present"}, {"n": 2, "state": "present"}]
    assert versions.next_number(history) == 5
    assert versions.next_number([]) == 1


def test_beyond_keep_is_the_oldest_present_versions():
    history = [{"n": n, "state": "deleted" if n < 3 else "present"} for n in range(1, 8)]
    assert [e["n"] for e in versions.beyond_keep(history, 2)] == [3, 4, 5]
    assert versions.beyond_keep(history, 10) == []


def load(tmp_path, output):
    return recipes.load(tmp_path, f"[output]\n{output}")


def test_a_template_gets_the_default_alias_and_keep(tmp_path):
    out = load(tmp_path, 'volume = "web-{date}-{n}.qcow2"\nkeep = 3\n').output
    assert (out.volume, out.alias, out.keep, out.current) == ("web-{date}-{n}.qcow2", "web.qcow2", 3, "web.qcow2")


def test_an_alias_can_be_named_and_a_plain_volume_has_none(tmp_path):
    assert load(tmp_path, 'volume = "web-{n}.qcow2"\nalias = "web-latest.qcow2"\n').output.current == \
        "web-latest.qcow2"
    plain = load(tmp_path, 'volume = "web.qcow2"\n').output
    assert (plain.alias, plain.keep, plain.current) == (None, None, "web.qcow2")


def test_targets_inherit_the_template(tmp_path):
    out = load(tmp_path, 'volume = "web-{n}.qcow2"\n[[output.targets]]\nuri = "qemu+ssh://h/system"\n').output
    assert out.targets[0].volume == "web-{n}.qcow2"


class _Pool:
    """Stands for a libvirt pool here: the alias code only asks it to refresh."""

    def refresh(self, _flags):
        pass


def _undo():
    return Undo(Reporter("plain", io.StringIO()))


def test_a_failed_build_points_the_alias_back(tmp_path):
    (tmp_path / "web.qcow2").symlink_to("web-1.qcow2")
    undo = _undo()
    retention.point_alias(_Pool(), tmp_path, "web.qcow2", "web-2.qcow2", undo)
    assert os.readlink(tmp_path / "web.qcow2") == "web-2.qcow2"
    undo.finish(failed=True)
    assert os.readlink(tmp_path / "web.qcow2") == "web-1.qcow2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.qcow2"], "no temporary link left"


def test_an_image_under_the_alias_name_comes_back_if_the_build_fails(tmp_path):
    (tmp_path / "web.qcow2").write_bytes(b"an image of an older, unversioned build")
    failed = _undo()
    retention.point_alias(_Pool(), tmp_path, "web.qcow2", "web-1.qcow2", failed)
    assert os.readlink(tmp_path / "web.qcow2") == "web-1.qcow2"
    failed.finish(failed=True)
    assert (tmp_path / "web.qcow2").read_bytes() == b"an image of an older, unversioned build"

    succeeded = _undo()
    retention.point_alias(_Pool(), tmp_path, "web.qcow2", "web-1.qcow2", succeeded)
    succeeded.finish(failed=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.qcow2"], "the replaced image is gone"
    assert os.readlink(tmp_path / "web.qcow2") == "web-1.qcow2"


def test_an_image_under_the_alias_name_needs_force(tmp_path):
    (tmp_path / "web.qcow2").write_bytes(b"image")
    with pytest.raises(BuildError, match="is an image, not the alias"):
        retention.check_alias(tmp_path, "web.qcow2", "default at qemu:///system", force=False)
    retention.check_alias(tmp_path, "web.qcow2", "default at qemu:///system", force=True)
    with pytest.raises(BuildError, match="not a local directory pool"):
        retention.check_alias(None, "web.qcow2", "default at qemu+ssh://h/system", force=True)


def test_a_file_held_open_is_named_with_the_process(tmp_path):
    path = tmp_path / "web-1.qcow2"
    path.write_bytes(b"x")
    (tmp_path / "web.qcow2").symlink_to("web-1.qcow2")
    assert retention.held_open(str(path)) == []
    with open(tmp_path / "web.qcow2", "rb"):
        assert f"process {os.getpid()} (" in " ".join(retention.held_open(str(path)))


def test_the_plan_names_the_next_version_and_what_keep_would_delete():
    def at(host, volume, **more):
        return {"uri": f"qemu+ssh://{host}/system", "pool": "default", "volume": volume, **more}

    history = [{"n": 1, "state": "deleted", "volumes": [at("a", "web-1", deleted=True)]},
               {"n": 2, "state": "present", "volumes": [at("a", "web-2"), at("b", "web-2", deleted=True)]},
               {"n": 3, "state": "present", "volumes": [at("a", "web-3")]}]
    planned = versions.plan("web-{date}-{digest}-{n}", 2, history, WHEN)
    assert planned == {"next": "web-20261126-{digest}-4", "delete": [at("a", "web-2")]}
    assert versions.plan("web-{n}", None, history, WHEN)["delete"] == []


@pytest.fixture
def test_pool():
    """libvirt's own in-memory test driver: a real pool API without a daemon."""
    conn = libvirt.open("test:///default")
    pool = conn.storagePoolLookupByName("default-pool")
    yield pool
    for vol in pool.listAllVolumes():
        vol.delete(0)
    conn.close()


def _taken(pool, name):
    pool.createXML(f"<volume><name>{name}</name><capacity>1024</capacity></volume>", 0)


def test_a_taken_name_makes_the_build_number_count_on(test_pool):
    _taken(test_pool, "web-20261126-3.qcow2")
    host = Host("test:///default", "default-pool", "web-{date}-{n}.qcow2", define=False, main=True,
                pool=test_pool, template="web-{date}-{n}.qcow2")
    number = retention.choose_names([host], [{"n": 2, "state": "present"}], DIGEST, WHEN)
    assert (number, host.volume) == (4, "web-20261126-4.qcow2")


def test_a_taken_name_without_n_stops_the_build_with_a_hint(test_pool):
    _taken(test_pool, "web-20261126.qcow2")
    host = Host("test:///default", "default-pool", "web-{date}.qcow2", define=False, main=True,
                pool=test_pool, template="web-{date}.qcow2")
    with pytest.raises(BuildError, match="web-20261126.qcow2 already exists") as info:
        retention.choose_names([host], [], DIGEST, WHEN)
    assert "put {n} in the volume name template" in info.value.hint


def test_the_listing_is_newest_first_and_marks_what_the_alias_names():
    history = [{"n": 1, "built": "t1", "digest": DIGEST, "state": "present", "kept_because": ["web-1 is used by x"],
                "volumes": [{"volume": "web-1"}]},
               {"n": 2, "built": "t2", "digest": DIGEST, "state": "deleted", "volumes": [{"volume": "web-2",
                                                                                            "deleted": True}]},
               {"n": 3, "built": "t3", "digest": DIGEST, "state": "present",
                "volumes": [{"volume": "web-3"}, {"volume": "web-3"}]}]
    rows = versions.listing(history, "web-3")
    assert [(r["n"], r["alias"], r["volumes"], r["state"]) for r in rows] == [
        (3, True, ["web-3"], "present"), (2, False, [], "deleted"), (1, False, ["web-1"], "kept: web-1 is used by x")]
    assert rows[0]["digest"] == "ab12ab12ab12"


def test_the_held_version_is_neither_planned_for_deletion_nor_deleted():
    history = [{"n": 1, "state": "present", "volumes": [{"uri": "u", "pool": "p", "volume": "web-1"}]},
               {"n": 2, "state": "present", "volumes": [{"uri": "u", "pool": "p", "volume": "web-2"}]}]
    assert versions.plan("web-{n}", 1, history, WHEN, held=1)["delete"] == [{"uri": "u", "pool": "p",
                                                                             "volume": "web-2"}]
    said = io.StringIO()
    retention.prune(history[:1] + [{"n": 3, "state": "present", "volumes": []}], 1, lambda _u, _p: "web-{n}",
                    Reporter("plain", said), held=1)
    assert history[0]["state"] == "present" and "held" in history[0]["kept_because"][0]
    assert "kept version 1 beyond keep = 1: the alias is held at it" in said.getvalue()
    assert versions.listing(history, "web-1", held=1)[1]["held"]
