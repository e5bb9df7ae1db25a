"""The one registry of customization operations, named after virt-customize's (dashes as underscores).

Each operation is declared once, here: its argument syntax (virt-customize's string form, which
commands files use, and the TOML table form), a one-line doc, an example, the parser that checks
a value at validation time, and the function that applies it in the appliance. This table drives
recipe validation, the commands-file parser, `imagebuilder ops` and docs/operations.md.
Adding an operation is one `@operation(...)` here.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder.errors import GuestError
from imagebuilder.guest import accounts, args, editing, firstboot, packages, passwords, pkgcache
from imagebuilder.guest.args import ArgContext
from imagebuilder.guest.context import GuestContext


@dataclass(frozen=True)
class Op:
    """One operation: `parse` checks a recipe value, `apply` performs it in the guest."""

    name: str
    doc: str
    syntax: str
    parse: Callable[[Any, ArgContext], Any]
    apply: Callable[[GuestContext, Any], None]
    example: str
    table: str = ""
    details: str = ""
    describe: Callable[[Any], str] = str
    needs_network: bool = False
    flag: bool = False
    origin: str = "virt-customize"
    expands: bool = False

    @property
    def cli_name(self) -> str:
        """The name in virt-customize's command line and in commands files."""
        return self.name.replace("_", "-")

    def info(self) -> dict[str, Any]:
        """What `imagebuilder ops --json` prints about this operation."""
        return {"name": self.name, "command": self.cli_name, "doc": self.doc, "syntax": self.syntax,
                "table": self.table, "example": self.example, "needs_network": self.needs_network,
                "flag": self.flag, "origin": self.origin}


REGISTRY: dict[str, Op] = {}


def operation(name: str, doc: str, syntax: str, parse: Callable[[Any, ArgContext], Any], example: str,
              **options: Any) -> Callable[[Callable[[GuestContext, Any], None]], Callable[[GuestContext, Any], None]]:
    """Register the decorated apply function as operation `name`."""
    def register(apply: Callable[[GuestContext, Any], None]) -> Callable[[GuestContext, Any], None]:
        if name in REGISTRY:
            raise RuntimeError(f"operation {name} is declared twice")
        REGISTRY[name] = Op(name, doc, syntax, parse, apply, example, **options)
        return apply
    return register


# --- argument parsers used by several operations ---------------------------------------------

def _plain(parser: Callable[[Any], Any]) -> Callable[[Any, ArgContext], Any]:
    return lambda value, _ctx: parser(value)


def _flag(value: Any, _ctx: ArgContext) -> bool:
    return args.flag(value)


def _guest_pair(first: str, second: str, right: Callable[[Any], Any] = args.string):
    def parse(value: Any, _ctx: ArgContext) -> tuple[str, Any]:
        left, other = args.pair(value, first, second)
        return args.guest_path(left), right(other)
    return parse


def _host_to_guest(want_dir: bool | None) -> Callable[[Any, ArgContext], tuple[Path, str]]:
    def parse(value: Any, ctx: ArgContext) -> tuple[Path, str]:
        local, remote = args.pair(value, "from", "to")
        return args.host_path(local, ctx, want_dir), args.guest_path(remote)
    return parse


def _pair_text(arg: tuple[Any, Any]) -> str:
    return f"{arg[0]} -> {arg[1]}"


def _names(arg: tuple[str, ...]) -> str:
    return ", ".join(arg)


# --- files -----------------------------------------------------------------------------------

@operation("write", "Write CONTENT to a guest file, replacing it.", "FILE:CONTENT", _guest_pair("path", "content"),
           'write = "/etc/motd:Welcome\\n"', table="{ path, content }",
           describe=lambda a: f"{a[0]} ({len(a[1])} bytes)")
def _write(ctx: GuestContext, arg: tuple[str, str]) -> None:
    ctx.g.write(arg[0], arg[1])


@operation("append_line", "Append a line to a guest file, adding a newline before it if the file lacks one.",
           "FILE:LINE", _guest_pair("path", "line"), 'append_line = "/etc/hosts:10.0.0.1 db"',
           table="{ path, line }", describe=lambda a: f"{a[0]}: {a[1]}",
           details="The line ending (LF or CRLF) is guessed from the file's content; a missing file is "
                   "created. To add a blank line, append an empty LINE.")
