"""Thin clones in libvirt: qcow2 overlays whose backing store is a golden volume, made through the
storage API (volume XML with <backingStore>; libvirt runs qemu-img itself, locally or remotely),
the search for a golden volume's users, and the seed CD-ROM of a cloned domain.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from imagebuilder.errors import VirtError
from imagebuilder.virt import storage
from imagebuilder.virt.domainxml import IMAGEBUILDER_NS, read_metadata
from imagebuilder.virt.lookup import virt_error

log = logging.getLogger(__name__)


def overlay_xml(name: str, capacity: int, backing_path: str, backing_format: str) -> str:
    """Volume XML of a qcow2 (v3) overlay of `backing_path`, allocating nothing up front."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type="qcow2")
    ET.SubElement(target, "compat").text = "1.1"  # libvirt's default is the old 0.10
    backing = ET.SubElement(root, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", type=backing_format)
    return ET.tostring(root, encoding="unicode")


def volume_facts(vol: libvirt.virStorageVol) -> tuple[str, int, int]:
    """(format, capacity, allocation) of a volume, in bytes."""
    try:
        root = ET.fromstring(vol.XMLDesc(0))
        _kind, capacity, allocation = vol.info()
    except libvirt.libvirtError as exc:
        raise virt_error("cannot read a volume's description", exc) from None
    fmt = root.find("target/format")
    return (fmt.get("type", "raw") if fmt is not None else "raw"), capacity, allocation


def create_overlay(pool: libvirt.virStoragePool, name: str, golden: libvirt.virStorageVol) -> libvirt.virStorageVol:
    """A new thin volume `name` in `pool` whose backing store is `golden`; nothing is copied."""
    storage.check_volume_name(name)
    fmt, capacity, _ = volume_facts(golden)
    try:
        return pool.createXML(overlay_xml(name, capacity, golden.path(), fmt), 0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot create the overlay {name} of {golden.name()} in pool {pool.name()}", exc) from None


def backing_path(vol: libvirt.virStorageVol) -> str | None:
    """The absolute path of the volume's backing store, if it has one."""
    try:
        root = ET.fromstring(vol.XMLDesc(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None  # deleted meanwhile
        raise virt_error(f"cannot read the description of volume {vol.name()}", exc) from None
    path = root.findtext("backingStore/path")
    if not path:
        return None
    if not path.startswith("/"):  # relative to the overlay's directory, as qemu reads it
        path = os.path.join(os.path.dirname(vol.path()), path)
    return os.path.normpath(path)


def _same(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def users(conn: libvirt.virConnect, golden: libvirt.virStorageVol) -> list[str]:
    """What still uses the golden volume: volumes backed by it, in any active pool ("POOL/VOLUME"),
    and domains that have it as a disk ("domain NAME"). The golden volume's own pool is refreshed
    first, so overlays made outside libvirt count too."""
    path = golden.path()
    found = []
    try:
        own = golden.storagePoolLookupByVolume()
        own.refresh(0)
        pools = [p for p in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)]
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot list the storage pools of {conn.getURI()}", exc) from None
    for pool in pools:
        try:
            volumes = pool.listAllVolumes()
        except libvirt.libvirtError as exc:  # a clone may be in it: not knowing is not "none"
            raise virt_error(f"cannot tell whether a clone uses {golden.name()}: the volumes of pool "
                              f"{pool.name()} cannot be listed", exc) from None
        for vol in volumes:
            backing = backing_path(vol)
            if backing and _same(backing, path):
                found.append(f"{pool.name()}/{vol.name()}")
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot list the domains of {conn.getURI()}", exc) from None
    pool_name, name = own.name(), golden.name()
    for dom in domains:
        try:
            root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined meanwhile: it uses nothing
            raise virt_error(f"cannot tell whether domain {dom.name()} uses {golden.name()}: its XML cannot "
                              "be read", exc) from None
        for source in root.findall("devices/disk/source"):
            if (source.get("pool"), source.get("volume")) == (pool_name, name) or \
                    (source.get("file") and _same(source.get("file", ""), path)):
                found.append(f"domain {dom.name()}")
                break
    return found


# the seed CD-ROM and the labels of a cloned domain


def labels(dom: libvirt.virDomain) -> dict[str, str]:
    """The domain's imagebuilder metadata attributes (its persistent definition)."""
    try:
        return read_metadata(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot read the definition of domain {dom.name()}", exc) from None


def set_labels(dom: libvirt.virDomain, values: dict[str, str]) -> None:
    """Replace the domain's imagebuilder metadata with `values` (definition, and live when running)."""
    element = ET.Element("build", {k: v for k, v in values.items() if k != "osinfo"})
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
    try:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(element, encoding="unicode"),
                        "imagebuilder", IMAGEBUILDER_NS, flags)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot update the metadata of domain {dom.name()}", exc) from None


def cdrom_volumes(dom: libvirt.virDomain) -> list[tuple[str, str]]:
    """(pool, volume) of each CD-ROM of the domain's definition that is a pool volume."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return [(s.get("pool", ""), s.get("volume", "")) for d in root.findall("devices/disk[@device='cdrom']")
            if (s := d.find("source")) is not None and s.get("volume")]


def swap_cdrom(dom: libvirt.virDomain, old: tuple[str, str], new: tuple[str, str]) -> bool:
    """Put volume `new` into the CD-ROM drive that holds `old`, in the definition, and in the running
    guest when it runs. True if the running guest has the new one too (or is not running)."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for disk in root.findall("devices/disk[@device='cdrom']"):
        source = disk.find("source")
        if source is not None and (source.get("pool"), source.get("volume")) == old:
            break
    else:
        raise VirtError(f"domain {dom.name()} has no CD-ROM with {old[0]}/{old[1]}")
    source.set("pool", new[0])
    source.set("volume", new[1])
    xml = ET.tostring(disk, encoding="unicode")
    live = bool(dom.isActive())
    try:
        if live:
            try:
                dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
                                      | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)
                return True
            except libvirt.libvirtError as exc:
                log.debug("live media change failed, changing the definition only: %s", exc.get_error_message())
        dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as exc:
        raise virt_error(f"cannot change the CD-ROM of domain {dom.name()}", exc) from None
    return not live


def upload_seed(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, iso: Path) -> libvirt.virStorageVol:
    """A raw volume `name` holding the seed ISO (a stream upload: local and remote pools alike)."""
    return storage.upload_file(conn, pool, name, iso, "raw", force=False)
