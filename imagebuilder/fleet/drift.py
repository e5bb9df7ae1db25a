"""How an existing machine's domain differs from what the recipe says about it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from imagebuilder.recipe import Machine
from imagebuilder.units import format_size


def drift(machine: Machine, dom: libvirt.virDomain, pool: str) -> list[str]:
    """How the domain's definition differs from the machine the recipe describes (empty: it matches)."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    d, found = machine.domain, []
    memory = _bytes(root.find("memory"))
    if memory // 1024 != d.memory // 1024:
        found.append(f"memory is {format_size(memory)}, the recipe says {format_size(d.memory)}")
    vcpus = int(root.findtext("vcpu") or 0)
    if vcpus != d.vcpus:
        found.append(f"vcpus is {vcpus}, the recipe says {d.vcpus}")
    nics = [(i.get("type"), (i.find("source").attrib.get("network") or i.find("source").attrib.get("bridge"))
             if i.find("source") is not None else None, (i.find("mac").get("address") if i.find("mac") is not None
                                                         else None)) for i in root.findall("devices/interface")]
    wanted = [("network" if n.network else "bridge", n.network or n.bridge, n.mac) for n in d.interfaces]
    if [(kind, source) for kind, source, _ in nics] != [(kind, source) for kind, source, _ in wanted]:
        found.append(f"its interfaces are on {_nic_text(nics) or 'nothing'}, the recipe says "
                     f"{_nic_text(wanted) or 'none'}")
    else:
        for (_, _, mac), (_, _, want) in zip(nics, wanted):
            if want and mac != want:
                found.append(f"MAC address is {mac}, the recipe says {want}")
    disks = [(s.get("pool"), s.get("volume")) for disk in root.findall("devices/disk[@device='disk']")
             if (s := disk.find("source")) is not None]
    wanted_disks = [(pool, machine.overlay)] + [(data.pool or pool, data.volume) for data in d.disks]
    if disks != wanted_disks:
        found.append(f"its disks are {_disk_text(disks)}, the recipe says {_disk_text(wanted_disks)}")
    return found


def _bytes(elem: ET.Element | None) -> int:
    if elem is None or not elem.text:
        return 0
    scale = {"b": 1, "bytes": 1, "kib": 1 << 10, "k": 1 << 10, "mib": 1 << 20, "m": 1 << 20, "gib": 1 << 30,
             "g": 1 << 30}.get(elem.get("unit", "KiB").lower(), 1 << 10)
    return int(elem.text) * scale


def _nic_text(nics: list[tuple[Any, Any, Any]]) -> str:
    return ", ".join(f"{kind} {source}" for kind, source, _ in nics)


def _disk_text(disks: list[tuple[Any, Any]]) -> str:
    return ", ".join(f"{pool}/{volume}" for pool, volume in disks)
