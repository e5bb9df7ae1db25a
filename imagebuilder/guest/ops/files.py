"""Operations on guest files: write, edit, copy, move, link, permissions and ownership, and files and
tar archives from the host."""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path
from typing import Any

from imagebuilder import values
from imagebuilder.errors import GuestError
from imagebuilder.guest import accounts, editing
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops.registry import guest_pair, host_to_guest, operation, pair_text, plain


@operation("write", "Write CONTENT to a guest file, replacing it.", "FILE:CONTENT", guest_pair("path", "content"),
           'write = "/etc/motd:Welcome\\n"', table="{ path, content }",
           describe=lambda a: f"{a[0]} ({len(a[1])} bytes)")
def _write(ctx: GuestContext, arg: tuple[str, str]) -> None:
    ctx.g.write(arg[0], arg[1])


@operation("append_line", "Append a line to a guest file, adding a newline before it if the file lacks one.",
           "FILE:LINE", guest_pair("path", "line"), 'append_line = "/etc/hosts:10.0.0.1 db"',
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
    path, expression = values.pair(value, "path", "expression")
    return values.guest_path(path), editing.parse(expression)


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


@operation("mkdir", "Create a guest directory, with its parents (mkdir -p).", "DIR", plain(values.guest_path),
           'mkdir = "/srv/app/conf"')
def _mkdir(ctx: GuestContext, path: str) -> None:
    ctx.g.mkdir_p(path)


@operation("touch", "Create an empty guest file, or update its times (touch).", "FILE", plain(values.guest_path),
           'touch = "/etc/cloud/cloud-init.disabled"')
def _touch(ctx: GuestContext, path: str) -> None:
    ctx.g.touch(path)


@operation("truncate", "Truncate an existing guest file to zero length.", "FILE", plain(values.guest_path),
           'truncate = "/etc/machine-id"')
def _truncate(ctx: GuestContext, path: str) -> None:
    if not ctx.g.is_file(path, followsymlinks=True):
        raise GuestError(f"{path} does not exist in the guest (truncate needs an existing file)")
    ctx.g.truncate(path)


@operation("truncate_recursive", "Truncate every file under a guest directory to zero length.", "PATH",
           plain(values.guest_path), 'truncate_recursive = "/var/log"')
def _truncate_recursive(ctx: GuestContext, root: str) -> None:
    g = ctx.g
    if not g.is_dir(root, followsymlinks=True):
        raise GuestError(f"{root} is not a directory in the guest")
    for relative in g.find(root):
        path = posixpath.join(root, relative.lstrip("/"))
        if g.is_file(path):
            g.truncate(path)


@operation("delete", "Delete a guest file or directory (recursively); shell wildcards are expanded.", "PATH",
           plain(values.guest_path), 'delete = "/var/cache/apt/archives/*.deb"')
def _delete(ctx: GuestContext, pattern: str) -> None:
    for path in ctx.g.glob_expand(pattern, directoryslash=False) or []:
        ctx.g.rm_rf(path)


@operation("scrub", "Overwrite a guest file so that its data cannot be recovered, then delete it.", "FILE",
           plain(values.guest_path), 'scrub = "/root/.ssh/id_rsa"')
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
        return values.mode(mode), values.guest_path(path)
    table = values.keys(value, required=("path", "mode"))
    return values.mode(table["mode"]), values.guest_path(table["path"])


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
        return values.owner_id(parts[0], "user"), values.owner_id(parts[1], "group"), values.guest_path(parts[2])
    table = values.keys(value, required=("path", "user", "group"))
    return (values.owner_id(table["user"], "user"), values.owner_id(table["group"], "group"),
            values.guest_path(table["path"]))


@operation("copy", "Copy a file or directory (recursively) inside the guest.", "SOURCE:DEST",
           guest_pair("from", "to", values.guest_path), 'copy = "/etc/skel/.bashrc:/root/.bashrc"',
           table="{ from, to }", describe=pair_text)
def _copy(ctx: GuestContext, arg: tuple[str, str]) -> None:
    ctx.g.cp_a(arg[0], arg[1])


@operation("move", "Move (rename) a file or directory inside the guest.", "SOURCE:DEST",
           guest_pair("from", "to", values.guest_path), 'move = "/etc/app.conf:/etc/app/app.conf"',
           table="{ from, to }", describe=pair_text)
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
        table = values.keys(value, required=("target",), optional=("link", "links"))
        target = table["target"]
        links = [table["link"]] if "link" in table else table.get("links", [])
        if not isinstance(links, list) or not links or "link" in table and "links" in table:
            raise ValueError("give 'link' (one) or 'links' (an array)")
    return values.text(target), tuple(values.guest_path(link) for link in links)


@operation("copy_in", "Copy a host file or directory (recursively) into an existing guest directory.",
           "LOCALPATH:REMOTEDIR", host_to_guest(None), 'copy_in = "site:/srv"', table="{ from, to }",
           describe=pair_text)
def _copy_in(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    if not ctx.g.is_dir(remote, followsymlinks=True):
        raise GuestError(f"{remote} is not a directory in the guest (copy_in needs an existing one; add a mkdir step)")
    ctx.g.copy_in(str(local), remote)


@operation("upload", "Upload a host file to a guest file, or into a guest directory; mode and owner are kept.",
           "FILE:DEST", host_to_guest(False), 'upload = "files/app.conf:/etc/app.conf"', table="{ from, to }",
           describe=pair_text,
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
           "TARFILE:REMOTEDIR", host_to_guest(False), 'tar_in = "site.tar:/srv"', table="{ from, to }",
           describe=pair_text)
def _tar_in(ctx: GuestContext, arg: tuple[Path, str]) -> None:
    local, remote = arg
    if not ctx.g.is_dir(remote, followsymlinks=True):
        raise GuestError(f"{remote} is not a directory in the guest (tar_in needs an existing one)")
    with open(local, "rb") as handle:
        head = handle.read(8)
    compress = next((kind for magic, kind in _TAR_MAGIC if head.startswith(magic)), None)
    ctx.g.tar_in(str(local), remote, compress=compress)
