"""The file-tree digest: contents, modes, owners, links and xattrs count; times and the order tar
happens to store entries (and which of two hard links it stores first) do not."""

from __future__ import annotations

import io
import tarfile

from imagebuilder.guest.tree import digest_of_tar


def tar_of(entries: list[tuple], mtime: int) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, mode, data, extra in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid = mode, mtime, 0, 0
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = extra
            info.pax_headers = {"SCHILY.xattr.security.capability": "cap"} if extra == "xattr" else {}
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    return buffer


FILES = [("./etc", tarfile.DIRTYPE, 0o755, b"", None),
         ("./etc/motd", tarfile.REGTYPE, 0o644, b"hello\n", None),
         ("./usr/bin/ping", tarfile.REGTYPE, 0o755, b"\x7fELF", "xattr"),
         ("./etc/alias", tarfile.SYMTYPE, 0o777, b"", "motd"),
         ("./usr/bin/ping4", tarfile.LNKTYPE, 0o755, b"", "./usr/bin/ping")]


def test_same_files_different_times_and_order_give_the_same_digest():
    first = digest_of_tar(tar_of(FILES, mtime=1_700_000_000))
    swapped = [FILES[0], FILES[3], ("./usr/bin/ping4", tarfile.REGTYPE, 0o755, b"\x7fELF", "xattr"),
               ("./usr/bin/ping", tarfile.LNKTYPE, 0o755, b"", "./usr/bin/ping4"), FILES[1]]
    assert digest_of_tar(tar_of(swapped, mtime=1_800_000_000)) == first
    assert first[1] == 5


def test_content_mode_link_and_xattr_changes_change_the_digest():
    base = digest_of_tar(tar_of(FILES, 0))[0]
    changes = [
        [FILES[0], ("./etc/motd", tarfile.REGTYPE, 0o644, b"hello!\n", None), *FILES[2:]],
        [FILES[0], ("./etc/motd", tarfile.REGTYPE, 0o600, b"hello\n", None), *FILES[2:]],
        [*FILES[:3], ("./etc/alias", tarfile.SYMTYPE, 0o777, b"", "hosts"), FILES[4]],
        [FILES[0], FILES[1], ("./usr/bin/ping", tarfile.REGTYPE, 0o755, b"\x7fELF", None), *FILES[3:]],
    ]
    digests = {digest_of_tar(tar_of(entries, 0))[0] for entries in changes}
    assert len(digests) == 4 and base not in digests
