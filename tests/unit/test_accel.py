"""Accelerator choice: an explicit choice wins, auto follows the probe's remembered verdict, and a
KVM hang found later (demote) overrides both. The probe itself boots real kernels: see
tests/integration/test_accel_probe.py."""

from __future__ import annotations

import json

import pytest

from imagebuilder import accel
from imagebuilder.errors import InputError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(accel.ENV_VAR, raising=False)
    monkeypatch.delenv(accel.WATCHDOG_VAR, raising=False)
    monkeypatch.setenv("IMAGEBUILDER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(accel, "_demoted", {})


def _probe_returns(monkeypatch, works: bool) -> list[int]:
    calls: list[int] = []

    def probe(*_args, **_kwargs):
        calls.append(1)
        return accel.Verdict(works, "kernel booted" if works else "kernel printed nothing within 20s", 1.0)

    monkeypatch.setattr(accel, "probe", probe)
    return calls


def test_explicit_choice_skips_the_probe(monkeypatch):
    calls = _probe_returns(monkeypatch, True)
    assert accel.decide("tcg") == ("tcg", "asked for (tcg)")
    assert accel.choose("KVM") == "kvm"
    assert calls == []


def test_environment_variable_forces_it(monkeypatch):
    monkeypatch.setenv(accel.ENV_VAR, "tcg")
    calls = _probe_returns(monkeypatch, True)
    assert accel.choose() == "tcg"
    assert calls == []


@pytest.mark.parametrize("works, expected", [(True, "kvm"), (False, "tcg")])
def test_auto_follows_the_probe_and_says_why(monkeypatch, works, expected):
    _probe_returns(monkeypatch, works)
    chosen, why = accel.decide("auto")
    assert chosen == expected
    assert why == ("kernel booted" if works else "kernel printed nothing within 20s")
    assert accel.choose() == expected


def test_verdict_is_kept_per_host_with_its_reason(monkeypatch, tmp_path):
    calls = _probe_returns(monkeypatch, False)
    cache_file = tmp_path / "accel.json"
    assert accel.host_verdict(cache_file).kvm is False
    again = accel.host_verdict(cache_file)
    assert again.kvm is False and again.reason.endswith("(remembered)")
    assert len(calls) == 1
    monkeypatch.setattr(accel, "_host_key", lambda: "another kernel")
    accel.host_verdict(cache_file)
    assert len(calls) == 2
    accel.host_verdict(cache_file, fresh=True)
    assert len(calls) == 3


def test_an_answer_of_the_old_probe_is_not_trusted(monkeypatch, tmp_path):
    """The boot-sector probe said yes where Linux hangs: its answers (an older format) are ignored."""
    calls = _probe_returns(monkeypatch, False)
    cache_file = tmp_path / "accel.json"
    cache_file.write_text(json.dumps({"key": "whatever", "kvm": True}))
    assert accel.host_verdict(cache_file).kvm is False
    assert len(calls) == 1


def test_demote_corrects_a_wrong_verdict_and_is_remembered(monkeypatch, tmp_path):
    calls = _probe_returns(monkeypatch, True)
    assert accel.choose("auto") == "kvm"
    accel.demote("the appliance's console showed nothing for 60s under KVM")
    assert accel.decide("auto") == ("tcg", "the appliance's console showed nothing for 60s under KVM")
    assert accel.choose("kvm") == "tcg"  # in this process, even when KVM was asked for
    assert accel.effective("kvm") == "tcg" and accel.effective("tcg") == "tcg"
    monkeypatch.setattr(accel, "_demoted", {})  # a later process
    verdict = accel.host_verdict()
    assert verdict.kvm is False and "showed nothing" in verdict.reason
    assert len(calls) == 1  # the correction stands in for a new probe


def test_a_remote_host_is_demoted_on_its_own(tmp_path):
    uri = "qemu+ssh://root@hv2/system"
    assert accel.remote_demoted(uri) is None
    accel.demote("domain boot hung under KVM", uri=uri)
    assert accel.remote_demoted(uri) == "domain boot hung under KVM"
    assert accel.effective("kvm") == "kvm"  # this host is not affected
    saved = json.loads((tmp_path / "accel.json").read_text())
    assert saved[uri]["kvm"] is False and "local" not in saved


@pytest.mark.parametrize("text, seconds", [("", accel.DEFAULT_WATCHDOG), ("45", 45), ("2m", 120), ("0", None)])
def test_watchdog_bound_is_settable(monkeypatch, text, seconds):
    monkeypatch.setenv(accel.WATCHDOG_VAR, text)
    assert accel.watchdog_seconds() == seconds


def test_watchdog_bound_must_be_a_duration(monkeypatch):
    monkeypatch.setenv(accel.WATCHDOG_VAR, "soon")
    with pytest.raises(InputError, match="IMAGEBUILDER_BOOT_WATCHDOG 'soon' is not a duration"):
        accel.watchdog_seconds()


def test_unknown_choice_is_bad_input():
    with pytest.raises(InputError, match="not one of auto, kvm, tcg"):
        accel.choose("hvf")


def test_no_kvm_device_needs_no_boot(monkeypatch):
    monkeypatch.setattr(accel.os, "access", lambda *_: False)
    monkeypatch.setattr(accel, "boot_kernel", lambda *_: pytest.fail("nothing to boot without /dev/kvm"))
    assert accel.probe() == accel.Verdict(False, "no usable /dev/kvm")


def test_probe_kernel_is_the_newest(monkeypatch, tmp_path):
    monkeypatch.delenv("SUPERMIN_KERNEL", raising=False)
    names = ["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-57-amd64", "vmlinuz-5.10.0-30-amd64"]
    assert max(names, key=accel._version_key) == "vmlinuz-6.1.0-57-amd64"
    monkeypatch.setenv("SUPERMIN_KERNEL", str(tmp_path / "k"))
    assert accel.probe_kernel() == tmp_path / "k"
