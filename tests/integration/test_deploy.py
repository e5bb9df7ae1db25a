"""Deploying to the host's libvirtd (qemu:///system): clean failure at define, start and wait,
readiness by serial text, SSH and guest agent, and the `imagebuilder vm` commands.

The failure tests and the vm-command test run the real pipeline in-process with the customize stage
stubbed (virt_helpers.build_customize_stubbed; their names end in `customize_stubbed`), so each costs a
second, not an appliance launch, and boot a 512-byte serial echo guest. Real builds: the Debian boot,
and the tiny guest with the echo in its MBR failing at its wait (with and without --keep-on-failure).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

from imagebuilder.errors import BuildError, VirtError
from imagebuilder.run import run
from imagebuilder.virt.console import ConsoleTap
from imagebuilder.virt.domain import define, domain_exists, remove_by_uuid, remove_domain
from imagebuilder.virt.domainxml import OSINFO_NS, DiskSpec, DomainSpec, domain_xml
from imagebuilder.virt.storage import create_volume
from imagebuilder.virt.wait import SerialLog, agent_exec, wait_for_agent, wait_for_serial
from tests.integration.conftest import ROOT, run_cli
from tests.integration.helpers import unique
from tests.integration.virt_helpers import (build_customize_stubbed, echo_image, echo_recipe_text, forget_logs,
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


def test_failure_at_define_removes_the_volume_and_spares_a_namesake_customize_stubbed(monkeypatch, conn, pool, pool_dir, echo_recipe):
    write, name = echo_recipe
    recipe_file = write('network = "none"\nwait = "none"')
    namesake = str(uuidlib.uuid4())

    def someone_else_defines_the_name():  # between our pre-flight check and our define
        define(conn, domain_xml(DomainSpec(name=name, memory_bytes=64 << 20, vcpus=1, uuid=namesake,
                                           disks=(DiskSpec(pool.name(), "theirs.raw", "raw"),))))

    try:
        with pytest.raises(VirtError, match=f"cannot define the domain: .*'{name}' already exists") as caught:
            build_customize_stubbed(monkeypatch, recipe_file, on_customize=someone_else_defines_the_name)
        assert f"volume: {pool.name()}/{name}.raw at qemu:///system" in caught.value.progress  # it was made
        assert volume_names(pool) == set() and os.listdir(pool_dir) == []
        assert conn.lookupByName(name).UUIDString() == namesake  # not ours: untouched
    finally:
        remove_by_uuid(conn, namesake)


@pytest.mark.parametrize("keep", [False, True])
def test_failure_at_start_removes_volume_and_domain_customize_stubbed(monkeypatch, conn, pool, pool_dir, echo_recipe, keep):
    write, name = echo_recipe
    recipe_file = write('bridge = "ibtnobr0"\nwait = "none"')  # a host bridge that does not exist
    with pytest.raises(VirtError, match=f"cannot start domain {name}: .*ibtnobr0"):
        build_customize_stubbed(monkeypatch, recipe_file, keep_on_failure=keep)
    if keep:
        assert volume_names(pool) == {f"{name}.raw"} and domain_exists(conn, name)
        assert not conn.lookupByName(name).isActive()
    else:
        assert_nothing_left(conn, pool, pool_dir, name)


def test_failure_at_wait_removes_volume_and_domain_and_shows_the_console_customize_stubbed(monkeypatch, conn, pool, pool_dir,
                                                                          echo_recipe):
    write, name = echo_recipe
    recipe_file = write('network = "none"\nwait = "serial:READY"\ntimeout = "4s"')
    with pytest.raises(VirtError, match="timed out after 4s waiting for 'READY' on the serial console; "
                                        "last on the serial console: 'OK'"):
        build_customize_stubbed(monkeypatch, recipe_file)
    assert_nothing_left(conn, pool, pool_dir, name)


def test_real_build_failing_at_its_wait_and_keep_on_failure(tmp_path, conn, pool, pool_dir, echo_tiny, cache_dir):
    """A real build (the appliance customizes the image) whose domain never shows what the wait wants:
    it fails with the console's last line and leaves nothing; with --keep-on-failure on the command
    line it keeps the volume and the domain for a look, and says so."""
    name = unique("echotiny")
    recipe_file = tmp_path / "echo.toml"
    recipe_file.write_text(f'[image]\nname = "{name}"\n[base]\npath = "{echo_tiny}"\n[sysprep]\nenabled = false\n'
                           '[[steps]]\nwrite = "/etc/motd:customized"\n'
                           f'[output]\npool = "{pool.name()}"\n[domain]\nmemory = "64M"\nagent = false\n'
                           'network = "none"\nwait = "serial:READY"\ntimeout = "10s"\n')
    try:
        failed = run_cli("build", str(recipe_file), "--cache-dir", str(cache_dir))
        assert failed.returncode == 1
        assert "[1/1] write: /etc/motd" in failed.stderr
        assert ("timed out after 10s waiting for 'READY' on the serial console; last on the serial console: 'OK'"
                in failed.stderr)
        assert_nothing_left(conn, pool, pool_dir, name)

        kept = run_cli("build", str(recipe_file), "--cache-dir", str(cache_dir), "--keep-on-failure")
        assert kept.returncode == 1
        assert f"kept after failure (--keep-on-failure): volume {pool.name()}/{name}.qcow2" in kept.stderr
        assert f"kept after failure (--keep-on-failure): domain {name}" in kept.stderr
        assert volume_names(pool) == {f"{name}.qcow2"} and domain_exists(conn, name)
    finally:
        remove_domain(conn, name)
        forget_logs(name)


def test_preflight_refuses_before_any_work_customize_stubbed(monkeypatch, conn, pool, pool_dir, echo_recipe):
    write, name = echo_recipe
    customized = []
    for keys, message in (('network = "ibtest-nonet"', "network ibtest-nonet does not exist on qemu:///system"),
                          ('network = "none"\ncpu = "host-passthrough"', "domain.cpu 'host-passthrough'"),
                          ('network = "none"\nmachine = "pc-i440fx-0.1"', "domain.machine 'pc-i440fx-0.1'"),
                          ('network = "none"\n[[domain.disks]]\nvolume = "missing.img"',
                           f"data disk volume missing.img does not exist in pool {pool.name()}")):
        with pytest.raises(BuildError, match=re.escape(message)):  # TCG: host-passthrough is refused there
            build_customize_stubbed(monkeypatch, write(keys), on_customize=lambda: customized.append(1), accel="tcg")
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


def test_serial_wait_console_and_vm_commands_customize_stubbed(monkeypatch, conn, pool, echo_recipe):
    write, name = echo_recipe
    recipe_file = write('network = "none"\nwait = "serial:OK"\ntimeout = "120s"\nvideo = "none"')
    result, progress = build_customize_stubbed(monkeypatch, recipe_file)
    assert "'OK' appeared on the serial console: the domain is ready" in progress
    deployed = result.manifest.domain
    assert deployed["started"] and deployed["serial_log"] == f"/var/log/libvirt/qemu/{name}-serial.log"
    dom = conn.lookupByName(name)
    assert dom.isActive() and dom.UUIDString() == deployed["uuid"]

    console = subprocess.Popen([sys.executable, "-m", "imagebuilder.cli", "vm", "console", name, "--connect", URI],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:  # the echo guest only answers what it receives after the console is attached
        assert b"Connected to the console of" in read_until(console.stderr, b"press Ctrl-] to leave", 60)
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

    assert vm("start", name, "--connect", URI).returncode == 0 and dom.isActive()
    removed = vm("remove", name, "--force", "--volumes", "--connect", URI)
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

[disk]
compress = true

[[steps]]
run_command = "useradd -m -s /bin/sh alice && useradd -m -s /bin/sh bob"
[[steps]]
password = "alice:disabled"
[[steps]]
password = "bob:locked:file:bob.pw"

[output]
pool = "{pool}"

[domain]
memory = "768M"
vcpus = 1
firmware = "efi"
graphics = "vnc"
wait = "ssh"
timeout = "20m"
[[domain.interfaces]]
network = "default"
[[domain.interfaces]]
network = "default"
model = "e1000e"
[[domain.disks]]
size = "1G"
[[domain.disks]]
volume = "{shared}"

[[tests]]
# the session's image has Debian's cloud kernel, which has no e1000e driver: the NIC is on the PCI bus
name = "the e1000e NIC is there"
command = "cat /sys/bus/pci/devices/*/device"
stdout = "^0x10d3$"
[[tests]]
package = "openssh-server"
"""


