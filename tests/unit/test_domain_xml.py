"""The domain and network XML we hand libvirt: its shape, and that libvirt's schema accepts it.

Every shape made here goes through virt-xml-validate (`render`).
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

import pytest

from imagebuilder.errors import BuildError, InputError
from imagebuilder.hardware import check_mac, generate_mac
from imagebuilder.virt.domainxml import (
    IMAGEBUILDER_NS, OSINFO_NS, DiskSpec, DomainSpec, NicSpec, default_network_xml, disk_targets, domain_xml,
    read_metadata, validate_xml,
)

MAC = "52:54:00:12:34:56"


def make_spec(**changes: object) -> DomainSpec:
    fields = dict(name="web", memory_bytes=2 * 1024**3, vcpus=2, disks=(DiskSpec("default", "web.qcow2"),),
                  nics=(NicSpec("network", "default", MAC),))
    fields.update(changes)
    return DomainSpec(**fields)


def render(spec: DomainSpec) -> ET.Element:
    """The XML of spec, checked against libvirt's schema, parsed."""
    xml = domain_xml(spec)
    validate_xml(xml)
    return ET.fromstring(xml)


def test_tcg_domain_basics():
    root = render(make_spec())
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "web"
    assert root.find("uuid") is None and root.find("metadata") is None
    assert root.find("memory").get("unit") == "bytes"
    assert int(root.findtext("memory")) == 2 * 1024**3
    assert root.findtext("vcpu") == "2"
    assert root.find("os").get("firmware") is None
    os_type = root.find("os/type")
    assert (os_type.text, os_type.get("arch"), os_type.get("machine")) == ("hvm", "x86_64", "pc")
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("cpu") is None
    assert root.find("clock").get("offset") == "utc"
    assert [root.findtext(t) for t in ("on_poweroff", "on_reboot", "on_crash")] == [
        "destroy", "restart", "destroy"]


