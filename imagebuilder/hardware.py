"""The virtual hardware a domain may have: the choices the recipe is checked against and the
domain XML is written from, and MAC addresses. Plain values; no libvirt."""

from __future__ import annotations

import re
import secrets

ACCELS = ("kvm", "tcg")
CPU_MODES = ("host-passthrough", "host-model", "maximum")
FIRMWARES = ("bios", "efi")
GRAPHICS = ("none", "vnc", "spice")
VIDEOS = ("vga", "virtio", "qxl", "bochs", "cirrus", "none")
DISK_FORMATS = ("qcow2", "raw")
DISK_BUSES = ("virtio", "sata", "scsi")
NIC_KINDS = ("network", "bridge")
NIC_MODELS = ("virtio", "e1000e", "e1000", "rtl8139")
MAC_PREFIX = "52:54:00"

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def check_mac(text: str) -> str:
    """The MAC address in canonical lower case; ValueError unless it is a unicast MAC."""
    mac = text.strip().lower()
    if not _MAC.match(mac):
        raise ValueError(f"'{text}' is not a MAC address; write it like \"52:54:00:12:34:56\"")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"'{text}' is a multicast address; a NIC needs a unicast one (first byte even)")
    return mac


def generate_mac() -> str:
    """A random MAC address with QEMU's 52:54:00 prefix, as libvirt itself makes them."""
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))