def test_debian_build_boots_until_ssh_answers_then_stops(tmp_path, conn, pool, base_image, cache_dir):
    """A real build (`build -v --test`) booted under UEFI: a compressed qcow2, two NICs, VNC, a new and
    an existing data disk, disabled and locked passwords; ready by SSH; then the [[tests]] through the
    running domain's agent, the serial console, the osinfo that inspection found, a stop through the
    guest agent and a removal with the volumes, all on this one boot. (The demo test boots the same
    kind of image under BIOS.)"""
    name = unique("deb")
    shared = create_volume(pool, f"{name}-shared.raw", 1 << 20, "raw")
    (tmp_path / "bob.pw").write_text("Bob-s3cret-pw\n")
    recipe_file = tmp_path / "debian.toml"
    recipe_file.write_text(DEBIAN_RECIPE.format(name=name, image=base_image, pool=pool.name(), shared=shared.name()))
    manifest_file = tmp_path / "debian.manifest.json"
    try:
        proc = run_cli("build", str(recipe_file), "-v", "--test", "--cache-dir", str(cache_dir),
                       "--manifest", str(manifest_file))
        assert proc.returncode == 0, proc.stderr[-3000:]
        progress = proc.stderr
        assert "SSH answered at 192.168.122." in progress, progress[-3000:]
        assert f"created data disk {pool.name()}/{name}-disk1.qcow2 (1 GiB)" in progress
        assert "imagebuilder.run: run: qemu-img convert" in progress and "libguestfs: " in progress  # -v
        assert "Bob-s3cret-pw" not in progress + proc.stdout
        assert f"is the disk of the running domain {name}: checking it there" in progress  # --test
        assert "PASS the e1000e NIC is there" in progress and "PASS package openssh-server" in progress
        deployed = json.loads(manifest_file.read_text())["domain"]
        assert deployed["osinfo"] == "http://debian.org/debian/12"  # from inspection
        dom = conn.lookupByName(name)
        root = ET.fromstring(dom.XMLDesc(0))
        assert root.find(f"metadata/{{{OSINFO_NS}}}libosinfo/{{{OSINFO_NS}}}os").get("id") == \
            "http://debian.org/debian/12"
        assert [mac.get("address") for mac in root.findall("devices/interface/mac")] == deployed["macs"]
        assert [model.get("type") for model in root.findall("devices/interface/model")] == ["virtio", "e1000e"]
        image = pool.storageVolLookupByName(f"{name}.qcow2").path()
        assert json.loads(run(["qemu-img", "check", "-U", "--output=json", image]).stdout)["compressed-clusters"] > 0

        graphics = root.find("devices/graphics")
        assert graphics.get("type") == "vnc" and graphics.get("listen") == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", int(graphics.get("port"))), timeout=30) as vnc:
            assert vnc.recv(12).startswith(b"RFB ")

        wait_for_agent(dom, 300)
        code, out, _ = agent_exec(dom, ["lsblk", "-bdno", "NAME,SIZE"], timeout=60)
        assert code == 0 and {"vdb 1073741824", "vdc 1048576"} <= set(" ".join(line.split()) for line in
                                                                       out.splitlines())
        code, _, _ = agent_exec(dom, ["test", "-d", "/sys/firmware/efi"], timeout=60)
        assert code == 0, "the bootstrapped image must boot under UEFI (OVMF) too"
        code, out, _ = agent_exec(dom, ["getent", "shadow", "alice", "bob"], timeout=60)  # the guest's own tools
        shadow = dict(line.split(":")[:2] for line in out.splitlines())
        assert shadow["alice"] == "*" and shadow["bob"].startswith("!$6$")  # bob's password is there, locked
        code, out, _ = agent_exec(dom, ["passwd", "-S", "bob"], timeout=60)
        assert code == 0 and out.split()[1] == "L", out

        wait_for_serial(dom, "login:", 120, SerialLog(deployed["serial_log"]))
        seen = bytearray()
        with ConsoleTap(conn, dom, seen.extend) as tap:  # the stream path remote hosts use
            deadline = time.monotonic() + 60
            while b"login:" not in seen and time.monotonic() < deadline:
                tap.send(b"\r")
                time.sleep(2)
        assert b"login:" in seen

        stop = vm("stop", name, "--method", "agent", "--timeout", "5m", "--connect", URI)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == f"stopped {name}" and not dom.isActive()
        removed = vm("remove", name, "--volumes", "--connect", URI)
        assert removed.returncode == 0, removed.stderr
        assert volume_names(pool) == set() and not domain_exists(conn, name)
    finally:
        remove_domain(conn, name)
        forget_logs(name)

