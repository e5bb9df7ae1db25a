"""The [output] and [domain] parts of a recipe, the osinfo lookup, and `imagebuilder xml`; no VM."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from imagebuilder import osinfo, recipe
from imagebuilder.cli import app
from imagebuilder.deploy.spec import domain_spec, recipe_xml
from imagebuilder.errors import InputError
from imagebuilder.virt.domainxml import OSINFO_NS
from tests.unit.recipes import MINIMAL, error_of, load, write

runner = CliRunner()


# [output]


def test_targets(tmp_path):
    loaded = load(tmp_path, """
[output]
pool = "images"
[[output.targets]]
uri = "qemu+ssh://root@hv1/system"
[[output.targets]]
uri = "qemu+tcp://10.0.0.2/system"
pool = "fast"
volume = "web-copy.qcow2"
domain = true
[domain]
""")
    first, second = loaded.output.targets
    assert (first.uri, first.pool, first.volume, first.domain) == (
        "qemu+ssh://root@hv1/system", "default", "web.qcow2", False)
    assert (second.uri, second.pool, second.volume, second.domain) == (
        "qemu+tcp://10.0.0.2/system", "fast", "web-copy.qcow2", True)
    assert loaded.output.libvirt and loaded.output.pool == "images"


def test_targets_only_with_a_file(tmp_path):
    loaded = load(tmp_path, '[output]\npath = "web.qcow2"\n[[output.targets]]\nuri = "qemu+tcp://h/system"\n'
                            'domain = true\n[domain]\n')
    assert not loaded.output.libvirt and loaded.output.targets[0].domain
    assert loaded.domain is not None


@pytest.mark.parametrize("text,line,key,problem", [
    ('[output]\nuri = "system"\n', 5, "output.uri", "not a libvirt URI"),
    ('[output]\n[[output.targets]]\npool = "x"\n', 5, "output.targets[0]", "missing required key 'uri'"),
    ('[output]\n[[output.targets]]\nuri = "qemu:///system"\n', 5, "output.targets[0]", "already an output"),
    ('[output]\n[[output.targets]]\nuri = "q+tcp://h/s"\npool = "a/b"\n', 7, "output.targets[0].pool",
     "not a valid name"),
    ('[output]\n[[output.targets]]\nuri = "q+tcp://h/s"\nvolume = ".x"\n', 7, "output.targets[0].volume",
     "not a valid volume name"),
    ('[output]\n[[output.targets]]\nuri = "q+tcp://h/s"\ndomain = true\n', 7, "output.targets[0].domain",
     "no [domain] section"),
    ('[output]\n[[output.targets]]\nuri = "q+tcp://h/s"\nstart = true\n', 7, "output.targets[0].start",
     "unknown key"),
    ('[output]\ntargets = ["q+tcp://h/s"]\n', 5, "output.targets", "each entry is a table"),
])
def test_output_errors(tmp_path, text, line, key, problem):
    error = error_of(tmp_path, text)
    assert (error.line, error.key) == (line, key)
    assert problem in error.problem


# [domain]


def test_domain_defaults(tmp_path):
    spec = load(tmp_path, "[domain]\n").domain
    assert (spec.name, spec.memory, spec.vcpus, spec.cpu, spec.machine, spec.firmware) == (
        "web", 1 << 30, 1, None, "pc", "bios")
    assert spec.interfaces == (recipe.Interface(network="default"),) and spec.network == "default"
    assert spec.disks == () and (spec.graphics, spec.listen, spec.video) == ("none", "127.0.0.1", "vga")
    assert spec.memballoon and spec.rng and spec.agent and spec.osinfo is None
    assert (spec.start, spec.wait, spec.wait_text, spec.timeout) == (True, "agent", None, 600)


def test_domain_everything(tmp_path):
    spec = load(tmp_path, """
