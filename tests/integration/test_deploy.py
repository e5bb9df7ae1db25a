"""Deploying to the host's libvirtd (qemu:///system): clean failure at define, start and wait,
readiness by serial text, SSH and guest agent, and the `imagebuilder vm` commands.

The builds run the real pipeline in-process with the appliance stage stubbed out (see
virt_helpers.build_without_appliance), so a failure test costs a second, not an appliance launch.
One test boots the session's Debian image; the others boot a 512-byte serial echo guest.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

from imagebuilder.errors import BuildError, VirtError
from imagebuilder.virt.console import ConsoleTap
from imagebuilder.virt.domain import define, domain_exists, remove_by_uuid, remove_domain
from imagebuilder.virt.domainxml import OSINFO_NS, DiskSpec, DomainSpec, domain_xml
from imagebuilder.virt.wait import SerialLog, agent_exec, wait_for_agent, wait_for_serial
from tests.integration.conftest import ROOT, run_cli
from tests.integration.helpers import unique
from tests.integration.virt_helpers import (build_without_appliance, echo_image, echo_recipe_text, forget_logs,
                                            volume_names)

pytestmark = pytest.mark.integration

URI = "qemu:///system"


@pytest.fixture
def echo_recipe(tmp_path, conn, pool):
    """(write(domain_keys) -> recipe file, name): a recipe whose image is the serial echo guest."""
    name = unique("echo")
    image = echo_image(tmp_path / "echo.img")

    def write(domain_keys: str) -> object:
        path = tmp_path / "echo.toml"
        path.write_text(echo_recipe_text(name, image, pool.name(), domain_keys))
        return path

    try:
        yield write, name
    finally:
        remove_domain(conn, name)
        forget_logs(name)


def assert_nothing_left(conn, pool, pool_dir, name):
    assert volume_names(pool) == set()
    assert os.listdir(pool_dir) == []  # no temporary image either
    assert not domain_exists(conn, name)


# clean failure


def test_failure_at_define_removes_the_volume_and_spares_a_namesake(monkeypatch, conn, pool, pool_dir, echo_recipe):
    write, name = echo_recipe
    recipe_file = write('network = "none"\nwait = "none"')
    namesake = str(uuidlib.uuid4())

    def someone_else_defines_the_name():  # between our pre-flight check and our define
        define(conn, domain_xml(DomainSpec(name=name, memory_bytes=64 << 20, vcpus=1, uuid=namesake,
                                           disks=(DiskSpec(pool.name(), "theirs.raw", "raw"),))))

    try:
        with pytest.raises(VirtError, match=f"cannot define the domain: .*'{name}' already exists") as caught:
            build_without_appliance(monkeypatch, recipe_file, on_customize=someone_else_defines_the_name)
        assert f"volume: {pool.name()}/{name}.raw at qemu:///system" in caught.value.progress  # it was made
        assert volume_names(pool) == set() and os.listdir(pool_dir) == []
        assert conn.lookupByName(name).UUIDString() == namesake  # not ours: untouched
    finally:
        remove_by_uuid(conn, namesake)


@pytest.mark.parametrize("keep", [False, True])
def test_failure_at_start_removes_volume_and_domain(monkeypatch, conn, pool, pool_dir, echo_recipe, keep):
    write, name = echo_recipe
    recipe_file = write('bridge = "ibtnobr0"\nwait = "none"')  # a host bridge that does not exist
    with pytest.raises(VirtError, match=f"cannot start domain {name}: .*ibtnobr0"):
        build_without_appliance(monkeypatch, recipe_file, keep_on_failure=keep)
    if keep:
        assert volume_names(pool) == {f"{name}.raw"} and domain_exists(conn, name)
        assert not conn.lookupByName(name).isActive()
    else:
        assert_nothing_left(conn, pool, pool_dir, name)


def test_failure_at_wait_removes_volume_and_domain_and_shows_the_console(monkeypatch, conn, pool, pool_dir,
                                                                          echo_recipe):
    write, name = echo_recipe
    recipe_file = write('network = "none"\nwait = "serial:READY"\ntimeout = "4s"')
    began = time.monotonic()
    with pytest.raises(VirtError, match="timed out after 4s waiting for 'READY' on the serial console; "
                                        "last on the serial console: 'OK'"):
        build_without_appliance(monkeypatch, recipe_file)
    assert time.monotonic() - began < 60
    assert_nothing_left(conn, pool, pool_dir, name)


def test_preflight_refuses_before_any_work(monkeypatch, conn, pool, pool_dir, echo_recipe):
    write, name = echo_recipe
    customized = []
    for keys, message in (('network = "ibtest-nonet"', "network ibtest-nonet does not exist on qemu:///system"),
                          ('network = "none"\ncpu = "host-passthrough"', "domain.cpu 'host-passthrough'"),
                          ('network = "none"\nmachine = "pc-i440fx-0.1"', "domain.machine 'pc-i440fx-0.1'"),
                          ('network = "none"\n[[domain.disks]]\nvolume = "missing.img"',
                           f"data disk volume missing.img does not exist in pool {pool.name()}")):
        with pytest.raises(BuildError, match=re.escape(message)):
            build_without_appliance(monkeypatch, write(keys), on_customize=lambda: customized.append(1))
    assert customized == []
    assert_nothing_left(conn, pool, pool_dir, name)


# the serial echo guest: serial wait, console and the vm commands


def read_until(stream, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


def vm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("vm", *args, env=env, timeout=300)


def test_serial_wait_console_and_vm_commands(monkeypatch, conn, pool, echo_recipe):
    write, name = echo_recipe
    recipe_file = write('network = "none"\nwait = "serial:OK"\ntimeout = "120s"\nvideo = "none"')
    result, progress = build_without_appliance(monkeypatch, recipe_file)
    assert "'OK' appeared on the serial console: the domain is ready" in progress
    deployed = result.manifest["domain"]
    assert deployed["started"] and deployed["serial_log"] == f"/var/log/libvirt/qemu/{name}-serial.log"
    dom = conn.lookupByName(name)
    assert dom.isActive() and dom.UUIDString() == deployed["uuid"]

    console = subprocess.Popen([sys.executable, "-m", "imagebuilder.cli", "vm", "console", name, "--connect", URI],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        time.sleep(1.0)  # let it attach: the echo guest only answers what it receives afterwards
        console.stdin.write(b"ping-42\r")
        console.stdin.flush()
        assert b"ping-42" in read_until(console.stdout, b"ping-42", 60)
        console.stdin.write(b"\x1d")  # Ctrl-]
        console.stdin.flush()
        assert console.wait(timeout=60) == 0
        assert "console: escape" in console.stderr.read().decode()
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()

    listed = vm("list", "--json", "--connect", URI)
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == name]
    assert row["state"] == "running" and row["memory"] == 64 << 20 and row["recipe"] == str(recipe_file.resolve())

    stop = vm("stop", name, "--timeout", "3s", "--connect", URI)  # the echo guest ignores ACPI
    assert stop.returncode == 1
    assert "still running 3s after the ACPI shutdown request" in stop.stderr and "vm kill" in stop.stderr
    stop = vm("stop", name, "--timeout", "2s", "--force", "--connect", URI)
    assert stop.returncode == 0 and "killed" in stop.stdout and not dom.isActive()

    started = vm("start", name, "--wait", "serial:OK", "--timeout", "120s", "--connect", URI)
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout and "'OK' appeared" in started.stdout
    refused = vm("remove", name, "--connect", URI)
    assert refused.returncode == 2 and "is running; stop it first" in refused.stderr
    assert vm("kill", name, "--connect", URI).stdout.strip() == f"killed {name}"
    assert vm("kill", name, "--connect", URI).stdout.strip() == f"{name} is not running"

    removed = vm("remove", name, "--volumes", "--connect", URI)
    assert removed.returncode == 0, removed.stderr
    assert f"removed {name} and its volumes {name}.raw" in removed.stdout
    assert not domain_exists(conn, name) and volume_names(pool) == set()
    missing = vm("stop", name, "--connect", URI)
    assert missing.returncode == 2 and f"no domain named {name}" in missing.stderr
    bad = vm("stop", name, "--method", "magic", "--connect", URI)
    assert bad.returncode == 2 and "not one of acpi, agent, any" in bad.stderr


# the one Debian boot


DEBIAN_RECIPE = """
[image]
name = "{name}"

