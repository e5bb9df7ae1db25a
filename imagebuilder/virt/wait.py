"""Waiting until a booted guest is ready (guest agent, SSH, serial console text), and running
commands in it through the QEMU guest agent."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable

import libvirt
import libvirt_qemu

from imagebuilder.errors import InputError, VirtError
from imagebuilder.virt.console import ConsoleTap
from imagebuilder.virt.domain import is_active

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TAIL_BYTES = 64 * 1024


def clean(text: str) -> str:
    """Console output without escape sequences and control characters (newlines kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def read_serial_tail(path: str, lines: int = 5) -> list[str]:
    """The last `lines` non-empty lines of a serial log, without escape codes; [] if unreadable."""
    try:
        with open(path, "rb") as file:
            file.seek(0, 2)
            file.seek(max(file.tell() - _TAIL_BYTES, 0))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return _last_lines(text, lines)


def _last_lines(text: str, lines: int) -> list[str]:
    cleaned = (_CONTROL.sub("", _ANSI.sub("", line)).strip() for line in text.splitlines())
    return [line for line in cleaned if line][-lines:] if lines > 0 else []


class SerialLog:
    """The serial console as libvirt logs it to a file on this host, read as it grows."""

    def __init__(self, path: str):
        self.path = path
        self.seen = 0  # bytes read so far: grows while the guest prints
        self._offset = 0
        self._raw = b""

    def text(self) -> str:
        """The cleaned output seen so far (the last 64 KiB of it)."""
        try:
            with open(self.path, "rb") as file:
                if os.fstat(file.fileno()).st_size < self._offset:
                    self._offset, self._raw = 0, b""  # truncated: the domain started again
                file.seek(self._offset)
                new = file.read()
        except OSError:
            new = b""
        self._offset += len(new)
        self.seen += len(new)
        self._raw = (self._raw + new)[-_TAIL_BYTES:]
        return clean(self._raw.decode("utf-8", errors="replace"))

    def last_line(self) -> str | None:
        """The last non-empty line, if any."""
        found = _last_lines(self.text(), 1)
        return found[0] if found else None

    def close(self) -> None:
        """Nothing to release."""


class ConsoleLog(SerialLog):
    """The serial console read through a libvirt stream, for hosts whose files we cannot read.

    It sees what the guest prints after it was opened, and holds the console while it is open.
    """

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain):
        super().__init__("")
        self._lock = threading.Lock()
        self._tap = ConsoleTap(conn, dom, self._append)

    def _append(self, data: bytes) -> None:
        with self._lock:
            self.seen += len(data)
            self._raw = (self._raw + data)[-_TAIL_BYTES:]

    def text(self) -> str:
        with self._lock:
            return clean(self._raw.decode("utf-8", errors="replace"))

    def close(self) -> None:
        self._tap.close()


Serial = SerialLog | str | None


def _with_console(message: str, serial: Serial) -> str:
    if isinstance(serial, str):
        tail = read_serial_tail(serial, 1)
        line = tail[0] if tail else None
    else:
        line = serial.last_line() if serial is not None else None
    return f"{message}; last on the serial console: {line!r}" if line else message