[domain]
name = "web-01"
memory = "2G"
vcpus = 4
cpu = "host-model"
machine = "q35"
firmware = "efi"
graphics = "spice"
listen = "0.0.0.0"
video = "qxl"
memballoon = false
rng = false
osinfo = "debian11"
wait = "serial:login: "
timeout = "5m"
[[domain.interfaces]]
network = "lan"
mac = "52:54:00:AA:BB:CC"
[[domain.interfaces]]
bridge = "br0"
model = "e1000e"
[[domain.disks]]
size = "10G"
[[domain.disks]]
size = "1G"
format = "raw"
bus = "scsi"
pool = "fast"
volume = "scratch.img"
[[domain.disks]]
volume = "shared.qcow2"
bus = "sata"
""").domain
    assert (spec.name, spec.memory, spec.vcpus, spec.cpu, spec.machine, spec.firmware) == (
        "web-01", 2 << 30, 4, "host-model", "q35", "efi")
    assert (spec.graphics, spec.listen, spec.video, spec.memballoon, spec.rng) == (
        "spice", "0.0.0.0", "qxl", False, False)
    assert spec.osinfo == "http://debian.org/debian/11"
    assert (spec.wait, spec.wait_text, spec.timeout) == ("serial", "login: ", 300)
    assert spec.interfaces == (recipe.Interface(network="lan", mac="52:54:00:aa:bb:cc"),
                               recipe.Interface(bridge="br0", model="e1000e"))
    assert spec.networks == ["lan"]
    assert spec.disks == (recipe.DataDisk("web-01-disk1.qcow2", 10 << 30, "qcow2", "virtio", None),
                          recipe.DataDisk("scratch.img", 1 << 30, "raw", "scsi", "fast"),
                          recipe.DataDisk("shared.qcow2", None, None, "sata", None))


def test_bridge_and_mac_for_a_single_nic(tmp_path):
    spec = load(tmp_path, '[domain]\nbridge = "br0"\nmac = "52:54:00:00:00:01"\n').domain
    assert spec.interfaces == (recipe.Interface(bridge="br0", mac="52:54:00:00:00:01"),)
    assert spec.network is None and spec.networks == []


def test_no_network(tmp_path):
    spec = load(tmp_path, '[domain]\nnetwork = "none"\nwait = "serial:ready"\n').domain
    assert spec.interfaces == () and spec.network is None


def test_agent_off_turns_the_default_wait_off(tmp_path):
    spec = load(tmp_path, "[domain]\nagent = false\n").domain
    assert not spec.agent and spec.wait == "none"


@pytest.mark.parametrize("wait,kind,text", [("agent", "agent", None), ("ssh", "ssh", None), ("none", "none", None),
                                            ("serial:login:", "serial", "login:"), ("serial:a:b", "serial", "a:b")])
def test_parse_wait(wait, kind, text):
    assert recipe.parse_wait(wait) == (kind, text)


@pytest.mark.parametrize("wait", ["serial:", "serial", "ping", ""])
def test_parse_wait_rejects(wait):
    with pytest.raises(ValueError, match="agent, ssh, none or serial:TEXT"):
        recipe.parse_wait(wait)


@pytest.mark.parametrize("text,key,problem", [
    ('cpu = "host"', "domain.cpu", "not one of host-passthrough, host-model, maximum"),
    ('machine = "pc q35"', "domain.machine", "not a machine type"),
    ('firmware = "uefi"', "domain.firmware", "not one of bios, efi"),
    ('video = "matrox"', "domain.video", "not one of"),
    ('listen = "0.0.0.0"', "domain.listen", "needs graphics"),
    ('graphics = "vnc"\nlisten = "localhost"', "domain.listen", "not an IP address"),
    ('wait = "serial:"', "domain.wait", "serial:TEXT"),
    ('wait = "ssh"\nnetwork = "none"', "domain.wait", "needs a network interface"),
    ('agent = false\nwait = "agent"', "domain.wait", "needs agent = true"),
    ('network = "lan"\nbridge = "br0"', "domain.bridge", "exclude each other"),
    ('network = "none"\nmac = "52:54:00:00:00:01"', "domain.mac", "means no NIC"),
    ('mac = "52:54:00:00:01"', "domain.mac", "not a MAC address"),
    ('mac = "01:00:5e:00:00:01"', "domain.mac", "multicast"),
    ('model = "ne2k"', "domain.model", "not one of virtio"),
    ('bridge = "a-very-long-bridge-name"', "domain.bridge", "not a host interface name"),
    ('osinfo = "nosuchos42"', "domain.osinfo", "not a libosinfo id"),
    ('network = "lan"\n[[domain.interfaces]]\nnetwork = "x"', "domain.network", "not both"),
    ('[[domain.interfaces]]\nmodel = "virtio"', "domain.interfaces[0]", "name a libvirt network"),
    ('[[domain.interfaces]]\nnetwork = "a"\nmac = "52:54:00:00:00:01"\n[[domain.interfaces]]\nnetwork = "b"\n'
     'mac = "52:54:00:00:00:01"', "domain.interfaces", "used twice"),
    ('[[domain.interfaces]]\nnetwork = "a"\nlink = "up"', "domain.interfaces[0].link", "unknown key"),
    ('[[domain.disks]]\nbus = "sata"', "domain.disks[0]", "give a size"),
    ('[[domain.disks]]\nsize = "1G"\nformat = "vmdk"', "domain.disks[0].format", "not one of qcow2, raw"),
    ('[[domain.disks]]\nsize = "1G"\nbus = "ide"', "domain.disks[0].bus", "not one of virtio, sata, scsi"),
    ('[[domain.disks]]\nvolume = "a.img"\n[[domain.disks]]\nvolume = "a.img"', "domain.disks", "attached twice"),
    ('memballon = false', "domain.memballon", "did you mean 'memballoon'"),
])
def test_domain_errors(tmp_path, text, key, problem):
    error = error_of(tmp_path, "[domain]\n" + text + "\n")
    assert error.key == key
    assert problem in error.problem
    assert error.line is not None


# osinfo


def test_osinfo_database_lookup(tmp_path):
    os_dir = tmp_path / "os" / "example.org"
    os_dir.mkdir(parents=True)
    (os_dir / "ex-1.xml").write_text(
        '<libosinfo version="0.0.1"><os id="http://example.org/ex/1"><short-id>ex1</short-id>'
        '<short-id>exone</short-id><resources arch="all"><minimum><ram>536870912</ram></minimum>'
        '<recommended><ram>1073741824</ram></recommended></resources></os></libosinfo>')
    found = osinfo.lookup("exone", [tmp_path])
    assert (found.id, found.minimum_ram, found.recommended_ram, found.in_database) == (
        "http://example.org/ex/1", 512 << 20, 1 << 30, True)
    assert osinfo.resolve("ex1", [tmp_path]) == "http://example.org/ex/1"
    assert osinfo.resolve("http://example.org/ex/2", [tmp_path]) == "http://example.org/ex/2"


@pytest.mark.parametrize("short,full", [("debian12", "http://debian.org/debian/12"),
                                        ("ubuntu24.04", "http://ubuntu.com/ubuntu/24.04"),
                                        ("fedora41", "http://fedoraproject.org/fedora/41"),
                                        ("rocky9", "http://rockylinux.org/rocky/9")])
def test_osinfo_ids_newer_than_the_database_follow_the_family_pattern(tmp_path, short, full):
    found = osinfo.lookup(short, [tmp_path])  # an empty database
    assert found.id == full and not found.in_database


@pytest.mark.parametrize("short", ["unknown", "", "win99"])
def test_osinfo_unknown(tmp_path, short):
    assert osinfo.lookup(short, [tmp_path]) is None


def test_debian12_facts_give_the_osinfo_metadata(tmp_path):
    loaded = load(tmp_path, "[domain]\n")
    spec = domain_spec(loaded, "default", "web.qcow2", "tcg", facts={"osinfo": "debian12"})
    assert spec.osinfo_id == "http://debian.org/debian/12"
    assert domain_spec(loaded, "default", "web.qcow2", "tcg").osinfo_id is None
    assert domain_spec(loaded, "default", "web.qcow2", "tcg", facts={"osinfo": "unknown"}).osinfo_id is None


def test_domain_spec_from_recipe(tmp_path):
    loaded = load(tmp_path, """
