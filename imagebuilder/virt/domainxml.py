"""Domain XML from a spec, built with ElementTree (never by string formatting) and checked against
libvirt's own schema with virt-xml-validate.

This module does not import `libvirt`: `imagebuilder xml` and the unit tests use it without a daemon.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from imagebuilder import arches
from imagebuilder.errors import BuildError, HostError, InputError
from imagebuilder.hardware import (ACCELS, CPU_MODES, DISK_BUSES, DISK_FORMATS, FIRMWARES, GRAPHICS, NIC_KINDS,
                                   NIC_MODELS, VIDEOS, check_mac)
from imagebuilder.run import run

AGENT_CHANNEL = "org.qemu.guest_agent.0"
OSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
IMAGEBUILDER_NS = "urn:x-imagebuilder:domain:1"

_DEV_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}

ET.register_namespace("libosinfo", OSINFO_NS)
ET.register_namespace("imagebuilder", IMAGEBUILDER_NS)


@dataclass(frozen=True)
class DiskSpec:
    """One disk of the domain: a volume of a pool."""

    pool: str
    volume: str
    format: str = "qcow2"
    bus: str = "virtio"

    def __post_init__(self) -> None:
        _one_of("disk format", self.format, DISK_FORMATS)
        _one_of("disk bus", self.bus, DISK_BUSES)


@dataclass(frozen=True)
class NicSpec:
    """One network interface: on a libvirt network or a host bridge."""

    kind: str
    source: str
    mac: str
    model: str = "virtio"

    def __post_init__(self) -> None:
        _one_of("interface type", self.kind, NIC_KINDS)
        _one_of("interface model", self.model, NIC_MODELS)
        try:
            check_mac(self.mac)
        except ValueError as exc:
            raise InputError(str(exc)) from None


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML says; the first disk is the one it boots from."""

    name: str
    memory_bytes: int
    vcpus: int
    disks: tuple[DiskSpec, ...]
    nics: tuple[NicSpec, ...] = ()
    accel: str = "tcg"
    cpu: str | None = None  # None: host-passthrough under KVM, QEMU's default model under TCG
    machine: str = "pc"
    firmware: str = "bios"
    graphics: str = "none"
    listen: str = "127.0.0.1"
    video: str = "vga"
    memballoon: bool = True
    rng: bool = True
    agent: bool = True
    serial_log: str | None = None
    osinfo_id: str | None = None
    uuid: str | None = None
    description: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # imagebuilder metadata attributes
    cdroms: tuple[DiskSpec, ...] = ()  # read-only CD-ROMs (a cloud-init seed), after the disks
    arch: str = "x86_64"

    def __post_init__(self) -> None:
        _one_of("accel", self.accel, ACCELS)
        _one_of("arch", self.arch, tuple(arches.ARCHES))
        _one_of("firmware", self.firmware, FIRMWARES)
        _one_of("graphics", self.graphics, GRAPHICS)
        _one_of("video", self.video, VIDEOS)
        if self.cpu is not None:
            _one_of("cpu", self.cpu, CPU_MODES)
        if self.memory_bytes <= 0 or self.vcpus <= 0:
            raise InputError("domain memory and vcpus must be positive")
        if any(cdrom.bus == "virtio" for cdrom in self.cdroms):
            raise InputError("a CD-ROM needs a sata or scsi bus (virtio has no CD-ROMs)")
        if not self.disks:
            raise InputError("a domain needs at least one disk to boot from")

    @property
    def cpu_mode(self) -> str | None:
        """The <cpu mode> the XML carries, after the per-accelerator default ("custom": the arch's model)."""
        if self.cpu is None:
            if self.accel == "kvm":
                return "host-passthrough"
            return "custom" if self.cpu_model else None
        return self.cpu

    @property
    def cpu_model(self) -> str | None:
        """The CPU model QEMU emulates when the recipe leaves cpu out, under TCG (None: QEMU's default;
        on aarch64 that is a 32-bit CPU, so the arch names one)."""
        return arches.lookup(self.arch).cpu_model if self.cpu is None and self.accel == "tcg" else None


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"domain {what} {value!r} is not one of {', '.join(allowed)}")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrs)
    elem.text = text
    return elem


