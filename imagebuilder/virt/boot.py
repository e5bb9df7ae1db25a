"""What the boot watchdog (deploy/watchdog.py) does to a domain: read its accelerator, watch its
serial console for the kernel's banner, ping its agent, and make it a TCG domain and start it again.

The decisions (when to watch, whom to blame, what to remember about KVM) are the watchdog's.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu

from imagebuilder.errors import VirtError
from imagebuilder.virt import connection, domain
from imagebuilder.virt.wait import ConsoleLog, SerialLog

BANNER = "Linux version"


def accel_of(dom: libvirt.virDomain) -> str:
    """'kvm' or 'tcg', from the domain's type."""
    return "kvm" if ET.fromstring(dom.XMLDesc(0)).get("type") == "kvm" else "tcg"


def under_tcg(xml: str) -> str:
    """The domain XML made a TCG domain: type qemu, and a CPU mode TCG offers instead of the host's."""
    root = ET.fromstring(xml)
    root.set("type", "qemu")
    cpu = root.find("cpu")
    if cpu is not None and cpu.get("mode") in ("host-passthrough", "host-model"):
        cpu.set("mode", "maximum")
        for attribute in ("check", "migratable"):
            cpu.attrib.pop(attribute, None)
        for element in cpu.findall("model") + cpu.findall("feature"):
            cpu.remove(element)
    return ET.tostring(root, encoding="unicode")


def start_under_tcg(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virDomain:
    """Make the defined domain a TCG domain and start it; if it will not start, its definition is
    put back as it was and the VirtError stands."""
    as_it_was = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    tcg = redefine_under_tcg(conn, dom)
    try:
        domain.start(tcg)
    except VirtError:
        conn.defineXML(as_it_was)
        raise
    return tcg


def open_console(conn: libvirt.virConnect, dom: libvirt.virDomain) -> SerialLog:
    """The domain's serial console: the log file libvirt writes on this host, else the console stream."""
    log = domain.serial_log_of(dom) if connection.is_local(conn) else None
    return SerialLog(log) if log else ConsoleLog(conn, dom)


def silent_for(dom: libvirt.virDomain, console: SerialLog, seconds: float, poll: float = 1.0) -> bool:
    """True if the console showed nothing new for `seconds` before the kernel's banner; False once
    the banner appeared or the domain stopped (the readiness wait reports a stop)."""
    last, seen = time.monotonic(), console.seen
    while True:
        text = console.text()
        if BANNER in text:
            return False
        if not domain.is_active(dom):  # stopped, or gone (a transient domain)
            return False
        if console.seen != seen:
            last, seen = time.monotonic(), console.seen
        elif time.monotonic() - last >= seconds:
            return True
        time.sleep(poll)


def agent_answers(dom: libvirt.virDomain) -> bool:
    """True if the domain's guest agent answers a ping within 5 seconds."""
    try:
        libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
    except libvirt.libvirtError:
        return False
    return True


def redefine_under_tcg(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virDomain:
    """Define the (inactive) domain again as a TCG domain; returns the new definition."""
    try:
        return conn.defineXML(under_tcg(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot make {dom.name()} a TCG domain: {exc.get_error_message()}") from None


def restart_under_tcg(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virDomain:
    """Destroy the hung domain and start it again under TCG (redefined, when it is persistent)."""
    persistent = dom.isPersistent()
    live = None if persistent else dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    domain.kill(dom)
    if persistent:
        dom = redefine_under_tcg(conn, dom)
        domain.start(dom)
        return dom
    try:
        return conn.createXML(under_tcg(live), 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot start {dom.name()} again under TCG: {exc.get_error_message()}") from None