def _poll_until(dom: libvirt.virDomain, timeout: float, poll: float, waiting_for: str, serial: Serial,
                ready: Callable[[], object]) -> object:
    """Call `ready` every `poll` seconds until it returns something true; VirtError on stop or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if not is_active(dom):
            raise VirtError(_with_console(f"domain {dom.name()} stopped while waiting for {waiting_for}",
                                          serial))
        result = ready()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise VirtError(_with_console(f"timed out after {timeout:.0f}s waiting for {waiting_for}",
                                          serial))
        time.sleep(min(poll, remaining))


def wait_for_agent(dom: libvirt.virDomain, timeout: float, serial_log: Serial = None,
                   poll: float = 2.0) -> None:
    """Return once the guest agent answers a ping; VirtError if the domain stops or time is up."""
    def ping() -> bool:
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
        except libvirt.libvirtError:
            return False  # not connected yet, or not answering yet
        return True

    _poll_until(dom, timeout, poll, "the guest agent to answer", serial_log, ping)


def guest_addresses(dom: libvirt.virDomain) -> list[str]:
    """The guest's IP addresses, IPv4 first: from DHCP leases, then the ARP table, then the agent."""
    sources = (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
               libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
               libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
    for source in sources:
        try:
            interfaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:
            continue
        found = []
        for name, details in interfaces.items():
            for addr in details.get("addrs") or []:
                ip = ipaddress.ip_address(addr["addr"].split("%")[0])
                if name != "lo" and not ip.is_loopback and not ip.is_link_local:
                    found.append(ip)
        if found:
            return [str(ip) for ip in sorted(found, key=lambda ip: (ip.version, ip))]
    return []


def ssh_banner(address: str, port: int = 22, timeout: float = 5.0) -> str | None:
    """The SSH server's identification line at address:port, or None if there is none (yet)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].strip().decode("ascii", errors="replace")
    return line if line.startswith("SSH-") else None


def wait_for_ssh(dom: libvirt.virDomain, timeout: float, serial_log: Serial = None, port: int = 22,
                 poll: float = 2.0) -> str:
    """Return 'ADDRESS:PORT' once an SSH server answers there with its banner."""
    def answered() -> str | None:
        for address in guest_addresses(dom):
            if ssh_banner(address, port, timeout=min(5.0, poll + 3)):
                return f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
        return None

    return str(_poll_until(dom, timeout, poll, f"an SSH server on port {port}", serial_log, answered))


def wait_for_serial(dom: libvirt.virDomain, text: str, timeout: float, serial: SerialLog,
                    poll: float = 1.0) -> None:
    """Return once `text` appears on the serial console (escape codes ignored)."""
    _poll_until(dom, timeout, poll, f"{text!r} on the serial console", serial,
                lambda: text in serial.text())


def wait_ready(conn: libvirt.virConnect, dom: libvirt.virDomain, kind: str, text: str | None,
               timeout: float, serial_log: str | None = None) -> str:
    """Wait as the recipe says (agent, ssh, serial or none); return what was seen, for the user.

    `serial_log` is the domain's serial log when this host can read it; without one the console
    stream stands in, both for `serial:` and for the last line shown when waiting fails.
    """
    if kind == "none":
        return "not waited for"
    serial: SerialLog | None
    if serial_log:
        serial = SerialLog(serial_log)
    else:
        try:
            serial = ConsoleLog(conn, dom)
        except VirtError:
            if kind == "serial":
                raise
            serial = None
    try:
        if kind == "agent":
            deadline = time.monotonic() + timeout
            wait_for_agent(dom, timeout, serial)
            state = wait_for_boot(dom, deadline - time.monotonic())
            if state == "degraded":
                return "the guest agent answered; the boot finished degraded (`systemctl --failed` in the guest " \
                       "names the failed units)"
            return "the guest agent answered" + (f"; the boot finished ({state})" if state else "")
        if kind == "ssh":
            return f"SSH answered at {wait_for_ssh(dom, timeout, serial)}"
        if kind == "serial" and text and serial is not None:
            wait_for_serial(dom, text, timeout, serial)
            return f"{text!r} appeared on the serial console"
        raise InputError(f"unknown wait {kind!r}")
    finally:
        if serial is not None:
            serial.close()


def _agent(dom: libvirt.virDomain, command: str, arguments: dict) -> dict:
    request = json.dumps({"execute": command, "arguments": arguments})
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, request, 10, 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"guest agent {command} failed: {exc.get_error_message()}") from None
    return json.loads(reply)["return"]


def _decode(status: dict, key: str) -> str:
    return base64.b64decode(status.get(key, "")).decode("utf-8", errors="replace")


class GuestExecUnavailable(VirtError):
    """The guest agent does not run commands (guest-exec disabled, or no such program)."""


# The agent answers early in boot; the services a user (or a check) wants may still be starting.
_BOOT_SETTLE = "command -v systemctl >/dev/null || exit 0; systemctl is-system-running --wait"


def wait_for_boot(dom: libvirt.virDomain, timeout: float) -> str | None:
    """Once the agent answers: wait until systemd has finished booting; return the state it reached
    (running, degraded, ...), or None where that cannot be asked (no systemd, no guest-exec).
    VirtError if the boot has not finished within timeout."""
    try:
        _code, out, _err = agent_exec(dom, ["/bin/sh", "-c", _BOOT_SETTLE], timeout=max(timeout, 1))
    except GuestExecUnavailable:
        return None
    return out.strip() or None


def agent_exec(dom: libvirt.virDomain, argv: list[str],
               timeout: float = 60) -> tuple[int, str, str]:
    """Run argv in the guest; return (exit code, stdout, stderr). 128+N if killed by signal N."""
    if not argv:
        raise InputError("no command to run in the guest")
    try:
        started = _agent(dom, "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})
    except VirtError as exc:
        raise GuestExecUnavailable(exc.message) from None
    pid = started["pid"]
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        status = _agent(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            code = status["exitcode"] if "exitcode" in status else 128 + status.get("signal", 0)
            return code, _decode(status, "out-data"), _decode(status, "err-data")
        if time.monotonic() >= deadline:
            raise VirtError(f"{shlex.join(argv)} did not finish within {timeout:.0f}s in the guest")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
