"""Every customization operation on the real Debian base image: ONE build, ONE offline inspection, ONE boot.

The build applies every operation of the registry (and sysprep's defaults plus an opt-in one) in a
single appliance launch; a read-only libguestfs inspection of the result checks their effects; then
the image boots once (and reboots once) for what only a running guest shows: first-boot scripts
run in order, once, with their log; services enabled and disabled; SSH host keys made anew.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import guestfs
import libvirt
import pytest

from imagebuilder import accel
from imagebuilder.errors import VirtError
from imagebuilder.guest import firstboot, ops
from imagebuilder.virt.wait import agent_exec, read_serial_tail, wait_for_agent, wait_for_boot
from tests.integration.conftest import URI, run_cli
from tests.integration.helpers import appliance_launches, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

pytestmark = pytest.mark.integration

ROOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0kSLb2nAI6Fr6YQz6UZa0fTwJzYFhS2Z8PHa2Al9k root@imagebuilder"
ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm1Gx0nP3mNw0D2mKqJ6dQ0d7V0mGk3y2e4Zk3q2b7x alice@imagebuilder"
ALICE_PASSWORD = "alice's long password"
BOB_PASSWORD = "bob-pw-1234"

RECIPE = r'''
[image]
name = "everyop"

[base]
path = "{base}"

[disk]
format = "qcow2"

[[steps]]
password_crypto = "sha256"
[[steps]]
hostname = "everyop.example.org"
[[steps]]
timezone = "Europe/Paris"
[[steps]]
mkdir = "/opt/ib/conf"
[[steps]]
write = "/opt/ib/conf/app.conf:key=old\nmode=1\n"
[[steps]]
append_line = {{ path = "/opt/ib/conf/app.conf", line = "appended" }}
[[steps]]
edit = "/opt/ib/conf/app.conf:s/^key=.*/key=new/"
[[steps]]
edit = {{ path = "/opt/ib/conf/app.conf", expression = "$_ = uc if /^mode/" }}
[[steps]]
touch = "/opt/ib/touched"
[[steps]]
write = "/opt/ib/trunc:some data"
[[steps]]
truncate = "/opt/ib/trunc"
[[steps]]
copy_in = "tree:/opt/ib"
[[steps]]
copy = "/opt/ib/tree:/opt/ib/tree-copy"
[[steps]]
truncate_recursive = "/opt/ib/tree-copy"
[[steps]]
move = "/opt/ib/tree-copy:/opt/ib/tree-moved"
[[steps]]
upload = "files/private.conf:/opt/ib/conf"
[[steps]]
tar_in = {{ from = "site.tar.gz", to = "/opt/ib" }}
[[steps]]
chmod = "0700:/opt/ib/conf"
[[steps]]
link = "/opt/ib/conf/app.conf:/opt/ib/link1:/opt/ib/link2"
[[steps]]
write = "/opt/ib/secret:top secret"
[[steps]]
scrub = "/opt/ib/secret"
[[steps]]
delete = "/opt/ib/tree/sub/*.txt"
[[steps]]
run = "scripts/run.sh"
[[steps]]
run_command = "echo ran > /opt/ib/run-command && test -f /opt/ib/run-script"
[[steps]]
install = ["tree", "bc"]
[[steps]]
uninstall = "bc"
[[steps]]
update = true
[[steps]]
user = {{ name = "alice", groups = ["sudo"], shell = "/bin/bash", comment = "Alice", ssh_keys = ["keys/alice.pub"] }}
[[steps]]
chown = {{ path = "/opt/ib/touched", user = "alice", group = "alice" }}
[[steps]]
password = {{ user = "alice", file = "secrets/alice.pw" }}
[[steps]]
root_password = "random"
[[steps]]
ssh_inject = "root:file:keys/root.pub"
[[steps]]
write = "/etc/systemd/system/ibtest.service:[Unit]\nDescription=imagebuilder test unit\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo enabled > /run/ibtest-ran'\nRemainAfterExit=yes\n[Install]\nWantedBy=multi-user.target\n"
[[steps]]
service_enable = "ibtest.service"
[[steps]]
service_disable = ["e2scrub_reap.service"]
[[steps]]
firstboot = "scripts/first.sh"
[[steps]]
firstboot_command = "echo 2 >> /var/lib/ibtest-order"
[[steps]]
firstboot_install = "sl"
[[steps]]
firstboot_command = "test -x /usr/games/sl && echo 4 >> /var/lib/ibtest-order"
[[steps]]
commands_from_file = "legacy.cmds"
[[steps]]
selinux_relabel = true
[[steps]]
no_selinux_relabel = true
[[steps]]
no_logfile = true
[[steps]]
write = "/var/log/ibtest.log:old log"
[[steps]]
write = "/root/.bash_history:ls"
[[steps]]
write = "/etc/ibtest.conf.bak:backup"
[[steps]]
write = "/var/tmp/ibtest-tmp:tmp"

[sysprep]
operations = ["flag-reconfiguration"]

[output]
path = "{output}"
'''

COMMANDS = """\
# a commands file in virt-customize's style
mkdir /opt/ib/cmds
write /opt/ib/cmds/file:line1\\
line2
append-line /opt/ib/cmds/file:line3
  password bob:file:secrets/bob.pw
