"""The file-tree digest of a mounted guest: one sha256 over every path's type, mode, owner, size,
content, link target and extended attributes (never its times), so that two builds that made the
same files compare equal even though their disk images differ byte for byte.

The tree comes out of the appliance as one tar stream (numeric owners, xattrs) through a named pipe
and is hashed as it arrives: nothing of it is stored.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

# tar member types, named in the listing that is hashed
_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "link",
          tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def tree_digest(g: Any, root: str = "/") -> tuple[str, int]:
    """('sha256:HEX', number of entries) of the tree under root in the session g."""
    with tempfile.TemporaryDirectory(prefix="imagebuilder-tree-") as tmp:
        pipe = Path(tmp) / "tree.tar"
        os.mkfifo(pipe, 0o600)
        result: dict[str, Any] = {}
        reader = threading.Thread(target=_read, args=(pipe, result), name="tree-digest", daemon=True)
        reader.start()
        try:
            g.tar_out(root, str(pipe), numericowner=True, xattrs=True)
        finally:
            if reader.is_alive() and "digest" not in result:
                _unblock(pipe)  # the appliance failed before opening the pipe: let the reader go
            reader.join()
        if "error" in result:
            raise result["error"]
    return result["digest"]


def digest_of_tar(stream: Any) -> tuple[str, int]:
    """('sha256:HEX', entries) of a tar stream: its members' canonical lines, sorted by path."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        contents: dict[str, tuple[int, str]] = {}
        lines = sorted(entry_line(member, tar, contents) for member in tar)
    digest = hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return f"sha256:{digest}", len(lines)


def _read(pipe: Path, result: dict[str, Any]) -> None:
    try:
        with open(pipe, "rb") as stream:
            result["digest"] = digest_of_tar(stream)
    except (OSError, tarfile.TarError) as exc:
        result["error"] = exc


def _unblock(pipe: Path) -> None:
    try:
        fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def entry_line(member: tarfile.TarInfo, tar: tarfile.TarFile | None = None,
               contents: dict[str, tuple[str, ...]] | None = None) -> str:
    """The canonical line of one tar member: path, type, mode, uid:gid, size and content sha256 (files),
    link target (symbolic links), device numbers, then its xattrs in name order. Times are left out,
    and a hard link reads as the file it names, with that file's content and xattrs (which of two
    links tar stores first depends on the order a directory happens to list them). `contents`
    remembers each file's size, sha256 and xattrs for the links to it."""
    contents = {} if contents is None else contents
    kind = _TYPES.get(member.type, f"type-{member.type!r}")
    name = member.name.removeprefix("./") or "."
    fields = [name, "file" if kind == "hardlink" else kind, f"{member.mode:04o}", f"{member.uid}:{member.gid}"]
    xattrs = [f"{k.removeprefix('SCHILY.xattr.')}={v}" for k, v in sorted(member.pax_headers.items())
              if k.startswith("SCHILY.xattr.")]
    if member.isfile():
        content = hashlib.sha256()
        handle = tar.extractfile(member) if tar is not None else None
        if handle is not None:
            while chunk := handle.read(1 << 20):
                content.update(chunk)
        contents[name] = (str(member.size), content.hexdigest(), *xattrs)
        fields += contents[name]
    elif member.islnk():
        fields += contents.get(member.linkname.removeprefix("./"), ("0", "?"))
    else:
        if member.issym():
            fields.append(member.linkname)
        elif member.ischr() or member.isblk():
            fields.append(f"{member.devmajor}:{member.devminor}")
        fields += xattrs
    return "\t".join(fields) + "\n"
