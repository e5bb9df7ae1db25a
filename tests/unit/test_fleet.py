"""Fleets without a VM: [[machines]], [fleet] and [cloud_init] in a recipe, seeds (content, digest,
ISO), the seed CD-ROM in the domain XML, clone names and --customize steps."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import partial

import pytest
import yaml

from imagebuilder import cloudinit
from imagebuilder.fleet.clone import clone_names, parse_steps
from imagebuilder.errors import InputError
from imagebuilder.virt.clone import overlay_xml
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml, validate_xml
from tests.unit import recipes

load = partial(recipes.load, name="golden")
error_of = partial(recipes.error_of, name="golden")


# the recipe


def test_machines_take_domain_as_template_with_overrides(tmp_path):
    loaded = load(tmp_path, """
[domain]
memory = "1G"
vcpus = 2
[[domain.disks]]
size = "1G"

[[machines]]
name = "web-1"
[[machines]]
name = "db_1"
hostname = "db1"
memory = "2G"
vcpus = 1
network = "none"
[[machines]]
name = "cache"
mac = "52:54:00:aa:bb:cc"
network = "back"
disks = [{ size = "5G" }, { volume = "shared.raw", pool = "data" }]
""")
    assert loaded.domain is None  # the golden image itself is never booted
    web, db, cache = loaded.machines
    assert (web.name, web.hostname, web.overlay) == ("web-1", "web-1", "web-1.qcow2")
    assert (web.domain.name, web.domain.memory, web.domain.vcpus) == ("web-1", 1 << 30, 2)
    assert [d.volume for d in web.domain.disks] == ["web-1-disk1.qcow2"]
    assert web.domain.networks == ["default"] and web.domain.interfaces[0].mac is None
    assert (db.hostname, db.domain.memory, db.domain.vcpus, db.domain.interfaces) == ("db1", 2 << 30, 1, ())
    assert [d.volume for d in db.domain.disks] == ["db_1-disk1.qcow2"]
    assert cache.domain.interfaces[0].mac == "52:54:00:aa:bb:cc" and cache.domain.networks == ["back"]
    assert [(d.volume, d.size, d.pool) for d in cache.domain.disks] == [
        ("cache-disk1.qcow2", 5 << 30, None), ("shared.raw", None, "data")]
    assert web.line == 12


def test_fleet_count_and_pattern(tmp_path):
    loaded = load(tmp_path, '[fleet]\ncount = 3\nname = "web-{n:02}"\nfirst = 9\n[domain]\nmemory = "512M"\n')
    assert [m.name for m in loaded.machines] == ["web-09", "web-10", "web-11"]
    assert all(m.domain.memory == 512 << 20 and m.hostname == m.name for m in loaded.machines)
    default = load(tmp_path, "[fleet]\ncount = 2\n")
    assert [m.name for m in default.machines] == ["golden-1", "golden-2"]


@pytest.mark.parametrize("text, line, key, message", [
    ('[fleet]\ncount = 2\n[[machines]]\nname = "a"\n', 4, "fleet", "exclude each other"),
    ('[fleet]\ncount = 2\nname = "web"\n', 6, "fleet.name", "needs one {n}"),
    ('[fleet]\ncount = 0\n', 5, "fleet.count", "between 1 and 1000"),
    ('[fleet]\nname = "w-{n}"\n', 4, "fleet", "missing required key 'count'"),
    ('[[machines]]\nname = "a"\n[[machines]]\nname = "a"\n', 7, "machines[1].name", "used twice"),
    ('[[machines]]\nname = "golden"\n', 5, "machines[0].name", "the golden volume itself"),
    ('[[machines]]\nname = "a_b"\n', 5, "machines[0].name", "not a valid host name"),
    ('[[machines]]\nname = "a"\nmemory = "1M"\n', 6, "machines[0].memory", "at least 64M"),
    ('[[machines]]\nname = "a"\nnetwork = "none"\nmac = "52:54:00:00:00:01"\n', 7, "machines[0].mac",
     "no network interface"),
    ('[[machines]]\nname = "a"\nmac = "52:54:00:00:00:01"\n[[machines]]\nname = "b"\nmac = "52:54:00:00:00:01"\n',
     9, "machines[1].mac", "used by a as well"),
    ('[[machines]]\nname = "a"\ncolour = "red"\n', 6, "machines[0].colour", "unknown key"),
    ('[domain]\nname = "x"\n[[machines]]\nname = "a"\n', 5, "domain.name", "each machine has its own name"),
    ('[domain]\n[[domain.disks]]\nvolume = "v.raw"\n[[machines]]\nname = "a"\n', 5, "domain.disks[0]",
     "cannot be attached to every machine"),
    ('[output]\npath = "x.qcow2"\n[[machines]]\nname = "a"\n', 6, "machines", "needs a libvirt pool"),
    ('[cloud_init]\nuser_data = { packages = ["x"] }\n', 4, "cloud_init", "add [[machines]] or [fleet]"),
])
def test_fleet_errors(tmp_path, text, line, key, message):
    error = error_of(tmp_path, text)
    assert (error.line, error.key) == (line, key), str(error)
    assert message in error.problem


def test_cloud_init_inline_and_files(tmp_path):
    (tmp_path / "net.yaml").write_text("version: 2\nethernets:\n  all:\n    match: {name: 'e*'}\n    dhcp4: true\n")
    (tmp_path / "user.yaml").write_text("#cloud-config\nusers:\n  - name: alice\n")
    inline = load(tmp_path, """