def test_kvm_domain_passes_host_cpu():
    root = render(make_spec(accel="kvm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


@pytest.mark.parametrize("mode", ["host-passthrough", "host-model", "maximum"])
def test_cpu_mode(mode):
    assert render(make_spec(cpu=mode)).find("cpu").attrib == {"mode": mode}


def test_machine_firmware_efi():
    root = render(make_spec(machine="q35", firmware="efi"))
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("os/loader") is None  # libvirt picks the OVMF build from its firmware descriptors


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_boot_disk_is_a_pool_volume(fmt):
    root = render(make_spec(disks=(DiskSpec("images", "a.img", fmt),)))
    (disk,) = root.findall("devices/disk")
    assert (disk.get("type"), disk.get("device")) == ("volume", "disk")
    assert disk.find("driver").attrib == {"name": "qemu", "type": fmt, "discard": "unmap"}
    assert disk.find("source").attrib == {"pool": "images", "volume": "a.img"}
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert disk.find("boot").get("order") == "1"
    assert root.find("os/boot") is None  # per-device boot order and <os><boot> exclude each other


def test_extra_data_disks_on_each_bus():
    disks = (DiskSpec("default", "web.qcow2"), DiskSpec("default", "data.qcow2"),
             DiskSpec("fast", "db.raw", "raw", "sata"), DiskSpec("default", "logs.qcow2", bus="scsi"))
    root = render(make_spec(disks=disks))
    found = [(d.find("source").get("pool"), d.find("source").get("volume"), d.find("target").get("dev"),
              d.find("target").get("bus"), d.find("driver").get("type")) for d in root.findall("devices/disk")]
    assert found == [("default", "web.qcow2", "vda", "virtio", "qcow2"),
                     ("default", "data.qcow2", "vdb", "virtio", "qcow2"),
                     ("fast", "db.raw", "sda", "sata", "raw"),
                     ("default", "logs.qcow2", "sdb", "scsi", "qcow2")]
    assert [d.find("boot") is not None for d in root.findall("devices/disk")] == [True, False, False, False]
    (controller,) = root.findall("devices/controller")
    assert controller.attrib == {"type": "scsi", "index": "0", "model": "virtio-scsi"}


def test_no_scsi_controller_without_scsi_disks():
    assert render(make_spec()).find("devices/controller") is None


def test_disk_target_names_go_past_z():
    disks = tuple(DiskSpec("p", f"d{i}") for i in range(28))
    assert disk_targets(disks)[:2] + disk_targets(disks)[25:] == ["vda", "vdb", "vdz", "vdaa", "vdab"]


def test_network_and_bridge_interfaces():
    nics = (NicSpec("network", "lan", MAC), NicSpec("bridge", "br0", "52:54:00:ab:cd:ef", "e1000e"))
    first, second = render(make_spec(nics=nics)).findall("devices/interface")
    assert first.get("type") == "network" and first.find("source").attrib == {"network": "lan"}
    assert first.find("mac").get("address") == MAC and first.find("model").get("type") == "virtio"
    assert second.get("type") == "bridge" and second.find("source").attrib == {"bridge": "br0"}
    assert second.find("mac").get("address") == "52:54:00:ab:cd:ef"
    assert second.find("model").get("type") == "e1000e"


def test_no_nics_means_no_interface():
    assert render(make_spec(nics=())).find("devices/interface") is None


def test_generated_macs_are_qemu_unicast_and_differ():
    macs = {generate_mac() for _ in range(50)}
    assert len(macs) == 50
    for mac in macs:
        assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
        assert check_mac(mac) == mac


@pytest.mark.parametrize("text,problem", [("52:54:00:12:34", "not a MAC"), ("zz:54:00:12:34:56", "not a MAC"),
                                          ("01:00:5e:00:00:01", "multicast")])
def test_bad_macs(text, problem):
    with pytest.raises(ValueError, match=problem):
        check_mac(text)


def test_mac_is_made_canonical():
    assert check_mac("52:54:00:AB:CD:EF") == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize("kind", ["vnc", "spice"])
def test_graphics_listen_on_loopback_by_default(kind):
    (graphics,) = render(make_spec(graphics=kind)).findall("devices/graphics")
    assert graphics.get("type") == kind and graphics.get("autoport") == "yes"
    assert graphics.find("listen").attrib == {"type": "address", "address": "127.0.0.1"}


def test_graphics_listen_address():
    graphics = render(make_spec(graphics="spice", listen="0.0.0.0", video="qxl")).find("devices/graphics")
    assert graphics.find("listen").get("address") == "0.0.0.0"


@pytest.mark.parametrize("graphics", ["none", "vnc"])
def test_vga_video_is_the_default(graphics):
    root = render(make_spec(graphics=graphics))
    assert (root.find("devices/graphics") is None) == (graphics == "none")
    assert root.find("devices/video/model").get("type") == "vga"


@pytest.mark.parametrize("video", ["virtio", "qxl", "bochs", "cirrus", "none"])
def test_video_models(video):
    assert render(make_spec(video=video)).find("devices/video/model").get("type") == video


def test_serial_console_without_log():
    devices = render(make_spec()).find("devices")
    assert devices.find("serial").get("type") == "pty"
    assert devices.find("serial/log") is None
    console = devices.find("console")
    assert console.get("type") == "pty" and console.find("target").get("type") == "serial"


def test_serial_log_file():
    log = render(make_spec(serial_log="/var/log/ib/web.log")).find("devices/serial/log")
    assert log.attrib == {"file": "/var/log/ib/web.log", "append": "off"}


def test_agent_channel_balloon_and_rng():
    devices = render(make_spec()).find("devices")
    channel = devices.find("channel")
    assert channel.get("type") == "unix"
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}
    assert devices.find("memballoon").get("model") == "virtio"
    backend = devices.find("rng/backend")
    assert devices.find("rng").get("model") == "virtio"
    assert (backend.get("model"), backend.text) == ("random", "/dev/urandom")


def test_devices_can_be_left_out():
    devices = render(make_spec(agent=False, rng=False, memballoon=False)).find("devices")
    assert devices.find("channel") is None and devices.find("rng") is None
    assert devices.find("memballoon").get("model") == "none"  # libvirt would add one otherwise


def test_osinfo_and_imagebuilder_metadata():
    spec = make_spec(osinfo_id="http://debian.org/debian/12", uuid="8d2c1c1e-7a3b-4f0e-9e77-1f5d0a4c2b11",
                     description="built by imagebuilder", labels={"recipe": "/r/web.toml", "recipe-sha256": "ab12"})
    root = render(spec)
    assert root.findtext("uuid") == "8d2c1c1e-7a3b-4f0e-9e77-1f5d0a4c2b11"
    assert root.findtext("description") == "built by imagebuilder"
    os_elem = root.find(f"metadata/{{{OSINFO_NS}}}libosinfo/{{{OSINFO_NS}}}os")
    assert os_elem.get("id") == "http://debian.org/debian/12"
    assert root.find(f"metadata/{{{IMAGEBUILDER_NS}}}build").attrib == {"recipe": "/r/web.toml",
                                                                        "recipe-sha256": "ab12"}
    assert read_metadata(domain_xml(spec)) == {"osinfo": "http://debian.org/debian/12",
                                              "recipe": "/r/web.toml", "recipe-sha256": "ab12"}
    assert "libosinfo:os" in domain_xml(spec)  # the prefix people know from virt-install


def test_every_option_at_once_passes_the_schema():
    spec = make_spec(
        disks=(DiskSpec("default", "web.qcow2"), DiskSpec("default", "d.raw", "raw", "sata"),
               DiskSpec("p2", "e.qcow2", bus="scsi")),
        nics=(NicSpec("network", "default", generate_mac()), NicSpec("bridge", "br0", generate_mac(), "rtl8139")),
        accel="kvm", cpu="host-model", machine="pc-q35-7.2", firmware="efi", graphics="spice",
        listen="::1", video="virtio", memballoon=False, rng=False, serial_log="/tmp/x.log",
        osinfo_id="http://debian.org/debian/12", uuid="8d2c1c1e-7a3b-4f0e-9e77-1f5d0a4c2b11",
        description="d", labels={"recipe": "r"})
    render(spec)


def test_names_are_escaped_not_pasted():
    root = render(make_spec(name="a<b>&'\"", disks=(DiskSpec("default", "x&y.qcow2"),),
                            description="<script>&"))
    assert root.findtext("name") == "a<b>&'\""
    assert root.find("devices/disk/source").get("volume") == "x&y.qcow2"
    assert root.findtext("description") == "<script>&"


@pytest.mark.parametrize("change", [{"accel": "hvf"}, {"graphics": "sdl"}, {"firmware": "coreboot"},
                                    {"cpu": "host"}, {"video": "matrox"}, {"memory_bytes": 0}, {"vcpus": 0},
                                    {"disks": ()}])
def test_spec_rejects_unknown_values(change):
    with pytest.raises(InputError):
        make_spec(**change)


@pytest.mark.parametrize("make", [lambda: DiskSpec("p", "v", "vmdk"), lambda: DiskSpec("p", "v", bus="ide"),
                                  lambda: NicSpec("direct", "eth0", MAC), lambda: NicSpec("network", "n", MAC, "ne2k"),
                                  lambda: NicSpec("network", "n", "01:00:00:00:00:01")])
def test_device_specs_reject_unknown_values(make):
    with pytest.raises(InputError):
        make()


def test_default_network_xml():
    xml = default_network_xml()
    validate_xml(xml, "network")
    root = ET.fromstring(xml)
    assert root.findtext("name") == "default"
    assert root.find("forward").get("mode") == "nat"
    assert root.find("bridge").get("name") == "virbr0"
    ip = root.find("ip")
    assert ip.attrib == {"address": "192.168.122.1", "netmask": "255.255.255.0"}
    assert ip.find("dhcp/range").attrib == {"start": "192.168.122.2", "end": "192.168.122.254"}


def test_validate_xml_rejects_invalid_domain():
    root = ET.fromstring(domain_xml(make_spec()))
    ET.SubElement(root, "no_such_element")
    with pytest.raises(BuildError, match="schema"):
        validate_xml(ET.tostring(root, encoding="unicode"))


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_spec().name = "other"  # type: ignore[misc]
