"""Operations on the guest system: host name, time zone, commands and scripts run in the appliance,
services, and the compatibility flags (SELinux relabelling, log file)."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from pathlib import Path

from imagebuilder import values
from imagebuilder.errors import GuestError
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops.registry import flag_arg, names_text, operation, plain


@operation("hostname", "Set the host name (/etc/hostname, and the old name's entries in /etc/hosts).", "HOSTNAME",
           plain(values.hostname), 'hostname = "web01.example.org"',
           details="As virt-customize does, names in /etc/hosts equal to the old host name are replaced by "
                   "the new one; when there is none, a `127.0.1.1` line is added so the name resolves.")
def _hostname(ctx: GuestContext, name: str) -> None:
    g = ctx.g
    old = ""
    if g.is_file("/etc/hostname"):
        lines = g.read_file("/etc/hostname").decode(errors="replace").splitlines()
        old = lines[0].strip() if lines else ""
    g.write("/etc/hostname", name + "\n")
    if g.is_file("/etc/sysconfig/network"):
        text = g.read_file("/etc/sysconfig/network").decode(errors="replace")
        kept = [ln for ln in text.splitlines() if not ln.startswith("HOSTNAME=")]
        g.write("/etc/sysconfig/network", "\n".join(kept + [f"HOSTNAME={name}"]) + "\n")
    if g.is_file("/etc/hosts"):
        hosts = g.read_file("/etc/hosts").decode(errors="replace")
        g.write("/etc/hosts", rename_in_hosts(hosts, old, name))


def rename_in_hosts(hosts: str, old: str, new: str) -> str:
    """/etc/hosts with every name equal to `old` replaced by `new` (white space kept).

    If nothing was replaced and `new` is not there, a `127.0.1.1` line is added (Debian's way).
    """
    out, replaced = [], False
    for line in hosts.splitlines(keepends=True):
        body, hash_, comment = line.partition("#")
        tokens = re.split(r"(\s+)", body)
        if old and len([t for t in tokens if t and not t.isspace()]) > 1:
            first = next(i for i, t in enumerate(tokens) if t and not t.isspace())
            for i in range(first + 1, len(tokens)):
                if tokens[i] == old:
                    tokens[i] = new
                    replaced = True
        out.append("".join(tokens) + hash_ + comment)
    text = "".join(out)
    names = {t for ln in text.splitlines() for t in ln.partition("#")[0].split()[1:]}
    if not replaced and new not in names:
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"127.0.1.1\t{new}\n"
    return text


@operation("timezone", "Set the time zone (a tz database name such as Europe/Paris).", "TIMEZONE",
           plain(values.timezone), 'timezone = "Europe/Paris"',
           details="Links /etc/localtime to the zone file, and updates /etc/timezone when the guest has one "
                   "(virt-customize leaves that file stale).")
def _timezone(ctx: GuestContext, zone: str) -> None:
    g = ctx.g
    zonefile = f"/usr/share/zoneinfo/{zone}"
    if not g.exists(zonefile):
        raise GuestError(f"time zone '{zone}' is not installed in the guest ({zonefile} is missing)")
    g.ln_sf(zonefile, "/etc/localtime")
    if g.is_file("/etc/timezone"):
        g.write("/etc/timezone", zone + "\n")


@operation("run_command", "Run a shell command in the guest (offline, in the appliance); it must exit 0.",
           "'CMD+ARGS'", plain(values.text), "run_command = \"systemctl set-default multi-user.target\"")
def _run_command(ctx: GuestContext, command: str) -> None:
    ctx.sh(command)


@operation("run", "Run a host script (or program) in the guest, offline in the appliance; it must exit 0.",
           "SCRIPT", lambda v, c: values.host_path(v, c), 'run = "scripts/setup.sh"',
           describe=lambda p: str(p),
           details="The script is copied into the guest's /tmp, made executable and run as root; a script "
                   "without a `#!` line runs with /bin/sh. It is removed afterwards.")
def _run(ctx: GuestContext, script: Path) -> None:
    g = ctx.g
    directory = "/tmp" if g.is_dir("/tmp") else "/"
    path = g.mktemp(posixpath.join(directory, "imagebuilder-run-XXXXXX"))
    try:
        g.upload(str(script), path)
        g.chmod(0o755, path)
        shebang = script.read_bytes()[:2] == b"#!"
        ctx.sh(f"exec {shlex.quote(path)}" if shebang else f"exec /bin/sh {shlex.quote(path)}")
    finally:
        g.rm_f(path)


def _service_op(enable: bool) -> Callable[[GuestContext, tuple[str, ...]], None]:
    def apply(ctx: GuestContext, names: tuple[str, ...]) -> None:
        g = ctx.g
        verb = "enable" if enable else "disable"
        for name in names:
            if any(g.exists(p) for p in ("/usr/bin/systemctl", "/bin/systemctl")):
                commands = [["systemctl", verb, name]]
            elif any(g.exists(p) for p in ("/usr/sbin/update-rc.d", "/sbin/update-rc.d")):
                commands = [["update-rc.d", name, "defaults"], ["update-rc.d", name, "enable"]] if enable \
                    else [["update-rc.d", name, "disable"]]
            elif any(g.exists(p) for p in ("/sbin/chkconfig", "/usr/sbin/chkconfig")):
                commands = [["chkconfig", name, "on" if enable else "off"]]
            elif g.exists("/sbin/rc-update"):
                commands = [["rc-update", "add" if enable else "del", name, "default"]]
            else:
                raise GuestError("the guest has neither systemctl, update-rc.d, chkconfig nor rc-update")
            try:
                for argv in commands:
                    ctx.command(argv)
            except GuestError as exc:
                raise GuestError(f"cannot {verb} service '{name}': {exc.message}") from None
    return apply


_SERVICE_DETAILS = ("With systemd, `systemctl {verb}` (works offline); without it, the guest's "
                    "update-rc.d, chkconfig or rc-update.")

operation("service_enable", "Enable services so that they start at boot (systemctl enable, or SysV tools).",
          "NAME[,NAME..]", lambda v, _c: values.names(v.split(",") if isinstance(v, str) else v),
          'service_enable = ["nginx", "fstrim.timer"]', describe=names_text, origin="imagebuilder",
          details=_SERVICE_DETAILS.format(verb="enable"))(_service_op(True))
operation("service_disable", "Disable services so that they do not start at boot.", "NAME[,NAME..]",
          lambda v, _c: values.names(v.split(",") if isinstance(v, str) else v), 'service_disable = "ssh"',
          describe=names_text, origin="imagebuilder",
          details=_SERVICE_DETAILS.format(verb="disable"))(_service_op(False))


@operation("selinux_relabel", "Accepted for compatibility: files are relabelled anyway (see no_selinux_relabel).",
           "", flag_arg, "selinux_relabel = true", flag=True, describe=lambda _a: "(automatic)",
           details="As in current virt-customize, where `--selinux-relabel` is a compatibility option doing "
                   "nothing: a build relabels the files of a guest that uses SELinux (/etc/selinux/config and "
                   "load_policy present) once, after all steps and sysprep; when that fails, /.autorelabel is "
                   "touched so that the guest relabels itself at boot. Nothing happens on other guests.")
def _selinux_relabel(_ctx: GuestContext, _arg: bool) -> None:
    return None


@operation("no_selinux_relabel", "Do not relabel the guest's files with their SELinux labels at the end.", "",
           flag_arg, "no_selinux_relabel = true", flag=True, describe=lambda _a: "no relabelling at the end",
           details="Like virt-customize's --no-selinux-relabel, it applies to the whole build wherever it is "
                   "written. Without it, the files of a guest that uses SELinux are relabelled after all steps "
                   "(see selinux_relabel).")
def _no_selinux_relabel(_ctx: GuestContext, _arg: bool) -> None:
    return None  # read before the end of the build (see customize.py)


@operation("no_logfile", "Accepted for compatibility: imagebuilder never leaves a build log in the guest.", "",
           flag_arg, "no_logfile = true", flag=True, describe=lambda _a: "(nothing to do)",
           details="virt-customize keeps the output of run, run_command and install in the guest's "
                   "/tmp/builder.log unless --no-logfile is given; imagebuilder shows that output in its "
                   "own log instead.")
def _no_logfile(_ctx: GuestContext, _arg: bool) -> None:
    return None