[[machines]]
name = "a"
[cloud_init]
user_data = { users = [{ name = "alice", shell = "/bin/bash" }], packages = ["htop"] }
meta_data = { "availability-zone" = "z1", note = "{name} at {hostname}" }
network_config = "net.yaml"
""").cloud_init
    assert inline.user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(inline.user_data) == {"users": [{"name": "alice", "shell": "/bin/bash"}],
                                                "packages": ["htop"]}
    assert yaml.safe_load(inline.network_config)["ethernets"]["all"]["dhcp4"] is True
    assert [f.path.name for f in inline.host_files] == ["net.yaml"]
    from_file = load(tmp_path, '[[machines]]\nname = "a"\n[cloud_init]\nuser_data = "user.yaml"\n').cloud_init
    assert from_file.user_data == (tmp_path / "user.yaml").read_text()


@pytest.mark.parametrize("content, message", [
    ("users: []\n", "knows user data by its first line"),
    ("#cloud-config\nusers: [\n", "is not valid YAML (line 3)"),
    ("#cloud-config\n- a list\n", "must hold a YAML mapping"),
])
def test_cloud_init_user_data_file_errors(tmp_path, content, message):
    (tmp_path / "user.yaml").write_text(content)
    error = error_of(tmp_path, '[[machines]]\nname = "a"\n[cloud_init]\nuser_data = "user.yaml"\n')
    assert (error.line, error.key) == (7, "cloud_init.user_data") and message in error.problem


def test_a_shell_script_is_user_data_too(tmp_path):
    (tmp_path / "boot.sh").write_text("#!/bin/sh\necho hi\n")
    loaded = load(tmp_path, '[[machines]]\nname = "a"\n[cloud_init]\nuser_data = "boot.sh"\n')
    assert loaded.cloud_init.user_data.startswith("#!/bin/sh")


# seeds


def seeds(tmp_path, text: str) -> dict[str, cloudinit.Seed]:
    loaded = load(tmp_path, text)
    return {m.name: cloudinit.seed_for(loaded.cloud_init, m.name, m.hostname) for m in loaded.machines}


FLEET = """
[fleet]
count = 2
name = "web-{n}"
[domain]
memory = "%s"
[cloud_init]
user_data = { users = [{ name = "alice" }] }
"""


def test_seed_per_machine_and_stable_across_unrelated_changes(tmp_path):
    first = seeds(tmp_path, FLEET % "512M")
    meta = yaml.safe_load(first["web-1"].meta_data)
    assert meta["local-hostname"] == "web-1" and meta["instance-id"].startswith("web-1-")
    assert first["web-1"].volume != first["web-2"].volume
    assert first["web-1"].volume.startswith("web-1-cidata-") and first["web-1"].volume.endswith(".iso")
    assert seeds(tmp_path, FLEET % "2G") == first  # memory is not in the seed
    changed = seeds(tmp_path, (FLEET % "512M").replace("alice", "bob"))
    assert changed["web-1"].volume != first["web-1"].volume
    assert yaml.safe_load(changed["web-1"].meta_data)["instance-id"] != meta["instance-id"]  # a new instance


def test_seed_iso_is_labelled_cidata_and_round_trips(tmp_path):
    seed = cloudinit.Seed("m", "#cloud-config\n{}\n", "instance-id: m-1\n", "version: 2\n")
    iso = cloudinit.write_iso(seed, tmp_path / "seed.iso")
    assert cloudinit.read_iso(iso) == seed.files()
    data = iso.read_bytes()
    assert data[32768 + 40:32768 + 46] == b"cidata"  # the primary volume descriptor's volume id


def test_pinned_instance_id(tmp_path):
    text = '[[machines]]\nname = "a"\n[cloud_init]\nmeta_data = { instance-id = "fixed-{name}" }\n'
    seed = seeds(tmp_path, text)["a"]
    assert yaml.safe_load(seed.meta_data)["instance-id"] == "fixed-a"


# libvirt XML


def test_domain_xml_with_a_seed_cdrom_passes_the_schema():
    spec = DomainSpec(name="web-1", memory_bytes=512 << 20, vcpus=1,
                      disks=(DiskSpec("p", "web-1.qcow2"), DiskSpec("p", "web-1-disk1.qcow2", bus="sata")),
                      cdroms=(DiskSpec("p", "web-1-cidata-0123456789ab.iso", "raw", "sata"),),
                      labels={"role": "clone", "machine": "web-1", "golden": "p/golden.qcow2"})
    xml = domain_xml(spec)
    validate_xml(xml)
    cdrom = ET.fromstring(xml).find("devices/disk[@device='cdrom']")
    assert cdrom.find("target").attrib == {"dev": "sdb", "bus": "sata"}  # after the sata data disk
    assert cdrom.find("readonly") is not None and cdrom.find("boot") is None
    with pytest.raises(InputError, match="CD-ROM needs a sata or scsi bus"):
        DomainSpec(name="x", memory_bytes=1 << 30, vcpus=1, disks=(DiskSpec("p", "v"),),
                   cdroms=(DiskSpec("p", "s.iso", "raw", "virtio"),))


def test_overlay_volume_xml():
    root = ET.fromstring(overlay_xml("web-1.qcow2", 2 << 30, "/pool/golden.qcow2", "qcow2"))
    assert root.findtext("capacity") == str(2 << 30) and root.findtext("allocation") == "0"
    assert root.find("target/format").get("type") == "qcow2" and root.findtext("target/compat") == "1.1"
    assert root.findtext("backingStore/path") == "/pool/golden.qcow2"
    assert root.find("backingStore/format").get("type") == "qcow2"
    validate_xml(ET.tostring(root, encoding="unicode"), "storagevol")


# clone


def test_clone_names():
    assert clone_names("web", 1) == ["web"]
    assert clone_names("web", 3) == ["web-1", "web-2", "web-3"]
    assert clone_names("n{n}x", 2) == ["n1x", "n2x"]
    with pytest.raises(InputError):
        clone_names("web", 0)


def test_customize_steps(tmp_path):
    steps = parse_steps(["write /etc/role:{name}", "run-command echo hi", "update"], "web-2", tmp_path)
    assert [(s.op, s.arg) for s in steps][:2] == [("write", ("/etc/role", "web-2")), ("run_command", "echo hi")]
    assert steps[2].op == "update"
    with pytest.raises(InputError, match="unknown command 'frobnicate'"):
        parse_steps(["frobnicate now"], "a", tmp_path)
    with pytest.raises(InputError, match="--customize 'chmod x /etc'"):
        parse_steps(["chmod x /etc"], "a", tmp_path)


# finding the first clone's filesystems without libguestfs inspection (guest/clones.py)


class FakeBlkid:
    def __init__(self, tags: dict[str, dict[str, str]]):
        self.tags = tags

    def blkid(self, device: str) -> dict[str, str]:
        return self.tags[device]


def test_fstab_mounts_and_resolution():
    from imagebuilder.guest import clones

    fstab = """# /etc/fstab