"""

RUN_SCRIPT = "#!/bin/sh\nset -e\nid -u > /opt/ib/run-script\nuseradd -m bob\n"
FIRST_SCRIPT = "#!/bin/sh\necho 1 > /var/lib/ibtest-order\necho first script output\n"


@pytest.fixture(scope="module")
def workdir():
    """A directory qemu can read (pytest's own are 0700), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="ibtest-ops-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _project(root: Path, base: Path, output: Path) -> Path:
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "data.txt").write_text("tree data\n")
    (root / "tree" / "keep").write_text("keep me\n")
    (root / "files").mkdir()
    (root / "files" / "private.conf").write_text("secret=1\n")
    os.chmod(root / "files" / "private.conf", 0o640)
    (root / "site").mkdir()
    (root / "site" / "index.html").write_text("<h1>site</h1>\n")
    with tarfile.open(root / "site.tar.gz", "w:gz") as archive:
        archive.add(root / "site", arcname="site")
    (root / "scripts").mkdir()
    (root / "scripts" / "run.sh").write_text(RUN_SCRIPT)
    (root / "scripts" / "first.sh").write_text(FIRST_SCRIPT)
    (root / "secrets").mkdir()
    (root / "secrets" / "alice.pw").write_text(ALICE_PASSWORD + "\n")
    (root / "secrets" / "bob.pw").write_text(BOB_PASSWORD + "\n")
    (root / "keys").mkdir()
    (root / "keys" / "root.pub").write_text(ROOT_KEY + "\n")
    (root / "keys" / "alice.pub").write_text(ALICE_KEY + "\n")
    (root / "legacy.cmds").write_text(COMMANDS)
    recipe = root / "everyop.toml"
    recipe.write_text(RECIPE.format(base=base, output=output))
    return recipe