[disk]
format = "raw"
[domain]
[[domain.interfaces]]
network = "default"
[[domain.interfaces]]
bridge = "br0"
mac = "52:54:00:00:00:09"
[[domain.disks]]
size = "1G"
[[domain.disks]]
volume = "old.img"
pool = "other"
""")
    spec = domain_spec(loaded, "images", "web.raw", "kvm", disk_formats={("other", "old.img"): "qcow2"})
    assert [(d.pool, d.volume, d.format, d.bus) for d in spec.disks] == [
        ("images", "web.raw", "raw", "virtio"), ("images", "web-disk1.qcow2", "qcow2", "virtio"),
        ("other", "old.img", "qcow2", "virtio")]
    assert [(n.kind, n.source) for n in spec.nics] == [("network", "default"), ("bridge", "br0")]
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", spec.nics[0].mac) and spec.nics[1].mac == "52:54:00:00:00:09"
    assert spec.accel == "kvm" and spec.cpu_mode == "host-passthrough"
    assert spec.labels == {"recipe": str((tmp_path / "recipe.toml").resolve()), "recipe-sha256": loaded.digest}
    again = domain_spec(loaded, "images", "web.raw", "kvm")
    assert again.uuid != spec.uuid and again.nics[0].mac != spec.nics[0].mac


# imagebuilder xml


def test_xml_command_prints_valid_xml(tmp_path):
    path = write(tmp_path, MINIMAL + '[domain]\nmemory = "2G"\nosinfo = "debian12"\ngraphics = "vnc"\n')
    result = runner.invoke(app, ["xml", str(path), "--accel", "tcg"])
    assert result.exit_code == 0, result.output
    root = ET.fromstring(result.stdout)
    assert root.get("type") == "qemu" and root.findtext("name") == "web"
    assert int(root.findtext("memory")) == 2 << 30
    assert root.find(f"metadata/{{{OSINFO_NS}}}libosinfo/{{{OSINFO_NS}}}os").get("id") == \
        "http://debian.org/debian/12"
    assert root.find("devices/graphics").get("type") == "vnc"
    assert root.find("devices/serial/log").get("file") == "/var/log/libvirt/qemu/web-serial.log"


def test_xml_for_a_target_only_recipe(tmp_path):
    loaded = load(tmp_path, '[output]\npath = "w.qcow2"\n[[output.targets]]\nuri = "q+tcp://h/s"\n'
                            'pool = "remote"\ndomain = true\n[domain]\n')
    root = ET.fromstring(recipe_xml(loaded, "tcg"))
    assert root.find("devices/disk/source").attrib == {"pool": "remote", "volume": "web.qcow2"}


def test_xml_command_without_domain_exits_2(tmp_path):
    path = write(tmp_path, MINIMAL)
    result = runner.invoke(app, ["xml", str(path), "--accel", "tcg"])
    assert result.exit_code == 2
    assert "no [domain] section" in result.output


def test_xml_without_domain_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        recipe_xml(load(tmp_path, ""), "tcg")


def test_vm_commands_reject_bad_options():
    result = runner.invoke(app, ["vm", "start", "x", "--wait", "ping", "--connect", "test:///default"])
    assert result.exit_code == 2 and "--wait" in result.output
    result = runner.invoke(app, ["vm", "stop", "x", "--timeout", "soon", "--connect", "test:///default"])
    assert result.exit_code == 2 and "--timeout" in result.output


def test_vm_list_and_errors_against_libvirts_test_driver():
    """libvirt's built-in test driver (test:///default, no daemon) has one running domain, `test`."""
    import json
    result = runner.invoke(app, ["vm", "list", "--json", "--connect", "test:///default"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["name"], row["state"], row["osinfo"], row["recipe"]) == ("test", "running", None, None)
    table = runner.invoke(app, ["vm", "list", "--connect", "test:///default"]).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "MEMORY", "VCPUS", "OS", "RECIPE"]
    assert table[1].split()[:2] == ["test", "running"]
    missing = runner.invoke(app, ["vm", "kill", "nosuch", "--connect", "test:///default"])
    assert missing.exit_code == 2 and "no domain named nosuch on test:///default" in missing.output
    refused = runner.invoke(app, ["vm", "remove", "test", "--connect", "test:///default"])
    assert refused.exit_code == 2 and "test is running; stop it first" in refused.output
    unreachable = runner.invoke(app, ["vm", "list", "--connect", "qemu:///system?socket=/nonexistent/sock"])
    assert unreachable.exit_code == 1 and "cannot connect to libvirt" in unreachable.output