UUID=AAAA-1 / ext4 errors=remount-ro 0 1
UUID=bbbb /boot/efi vfat umask=0077 0 1
LABEL=data /srv ext4 defaults 0 2
/dev/vda4 /var ext4 defaults 0 2
/swapfile none swap sw 0 0
tmpfs /tmp tmpfs defaults 0 0
/srv/x /mnt/x none bind 0 0
"""
    assert clones._fstab_mounts(fstab) == [("UUID=bbbb", "/boot/efi"), ("LABEL=data", "/srv"), ("/dev/vda4", "/var")]
    g = FakeBlkid({"/dev/sda1": {"UUID": "aaaa-1"}, "/dev/sda2": {"UUID": "BBBB"},
                   "/dev/sda3": {"UUID": "x", "LABEL": "data", "PARTUUID": "p3"}})
    own = dict.fromkeys(g.tags, "ext4")
    assert clones._resolve(g, "UUID=bbbb", own, "/dev/sda") == "/dev/sda2"  # blkid's case may differ
    assert clones._resolve(g, "LABEL=data", own, "/dev/sda") == "/dev/sda3"
    assert clones._resolve(g, "/dev/disk/by-partuuid/p3", own, "/dev/sda") == "/dev/sda3"
    assert clones._resolve(g, "/dev/vda4", own, "/dev/sda") == "/dev/sda4"
    assert clones._resolve(g, "/dev/mapper/vg-root", own, "/dev/sda") is None  # LVM: one launch per clone


@pytest.mark.parametrize("release, manager", [
    ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', "apt"),
    ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "apt"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n', "dnf"),
    ('ID="centos"\nVERSION_ID="7"\n', "yum"),
    ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "zypper"),
    ("ID=alpine\n", "apk"),
    ("ID=gentoo\n", "unknown"),
])
def test_package_manager_from_os_release(release, manager):
    from imagebuilder.guest import clones

    assert clones._facts("/dev/sda1", release)["package_management"] == manager
