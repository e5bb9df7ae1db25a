"""Versioned volume names: templates, the build number, what retention removes, and the recipe's
[output] keys for them; no VM."""

from __future__ import annotations

from datetime import datetime

import pytest

from imagebuilder import recipe, versions

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
    path = tmp_path / "recipe.toml"
    path.write_text(f'[image]\nname = "web"\n[base.bootstrap]\n[output]\n{output}')
    return recipe.load(path)


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
