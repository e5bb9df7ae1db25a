"""Hosts where KVM looks usable but no guest runs under it (see hangkvm.py): the probe says so, and
when a wrong verdict is remembered, the boot watchdogs of the appliance and of the domain catch the
hang, the build finishes under TCG and says why, and the verdict is corrected."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from imagebuilder import accel
from imagebuilder.virt.connection import connect
from imagebuilder.virt.domain import remove_domain
from tests.integration import hangkvm
from tests.integration.conftest import remote_dir_pool, run_cli
from tests.integration.helpers import unique
from tests.integration.loopback import LoopbackLibvirtd, make_pool_dir

pytestmark = pytest.mark.integration

WATCHDOG = "15s"


@pytest.fixture(scope="module")
def spin_dirs():
    """Two directories qemu's user can read: one wrapper for this host, one for the loopback host."""
    dirs = [make_pool_dir("ibtest-hangkvm-") for _ in range(2)]
    yield dirs
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def hanging_qemu(spin_dirs):
    """A qemu for libguestfs ($LIBGUESTFS_HV) under which KVM hangs."""
    return hangkvm.make(spin_dirs[0])


@pytest.fixture(scope="module")
def hanging_host(spin_dirs):
    """A libvirt host (a loopback libvirtd) whose qemu offers KVM, under which no guest runs."""
    wrapper = hangkvm.make(spin_dirs[1], real=spin_dirs[1] / "qemu-real")
    with LoopbackLibvirtd(qemu=wrapper) as daemon:
        yield daemon.uri


@pytest.fixture(scope="module")
def hanging_conn(hanging_host):
    with connect(hanging_host) as conn:
        yield conn


@pytest.fixture
def hanging_pool(hanging_conn):
    yield from remote_dir_pool(hanging_conn)


def test_probe_boots_a_real_kernel_to_the_end_of_its_start_under_tcg():
    ok, why = accel.boot_kernel(accel.appliance_qemu(), accel.probe_kernel(), "tcg", "max", 180)
    assert ok, why


def test_probe_says_no_where_kvm_looks_usable_but_hangs(hanging_qemu, monkeypatch):
    assert os.access("/dev/kvm", os.R_OK | os.W_OK), "these hosts have /dev/kvm (see README's troubleshooting)"
    monkeypatch.setenv("LIBGUESTFS_HV", str(hanging_qemu))
    verdict = accel.probe(bound=10)
    assert verdict == accel.Verdict(False, "a Linux kernel under KVM with -cpu max printed nothing within 10s",
                                    verdict.seconds)


def test_build_where_kvm_hangs_finishes_under_tcg_and_says_why(echo_tiny, cache_dir, hanging_qemu, hanging_host,
                                                               hanging_conn, hanging_pool, tmp_path, monkeypatch):
    """A remembered verdict says KVM works; the appliance and the domain both hang under it. The tiny
    guest (customized by a real appliance, then booted: it prints OK) keeps the minutes on the hang."""
    state = tmp_path / "state"
    monkeypatch.setenv("LIBGUESTFS_HV", str(hanging_qemu))
    monkeypatch.setenv("IMAGEBUILDER_CACHE_DIR", str(state))
    accel._store(state / "accel.json", accel.LOCAL, {"key": accel._host_key(), "kvm": True,
                                                      "reason": "a wrong verdict", "seconds": 1.0})
    name = unique("hang")
    recipe = tmp_path / "hang.toml"
    recipe.write_text(f"""
[image]
name = "{name}"
[base]
path = "{echo_tiny}"
[[steps]]
write = "/etc/watchdog-test:survived"
[output]
uri = "{hanging_host}"
pool = "{hanging_pool.name()}"
volume = "{name}.qcow2"
[domain]
memory = "64M"
agent = false
network = "none"
wait = "serial:OK"
timeout = "10m"
""")
    manifest_path = tmp_path / "manifest.json"
    proc = run_cli("build", str(recipe), "--cache-dir", str(cache_dir), "--manifest", str(manifest_path),
                   env={"IMAGEBUILDER_BOOT_WATCHDOG": WATCHDOG, "IMAGEBUILDER_ACCEL": "auto"})
    try:
        assert proc.returncode == 0, proc.stderr
        err = proc.stderr
        assert "accelerator: kvm (a wrong verdict (remembered))" in err
        assert "the libguestfs appliance did not boot under KVM (its console showed nothing new for 15s" in err
        assert "trying again under TCG" in err and "KVM is marked unusable on this host" in err
        assert f"domain {name} showed nothing new on its serial console for 15s under KVM" in err
        assert f"KVM is marked unusable on {hanging_host}; starting {name} again under TCG" in err

        document = json.loads(manifest_path.read_text())
        assert document["accelerator"] == "tcg"
        assert "did not boot under KVM" in document["accelerator_reason"]
        assert document["domain"]["accelerator"] == "tcg"
        remembered = json.loads((state / "accel.json").read_text())
        assert remembered["local"]["kvm"] is False and "did not boot under KVM" in remembered["local"]["reason"]
        assert remembered[hanging_host]["kvm"] is False

        dom = hanging_conn.lookupByName(name)
        assert dom.isActive() and ET.fromstring(dom.XMLDesc(0)).get("type") == "qemu", "it runs, under TCG"
    finally:
        remove_domain(hanging_conn, name)