def _append_line(ctx: GuestContext, arg: tuple[str, str]) -> None:
    path, line = arg
    g = ctx.g
    if not g.exists(path):
        g.write(path, line + "\n")
        return
    size = g.statns(path)["st_size"]
    head = g.pread(path, 8192, 0) if size else b""
    eol = b"\r\n" if b"\r\n" in head else b"\n"
    prefix = eol if size and g.pread(path, 1, size - 1) != b"\n" else b""
    g.write_append(path, prefix + line.encode() + eol)


def _edit_arg(value: Any) -> tuple[str, editing.Expression]:
    path, expression = args.pair(value, "path", "expression")
    return args.guest_path(path), editing.parse(expression)


@operation("edit", "Edit a guest file with a Perl substitution such as s/^X=.*/X=1/ (FILE:EXPR).", "FILE:EXPR",
           lambda v, _c: _edit_arg(v),
           "edit = '/etc/default/grub:s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/'", table="{ path, expression }",
           describe=lambda a: f"{a[0]}: {a[1].source.strip()}",
           details="Each line of the file (with its newline) goes through the expression, as with "
                   "`perl -pe`. Substitutions `s/PATTERN/REPLACEMENT/FLAGS` (flags g i m s x, any delimiter, "
                   "several separated by `;`, `$1`/`${1}`/`$&` in the replacement) run in imagebuilder itself, "
                   "byte for byte as Perl would. Any other Perl code runs with the guest's own "
                   "`perl -p -i -e` and fails in a guest without perl.")
def _edit(ctx: GuestContext, arg: tuple[str, editing.Expression]) -> None:
    path, expression = arg
    g = ctx.g
    if not g.is_file(path, followsymlinks=True):
        raise GuestError(f"{path} is not a file in the guest")
    if expression.needs_perl:
        if not any(g.exists(p) for p in ("/usr/bin/perl", "/bin/perl")):
            raise GuestError(f"the expression {expression.source.strip()!r} is not a plain s/// substitution, "
                             "and the guest has no perl to run it")
        ctx.command(["perl", "-p", "-i", "-e", expression.source, "--", path])
        return
    content = g.read_file(path)
    edited = expression.apply(content)
    if edited != content:
        g.write(path, edited)


@operation("mkdir", "Create a guest directory, with its parents (mkdir -p).", "DIR", _plain(args.guest_path),
           'mkdir = "/srv/app/conf"')
def _mkdir(ctx: GuestContext, path: str) -> None:
    ctx.g.mkdir_p(path)


@operation("touch", "Create an empty guest file, or update its times (touch).", "FILE", _plain(args.guest_path),
           'touch = "/etc/cloud/cloud-init.disabled"')
def _touch(ctx: GuestContext, path: str) -> None:
    ctx.g.touch(path)


@operation("truncate", "Truncate an existing guest file to zero length.", "FILE", _plain(args.guest_path),
           'truncate = "/etc/machine-id"')
def _truncate(ctx: GuestContext, path: str) -> None:
    if not ctx.g.is_file(path, followsymlinks=True):
        raise GuestError(f"{path} does not exist in the guest (truncate needs an existing file)")
    ctx.g.truncate(path)


@operation("truncate_recursive", "Truncate every file under a guest directory to zero length.", "PATH",
           _plain(args.guest_path), 'truncate_recursive = "/var/log"')
def _truncate_recursive(ctx: GuestContext, root: str) -> None:
    g = ctx.g
    if not g.is_dir(root, followsymlinks=True):
        raise GuestError(f"{root} is not a directory in the guest")
    for relative in g.find(root):
        path = posixpath.join(root, relative.lstrip("/"))
        if g.is_file(path):
            g.truncate(path)


@operation("delete", "Delete a guest file or directory (recursively); shell wildcards are expanded.", "PATH",
           _plain(args.guest_path), 'delete = "/var/cache/apt/archives/*.deb"')
def _delete(ctx: GuestContext, pattern: str) -> None:
    for path in ctx.g.glob_expand(pattern, directoryslash=False) or []:
        ctx.g.rm_rf(path)


@operation("scrub", "Overwrite a guest file so that its data cannot be recovered, then delete it.", "FILE",
           _plain(args.guest_path), 'scrub = "/root/.ssh/id_rsa"')
