"""Starting a domain with a watchdog on its boot: a guest that shows no progress under KVM is
started again under TCG, and KVM is marked unusable on that host.

On some hosts a guest under KVM never gets past its firmware: qemu spins at full CPU and the
serial console stays silent, and a readiness wait would only give up after its whole timeout.
So, under KVM, the first part of the boot is watched on the serial console (the log file libvirt
writes on this host, or the console stream elsewhere) until the kernel prints its banner. Silence
for the watchdog's bound is then checked once more (this host: a fresh probe of KVM; another host:
the guest agent), and when KVM is to blame the domain is destroyed, made a TCG domain and started
again. Domains on a host already known to hang under KVM are made TCG domains before they start.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt
import libvirt_qemu

from imagebuilder import accel as accelerator
from imagebuilder.errors import VirtError
from imagebuilder.virt import connection, domain
from imagebuilder.virt.wait import ConsoleLog, SerialLog

BANNER = "Linux version"
Say = Callable[[str], None]


def start(conn: libvirt.virConnect, dom: libvirt.virDomain, say: Say) -> tuple[libvirt.virDomain, str]:
    """Start a defined domain, watched; returns the running domain and its accelerator ('kvm'/'tcg').

    A domain that qemu will not even start under KVM (on some hosts it aborts: "failed to set MSR")
    is started under TCG instead; if that works, KVM was to blame and is marked unusable on the host,
    and if not, the definition is put back and KVM's error stands.
    """
    if accel_of(dom) == "kvm" and (why := _known_hang(conn)):
        say(f"{dom.name()}: KVM hangs on {_host(conn)} ({why}); the domain runs under TCG")
        dom = _redefine_under_tcg(conn, dom)
    try:
        domain.start(dom)
    except VirtError as failed:
        if accel_of(dom) != "kvm":
            raise
        return _start_under_tcg_instead(conn, dom, failed, say), "tcg"
    return watch(conn, dom, say)


def watch(conn: libvirt.virConnect, dom: libvirt.virDomain, say: Say) -> tuple[libvirt.virDomain, str]:
    """Watch a domain that was just started (persistent or transient) until its kernel runs; under
    KVM, silence for the watchdog's bound restarts it under TCG. Returns the domain and its accelerator."""
    seconds = accelerator.watchdog_seconds()
    if accel_of(dom) != "kvm" or seconds is None:
        return dom, accel_of(dom)
    try:
        console = _console(conn, dom)
    except VirtError as exc:
        say(f"{dom.name()}: its boot cannot be watched ({exc.message})")
        return dom, "kvm"
    try:
        stalled = _silent_for(dom, console, seconds)
    finally:
        console.close()
    if not stalled:
        return dom, "kvm"
    seen = console.last_line() or "nothing"
    why = f"domain {dom.name()} showed nothing new on its serial console for {seconds:.0f}s under KVM (last: {seen!r})"
    if connection.is_local(conn):
        verdict = accelerator.host_verdict(fresh=True)
        if verdict.kvm:
            say(f"{why}, but KVM works here ({verdict.reason}): waiting on")
            return dom, "kvm"
        why += f"; {verdict.reason}"
        accelerator.demote(why)
    elif _agent_answers(dom):
        return dom, "kvm"
    else:
        accelerator.demote(why, uri=conn.getURI())
    say(f"{why}: KVM is marked unusable on {_host(conn)}; starting {dom.name()} again under TCG")
    return _restart_under_tcg(conn, dom), "tcg"


def _start_under_tcg_instead(conn: libvirt.virConnect, dom: libvirt.virDomain, failed: VirtError,
                             say: Say) -> libvirt.virDomain:
    as_it_was = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    tcg = _redefine_under_tcg(conn, dom)
    try:
        domain.start(tcg)
    except VirtError:
        conn.defineXML(as_it_was)  # not KVM's fault after all
        raise failed from None
    why = f"domain {dom.name()} did not start under KVM ({failed.message.splitlines()[0]})"
    accelerator.demote(why, uri=None if connection.is_local(conn) else conn.getURI())
    say(f"{why}, but does under TCG: KVM is marked unusable on {_host(conn)}")
    return tcg


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


def _known_hang(conn: libvirt.virConnect) -> str | None:
    if connection.is_local(conn):
        return None if accelerator.effective("kvm") == "kvm" else accelerator.decide()[1]
    return accelerator.remote_demoted(conn.getURI())


def _host(conn: libvirt.virConnect) -> str:
    return "this host" if connection.is_local(conn) else conn.getURI()


def _console(conn: libvirt.virConnect, dom: libvirt.virDomain) -> SerialLog:
    log = domain.serial_log_of(dom) if connection.is_local(conn) else None
    return SerialLog(log) if log else ConsoleLog(conn, dom)


def _silent_for(dom: libvirt.virDomain, console: SerialLog, seconds: float, poll: float = 1.0) -> bool:
    """True if the console showed nothing new for `seconds` before the kernel's banner; False once
    the banner appeared or the domain stopped (the readiness wait reports a stop)."""
    last, seen = time.monotonic(), console.seen
    while True:
        text = console.text()
        if BANNER in text:
            return False
        try:
            if not dom.isActive():
                return False
        except libvirt.libvirtError:
            return False  # a transient domain that stopped is gone
        if console.seen != seen:
            last, seen = time.monotonic(), console.seen
        elif time.monotonic() - last >= seconds:
            return True
        time.sleep(poll)


def _agent_answers(dom: libvirt.virDomain) -> bool:
    try:
        libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
    except libvirt.libvirtError:
        return False
    return True


def _redefine_under_tcg(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virDomain:
    try:
        return conn.defineXML(under_tcg(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot make {dom.name()} a TCG domain: {exc.get_error_message()}") from None


def _restart_under_tcg(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virDomain:
    """Destroy the hung domain and start it again under TCG (redefined, when it is persistent)."""
    persistent = dom.isPersistent()
    live = None if persistent else dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    domain.kill(dom)
    if persistent:
        dom = _redefine_under_tcg(conn, dom)
        domain.start(dom)
        return dom
    try:
        return conn.createXML(under_tcg(live), 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot start {dom.name()} again under TCG: {exc.get_error_message()}") from None
