"""Fleets from a golden image, for real: `up` builds the golden volume and boots three thin clones,
each with its own host name, machine-id, SSH host keys and MAC; `clone` makes ad hoc clones without
changing the golden volume; `destroy` keeps a golden volume that a clone still uses. Then a
cloud-init golden image, whose machine gets its host name and a user from a NoCloud seed.

Boots cost 40-60 s each under TCG, so each test boots its machines once (the three clones at the
same time) and runs every check on that one boot.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from imagebuilder import accel
from imagebuilder.guest.session import Drive, GuestSession, label
from imagebuilder.virt.clone import backing_path, cdrom_volumes, labels
from imagebuilder.virt.domain import domain_exists, remove_domain
from imagebuilder.virt.wait import agent_exec
from tests.integration.conftest import run_cli
from tests.integration.helpers import sha256, unique
from tests.integration.virt_helpers import forget_logs, volume_names

pytestmark = pytest.mark.integration

MiB = 1 << 20

GOLDEN = """
[image]
name = "{golden}"

[base]
path = "{base}"

[output]
pool = "{pool}"

[domain]
memory = "{memory}"
wait = "agent"
timeout = "20m"
"""

FLEET_RECIPE = GOLDEN + """
[fleet]
count = 3
name = "{prefix}-{{n}}"
"""


def host_name(dom: libvirt.virDomain) -> str | None:
    """The guest's host name through its agent; None while the agent does not answer yet."""
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-get-host-name"}', 30, 0)
    except libvirt.libvirtError:
        return None
    return json.loads(reply)["return"]["host-name"]


def guest_output(dom: libvirt.virDomain, *argv: str) -> str:
    code, out, err = agent_exec(dom, list(argv), timeout=120)
    assert code == 0, f"{argv}: {err}"
    return out.strip()