def _scrub(ctx: GuestContext, path: str) -> None:
    g = ctx.g
    if g.is_dir(path):
        raise GuestError(f"{path} is a directory; scrub takes files only")
    if not g.exists(path):
        raise GuestError(f"{path} does not exist in the guest")
    if not g.feature_available(["scrub"]):
        raise GuestError("this libguestfs appliance has no 'scrub' feature", hint="install the scrub package")
    g.scrub_file(path)


@operation("chmod", "Change the permissions of a guest file (\"0755\" is octal; a bare number is decimal).",
           "PERMISSIONS:FILE",
           lambda v, _c: _chmod_arg(v), 'chmod = "0640:/etc/app.conf"', table="{ path, mode }",
           describe=lambda a: f"{a[1]} to 0{a[0]:o}",
           details="As in virt-customize, a PERMISSIONS string with a leading 0 is octal and one without "
                   "is decimal; three or four octal digits without the 0 (\"755\") are refused as ambiguous. "
                   "In a table, write `mode = 0o640` or `mode = \"0640\"`.")
def _chmod(ctx: GuestContext, arg: tuple[int, str]) -> None:
    ctx.g.chmod(arg[0], arg[1])


def _chmod_arg(value: Any) -> tuple[int, str]:
    if isinstance(value, str):
        mode, sep, path = value.partition(":")
        if not sep:
            raise ValueError("expected \"PERMISSIONS:FILE\" or { path, mode }")
        return args.mode(mode), args.guest_path(path)
    table = args.keys(value, required=("path", "mode"))
    return args.mode(table["mode"]), args.guest_path(table["path"])


@operation("chown", "Change the owner and group of a guest file (numeric ids, or names in a table).",
           "UID:GID:PATH", lambda v, _c: _chown_arg(v), 'chown = "1000:1000:/srv/app"',
           table="{ path, user, group }", describe=lambda a: f"{a[2]} to {a[0]}:{a[1]}",
           details="Names are looked up in the guest's /etc/passwd and /etc/group when the step runs.")
def _chown(ctx: GuestContext, arg: tuple[int | str, int | str, str]) -> None:
    uid, gid = accounts.numeric_owner(ctx.g, arg[0], arg[1])
    ctx.g.chown(uid, gid, arg[2])


def _chown_arg(value: Any) -> tuple[int | str, int | str, str]:
    if isinstance(value, str):
        parts = value.split(":", 2)
        if len(parts) != 3:
            raise ValueError("expected \"UID:GID:PATH\" or { path, user, group }")
        return args.owner_id(parts[0], "user"), args.owner_id(parts[1], "group"), args.guest_path(parts[2])
    table = args.keys(value, required=("path", "user", "group"))
    return (args.owner_id(table["user"], "user"), args.owner_id(table["group"], "group"),
            args.guest_path(table["path"]))


@operation("copy", "Copy a file or directory (recursively) inside the guest.", "SOURCE:DEST",
           _guest_pair("from", "to", args.guest_path), 'copy = "/etc/skel/.bashrc:/root/.bashrc"',
           table="{ from, to }", describe=_pair_text)
def _copy(ctx: GuestContext, arg: tuple[str, str]) -> None:
    ctx.g.cp_a(arg[0], arg[1])


@operation("move", "Move (rename) a file or directory inside the guest.", "SOURCE:DEST",
           _guest_pair("from", "to", args.guest_path), 'move = "/etc/app.conf:/etc/app/app.conf"',
           table="{ from, to }", describe=_pair_text)
def _move(ctx: GuestContext, arg: tuple[str, str]) -> None:
    ctx.g.mv(arg[0], arg[1])


@operation("link", "Create symbolic links LINK… pointing at TARGET (ln -sf).", "TARGET:LINK[:LINK..]",
           lambda v, _c: _link_arg(v), 'link = "/usr/share/zoneinfo/UTC:/etc/localtime"',
           table="{ target, links = [...] }", describe=lambda a: f"{', '.join(a[1])} -> {a[0]}")
def _link(ctx: GuestContext, arg: tuple[str, tuple[str, ...]]) -> None:
    for link in arg[1]:
        ctx.g.ln_sf(arg[0], link)


