"""Waiting for a booted guest and running commands in it through the QEMU guest agent."""

from __future__ import annotations

import base64
import json
import re
import shlex
import time

import libvirt
import libvirt_qemu

from imagebuilder.errors import InputError, VirtError

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TAIL_BYTES = 64 * 1024


def read_serial_tail(path: str, lines: int = 5) -> list[str]:
    """The last `lines` non-empty lines of a serial log, without escape codes; [] if unreadable."""
    try:
        with open(path, "rb") as file:
            file.seek(0, 2)
            file.seek(max(file.tell() - _TAIL_BYTES, 0))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    cleaned = (_CONTROL.sub("", _ANSI.sub("", line)).strip() for line in text.splitlines())
    return [line for line in cleaned if line][-lines:] if lines > 0 else []


def _with_console(message: str, serial_log: str | None) -> str:
    tail = read_serial_tail(serial_log, 1) if serial_log else []
    return f"{message}; last on the serial console: {tail[0]!r}" if tail else message


def _running(dom: libvirt.virDomain) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False  # a transient domain that stopped is gone altogether


def wait_for_agent(dom: libvirt.virDomain, timeout: float, serial_log: str | None = None,
                   poll: float = 2.0) -> None:
    """Return once the guest agent answers a ping; VirtError if the domain stops or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if not _running(dom):
            raise VirtError(_with_console(
                f"domain {dom.name()} stopped before its guest agent answered", serial_log))
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
            return
        except libvirt.libvirtError:
            pass  # not connected yet, or not answering yet
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise VirtError(_with_console(
                f"guest agent did not answer within {timeout:.0f}s", serial_log))
        time.sleep(min(poll, remaining))


def _agent(dom: libvirt.virDomain, command: str, arguments: dict) -> dict:
    request = json.dumps({"execute": command, "arguments": arguments})
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, request, 10, 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"guest agent {command} failed: {exc.get_error_message()}") from None
    return json.loads(reply)["return"]


def _decode(status: dict, key: str) -> str:
    return base64.b64decode(status.get(key, "")).decode("utf-8", errors="replace")


def agent_exec(dom: libvirt.virDomain, argv: list[str],
               timeout: float = 60) -> tuple[int, str, str]:
    """Run argv in the guest; return (exit code, stdout, stderr). 128+N if killed by signal N."""
    if not argv:
        raise InputError("no command to run in the guest")
    started = _agent(dom, "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})
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
