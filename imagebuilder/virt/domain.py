"""Domains in libvirt: define, start, stop, kill, remove, list, and find the volumes they use.

The XML itself comes from `domainxml`; libvirt's words map to what people mean: stop is an ACPI
shutdown, kill is libvirt's destroy, remove is undefine (optionally with the domain's volumes).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from imagebuilder.errors import InputError, VirtError
from imagebuilder.virt.domainxml import read_metadata
from imagebuilder.virt.lookup import NO_DOMAIN, NO_POOL, NO_VOLUME, lookup_or_none, virt_error

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    """The domain `name`; InputError naming the connection if there is none."""
    dom = find(conn, name)
    if dom is None:
        raise InputError(f"no domain named {name} on {conn.getURI()} (`imagebuilder vm list` shows them)")
    return dom


def find(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    """The domain `name`, or None if there is none."""
    return lookup_or_none(conn.lookupByName, name, NO_DOMAIN, "domain")


def domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    """True if a domain `name` is defined or running."""
    return find(conn, name) is not None


def define(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    """Define a persistent domain from `xml`.

    Our XML always carries a fresh UUID, so a domain of the same name that appeared since the
    pre-flight check makes this fail instead of being silently redefined.
    """
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise virt_error("cannot define the domain", exc) from None


def start(dom: libvirt.virDomain) -> None:
    """Start a defined domain."""
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot start domain {dom.name()}", exc) from None


def kill(dom: libvirt.virDomain) -> bool:
    """Hard stop (libvirt's destroy); False if it was not running."""
    try:
        if not dom.isActive():
            return False
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return False  # it stopped in the meantime
        raise virt_error(f"cannot kill domain {dom.name()}", exc) from None
    return True


STOP_METHODS = {
    "acpi": libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
    "agent": libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
    # libvirt asks the guest agent when it answers and presses the ACPI power button otherwise
    "any": libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN | libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
}


def stop(dom: libvirt.virDomain, timeout: float, poll: float = 1.0, method: str = "acpi") -> bool:
    """Ask the guest to shut down and wait until it has; False if it was not running.

    `method`: "acpi" presses the ACPI power button, "agent" asks the guest agent, "any" the agent
    when it answers and ACPI otherwise (a guest without logind or acpid ignores the button).
    VirtError if it is still running after `timeout` seconds.
    """
    if method not in STOP_METHODS:
        raise InputError(f"stop method {method!r} is not one of {', '.join(STOP_METHODS)}")
    try:
        if not dom.isActive():
            return False
        dom.shutdownFlags(STOP_METHODS[method])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return False
        raise virt_error(f"cannot shut down domain {dom.name()}", exc) from None
    deadline = time.monotonic() + timeout
    while is_active(dom):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            how = {"acpi": "the ACPI shutdown request", "agent": "the guest agent's shutdown",
                   "any": "the shutdown request"}[method]
            raise VirtError(f"domain {dom.name()} is still running {timeout:.0f}s after {how}",
                            hint="the guest may ignore ACPI; `imagebuilder vm kill` stops it hard")
        time.sleep(min(poll, remaining))
    return True


def is_active(dom: libvirt.virDomain) -> bool:
    """Whether the domain runs; False too when it is gone (a transient domain that stopped). Any
    other failure is a VirtError: it does not tell whether the domain runs."""
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False  # a transient domain that stopped is gone
        raise virt_error(f"cannot query domain {dom.name()}", exc) from None


def undefine(dom: libvirt.virDomain) -> None:
    """Undefine a domain with its NVRAM, managed save image and snapshot metadata."""
    flags = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
             | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
             | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    try:
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
            dom.undefine()
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot undefine domain {dom.name()}", exc) from None


def remove_domain(conn: libvirt.virConnect, name: str) -> bool:
    """Kill domain `name` if running and undefine it (with its NVRAM); True if it existed."""
    dom = find(conn, name)
    return dom is not None and _remove(dom)


def remove_by_uuid(conn: libvirt.virConnect, uuid: str) -> bool:
    """Kill and undefine the domain with this UUID; True if it existed.

    Clean-up after a failed build goes by UUID: a domain someone else made under the same name
    is never touched.
    """
    dom = lookup_or_none(conn.lookupByUUIDString, uuid, NO_DOMAIN, "domain")
    return dom is not None and _remove(dom)


def _remove(dom: libvirt.virDomain) -> bool:
    try:
        kill(dom)
        if dom.isPersistent():
            undefine(dom)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise virt_error(f"cannot remove domain {dom.name()}", exc) from None
    return True


def volumes_of(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[libvirt.virStorageVol]:
    """The storage volumes behind the domain's disks (not CD-ROMs); files outside pools are skipped."""
    found = []
    for disk in ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findall("devices/disk"):
        source = disk.find("source")
        if disk.get("device", "disk") != "disk" or source is None:
            continue
        vol = None
        if disk.get("type") == "volume":
            vol = _pool_volume(conn, source.get("pool", ""), source.get("volume", ""))
        elif disk.get("type") == "file" and source.get("file"):
            vol = lookup_or_none(conn.storageVolLookupByPath, source.get("file", ""), NO_POOL + NO_VOLUME, "volume")
        if vol is not None:
            found.append(vol)
    return found


def _pool_volume(conn: libvirt.virConnect, pool_name: str, name: str) -> libvirt.virStorageVol | None:
    """Volume `name` of pool `pool_name`, or None if either is missing."""
    pool = lookup_or_none(conn.storagePoolLookupByName, pool_name, NO_POOL, "storage pool")
    return None if pool is None else lookup_or_none(pool.storageVolLookupByName, name, NO_VOLUME, "volume")


def running_on(conn: libvirt.virConnect, path: str) -> list[str]:
    """The running domains that have the file at path as a disk (or as the backing file of one)."""
    real = os.path.realpath(path)
    try:
        domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot list the domains of {conn.getURI()}", exc) from None
    found = []
    for dom in domains:
        try:
            root = ET.fromstring(dom.XMLDesc(0))  # the live XML: backing chains included
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in NO_DOMAIN:
                continue  # a transient domain that stopped meanwhile: it runs from nothing
            raise virt_error(f"cannot tell whether domain {dom.name()} runs from {path}: its XML cannot be read",
                              exc) from None
        files = [s.get("file") or _volume_path(conn, s.get("pool"), s.get("volume")) for s in root.iter("source")]
        if any(f and os.path.realpath(f) == real for f in files):
            found.append(dom.name())
    return found


def _volume_path(conn: libvirt.virConnect, pool: str | None, volume: str | None) -> str | None:
    """The file of a pool volume a disk names (type='volume' disks carry no path in their XML)."""
    if not (pool and volume):
        return None
    found = _pool_volume(conn, pool, volume)  # None: gone meanwhile, so nobody runs from it
    return None if found is None else lookup_or_none(lambda _name: found.path(), volume, NO_VOLUME, "volume")


@dataclass(frozen=True)
class DomainInfo:
    """One line of `imagebuilder vm list`."""

    name: str
    state: str
    memory: int
    vcpus: int
    autostart: bool
    persistent: bool
    osinfo: str | None
    recipe: str | None

    def as_dict(self) -> dict[str, object]:
        """For JSON output."""
        return dict(self.__dict__)


def list_domains(conn: libvirt.virConnect) -> list[DomainInfo]:
    """Every domain of the connection, running or not, sorted by name."""
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot list the domains of {conn.getURI()}", exc) from None
    infos = []
    for dom in domains:
        try:
            infos.append(_info(dom))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in NO_DOMAIN:
                continue  # undefined between the listing and the reading: not there to list
            raise virt_error(f"cannot list the domains of {conn.getURI()}", exc) from None
    return sorted(infos, key=lambda info: info.name)


def _info(dom: libvirt.virDomain) -> DomainInfo:
    state, _max_mem, memory_kib, vcpus, _cpu_time = dom.info()
    meta = read_metadata(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return DomainInfo(name=dom.name(), state=STATES.get(state, "unknown"), memory=memory_kib * 1024, vcpus=vcpus,
                      autostart=bool(dom.autostart()), persistent=bool(dom.isPersistent()),
                      osinfo=meta.get("osinfo"), recipe=meta.get("recipe"))


def delete_volumes(volumes: list[libvirt.virStorageVol]) -> list[str]:
    """Delete each volume; return the names of those deleted. Stops at the first failure."""
    deleted = []
    for vol in volumes:
        name = vol.name()
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                continue
            raise virt_error(f"cannot delete volume {name} (deleted so far: {', '.join(deleted) or 'none'})",
                              exc) from None
        deleted.append(name)
    return deleted


def serial_log_of(dom: libvirt.virDomain) -> str | None:
    """The file the domain logs its first serial port to, if it has one."""
    log = ET.fromstring(dom.XMLDesc(0)).find("devices/serial/log")
    return log.get("file") if log is not None else None