def eventually(check, timeout: float, poll: float = 5.0):  # noqa: ANN001, ANN201
    """check()'s first true result within `timeout` seconds (the last result otherwise)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(poll)


def mac_of(dom: libvirt.virDomain) -> str:
    return ET.fromstring(dom.XMLDesc(0)).find("devices/interface/mac").get("address")


def cli(*args: str, state: Path) -> tuple[int, str, str]:
    proc = run_cli(*args, env={"XDG_STATE_HOME": str(state)})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def cleanup(conn):
    """Names of domains to remove (with their logs) whatever happens."""
    names: list[str] = []
    yield names
    for name in names:
        remove_domain(conn, name)
        forget_logs(name)


def test_three_clones_boot_with_their_own_identity(tmp_path, conn, pool, base_image, cache_dir, cleanup):
    prefix, golden = unique("fl"), unique("gold")
    machines = [f"{prefix}-{n}" for n in (1, 2, 3)]
    cleanup += machines
    recipe_file = tmp_path / "fleet.toml"
    text = FLEET_RECIPE.format(golden=golden, base=base_image, pool=pool.name(), prefix=prefix, memory="512M")
    recipe_file.write_text(text)
    state = tmp_path / "state"

    code, out, err = cli("up", str(recipe_file), "--parallel", "2", "--cache-dir", str(cache_dir), state=state)
    assert code == 0, err
    assert f"created {', '.join(machines)}" in out and f"started {', '.join(machines)}" in out
    assert "personalizing" in err and err.count("in one libguestfs appliance") == 1  # one launch, three clones
    lines = err.splitlines()
    first_ready = next(i for i, line in enumerate(lines) if line.startswith(f"{machines[0]}: the guest agent"))
    third_started = next(i for i, line in enumerate(lines) if line.startswith(f"{machines[2]}: started"))
    assert first_ready < third_started, "--parallel 2: the third boots once one of the first two is ready"

    # one full image, three small overlays backed by it
    pool.refresh(0)
    gold = pool.storageVolLookupByName(f"{golden}.qcow2")
    _, capacity, gold_allocation = gold.info()
    assert gold_allocation > 300 * MiB and backing_path(gold) is None
    for name in machines:
        overlay = pool.storageVolLookupByName(f"{name}.qcow2")
        _, overlay_capacity, allocation = overlay.info()
        assert backing_path(overlay) == gold.path()
        assert overlay_capacity == capacity and allocation < 64 * MiB, (name, allocation)
    assert volume_names(pool) == {f"{golden}.qcow2"} | {f"{name}.qcow2" for name in machines}

    # each answers through its guest agent with its own host name, machine-id, MAC and SSH host keys
    doms = [conn.lookupByName(name) for name in machines]
    assert [host_name(dom) for dom in doms] == machines
    machine_ids = [eventually(lambda d=dom: guest_output(d, "cat", "/etc/machine-id"), 120) for dom in doms]
    assert all(len(mid) == 32 for mid in machine_ids) and len(set(machine_ids)) == 3, machine_ids
    macs = {mac_of(dom) for dom in doms}
    assert len(macs) == 3
    for dom, name in zip(doms, machines):
        found = labels(dom)
        assert (found["role"], found["machine"], found["golden"]) == ("clone", name, f"{pool.name()}/{golden}.qcow2")

    # up again: nothing to do; with another memory size: drift is reported, nothing is changed
    code, out, err = cli("up", str(recipe_file), state=state)
    assert code == 0 and f"unchanged {', '.join(machines)}" in out, err
    recipe_file.write_text(text.replace('memory = "512M"', 'memory = "640M"'))
    code, out, err = cli("up", str(recipe_file), state=state)
    assert code == 0, err
    assert f"{machines[0]}: differs from the recipe: memory is 512 MiB, the recipe says 640 MiB" in out
    assert doms[0].maxMemory() == 512 * 1024

    # two ad hoc clones, customized offline in one appliance; the golden volume does not change
    before = sha256(Path(gold.path()))
    adhoc = unique("adhoc")
    clones = [f"{adhoc}-1", f"{adhoc}-2"]
    code, out, err = cli("clone", f"{golden}.qcow2", adhoc, "--count", "2", "--pool", pool.name(),
                         "--connect", "qemu:///system", "--customize", "write /etc/role:{name} was here", state=state)
    assert code == 0, err
    assert f"cloned {golden}.qcow2: {clones[0]}.qcow2, {clones[1]}.qcow2" in out and "unchanged: sha256:" in err
    assert err.count("in one libguestfs appliance") == 1
    assert sha256(Path(gold.path())) == before
    pool.refresh(0)
    drives = [Drive(Path(pool.storageVolLookupByName(f"{c}.qcow2").path()), "qcow2", label("clone", n), readonly=True)
              for n, c in enumerate(clones, 1)]
    with GuestSession(drives, accel.choose("auto"), False) as g:
        roots = g.inspect_os()
        for drive, clone in zip(drives, clones):
            g.mount_ro(next(root for root in roots if g.part_to_dev(root) == g.device(drive.label)), "/")
            assert g.cat("/etc/role") == f"{clone} was here"
            assert g.cat("/etc/hostname").strip() == clone
            assert g.cat("/etc/machine-id") == "" and not g.glob_expand("/etc/ssh/ssh_host_*")
            g.umount_all()

    # SSH host keys: made at first boot, different on each machine
    def fingerprints() -> list[str]:
        return [guest_output(dom, "sh", "-c", "cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | cut -d' ' -f2")
                for dom in doms]
    keys = eventually(lambda: all(fingerprints()) and fingerprints(), 600)
    assert keys and len(set(keys)) == 3, keys

    # build --force refuses to replace a golden volume under clones
    code, _, err = cli("build", str(recipe_file), "--force", state=state)
    assert code == 1 and "is the backing store of" in err

    code, out, err = cli("down", str(recipe_file), "--timeout", "5m", "--force", state=state)
    assert code == 0 and f"stopped {', '.join(machines)}" in out, err
    assert not any(dom.isActive() for dom in doms)

    # destroy --keep-golden removes the machines only; destroy keeps a golden volume ad hoc clones still need
    code, out, err = cli("destroy", str(recipe_file), "--keep-golden", state=state)
    assert code == 0, err
    assert not any(domain_exists(conn, name) for name in machines)
    assert volume_names(pool) == {f"{golden}.qcow2"} | {f"{c}.qcow2" for c in clones}
    code, out, err = cli("destroy", str(recipe_file), state=state)
    assert code == 1
    assert f"the golden volume {pool.name()}/{golden}.qcow2 is kept: " in err
    assert all(f"{pool.name()}/{clone}.qcow2" in err for clone in clones)
    for clone in clones:
        pool.storageVolLookupByName(f"{clone}.qcow2").delete(0)
    code, out, err = cli("destroy", str(recipe_file), state=state)
    assert code == 0 and f"removed volume {pool.name()}/{golden}.qcow2" in out, err
    assert volume_names(pool) == set()


# cloud-init


CLOUD_FLEET = GOLDEN + """
[[machines]]
name = "{name}"
hostname = "{hostname}"

