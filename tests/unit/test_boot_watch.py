"""The pieces of the boot watchdogs that need no VM: a KVM domain made a TCG one (and still valid
for libvirt), the appliance console read line by line, and doctor's verdicts on space."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from imagebuilder import doctor
from imagebuilder.guest.launch import LaunchWatch
from imagebuilder.virt.boot import under_tcg
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml, validate_xml


@pytest.mark.parametrize("cpu", [None, "host-passthrough", "host-model", "maximum"])
def test_a_kvm_domain_made_a_tcg_one_stays_valid(cpu):
    spec = DomainSpec(name="web", memory_bytes=1 << 30, vcpus=2, disks=(DiskSpec("default", "web.qcow2"),),
                      accel="kvm", cpu=cpu)
    xml = under_tcg(domain_xml(spec))
    validate_xml(xml)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "maximum"
    assert root.find("devices/disk/source").get("volume") == "web.qcow2"


def test_a_tcg_domain_keeps_its_cpu_model():
    spec = DomainSpec(name="web", memory_bytes=1 << 30, vcpus=1, disks=(DiskSpec("default", "web.qcow2"),))
    root = ET.fromstring(under_tcg(domain_xml(spec)))
    assert root.get("type") == "qemu" and root.find("cpu") is None


CONSOLE, LIBRARY = 16, 32  # guestfs.EVENT_APPLIANCE, guestfs.EVENT_LIBRARY


def feed(watch: LaunchWatch, buf: str, array: list) -> None:
    """As libguestfs calls the callback: a console event, then one of its own messages."""
    watch.event(CONSOLE, 1, buf, array)
    watch.event(LIBRARY, 1, "libguestfs: a message of its own\n", [])
QEMU_STARTS = 'supermin: if-newer: output does not need rebuilding\n/usr/bin/qemu-system-x86_64 \\\n    -append "x"\n'


def test_launch_watch_reads_the_console_by_lines():
    watch = LaunchWatch(None, CONSOLE)
    for piece in (QEMU_STARTS, "\x1b[2JSeaBIOS (version 1.16)\r\nBooting from ", "ROM...\r\n[    0.000000] Linux ver",
                  "sion 6.1.0-57-amd64\r\n"):
        feed(watch, piece, [])
    assert watch.banner
    assert list(watch.lines)[-2:] == ["Booting from ROM...", "[    0.000000] Linux version 6.1.0-57-amd64"]


def test_launch_watch_without_the_kernel_banner():
    watch = LaunchWatch(None, CONSOLE)
    feed(watch, QEMU_STARTS, [])
    feed(watch, "SeaBIOS\r\nBooting from ROM...\r\n", [])
    assert not watch.banner and watch.last_words() == "Booting from ROM..."


@pytest.mark.parametrize("free, status", [(1 << 30, "fail"), (5 << 30, "warn"), (50 << 30, "ok")])
def test_doctor_space_thresholds(monkeypatch, tmp_path, free, status):
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(0, 0, free))
    finding = doctor.check_space(doctor.Context(None, tmp_path / "cache", pool_dir=tmp_path))
    assert finding.status == status
    assert f"cache {tmp_path / 'cache'}: {free / doctor.GiB:.1f} GiB free" in finding.detail


def test_doctor_blocks_only_on_failures():
    assert not doctor.blocking([doctor.Finding("a", "ok", ""), doctor.Finding("b", "warn", "")])
    assert doctor.blocking([doctor.Finding("a", "ok", ""), doctor.Finding("b", "fail", "")])


def test_launch_watch_skips_what_comes_before_qemu_and_its_command_line():
    watch = LaunchWatch(None, CONSOLE)
    feed(watch, QEMU_STARTS, [])
    assert watch.last_words() == "nothing"
    feed(watch, "SeaBIOS (version 1.16)\r\n", [])
    assert watch.last_words() == "SeaBIOS (version 1.16)"


def test_drive_labels_are_letters_only():
    from imagebuilder.guest.session import label
    assert [label("clone", n) for n in (1, 2, 26, 27, 52, 53)] == ["clonea", "cloneb", "clonez", "cloneaa", "cloneaz",
                                                                     "cloneba"]
