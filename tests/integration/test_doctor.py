"""`imagebuilder doctor` on this host: every check runs for real (the probe boots a kernel, the
appliance launches, libvirt answers); a libvirt that cannot be reached blocks, with exit 1."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import URI, run_cli

pytestmark = pytest.mark.integration

CHECKS = ["qemu", "accelerator", "libguestfs appliance", "UEFI firmware", "libvirt", "default pool",
          "default network", "mmdebstrap", "other architectures", "free space", "permissions"]


def test_doctor_finds_this_host_ready_and_says_which_accelerator_and_why(tmp_path):
    proc = run_cli("doctor", "--json", "--connect", URI, env={"IMAGEBUILDER_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    findings = {f["check"]: f for f in report["checks"]}
    assert report["ready"] is True and list(findings) == CHECKS
    assert findings["libvirt"]["status"] == "ok" and URI in findings["libvirt"]["detail"]
    assert findings["libguestfs appliance"]["status"] == "ok"
    assert findings["libguestfs appliance"]["detail"].startswith(("booted under TCG in ", "booted under KVM in "))
    accel = findings["accelerator"]
    assert accel["detail"].startswith(("KVM: a Linux kernel booted under KVM", "TCG: "))
    remembered = json.loads((tmp_path / "accel.json").read_text())["local"]
    assert accel["detail"].endswith(remembered["reason"])


def test_doctor_blocks_when_libvirt_cannot_be_reached(tmp_path):
    uri = f"qemu:///system?socket={tmp_path}/nobody-listens"
    proc = run_cli("doctor", "--connect", uri, env={"IMAGEBUILDER_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FAIL  libvirt: cannot connect to libvirt at {uri}: " in proc.stdout
    assert "hint: is libvirtd (or virtqemud) running" in proc.stdout
    assert proc.stdout.rstrip().endswith("not ready: fix what is marked FAIL")