[cloud_init]
user_data = {{ users = [{{ name = "{user}", shell = "/bin/bash", lock_passwd = true }}] }}
meta_data = {{ "availability-zone" = "ibtest-zone" }}
network_config = {{ version = 2, ethernets = {{ eth0 = {{ dhcp4 = true, nameservers = {{ addresses = ["192.0.2.53"] }} }} }} }}
"""


def test_cloud_init_seed_names_the_machine_and_adds_a_user(tmp_path, conn, pool, cloud_init_image, cache_dir,
                                                           cleanup):
    name, golden, hostname = unique("ci"), unique("gold"), unique("seeded")
    cleanup.append(name)
    recipe_file = tmp_path / "cloud.toml"
    values = {"golden": golden, "base": cloud_init_image, "pool": pool.name(), "name": name, "hostname": hostname,
              "user": "alice", "memory": "768M"}
    recipe_file.write_text(CLOUD_FLEET.format(**values))
    state = tmp_path / "state"

    code, out, err = cli("up", str(recipe_file), "--json", "--no-wait", "--cache-dir", str(cache_dir), state=state)
    assert code == 0, err
    assert "the guest agent answered" not in err  # --no-wait: started, not awaited
    result = json.loads(out.splitlines()[-1])
    assert result["created"] == [name] and result["launches"] == 0  # no appliance: cloud-init names it
    seed = result["seeds"][name]
    assert seed.startswith(f"{name}-cidata-") and seed.endswith(".iso")
    dom = conn.lookupByName(name)
    assert cdrom_volumes(dom) == [(pool.name(), seed)]

    assert eventually(lambda: host_name(dom) == hostname, 600), host_name(dom)
    assert eventually(lambda: agent_exec(dom, ["getent", "passwd", "alice"])[0] == 0, 600)
    assert guest_output(dom, "getent", "passwd", "alice").endswith(":/home/alice:/bin/bash")
    assert guest_output(dom, "cat", "/etc/hostname") == hostname
    assert guest_output(dom, "cloud-init", "query", "v1.availability_zone") == "ibtest-zone"  # meta_data
    assert "192.0.2.53" in guest_output(dom, "sh", "-c", "cat /etc/network/interfaces.d/*")  # network_config

    # only an unrelated field changes: the same seed stays (same volume, not made again)
    seed_file = Path(pool.storageVolLookupByName(seed).path())
    made = seed_file.stat()
    recipe_file.write_text(CLOUD_FLEET.format(**{**values, "memory": "1G"}))
    code, out, err = cli("up", str(recipe_file), "--json", state=state)
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["seeds"] == {} and result["drift"][name] == ["memory is 768 MiB, the recipe says 1 GiB"]
    assert seed_file.stat().st_ino == made.st_ino and seed_file.stat().st_mtime_ns == made.st_mtime_ns
    assert cdrom_volumes(dom) == [(pool.name(), seed)]

    # the user data changes: a new seed replaces the old one in the CD-ROM drive
    recipe_file.write_text(CLOUD_FLEET.format(**{**values, "user": "bob"}))
    code, out, err = cli("up", str(recipe_file), "--json", state=state)
    assert code == 0, err
    new_seed = json.loads(out.splitlines()[-1])["seeds"][name]
    assert new_seed != seed and cdrom_volumes(dom) == [(pool.name(), new_seed)]
    assert labels(dom)["seed"] == new_seed

    code, out, err = cli("destroy", str(recipe_file), state=state)
    assert code == 0, err
    assert not domain_exists(conn, name) and volume_names(pool) == set()


# failures and ownership, on the serial echo guest: no appliance, no OS boot


ECHO_FLEET = """
[image]
name = "{golden}"