def domain_xml(spec: DomainSpec) -> str:
    """The libvirt domain XML for `spec`, indented."""
    root = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(root, "name", spec.name)
    if spec.uuid:
        _sub(root, "uuid", spec.uuid)
    if spec.description:
        _sub(root, "description", spec.description)
    _metadata(root, spec)
    _sub(root, "memory", str(spec.memory_bytes), unit="bytes")
    _sub(root, "vcpu", str(spec.vcpus))
    os_elem = _sub(root, "os", **({"firmware": "efi"} if spec.firmware == "efi" else {}))
    _sub(os_elem, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.firmware == "efi" and spec.arch != "x86_64":
        # libvirt prefers firmware with Microsoft's keys enrolled; the bootstrap's GRUB is not signed
        _sub(_sub(os_elem, "firmware"), "feature", enabled="no", name="secure-boot")
    features = _sub(root, "features")
    _sub(features, "acpi")
    if spec.arch == "x86_64":
        _sub(features, "apic")
    if spec.cpu_mode == "custom":
        _sub(_sub(root, "cpu", mode="custom", match="exact"), "model", spec.cpu_model, fallback="forbid")
    elif spec.cpu_mode:
        _sub(root, "cpu", mode=spec.cpu_mode)
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    _devices(_sub(root, "devices"), spec)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _metadata(root: ET.Element, spec: DomainSpec) -> None:
    if not spec.osinfo_id and not spec.labels:
        return
    metadata = _sub(root, "metadata")
    if spec.osinfo_id:
        info = _sub(metadata, f"{{{OSINFO_NS}}}libosinfo")
        _sub(info, f"{{{OSINFO_NS}}}os", id=spec.osinfo_id)
    if spec.labels:
        _sub(metadata, f"{{{IMAGEBUILDER_NS}}}build", **spec.labels)


def disk_targets(disks: tuple[DiskSpec, ...]) -> list[str]:
    """Guest device names in order: vda, vdb … for virtio, sda, sdb … for sata and scsi."""
    counts: dict[str, int] = {}
    names = []
    for disk in disks:
        prefix = _DEV_PREFIX[disk.bus]
        index = counts.get(prefix, 0)
        counts[prefix] = index + 1
        names.append(prefix + _letters(index))
    return names


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (the kernel's naming)."""
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("a") + rest) + text
    return text


def _devices(devices: ET.Element, spec: DomainSpec) -> None:
    for number, (disk, target) in enumerate(zip(spec.disks, disk_targets(spec.disks))):
        elem = _sub(devices, "disk", type="volume", device="disk")
        _sub(elem, "driver", name="qemu", type=disk.format, discard="unmap")
        _sub(elem, "source", pool=disk.pool, volume=disk.volume)
        _sub(elem, "target", dev=target, bus=disk.bus)
        if number == 0:
            _sub(elem, "boot", order="1")
    for disk, target in zip(spec.cdroms, disk_targets(spec.disks + spec.cdroms)[len(spec.disks):]):
        elem = _sub(devices, "disk", type="volume", device="cdrom")
        _sub(elem, "driver", name="qemu", type=disk.format)
        _sub(elem, "source", pool=disk.pool, volume=disk.volume)
        _sub(elem, "target", dev=target, bus=disk.bus)
        _sub(elem, "readonly")
    if any(disk.bus == "scsi" for disk in spec.disks + spec.cdroms):
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for nic in spec.nics:
        elem = _sub(devices, "interface", type=nic.kind)
        _sub(elem, "mac", address=nic.mac)
        _sub(elem, "source", **{nic.kind: nic.source})
        _sub(elem, "model", type=nic.model)
    serial = _sub(devices, "serial", type="pty")
    if spec.serial_log:
        _sub(serial, "log", file=spec.serial_log, append="off")
    _sub(serial, "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    if spec.agent:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    if spec.graphics != "none":
        graphics = _sub(devices, "graphics", type=spec.graphics, autoport="yes")
        _sub(graphics, "listen", type="address", address=spec.listen)
    # Without a video device SeaBIOS and GRUB hang before the kernel, even with a serial console;
    # "none" is for firmware and guests that do not need one.
    _sub(_sub(devices, "video"), "model", type=spec.video)
    # libvirt adds a balloon by itself when none is given, so "off" has to say model='none'.
    _sub(devices, "memballoon", model="virtio" if spec.memballoon else "none")
    if spec.rng:
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


def default_network_xml() -> str:
    """libvirt's standard `default` NAT network: virbr0, 192.168.122.1/24, DHCP .2 to .254."""
    root = ET.Element("network")
    _sub(root, "name", "default")
    _sub(root, "forward", mode="nat")
    _sub(root, "bridge", name="virbr0", stp="on", delay="0")
    ip = _sub(root, "ip", address="192.168.122.1", netmask="255.255.255.0")
    _sub(_sub(ip, "dhcp"), "range", start="192.168.122.2", end="192.168.122.254")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def read_metadata(xml: str) -> dict[str, str]:
    """From a domain's XML: {'osinfo': id} and the imagebuilder labels, whichever it carries."""
    root = ET.fromstring(xml)
    found: dict[str, str] = {}
    os_elem = root.find(f"metadata/{{{OSINFO_NS}}}libosinfo/{{{OSINFO_NS}}}os")
    if os_elem is not None and os_elem.get("id"):
        found["osinfo"] = os_elem.get("id", "")
    build = root.find(f"metadata/{{{IMAGEBUILDER_NS}}}build")
    if build is not None:
        found.update(build.attrib)
    return found