def _link_arg(value: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(value, str):
        target, *links = value.split(":")
        if not links:
            raise ValueError("expected \"TARGET:LINK[:LINK..]\"")
    else:
        table = args.keys(value, required=("target",), optional=("link", "links"))
        target = table["target"]
        links = [table["link"]] if "link" in table else table.get("links", [])
        if not isinstance(links, list) or not links or "link" in table and "links" in table:
            raise ValueError("give 'link' (one) or 'links' (an array)")
    return args.text(target), tuple(args.guest_path(link) for link in links)


@operation("copy_in", "Copy a host file or directory (recursively) into an existing guest directory.",
           "LOCALPATH:REMOTEDIR", _host_to_guest(None), 'copy_in = "site:/srv"', table="{ from, to }",
           describe=_pair_text)
def _copy_in(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    if not ctx.g.is_dir(remote, followsymlinks=True):
        raise GuestError(f"{remote} is not a directory in the guest (copy_in needs an existing one; add a mkdir step)")
    ctx.g.copy_in(str(local), remote)


@operation("upload", "Upload a host file to a guest file, or into a guest directory; mode and owner are kept.",
           "FILE:DEST", _host_to_guest(False), 'upload = "files/app.conf:/etc/app.conf"', table="{ from, to }",
           describe=_pair_text,
           details="As in virt-customize, the guest file gets the host file's permissions and numeric "
                   "owner: set them on the host as they should be in the guest.")
def _upload(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    g = ctx.g
    if g.is_dir(remote, followsymlinks=True):
        remote = posixpath.join(remote, local.name)
    g.upload(str(local), remote)
    info = local.stat()
    g.chmod(stat.S_IMODE(info.st_mode), remote)
    g.chown(info.st_uid, info.st_gid, remote)


_TAR_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x89LZO", "lzop"),
              (b"\x1f\x9d", "compress"))


@operation("tar_in", "Unpack a host tar file into an existing guest directory (gzip, bzip2, xz are detected).",
           "TARFILE:REMOTEDIR", _host_to_guest(False), 'tar_in = "site.tar:/srv"', table="{ from, to }",
           describe=_pair_text)
def _tar_in(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    if not ctx.g.is_dir(remote, followsymlinks=True):
        raise GuestError(f"{remote} is not a directory in the guest (tar_in needs an existing one)")
    with open(local, "rb") as handle:
        head = handle.read(8)
    compress = next((kind for magic, kind in _TAR_MAGIC if head.startswith(magic)), None)
    ctx.g.tar_in(str(local), remote, compress=compress)


# --- system ----------------------------------------------------------------------------------

@operation("hostname", "Set the host name (/etc/hostname, and the old name's entries in /etc/hosts).", "HOSTNAME",
           _plain(args.hostname), 'hostname = "web01.example.org"',
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
           _plain(args.timezone), 'timezone = "Europe/Paris"',
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
           "'CMD+ARGS'", _plain(args.text), "run_command = \"systemctl set-default multi-user.target\"")
def _run_command(ctx: GuestContext, command: str) -> None:
    ctx.sh(command)


@operation("run", "Run a host script (or program) in the guest, offline in the appliance; it must exit 0.",
           "SCRIPT", lambda v, c: args.host_path(v, c), 'run = "scripts/setup.sh"',
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
          "NAME[,NAME..]", lambda v, _c: args.names(v.split(",") if isinstance(v, str) else v),
          'service_enable = ["nginx", "fstrim.timer"]', describe=_names, origin="imagebuilder",
          details=_SERVICE_DETAILS.format(verb="enable"))(_service_op(True))
operation("service_disable", "Disable services so that they do not start at boot.", "NAME[,NAME..]",
          lambda v, _c: args.names(v.split(",") if isinstance(v, str) else v), 'service_disable = "ssh"',
          describe=_names, origin="imagebuilder",
          details=_SERVICE_DETAILS.format(verb="disable"))(_service_op(False))


@operation("selinux_relabel", "Accepted for compatibility: files are relabelled anyway (see no_selinux_relabel).",
           "", _flag, "selinux_relabel = true", flag=True, describe=lambda _a: "(automatic)",
           details="As in current virt-customize, where `--selinux-relabel` is a compatibility option doing "
                   "nothing: a build relabels the files of a guest that uses SELinux (/etc/selinux/config and "
                   "load_policy present) once, after all steps and sysprep; when that fails, /.autorelabel is "
                   "touched so that the guest relabels itself at boot. Nothing happens on other guests.")
def _selinux_relabel(_ctx: GuestContext, _arg: bool) -> None:
    return None


@operation("no_selinux_relabel", "Do not relabel the guest's files with their SELinux labels at the end.", "",
           _flag, "no_selinux_relabel = true", flag=True, describe=lambda _a: "no relabelling at the end",
           details="Like virt-customize's --no-selinux-relabel, it applies to the whole build wherever it is "
                   "written. Without it, the files of a guest that uses SELinux are relabelled after all steps "
                   "(see selinux_relabel).")
def _no_selinux_relabel(_ctx: GuestContext, _arg: bool) -> None:
    return None  # read before the end of the build (see customize.py)


@operation("no_logfile", "Accepted for compatibility: imagebuilder never leaves a build log in the guest.", "",
           _flag, "no_logfile = true", flag=True, describe=lambda _a: "(nothing to do)",
           details="virt-customize keeps the output of run, run_command and install in the guest's "
                   "/tmp/builder.log unless --no-logfile is given; imagebuilder shows that output in its "
                   "own log instead.")
def _no_logfile(_ctx: GuestContext, _arg: bool) -> None:
    return None


# --- packages --------------------------------------------------------------------------------

def _package_action(ctx: GuestContext, action: str, names: tuple[str, ...] = ()) -> None:
    mgr = packages.manager(ctx.os.get("package_management", "unknown"))
    g = ctx.g
    guard = mgr.name == "apt" and not g.exists("/usr/sbin/policy-rc.d")
    if guard:  # no daemon may start inside the appliance
        g.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
        g.chmod(0o755, "/usr/sbin/policy-rc.d")
    cache = pkgcache.use(ctx, mgr.name, action)  # apt's downloads kept across builds, out of the image
    try:
        if mgr.refresh and action != "uninstall" and not ctx.state.get("packages_refreshed"):
            try:
                with cache.lists():
                    ctx.command(mgr.argv("refresh", options=cache.options))
            except GuestError as exc:
                raise GuestError(f"refreshing the {mgr.name} package lists failed (is the appliance network on, "
                                 f"and the guest's repositories reachable?): {exc.message}") from None
            ctx.state["packages_refreshed"] = True
        try:
            with cache.packages():
                ctx.command(mgr.argv(action, names, cache.options))
        except GuestError as exc:
            failed = packages.blame(mgr, exc.message, names)
            what = {"install": "installing", "uninstall": "removing", "upgrade": "upgrading"}[action]
            if failed:
                raise GuestError(f"{what} package{'s' if len(failed) > 1 else ''} {', '.join(failed)} "
                                 f"failed: {_last_line(exc.message)}") from None
            raise GuestError(f"{what} {', '.join(names) or 'the packages'} failed: {exc.message}") from None
    finally:
        if guard:
            g.rm_f("/usr/sbin/policy-rc.d")


def _last_line(message: str) -> str:
    """The package manager's own error line (apt's `E: …`, dnf's `Error: …`), else the last line."""
    errors = re.findall(r"(?:^|\s)((?:E|Error|error|ERROR): .*|No match for argument.*)$", message, re.MULTILINE)
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return (errors or lines or [message])[-1].strip()


@operation("install", "Install packages with the guest's package manager (turns the appliance network on).",
           "PKG,PKG..", _plain(args.packages), 'install = ["nginx", "curl"]', describe=_names, needs_network=True,
           details="The package manager is the one libguestfs inspection finds: apt, dnf, yum, zypper, apk or "
                   "pacman. Package lists are refreshed once per build. A failure names the package that "
                   "could not be installed.")
def _install(ctx: GuestContext, names: tuple[str, ...]) -> None:
    _package_action(ctx, "install", names)


@operation("uninstall", "Remove packages with the guest's package manager.", "PKG,PKG..", _plain(args.packages),
           'uninstall = ["nano"]', describe=_names)
def _uninstall(ctx: GuestContext, names: tuple[str, ...]) -> None:
    _package_action(ctx, "uninstall", names)


@operation("update", "Upgrade the installed packages to their latest versions (apt-get upgrade, dnf upgrade …).",
           "", _flag, "update = true", flag=True, needs_network=True, describe=lambda _a: "all packages")
def _update(ctx: GuestContext, _arg: bool) -> None:
    _package_action(ctx, "upgrade")


# --- accounts --------------------------------------------------------------------------------

def _parse_password(value: Any, ctx: ArgContext) -> tuple[str, passwords.PasswordSpec]:
    if isinstance(value, str):
        user, sep, selector = value.partition(":")
        if not sep:
            raise ValueError("expected \"USER:SELECTOR\", e.g. \"alice:file:secrets/alice.pw\"")
        name = args.user_name(user)
        return name, passwords.parse(selector, ctx, name)
    if not isinstance(value, dict) or "user" not in value:
        raise ValueError("expected \"USER:SELECTOR\" or a table { user, file | password | random, locked }")
    name = args.user_name(value["user"])
    return name, passwords.parse({k: v for k, v in value.items() if k != "user"}, ctx, name)


@operation("root_password", "Set root's password: password:TEXT, file:PATH, random, disabled, locked:….",
           "SELECTOR", lambda v, c: passwords.parse(v, c, "root"), 'root_password = "file:secrets/root.pw"',
           table="{ file | password | random = SAVE_TO, locked }", describe=lambda spec: spec.describe(),
           details="Hashed with SHA-512 crypt (see password_crypto) in imagebuilder and written into "
                   "/etc/shadow. As in virt-customize, passwords are set after all the other steps, wherever "
                   "they are written. A random password is never printed: it is saved, readable by its owner "
                   "only, to `{ random = \"FILE\" }` or, for the plain `random` selector, to "
                   "`RECIPE.root.password` beside the recipe.")
def _root_password(ctx: GuestContext, spec: passwords.PasswordSpec) -> None:
    accounts.set_password(ctx, "root", spec)


@operation("password", "Set a user's password (the user must exist once the other steps ran): USER:SELECTOR.",
           "USER:SELECTOR",
           _parse_password, 'password = "alice:file:secrets/alice.pw"',
           table="{ user, file | password | random = SAVE_TO, locked }",
           describe=lambda a: f"{a[0]}: {a[1].describe()}",
           details="Selectors as for root_password; a plain `random` is saved to `RECIPE.USER.password` beside "
                   "the recipe. As in virt-customize it is set after all the other steps, so the user may be "
                   "created by a later step (`run_command = \"useradd -m bob\"`).")
def _password(ctx: GuestContext, arg: tuple[str, passwords.PasswordSpec]) -> None:
    accounts.set_password(ctx, arg[0], arg[1])


@operation("password_crypto", "Hash algorithm for every password the recipe sets: md5, sha256, sha512, yescrypt.",
           "md5|sha256|sha512|yescrypt", _plain(passwords.crypto), 'password_crypto = "yescrypt"',
           details="As in virt-customize it applies to all passwords, wherever it appears; the last one wins. "
                   "The default is sha512.")
def _password_crypto(_ctx: GuestContext, _method: str) -> None:
    return None  # read before the steps run (see customize.py)


def _parse_ssh_inject(value: Any, ctx: ArgContext) -> tuple[str, tuple[str, ...]]:
    """virt-customize's USER[:file:PATH | :string:KEY], or a table { user, file | key }."""
    if isinstance(value, dict):
        table = args.keys(value, required=("user",), optional=("file", "key"))
        if len(set(table) & {"file", "key"}) != 1:
            raise ValueError("expected { user = \"…\", file = \"KEY.pub\" } or { user = \"…\", key = \"ssh-… …\" }")
        user = args.user_name(table["user"])
        kind = "file" if "file" in table else "string"
        return user, tuple(accounts.parse_key_source(args.text(table.get("file", table.get("key"))), ctx, kind))
    user, sep, selector = args.text(value).partition(":")
    user = args.user_name(user)
    if not sep:
        return user, tuple(accounts.default_public_key(ctx))
    kind, _, item = selector.partition(":")
    if kind not in ("file", "string") or not item:
        raise ValueError("expected \"USER\", \"USER:file:KEY.pub\" or \"USER:string:KEY\"")
    return user, tuple(accounts.parse_key_source(item, ctx, kind))


@operation("ssh_inject", "Add public keys to a user's ~/.ssh/authorized_keys (the user must exist).",
           "USER[:SELECTOR]", _parse_ssh_inject, 'ssh_inject = "root:file:keys/id.pub"',
           table="{ user, file | key }",
           describe=lambda a: f"{a[0]}: {len(a[1])} key(s)",
           details="SELECTOR is `file:KEY.pub` or `string:KEY`; without one, the newest ~/.ssh/id*.pub of "
                   "the user running imagebuilder (as ssh-copy-id picks it). ~/.ssh (0700) and "
                   "authorized_keys (0600) are made, owned by the user.")
def _ssh_inject(ctx: GuestContext, arg: tuple[str, tuple[str, ...]]) -> None:
    accounts.inject_keys(ctx, arg[0], arg[1])


@operation("user", "Create a user (or update an existing one) with groups, shell, password and SSH keys.",
           "NAME", accounts.parse_user,
           'user = { name = "alice", groups = ["sudo"], shell = "/bin/bash", password = "file:secrets/alice.pw", '
           'ssh_keys = ["keys/id.pub"] }',
           table="{ name, uid, group, groups, shell, home, comment, system, password, ssh_keys }",
           describe=lambda spec: spec.describe(), origin="imagebuilder",
           details="Runs the guest's useradd (with a home directory), or usermod if the user exists. "
                   "`password` takes a selector as root_password does; `ssh_keys` takes public key files "
                   "(relative to the recipe) or keys.")
def _user(ctx: GuestContext, spec: accounts.UserSpec) -> None:
    accounts.ensure_user(ctx, spec)


# --- first boot ------------------------------------------------------------------------------

_FIRSTBOOT_DETAILS = (f"Scripts run once, in recipe order, as root, late in the first boot, from a systemd "
                      f"unit (`{firstboot.SERVICE}.service`) or a SysV init script on other guests; their "
                      f"output goes to `{firstboot.LOG_FILE}` in the guest.")


@operation("firstboot", "Run a host script (or program) once, at the guest's first boot.", "SCRIPT",
           lambda v, c: args.host_path(v, c), 'firstboot = "scripts/register.sh"', describe=lambda p: str(p),
           details=_FIRSTBOOT_DETAILS)
def _firstboot(ctx: GuestContext, script: Path) -> None:
    firstboot.add_script(ctx.g, script.name, script.read_bytes())


@operation("firstboot_command", "Run a shell command once, at the guest's first boot.", "'CMD+ARGS'",
           _plain(args.text), 'firstboot_command = "dpkg-reconfigure openssh-server"', details=_FIRSTBOOT_DETAILS)
def _firstboot_command(ctx: GuestContext, command: str) -> None:
    firstboot.add_script(ctx.g, command.split()[0] if command.split() else "command",
                         firstboot.command_script(command))


@operation("firstboot_install", "Install packages at the guest's first boot, with its own network.", "PKG,PKG..",
           _plain(args.packages), 'firstboot_install = ["cloud-guest-utils"]', describe=_names,
           details=_FIRSTBOOT_DETAILS + " The package manager is retried for about a minute while the "
                                        "network comes up.")
def _firstboot_install(ctx: GuestContext, names: tuple[str, ...]) -> None:
    mgr = packages.manager(ctx.os.get("package_management", "unknown"))
    firstboot.add_script(ctx.g, "install-" + "-".join(names), packages.firstboot_script(mgr, names))


# --- commands files --------------------------------------------------------------------------

def _parse_commands_file(value: Any, ctx: ArgContext) -> Any:
    from imagebuilder.guest import commands_file

    path = args.host_path(value, ctx)
    return commands_file.parse_commands(path, ctx)


def _expanded(_ctx: GuestContext, _arg: Any) -> None:
    return None  # its commands follow it as steps of their own (see recipe/steps.py)


operation("commands_from_file", "Run the operations of a virt-customize commands file, in order.", "FILENAME",
          _parse_commands_file, 'commands_from_file = "legacy.cmds"', expands=True,
          details="The file uses virt-customize's --commands-from-file syntax (one `command argument` a "
                  "line, `#` comments, `\\` continuation); its path is relative to the recipe, and host "
                  "paths inside it are relative to the file itself. Its commands become steps when the recipe "
                  "is read, so every error names the commands file and line.")(_expanded)


def needs_network(names: list[str]) -> bool:
    """True if any of the named operations needs the appliance network."""
    return any(REGISTRY[name].needs_network for name in names)
