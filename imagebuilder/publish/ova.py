"""OVA: an OVF 1.0 envelope (DMTF DSP0243) describing the machine from [domain] (vCPUs, memory,
NICs, the disk), the disk as a streamOptimized vmdk, and a manifest of SHA256 digests, in one tar
whose first member is the .ovf and the .mf right after it, as the specification orders them."""

from __future__ import annotations

import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from imagebuilder import disk
from imagebuilder.files import file_digest
from imagebuilder.progress import Reporter
from imagebuilder.publish import formats
from imagebuilder.recipe.model import Domain

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
NIC_MODELS = {"virtio": "VmxNet3", "e1000": "E1000", "e1000e": "E1000e", "rtl8139": "PCNet32"}
# CIM_OperatingSystem.OsType: 36 LINUX, 94 Ubuntu 64-Bit, 96 Debian 64-Bit, 80 RHEL 64-Bit, 107 CentOS 64-Bit
OS_TYPES = {"debian": 96, "ubuntu": 94, "rhel": 80, "centos": 107}
for prefix, uri in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD)):
    ET.register_namespace(prefix, uri)


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _element(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    child = ET.SubElement(parent, _q(OVF, tag), {_q(OVF, k): v for k, v in attributes.items()})
    child.text = text
    return child


def _item(section: ET.Element, fields: dict[str, str]) -> None:
    """An Item of the hardware section; CIM's schema wants its fields in alphabetical order."""
    item = _element(section, "Item")
    for key in sorted(fields):
        ET.SubElement(item, _q(RASD, key)).text = fields[key]


def envelope(name: str, spec: Domain, facts: dict[str, str], vmdk_name: str, vmdk_size: int,
             capacity: int) -> bytes:
    """The OVF descriptor of the machine."""
    root = ET.Element(_q(OVF, "Envelope"))
    references = _element(root, "References")
    _element(references, "File", href=vmdk_name, id="file1", size=str(vmdk_size))
    disks = _element(root, "DiskSection")
    _element(disks, "Info", "The virtual disk")
    _element(disks, "Disk", capacity=str(capacity), capacityAllocationUnits="byte", diskId="vmdisk1",
             fileRef="file1", format=VMDK_FORMAT)
    networks = [nic.network or nic.bridge or "default" for nic in spec.interfaces]
    network_section = _element(root, "NetworkSection")
    _element(network_section, "Info", "The networks the NICs connect to")
    for network in dict.fromkeys(networks):
        _element(_element(network_section, "Network", name=network), "Description", f"the {network} network")
    system = _element(root, "VirtualSystem", id=name)
    _element(system, "Info", f"{name}, built by imagebuilder")
    _element(system, "Name", name)
    os_section = _element(system, "OperatingSystemSection", id=str(OS_TYPES.get(facts.get("distro", ""), 36)))
    _element(os_section, "Info", "The guest operating system")
    _element(os_section, "Description", facts.get("product_name") or "Linux")
    hardware = _element(system, "VirtualHardwareSection")
    _element(hardware, "Info", f"{spec.vcpus} vCPUs, {spec.memory >> 20} MiB of memory")
    sys_element = _element(hardware, "System")
    for key, value in (("ElementName", "Virtual Hardware Family"), ("InstanceID", "0"),
                       ("VirtualSystemIdentifier", name), ("VirtualSystemType", "vmx-10")):
        ET.SubElement(sys_element, _q(VSSD, key)).text = value
    _item(hardware, {"AllocationUnits": "hertz * 10^6", "Description": "Number of virtual CPUs",
                     "ElementName": f"{spec.vcpus} virtual CPU(s)", "InstanceID": "1", "ResourceType": "3",
                     "VirtualQuantity": str(spec.vcpus)})
    _item(hardware, {"AllocationUnits": "byte * 2^20", "Description": "Memory size",
                     "ElementName": f"{spec.memory >> 20} MB of memory", "InstanceID": "2", "ResourceType": "4",
                     "VirtualQuantity": str(spec.memory >> 20)})
    _item(hardware, {"Address": "0", "Description": "SCSI controller", "ElementName": "scsiController0",
                     "InstanceID": "3", "ResourceSubType": "lsilogic", "ResourceType": "6"})
    _item(hardware, {"AddressOnParent": "0", "ElementName": "disk0", "HostResource": "ovf:/disk/vmdisk1",
                     "InstanceID": "4", "Parent": "3", "ResourceType": "17"})
    for number, (nic, network) in enumerate(zip(spec.interfaces, networks)):
        _item(hardware, {"AddressOnParent": str(7 + number), "AutomaticAllocation": "true", "Connection": network,
                         "Description": f"{nic.model} NIC", "ElementName": f"ethernet{number}",
                         "InstanceID": str(5 + number), "ResourceSubType": NIC_MODELS.get(nic.model, "E1000"),
                         "ResourceType": "10"})
    ET.indent(root)
    return ET.tostring(root, xml_declaration=True, encoding="UTF-8")


def write(src: Path, src_fmt: str, dest: Path, name: str, spec: Domain, facts: dict[str, str],
          reporter: Reporter) -> None:
    """Write the OVA of src (of src_fmt) to the new file dest."""
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as scratch:
        work = Path(scratch)
        vmdk = work / f"{name}-disk1.vmdk"
        formats.convert(src, src_fmt, vmdk, "vmdk", reporter)
        ovf = work / f"{name}.ovf"
        ovf.write_bytes(envelope(name, spec, facts, vmdk.name, vmdk.stat().st_size,
                                 int(disk.info(src)["virtual-size"])))
        mf = work / f"{name}.mf"
        mf.write_text("".join(f"SHA256({p.name})= {file_digest(p).split(':')[1]}\n" for p in (ovf, vmdk)))
        try:
            _pack(dest, [ovf, mf, vmdk], tarfile.USTAR_FORMAT)
        except ValueError:  # a member over 8 GiB: ustar cannot say its size
            _pack(dest, [ovf, mf, vmdk], tarfile.PAX_FORMAT)


def _pack(dest: Path, members: list[Path], fmt: int) -> None:
    with tarfile.open(dest, "w", format=fmt) as tar:
        for path in members:
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
