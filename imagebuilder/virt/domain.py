"""Domain XML from a spec, defining, starting and removing domains, and the networks they use."""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from imagebuilder.errors import BuildError, HostError, InputError, VirtError
from imagebuilder.run import run

ACCELS = ("kvm", "tcg")
GRAPHICS = ("none", "vnc", "spice")
DISK_FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class DomainSpec:
    """What the domain of a build looks like; `network=None` means no NIC."""

    name: str
    memory_bytes: int
    vcpus: int
    pool: str
    volume: str
    disk_format: str
    network: str | None = "default"
    mac: str | None = None
    accel: str = "tcg"
    graphics: str = "none"
    serial_log: str | None = None

    def __post_init__(self) -> None:
        for field, value, allowed in (("accel", self.accel, ACCELS),
                                      ("graphics", self.graphics, GRAPHICS),
                                      ("disk_format", self.disk_format, DISK_FORMATS)):
            if value not in allowed:
                raise InputError(f"domain {field} {value!r} is not one of {', '.join(allowed)}")
        if self.memory_bytes <= 0 or self.vcpus <= 0:
            raise InputError("domain memory and vcpus must be positive")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrs)
    elem.text = text
    return elem


def domain_xml(spec: DomainSpec) -> str:
    """The libvirt domain XML for `spec`."""
    root = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(root, "name", spec.name)
    _sub(root, "memory", str(spec.memory_bytes), unit="bytes")
    _sub(root, "vcpu", str(spec.vcpus))
    os_elem = _sub(root, "os")
    _sub(os_elem, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_elem, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.accel == "kvm":
        _sub(root, "cpu", mode="host-passthrough")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    _devices(_sub(root, "devices"), spec)
    return ET.tostring(root, encoding="unicode")


def _devices(devices: ET.Element, spec: DomainSpec) -> None:
    disk = _sub(devices, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format)
    _sub(disk, "source", pool=spec.pool, volume=spec.volume)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.network is not None:
        nic = _sub(devices, "interface", type="network")
        _sub(nic, "source", network=spec.network)
        if spec.mac:
            _sub(nic, "mac", address=spec.mac)
        _sub(nic, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    if spec.serial_log:
        _sub(serial, "log", file=spec.serial_log, append="off")
    _sub(serial, "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    if spec.graphics != "none":
        graphics = _sub(devices, "graphics", type=spec.graphics, autoport="yes")
        _sub(graphics, "listen", type="address", address="127.0.0.1")
    # Without a VGA device SeaBIOS and GRUB hang before the kernel, even with a serial console.
    _sub(_sub(devices, "video"), "model", type="vga")
    _sub(devices, "memballoon", model="virtio")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")


def validate_xml(xml: str, schema: str = "domain") -> None:
    """Check `xml` against libvirt's RNG `schema` with virt-xml-validate; BuildError if invalid."""
    if shutil.which("xmllint") is None:
        raise HostError("xmllint not found on PATH (virt-xml-validate needs it)",
                        hint="install libxml2-utils")
    fd, path = tempfile.mkstemp(prefix="imagebuilder-", suffix=".xml")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(xml)
        run(["virt-xml-validate", path, schema])
    except BuildError as exc:
        raise BuildError(f"{schema} XML does not pass libvirt's schema: {exc.message}") from None
    finally:
        os.unlink(path)


def _virt_error(what: str, exc: libvirt.libvirtError) -> VirtError:
    return VirtError(f"{what}: {exc.get_error_message()}")


def default_network_xml() -> str:
    """libvirt's standard `default` NAT network: virbr0, 192.168.122.1/24, DHCP .2 to .254."""
    root = ET.Element("network")
    _sub(root, "name", "default")
    _sub(root, "forward", mode="nat")
    _sub(root, "bridge", name="virbr0", stp="on", delay="0")
    ip = _sub(root, "ip", address="192.168.122.1", netmask="255.255.255.0")
    _sub(_sub(ip, "dhcp"), "range", start="192.168.122.2", end="192.168.122.254")
    return ET.tostring(root, encoding="unicode")


def ensure_network(conn: libvirt.virConnect, name: str) -> bool:
    """Make network `name` active; create `default` if missing. True if it was created."""
    try:
        net = conn.networkLookupByName(name)
        created = False
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise _virt_error(f"cannot look up network {name}", exc) from None
        if name != "default":
            raise VirtError(f"network {name} does not exist") from None
        try:
            net = conn.networkDefineXML(default_network_xml())
            net.setAutostart(1)
        except libvirt.libvirtError as exc:
            raise _virt_error("cannot define the default network", exc) from None
        created = True
    try:
        if not net.isActive():
            net.create()
    except libvirt.libvirtError as exc:
        raise _virt_error(f"cannot start network {name}", exc) from None
    return created


def remove_network(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine network `name`; True if it existed."""
    try:
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return False
        raise _virt_error(f"cannot remove network {name}", exc) from None
    return True


def define(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    """Define a persistent domain from `xml`."""
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise _virt_error("cannot define the domain", exc) from None


def start(dom: libvirt.virDomain) -> None:
    """Start a defined domain."""
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        raise _virt_error(f"cannot start domain {dom.name()}", exc) from None


def domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    """True if a domain `name` is defined or running."""
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise _virt_error(f"cannot look up domain {name}", exc) from None
    return True


def remove_domain(conn: libvirt.virConnect, name: str) -> bool:
    """Stop domain `name` if running and undefine it (with its NVRAM); True if it existed."""
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            _undefine(dom)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise _virt_error(f"cannot remove domain {name}", exc) from None
    return True


def _undefine(dom: libvirt.virDomain) -> None:
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise
        dom.undefine()
