"""Starting a domain with a watchdog on its boot: a guest that shows no progress under KVM is
started again under TCG, and KVM is marked unusable on that host.

On some hosts a guest under KVM never gets past its firmware: qemu spins at full CPU and the
serial console stays silent, and a readiness wait would only give up after its whole timeout.
So, under KVM, the first part of the boot is watched on the serial console (the log file libvirt
writes on this host, or the console stream elsewhere) until the kernel prints its banner. Silence
for the watchdog's bound is then checked once more (this host: a fresh probe of KVM; another host:
the guest agent), and when KVM is to blame the domain is destroyed, made a TCG domain and started
again. Domains on a host already known to hang under KVM are made TCG domains before they start.
The libvirt side of each step is virt/boot.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from imagebuilder import accel as accelerator
from imagebuilder.errors import VirtError
from imagebuilder.virt import boot, connection, domain

if TYPE_CHECKING:
    import libvirt

Say = Callable[[str], None]


def start(conn: libvirt.virConnect, dom: libvirt.virDomain, say: Say) -> tuple[libvirt.virDomain, str]:
    """Start a defined domain, watched; returns the running domain and its accelerator ('kvm'/'tcg').

    A domain that qemu will not even start under KVM (on some hosts it aborts: "failed to set MSR")
    is started under TCG instead; if that works, KVM was to blame and is marked unusable on the host,
    and if not, the definition is put back and KVM's error stands.
    """
    if boot.accel_of(dom) == "kvm" and (why := _known_hang(conn)):
        say(f"{dom.name()}: KVM hangs on {_host(conn)} ({why}); the domain runs under TCG")
        dom = boot.redefine_under_tcg(conn, dom)
    try:
        domain.start(dom)
    except VirtError as failed:
        if boot.accel_of(dom) != "kvm":
            raise
        return _start_under_tcg_instead(conn, dom, failed, say), "tcg"
    return watch(conn, dom, say)


def watch(conn: libvirt.virConnect, dom: libvirt.virDomain, say: Say) -> tuple[libvirt.virDomain, str]:
    """Watch a domain that was just started (persistent or transient) until its kernel runs; under
    KVM, silence for the watchdog's bound restarts it under TCG. Returns the domain and its accelerator."""
    seconds = accelerator.watchdog_seconds()
    if boot.accel_of(dom) != "kvm" or seconds is None:
        return dom, boot.accel_of(dom)
    try:
        console = boot.open_console(conn, dom)
    except VirtError as exc:
        say(f"{dom.name()}: its boot cannot be watched ({exc.message})")
        return dom, "kvm"
    try:
        stalled = boot.silent_for(dom, console, seconds)
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
    elif boot.agent_answers(dom):
        return dom, "kvm"
    else:
        accelerator.demote(why, uri=conn.getURI())
    say(f"{why}: KVM is marked unusable on {_host(conn)}; starting {dom.name()} again under TCG")
    return boot.restart_under_tcg(conn, dom), "tcg"


def _start_under_tcg_instead(conn: libvirt.virConnect, dom: libvirt.virDomain, failed: VirtError,
                             say: Say) -> libvirt.virDomain:
    try:
        tcg = boot.start_under_tcg(conn, dom)
    except VirtError:  # not KVM's fault after all: its definition is back as it was
        raise failed from None
    why = f"domain {dom.name()} did not start under KVM ({failed.message.splitlines()[0]})"
    accelerator.demote(why, uri=None if connection.is_local(conn) else conn.getURI())
    say(f"{why}, but does under TCG: KVM is marked unusable on {_host(conn)}")
    return tcg


def _known_hang(conn: libvirt.virConnect) -> str | None:
    if connection.is_local(conn):
        return None if accelerator.effective("kvm") == "kvm" else accelerator.decide()[1]
    return accelerator.remote_demoted(conn.getURI())


def _host(conn: libvirt.virConnect) -> str:
    return "this host" if connection.is_local(conn) else conn.getURI()
