"""virt-sysprep's operations: reset what must differ between machines made from one image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagebuilder.guest.context import GuestContext

_LOG_GLOBS = (
    "/var/log/*.log", "/var/log/*.log.*", "/var/log/*/*.log", "/var/log/*/*.log.*",
    "/var/log/journal/*", "/var/log/apt/*", "/var/log/btmp*", "/var/log/wtmp*", "/var/log/lastlog",
    "/var/log/dmesg*", "/var/log/messages*", "/var/log/syslog*", "/var/log/installer",
)

# Regenerates missing host keys right before sshd starts (Debian's sshd does not do it by itself).
_SSH_KEYGEN_DROPIN = "[Service]\nExecStartPre=-/usr/bin/ssh-keygen -A\n"


@dataclass(frozen=True)
class SysprepOp:
    """One sysprep operation, named as in virt-sysprep."""

    name: str
    doc: str
    apply: Callable[[GuestContext], None]
    default: bool = True


def _machine_id(ctx: GuestContext) -> None:
    g = ctx.g
    if g.is_file("/etc/machine-id"):
        g.truncate("/etc/machine-id")
    g.rm_f("/var/lib/dbus/machine-id")


def _ssh_hostkeys(ctx: GuestContext) -> None:
    g = ctx.g
    for path in g.glob_expand("/etc/ssh/ssh_host_*") or []:
        g.rm_f(path)
    if g.is_file("/usr/sbin/sshd") and g.is_dir("/lib/systemd/system"):
        unit = "ssh.service" if g.is_file("/lib/systemd/system/ssh.service") else "sshd.service"
        g.mkdir_p(f"/etc/systemd/system/{unit}.d")
        g.write(f"/etc/systemd/system/{unit}.d/imagebuilder-hostkeys.conf", _SSH_KEYGEN_DROPIN)


def _logfiles(ctx: GuestContext) -> None:
    g = ctx.g
    for pattern in _LOG_GLOBS:
        for path in g.glob_expand(pattern) or []:
            g.rm_rf(path)


OPERATIONS: dict[str, SysprepOp] = {op.name: op for op in (
    SysprepOp("machine-id", "Empty /etc/machine-id so that each machine gets its own at first boot.", _machine_id),
    SysprepOp("ssh-hostkeys", "Remove SSH host keys; they are made anew when sshd first starts.", _ssh_hostkeys),
    SysprepOp("logfiles", "Remove log files and the journal.", _logfiles),
)}


def select(requested: list[str]) -> list[str]:
    """Operation names to run: defaults, plus names given, minus those written as '-name'."""
    chosen = [name for name, op in OPERATIONS.items() if op.default]
    for item in requested:
        name = item.lstrip("-")
        if name not in OPERATIONS:
            raise ValueError(f"'{name}' is not a sysprep operation (known: {', '.join(OPERATIONS)})")
        if item.startswith("-"):
            chosen = [n for n in chosen if n != name]
        elif name not in chosen:
            chosen.append(name)
    return chosen


def apply(ctx: GuestContext, names: list[str]) -> None:
    """Run the named operations in order."""
    for name in names:
        OPERATIONS[name].apply(ctx)
