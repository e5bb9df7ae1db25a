"""Accelerator choice: an explicit choice wins, auto depends on the real probe."""

from __future__ import annotations

import pytest

from imagebuilder import accel
from imagebuilder.errors import InputError


def test_explicit_choice_skips_the_probe(monkeypatch):
    monkeypatch.setattr(accel, "kvm_works", lambda: pytest.fail("probe must not run"))
    assert accel.choose("tcg") == "tcg"
    assert accel.choose("KVM") == "kvm"


def test_environment_variable_forces_it(monkeypatch):
    monkeypatch.setenv(accel.ENV_VAR, "tcg")
    monkeypatch.setattr(accel, "kvm_works", lambda: pytest.fail("probe must not run"))
    assert accel.choose() == "tcg"


@pytest.mark.parametrize("works, expected", [(True, "kvm"), (False, "tcg")])
def test_auto_follows_the_probe(monkeypatch, tmp_path, works, expected):
    monkeypatch.delenv(accel.ENV_VAR, raising=False)
    monkeypatch.setenv("IMAGEBUILDER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(accel, "kvm_works", lambda: works)
    assert accel.choose("auto") == expected
    assert accel.choose() == expected


def test_probe_answer_is_kept_per_host(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(accel, "kvm_works", lambda: calls.append(1) or False)
    cache_file = tmp_path / "probe.json"
    assert accel.cached_probe(cache_file) is False
    assert accel.cached_probe(cache_file) is False
    assert len(calls) == 1
    monkeypatch.setattr(accel, "_host_key", lambda: "another kernel")
    accel.cached_probe(cache_file)
    assert len(calls) == 2


def test_unknown_choice_is_bad_input():
    with pytest.raises(InputError, match="not one of auto, kvm, tcg"):
        accel.choose("hvf")


def test_probe_sector_is_a_boot_sector():
    assert len(accel._PROBE_SECTOR) == 512 and accel._PROBE_SECTOR.endswith(b"\x55\xaa")