[base]
path = "{image}"

[disk]
format = "raw"

[output]
pool = "{pool}"

[domain]
memory = "64M"
agent = false
video = "none"
wait = "none"
{nic}

[[machines]]
name = "{prefix}-a"
[[machines]]
name = "{prefix}-b"
disks = [{{ size = "16M" }}]

[cloud_init]
user_data = {{ packages = [] }}
"""


def test_up_refuses_foreign_domains_cleans_up_failures_and_destroy_spares_unknown_golden(tmp_path, conn, pool):
    from imagebuilder.virt.domain import define
    from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml
    from tests.integration.virt_helpers import echo_image

    prefix, golden = unique("ec"), unique("gold")
    names = [f"{prefix}-a", f"{prefix}-b"]
    image = echo_image(tmp_path / "echo.img")
    Path(pool.XMLDesc(0).split("<path>")[1].split("</path>")[0], f"{golden}.raw").write_bytes(image.read_bytes())
    pool.refresh(0)
    recipe_file = tmp_path / "echo.toml"
    state = tmp_path / "state"

    def write(nic: str) -> None:
        recipe_file.write_text(ECHO_FLEET.format(golden=golden, image=image, pool=pool.name(), prefix=prefix, nic=nic))

    # a domain of a machine's name that this fleet did not make: refused before anything is made
    foreign = define(conn, domain_xml(DomainSpec(name=names[1], memory_bytes=64 << 20, vcpus=1,
                                                 disks=(DiskSpec(pool.name(), "theirs.raw", "raw"),))))
    try:
        write('network = "none"')
        code, _, err = cli("up", str(recipe_file), state=state)
        assert code == 1 and f"domain {names[1]} exists" in err and "is not a machine this fleet made" in err
        assert volume_names(pool) == {f"{golden}.raw"}
        code, _, err = cli("destroy", str(recipe_file), state=state)
        assert code == 0 and f"{names[1]}: left alone" in err and domain_exists(conn, names[1])
    finally:
        foreign.undefine()

    try:
        # the start fails (a host bridge that does not exist): every overlay, disk, seed and domain goes
        write('bridge = "ibtnobr0"')
        code, _, err = cli("up", str(recipe_file), state=state)
        assert code == 1 and "ibtnobr0" in err, err
        assert volume_names(pool) == {f"{golden}.raw"} and not any(domain_exists(conn, n) for n in names)

        write('network = "none"')
        code, out, err = cli("up", str(recipe_file), state=state)
        assert code == 0 and f"created {', '.join(names)}; started {', '.join(names)}" in out, err
        vol = pool.storageVolLookupByName(f"{names[0]}.qcow2")
        assert backing_path(vol) == pool.storageVolLookupByName(f"{golden}.raw").path()
        made = volume_names(pool)
        assert {f"{names[0]}.qcow2", f"{names[1]}.qcow2", f"{names[1]}-disk1.qcow2"} <= made and len(made) == 6
        # the echo guest ignores both the agent and ACPI: --force kills it after the timeout
        code, out, err = cli("down", str(recipe_file), "--timeout", "3s", "--force", state=state)
        assert code == 0 and f"stopped {', '.join(names)}" in out and "killed" in err, err

        # no manifest of a build names the golden volume: destroy removes the machines and leaves it
        code, out, err = cli("destroy", str(recipe_file), state=state)
        assert code == 0, err
        assert "the golden volume" in err and "is left alone: no manifest" in err
        assert volume_names(pool) == {f"{golden}.raw"}
    finally:
        for name in names:
            remove_domain(conn, name)
            forget_logs(name)
