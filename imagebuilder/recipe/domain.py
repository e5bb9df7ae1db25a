"""[domain]: the libvirt domain defined (and started) from the published volume: NICs, disks, waiting."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from imagebuilder import arches, hardware, osinfo, units
from imagebuilder.recipe.model import FORMATS, DataDisk, Domain, Interface
from imagebuilder.recipe.tables import Table, check_name, check_volume

_MACHINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BRIDGE = re.compile(r"^[^/\s:]{1,15}$")  # a Linux interface name


def parse_wait(value: str) -> tuple[str, str | None]:
    """'agent', 'ssh', 'none' or 'serial:TEXT' as (kind, text); ValueError otherwise."""
    if value in ("agent", "ssh", "none"):
        return value, None
    if value.startswith("serial:") and value[len("serial:"):]:
        return "serial", value[len("serial:"):]
    raise ValueError(f"'{value}' is not one of agent, ssh, none or serial:TEXT (text the console shows when ready)")


def _check_machine(value: str, arch: arches.Arch) -> str:
    if not _MACHINE.match(value):
        raise ValueError(f"'{value}' is not a machine type such as \"pc\", \"q35\" or \"pc-q35-7.2\"")
    for other in arches.ARCHES.values():
        if other is not arch and any(value == m or value.startswith(f"{m}-") for m in other.machines):
            raise ValueError(f"'{value}' is a machine type of {other.name}, and this image is {arch.name} "
                             f"([image] arch); {arch.name} boots in {' or '.join(arch.machines)}")
    return value


def _firmware(table: Table, arch: arches.Arch) -> str:
    firmware = table.choice("firmware", hardware.FIRMWARES, arch.firmwares[0])
    if firmware not in arch.firmwares:
        raise table.error("firmware", f"{arch.name} has no {firmware.upper()} firmware; it boots from "
                                      f"{' or '.join(f.upper() for f in arch.firmwares)} "
                                      f"(firmware = \"{arch.firmwares[0]}\", the default for it)")
    return firmware


def _check_bridge(value: str) -> str:
    if not _BRIDGE.match(value):
        raise ValueError(f"'{value}' is not a host interface name (at most 15 characters, no '/', ':' or spaces)")
    return value


def _check_listen(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address (127.0.0.1 keeps the display on this host)") from None


def _check_osinfo(value: str) -> str:
    resolved = osinfo.resolve(value)
    if resolved is None:
        raise ValueError(f"'{value}' is not a libosinfo id known here; write a short id such as \"debian12\" "
                         "or a full one such as \"http://debian.org/debian/12\" (`osinfo-query os` lists them)")
    return resolved


def parse_domain(table: Table | None, name: str, arch: arches.Arch | None = None) -> Domain | None:
    """[domain]: the libvirt domain to define from the image (of arch, by default the host's), or None
    without the section. Machine, firmware and video default to what arch boots with."""
    if table is None:
        return None
    arch = arch or arches.host()
    domain_name = table.convert("name", str, check_name, name)
    wait, wait_text = table.convert("wait", str, parse_wait, ("agent", None))
    graphics = table.choice("graphics", hardware.GRAPHICS, "none")
    if "listen" in table.data and graphics == "none":
        raise table.error("listen", "a listen address needs graphics = \"vnc\" or \"spice\"")
    domain = Domain(
        name=domain_name,
        memory=table.convert("memory", (str, int), units.parse_size, 1 << 30),
        vcpus=table.get("vcpus", int, 1),
        cpu=table.convert("cpu", str, lambda v: _choose(v, hardware.CPU_MODES)),
        machine=table.convert("machine", str, lambda value: _check_machine(value, arch), arch.machines[0]),
        firmware=_firmware(table, arch),
        interfaces=_interfaces(table),
        disks=data_disks(table, domain_name),
        graphics=graphics,
        listen=table.convert("listen", str, _check_listen, "127.0.0.1"),
        video=table.choice("video", hardware.VIDEOS, arch.video),
        memballoon=table.get("memballoon", bool, True),
        rng=table.get("rng", bool, True),
        agent=table.get("agent", bool, True),
        osinfo=table.convert("osinfo", str, _check_osinfo),
        start=table.get("start", bool, True),
        wait=wait,
        wait_text=wait_text,
        timeout=table.convert("timeout", (str, int), units.parse_duration, 600),
    )
    if not 1 <= domain.vcpus <= 512:
        raise table.error("vcpus", "must be between 1 and 512")
    if domain.memory < 64 << 20:
        raise table.error("memory", "must be at least 64M")
    if domain.wait == "agent" and not domain.agent and "wait" in table.data:
        raise table.error("wait", "waiting for the guest agent needs agent = true")
    if domain.wait == "agent" and not domain.agent:
        domain = dataclasses.replace(domain, wait="none")
    if domain.wait == "ssh" and not domain.interfaces:
        raise table.error("wait", "waiting for SSH needs a network interface")
    table.finish()
    return domain


def _choose(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
    return value


def _interfaces(table: Table) -> tuple[Interface, ...]:
    """NICs from network/bridge/mac/model, or from [[domain.interfaces]] (one way per recipe)."""
    simple = [key for key in ("network", "bridge", "mac", "model") if key in table.data]
    if "interfaces" in table.data:
        if simple:
            raise table.error(simple[0], "write every NIC as [[domain.interfaces]], or use "
                                         "network/bridge/mac/model for a single one; not both")
        nics = tuple(_interface(item) for item in table.tables("interfaces"))
    else:
        network = table.get("network", str)
        if network == "none" and len(simple) > 1:
            raise table.error(simple[1], "network = \"none\" means no NIC; remove this key")
        if network == "none":
            return ()
        nics = (_interface(table, default_network="default"),)
    macs = [nic.mac for nic in nics if nic.mac]
    for mac in macs:
        if macs.count(mac) > 1:
            raise table.error("interfaces", f"MAC address {mac} is used twice")
    return nics


def _interface(table: Table, default_network: str | None = None) -> Interface:
    network = table.convert("network", str, check_name)
    bridge = table.convert("bridge", str, _check_bridge)
    if network is not None and bridge is not None:
        raise table.error("bridge", "'network' and 'bridge' exclude each other; keep one")
    if network is None and bridge is None:
        if default_network is None:
            raise table.error(None, "name a libvirt network (network = \"default\") or a host bridge (bridge = \"br0\")")
        network = default_network
    nic = Interface(network=network, bridge=bridge,
                    mac=table.convert("mac", str, hardware.check_mac),
                    model=table.convert("model", str, lambda v: _choose(v, hardware.NIC_MODELS), "virtio"))
    if default_network is None:
        table.finish()
    return nic


def data_disks(table: Table, domain_name: str) -> tuple[DataDisk, ...]:
    """A domain's [[disks]]: new volumes of a size (named after the domain unless given), or existing ones."""
    disks = []
    for index, item in enumerate(table.tables("disks")):
        size = item.convert("size", (str, int), units.parse_size)
        volume = item.convert("volume", str, check_volume)
        fmt = item.get("format", str)
        if fmt is not None and fmt not in FORMATS:
            raise item.error("format", f"'{fmt}' is not one of {', '.join(FORMATS)}")
        if size is None and volume is None:
            raise item.error(None, "give a size for a new empty disk, or the volume of an existing one")
        if size is not None and volume is None:
            volume = f"{domain_name}-disk{index + 1}.{fmt or 'qcow2'}"
        disks.append(DataDisk(volume=volume, size=size, format=fmt or ("qcow2" if size else None),
                              bus=item.choice("bus", hardware.DISK_BUSES, "virtio"),
                              pool=item.convert("pool", str, check_name)))
        item.finish()
    names = [(disk.pool, disk.volume) for disk in disks]
    for pool, volume in names:
        if names.count((pool, volume)) > 1:
            raise table.error("disks", f"volume {volume} is attached twice")
    return tuple(disks)