@pytest.fixture(scope="module")
def built(tmp_path_factory, workdir, base_image, cache_dir, qemu_logger):
    """The every-operation build: (recipe, output image, CompletedProcess, appliance launches)."""
    root = tmp_path_factory.mktemp("everyop")
    output = workdir / "everyop.qcow2"
    recipe = _project(root, base_image, output)
    log = root / "qemu.log"
    # --no-cache: a cold build, and one appliance launch (with the cache, long steps are checkpointed)
    proc = run_cli("build", str(recipe), "--cache-dir", str(cache_dir), "--no-cache",
                   env={"LIBGUESTFS_HV": str(qemu_logger), "IBTEST_QEMU_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr[-5000:]
    output.chmod(0o644)
    return recipe, output, proc, len(appliance_launches(log))


def test_every_operation_is_in_the_recipe():
    used = {line.split(" = ", 1)[0] for line in RECIPE.splitlines() if " = " in line and not line.startswith(("[", "#"))}
    assert set(ops.REGISTRY) - used == set(), "add the new operation to this test's recipe"


def test_one_launch_no_secret_printed_and_digests_in_the_manifest(built):
    recipe, output, proc, launches = built
    assert launches == 1
    random_password = (recipe.parent / "everyop.root.password").read_text().strip()
    manifest_text = output.with_name("everyop.manifest.json").read_text()
    for text in (proc.stdout, proc.stderr, manifest_text):
        for secret in (random_password, ALICE_PASSWORD, BOB_PASSWORD):
            assert secret not in text
    steps = json.loads(manifest_text)["steps"]
    upload = next(s for s in steps if s["op"] == "upload")
    assert upload["host_files"][0]["sha256"].startswith("sha256:")
    assert next(s for s in steps if s["op"] == "password")["host_files"][0] == {
        "path": str(recipe.parent / "secrets" / "alice.pw"), "secret": True}
    bob = next(s for s in steps if s["op"] == "password" and s.get("source"))
    assert bob["source"] == str(recipe.parent / "legacy.cmds") and bob["line"] == 6
    # apt-get upgrade's own summary line reached the user, whatever it counted
    assert re.search(r"\| \d+ upgraded, \d+ newly installed, \d+ to remove and \d+ not upgraded\.", proc.stderr)


def _shadow_hash(g, user: str) -> str:
    return next(ln.split(":")[1] for ln in g.cat("/etc/shadow").splitlines() if ln.startswith(user + ":"))


def _dpkg_installed(g) -> set[str]:
    installed, name = set(), None
    for line in g.cat("/var/lib/dpkg/status").splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Status: ") and line.endswith(" installed"):
            installed.add(name)
    return installed


def test_offline_effects(built):
    recipe, output, _proc, _launches = built
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    g.add_drive_opts(str(output), format="qcow2", readonly=True)
    g.launch()
    try:
        root = g.inspect_os()[0]
        for mountpoint, device in sorted(g.inspect_get_mountpoints(root).items()):
            g.mount_ro(device, mountpoint)
        # system
        assert g.cat("/etc/hostname") == "everyop.example.org\n"
        assert "127.0.1.1\teveryop.example.org" in g.cat("/etc/hosts")
        assert g.readlink("/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
        assert g.cat("/etc/timezone") == "Europe/Paris\n"
        # files
        assert g.cat("/opt/ib/conf/app.conf") == "key=new\nMODE=1\nappended\n"
        assert g.is_file("/opt/ib/touched") and g.cat("/opt/ib/trunc") == ""
        assert g.cat("/opt/ib/tree/keep") == "keep me\n" and g.ls("/opt/ib/tree/sub") == []
        assert g.cat("/opt/ib/tree-moved/keep") == "" and g.cat("/opt/ib/tree-moved/sub/data.txt") == ""
        assert not g.exists("/opt/ib/tree-copy")
        assert g.cat("/opt/ib/conf/private.conf") == "secret=1\n"
        assert g.statns("/opt/ib/conf/private.conf")["st_mode"] & 0o777 == 0o640
        assert g.cat("/opt/ib/site/index.html") == "<h1>site</h1>\n"
        assert g.statns("/opt/ib/conf")["st_mode"] & 0o7777 == 0o700
        assert g.readlink("/opt/ib/link1") == g.readlink("/opt/ib/link2") == "/opt/ib/conf/app.conf"
        assert not g.exists("/opt/ib/secret")
        assert g.cat("/opt/ib/run-script") == "0\n" and g.cat("/opt/ib/run-command") == "ran\n"
        assert g.cat("/opt/ib/cmds/file") == "line1\nline2\nline3\n"
        # packages
        installed = _dpkg_installed(g)
        assert "tree" in installed and "bc" not in installed and "sl" not in installed
        assert not g.exists("/usr/sbin/policy-rc.d")
        # accounts
        alice = next(ln for ln in g.cat("/etc/passwd").splitlines() if ln.startswith("alice:")).split(":")
        assert alice[4] == "Alice" and alice[6] == "/bin/bash"
        assert "alice" in next(ln for ln in g.cat("/etc/group").splitlines() if ln.startswith("sudo:"))
        touched = g.statns("/opt/ib/touched")
        assert (touched["st_uid"], touched["st_gid"]) == (int(alice[2]), int(alice[3]))
        for user, password in (("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD),
                               ("root", (recipe.parent / "everyop.root.password").read_text().strip())):
            hashed = _shadow_hash(g, user)
            assert hashed.startswith("$5$") and crypt.crypt(password, hashed) == hashed, user
        assert g.cat("/home/alice/.ssh/authorized_keys") == ALICE_KEY + "\n"
        assert g.statns("/home/alice/.ssh")["st_uid"] == int(alice[2])
        assert ROOT_KEY in g.cat("/root/.ssh/authorized_keys").splitlines()
        assert g.statns("/root/.ssh/authorized_keys")["st_mode"] & 0o777 == 0o600
        # services
        assert g.is_symlink("/etc/systemd/system/multi-user.target.wants/ibtest.service")
        assert not g.exists("/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service")
        # first boot, queued in recipe order
        scripts = g.ls(firstboot.SCRIPTS_DIR)
        assert [s[5:] for s in scripts] == ["first-sh", "echo", "install-sl", "test"]
        assert g.cat(f"{firstboot.SCRIPTS_DIR}/{scripts[0]}") == FIRST_SCRIPT
        assert g.is_symlink(f"/etc/systemd/system/multi-user.target.wants/{firstboot.SERVICE}.service")
        # selinux_relabel on a guest without SELinux does nothing
        assert not g.exists("/.autorelabel")
        # sysprep: defaults and the opt-in flag-reconfiguration
        for gone in ("/var/log/ibtest.log", "/root/.bash_history", "/etc/ibtest.conf.bak", "/var/tmp/ibtest-tmp",
                     "/etc/passwd-", "/etc/shadow-"):
            assert not g.exists(gone), gone
        assert g.glob_expand("/var/log/apt/*") == [] and g.glob_expand("/var/cache/apt/archives/*.deb") == []
        assert g.glob_expand("/etc/ssh/ssh_host_*") == [] and g.cat("/etc/machine-id") == ""
        assert g.exists("/.unconfigured")
    finally:
        g.close()


def _domain_xml(name: str, disk: Path, serial_log: str) -> str:
    domain = ET.Element("domain", type="kvm" if accel.choose() == "kvm" else "qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = "1024"
    ET.SubElement(domain, "vcpu").text = "1"
    os_elem = ET.SubElement(domain, "os")
    ET.SubElement(os_elem, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    devices = ET.SubElement(domain, "devices")
    disk_elem = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk_elem, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk_elem, "source", file=str(disk))
    ET.SubElement(disk_elem, "target", dev="vda", bus="virtio")
    nic = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(nic, "source", network="default")
    ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=serial_log)
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    return ET.tostring(domain, encoding="unicode")


def _guest(dom, *argv: str, timeout: float = 120) -> str:
    code, out, err = agent_exec(dom, list(argv), timeout=timeout)
    assert code == 0, (argv, out, err)
    return out


def _wait_for_firstboot(dom, serial_log: str, timeout: float = 900) -> str:
    """Wait until the firstboot unit has finished (active, exited) or failed; return its state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _code, out, _err = agent_exec(dom, ["systemctl", "is-active", f"{firstboot.SERVICE}.service"], timeout=60)
        if out.strip() in ("active", "failed"):
            return out.strip()
        time.sleep(5)
    raise AssertionError(f"firstboot did not finish; console: {read_serial_tail(serial_log, 10)}")


def test_booted_guest_runs_firstboot_once_in_order(built, workdir):
    _recipe, output, _proc, _launches = built
    disk = workdir / "boot.qcow2"
    shutil.copyfile(output, disk)  # keep the built image pristine for the offline checks
    disk.chmod(0o666)
    name = unique("everyop")
    serial_log = f"/var/log/libvirt/qemu/{name}-serial.log"
    conn = libvirt.open(URI)
    dom = None
    try:
        dom = conn.defineXML(_domain_xml(name, disk, serial_log))
        dom.create()
        wait_for_agent(dom, 900, serial_log)
        assert _wait_for_firstboot(dom, serial_log) == "active"
        assert wait_for_boot(dom, 600) in ("running", "degraded"), "then every unit has started (ssh.service too)"
        assert _guest(dom, "cat", "/var/lib/ibtest-order") == "1\n2\n4\n"
        assert _guest(dom, "dpkg-query", "-W", "-f=${Status}", "sl") == "install ok installed"
        log = _guest(dom, "cat", firstboot.LOG_FILE)
        starts = [ln.split(": ")[1] for ln in log.splitlines() if ln.endswith(tuple("0123456789Z")) and ": start" in ln]
        assert [s[5:] for s in starts] == ["first-sh", "echo", "install-sl", "test"]
        assert log.count(": exit 0") == 4 and "first script output" in log
        assert _guest(dom, "ls", firstboot.SCRIPTS_DIR) == ""
        # what else only a booted guest shows
        assert _guest(dom, "hostname").strip() == "everyop.example.org"
        assert _guest(dom, "cat", "/run/ibtest-ran") == "enabled\n"
        assert agent_exec(dom, ["systemctl", "is-enabled", "e2scrub_reap.service"])[1].strip() == "disabled"
        assert _guest(dom, "systemctl", "is-active", "ssh.service").strip() == "active"
        assert _guest(dom, "ls", "/etc/ssh/ssh_host_ed25519_key").strip() == "/etc/ssh/ssh_host_ed25519_key"
        assert len(_guest(dom, "cat", "/etc/machine-id").strip()) == 32
        assert _guest(dom, "date", "+%Z").strip() in ("CET", "CEST")
        # reboot: nothing runs again
        boot_id = _guest(dom, "cat", "/proc/sys/kernel/random/boot_id")
        # not dom.reboot(): the base image has no dbus, so no logind to act on ACPI or the agent's shutdown
        try:
            agent_exec(dom, ["systemctl", "reboot", "--no-block"], timeout=30)
        except VirtError:
            pass  # the agent may be gone before it reports
        deadline = time.monotonic() + 900
        while True:
            try:
                wait_for_agent(dom, 60, serial_log)
                if _guest(dom, "cat", "/proc/sys/kernel/random/boot_id") != boot_id:
                    break
            except VirtError:
                pass  # the agent comes and goes while the guest reboots
            assert time.monotonic() < deadline, read_serial_tail(serial_log, 10)
            time.sleep(5)
        assert wait_for_boot(dom, 600) == "running"
        assert agent_exec(dom, ["systemctl", "is-active", f"{firstboot.SERVICE}.service"])[1].strip() == "inactive"
        assert _guest(dom, "cat", "/var/lib/ibtest-order") == "1\n2\n4\n"
        assert _guest(dom, "cat", firstboot.LOG_FILE) == log
        assert _guest(dom, "ls", firstboot.DONE_DIR).split() == starts
    finally:
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
            finally:
                dom.undefine()
        conn.close()
        disk.unlink(missing_ok=True)
        for log in (serial_log, f"/var/log/libvirt/qemu/{name}.log"):
            Path(log).unlink(missing_ok=True)



def test_a_package_that_cannot_be_installed_is_named(tmp_path, base_image, cache_dir):
    recipe = tmp_path / "broken.toml"
    recipe.write_text(f'[image]\nname = "broken"\n[base]\npath = "{base_image}"\n'
                      '[[steps]]\nhostname = "broken"\n[[steps]]\ninstall = ["tree", "imagebuilder-no-such-package"]\n'
                      f'[output]\npath = "{tmp_path / "broken.qcow2"}"\n')
    proc = run_cli("build", str(recipe), "--cache-dir", str(cache_dir))
    assert proc.returncode == 1
    assert (f"{recipe}:8: step 2 'install' failed: installing package imagebuilder-no-such-package failed: "
            "E: Unable to locate package imagebuilder-no-such-package") in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.toml"]  # nothing left behind
