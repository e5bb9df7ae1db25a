"""The domain and network XML we hand libvirt: its shape, and that libvirt's schema accepts it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from imagebuilder.errors import BuildError, InputError
from imagebuilder.virt.domain import DomainSpec, default_network_xml, domain_xml, validate_xml


def make_spec(**changes: object) -> DomainSpec:
    fields = dict(name="web", memory_bytes=2 * 1024**3, vcpus=2, pool="default",
                  volume="web.qcow2", disk_format="qcow2")
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
    assert root.find("memory").get("unit") == "bytes"
    assert int(root.findtext("memory")) == 2 * 1024**3
    assert root.findtext("vcpu") == "2"
    os_type = root.find("os/type")
    assert (os_type.text, os_type.get("arch"), os_type.get("machine")) == ("hvm", "x86_64", "pc")
    assert root.find("os/boot").get("dev") == "hd"
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("cpu") is None
    assert root.find("clock").get("offset") == "utc"
    assert [root.findtext(t) for t in ("on_poweroff", "on_reboot", "on_crash")] == [
        "destroy", "restart", "destroy"]


def test_kvm_domain_passes_host_cpu():
    root = render(make_spec(accel="kvm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_disk_is_a_pool_volume(fmt):
    root = render(make_spec(disk_format=fmt, pool="images", volume="a.img"))
    (disk,) = root.findall("devices/disk")
    assert (disk.get("type"), disk.get("device")) == ("volume", "disk")
    assert disk.find("driver").attrib == {"name": "qemu", "type": fmt}
    assert disk.find("source").attrib == {"pool": "images", "volume": "a.img"}
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}


def test_network_interface_without_mac():
    (nic,) = render(make_spec(network="lan")).findall("devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("source").get("network") == "lan"
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("mac") is None


def test_network_interface_with_mac():
    nic = render(make_spec(mac="52:54:00:12:34:56")).find("devices/interface")
    assert nic.find("source").get("network") == "default"
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"


def test_no_network_means_no_interface():
    assert render(make_spec(network=None)).find("devices/interface") is None


@pytest.mark.parametrize("kind", ["vnc", "spice"])
def test_graphics_listen_on_loopback(kind):
    (graphics,) = render(make_spec(graphics=kind)).findall("devices/graphics")
    assert graphics.get("type") == kind
    assert graphics.find("listen").attrib == {"type": "address", "address": "127.0.0.1"}


@pytest.mark.parametrize("graphics", ["none", "vnc"])
def test_vga_video_is_always_present(graphics):
    root = render(make_spec(graphics=graphics))
    assert (root.find("devices/graphics") is None) == (graphics == "none")
    assert root.find("devices/video/model").get("type") == "vga"


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


def test_names_are_escaped_not_pasted():
    root = render(make_spec(name="a<b>&'\"", volume="x&y.qcow2"))
    assert root.findtext("name") == "a<b>&'\""
    assert root.find("devices/disk/source").get("volume") == "x&y.qcow2"


@pytest.mark.parametrize("change", [{"accel": "hvf"}, {"graphics": "sdl"}, {"disk_format": "vmdk"},
                                    {"memory_bytes": 0}, {"vcpus": 0}])
def test_spec_rejects_unknown_values(change):
    with pytest.raises(InputError):
        make_spec(**change)


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