[base]
path = "{image}"

[output]
pool = "{pool}"

[domain]
memory = "768M"
vcpus = 1
firmware = "efi"
wait = "ssh"
timeout = "20m"
[[domain.disks]]
size = "1G"
"""


def test_debian_boots_until_ssh_answers_then_stops(monkeypatch, tmp_path, conn, pool, base_image):
    """A real boot, under UEFI: ready by SSH; then the agent, the serial console, the data disk, the
    osinfo metadata, an ACPI stop and a removal with the volumes, all on this one boot. (The demo
    test boots the same kind of image under BIOS.)"""
    name = unique("deb")
    recipe_file = tmp_path / "debian.toml"
    recipe_file.write_text(DEBIAN_RECIPE.format(name=name, image=base_image, pool=pool.name()))
    try:
        result, progress = build_without_appliance(monkeypatch, recipe_file,
                                                   facts={"osinfo": "debian12", "distro": "debian"})
        assert "SSH answered at 192.168.122." in progress, progress
        assert f"created data disk {pool.name()}/{name}-disk1.qcow2 (1 GiB)" in progress
        deployed = result.manifest["domain"]
        assert deployed["osinfo"] == "http://debian.org/debian/12"
        dom = conn.lookupByName(name)
        root = ET.fromstring(dom.XMLDesc(0))
        assert root.find(f"metadata/{{{OSINFO_NS}}}libosinfo/{{{OSINFO_NS}}}os").get("id") == \
            "http://debian.org/debian/12"
        assert root.find("devices/interface/mac").get("address") == deployed["macs"][0]

        wait_for_agent(dom, 300)
        code, out, _ = agent_exec(dom, ["lsblk", "-bdno", "NAME,SIZE"], timeout=60)
        assert code == 0 and "vdb 1073741824" in " ".join(out.split())
        code, _, _ = agent_exec(dom, ["test", "-d", "/sys/firmware/efi"], timeout=60)
        assert code == 0, "the bootstrapped image must boot under UEFI (OVMF) too"

        wait_for_serial(dom, "login:", 120, SerialLog(deployed["serial_log"]))
        seen = bytearray()
        with ConsoleTap(conn, dom, seen.extend) as tap:  # the stream path remote hosts use
            deadline = time.monotonic() + 60
            while b"login:" not in seen and time.monotonic() < deadline:
                tap.send(b"\r")
                time.sleep(2)
        assert b"login:" in seen

        # systemd-logind (the bootstrap installs D-Bus for it) turns the ACPI power button into a poweroff.
        stop = vm("stop", name, "--timeout", "5m", "--connect", URI)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == f"stopped {name}" and not dom.isActive()
        removed = vm("remove", name, "--volumes", "--connect", URI)
        assert removed.returncode == 0, removed.stderr
        assert volume_names(pool) == set() and not domain_exists(conn, name)
    finally:
        remove_domain(conn, name)
        forget_logs(name)
