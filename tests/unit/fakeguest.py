"""A stand-in for a mounted libguestfs handle, backed by a directory: enough of the API for operations.

Guest paths map into `root`; programs the operations would run (`command`, `sh`) are recorded,
and a test may give a handler per program to simulate it.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from imagebuilder.errors import GuestError


class FakeGuest:
    """The subset of guestfs.GuestFS that imagebuilder's operations use, on a host directory."""

    def __init__(self, root: Path):
        self.root = root
        self.commands: list[list[str]] = []
        self.shell: list[str] = []
        self.programs: dict[str, Callable[[list[str]], str]] = {}
        self.features = {"scrub"}
        self.relabelled: list[tuple[str, str]] = []
        self.uuids_changed: list[str] = []

    # paths ------------------------------------------------------------------------------------
    def host(self, path: str, follow: bool = False) -> Path:
        if not path.startswith("/"):
            raise GuestError(f"path must be absolute: {path}")
        local = self.root / path.lstrip("/")
        for _ in range(10):
            if not (follow and local.is_symlink()):
                break
            target = os.readlink(local)
            local = self.root / target.lstrip("/") if target.startswith("/") else local.parent / target
        return local

    def _fail(self, name: str, message: str) -> GuestError:
        return GuestError(f"{name}: {message}")

    # queries ----------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.host(path, True).exists() or self.host(path).is_symlink()

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        local = self.host(path, followsymlinks)
        return local.is_file() and (followsymlinks or not local.is_symlink())

    def is_dir(self, path: str, followsymlinks: bool = False) -> bool:
        local = self.host(path, followsymlinks)
        return local.is_dir() and (followsymlinks or not local.is_symlink())

    def is_symlink(self, path: str) -> bool:
        return self.host(path).is_symlink()

    def readlink(self, path: str) -> str:
        return os.readlink(self.host(path))

    def ls(self, directory: str) -> list[str]:
        local = self.host(directory, True)
        if not local.is_dir():
            raise self._fail("ls", f"{directory}: No such file or directory")
        return sorted(os.listdir(local))

    def find(self, directory: str) -> list[str]:
        local = self.host(directory, True)
        out = []
        for root, dirs, files in os.walk(local):
            for name in dirs + files:
                out.append(str((Path(root) / name).relative_to(local)))
        return sorted(out)

    def glob_expand(self, pattern: str, directoryslash: bool | None = None) -> list[str]:
        parts = pattern.lstrip("/").split("/")
        current = ["/"]
        for part in parts:
            nxt = []
            for base in current:
                local = self.host(base, True)
                if not local.is_dir():
                    continue
                names = sorted(os.listdir(local))
                for name in names:
                    if fnmatch.fnmatchcase(name, part) and (part.startswith(".") or not name.startswith(".")):
                        nxt.append(base.rstrip("/") + "/" + name)
            current = nxt
        return current

    def read_file(self, path: str) -> bytes:
        local = self.host(path, True)
        if not local.is_file():
            raise self._fail("read_file", f"{path}: No such file or directory")
        return local.read_bytes()

    def cat(self, path: str) -> str:
        return self.read_file(path).decode()

    def pread(self, path: str, count: int, offset: int) -> bytes:
        with open(self.host(path, True), "rb") as handle:
            handle.seek(offset)
            return handle.read(count)

    def statns(self, path: str) -> dict[str, int]:
        info = self.host(path, True).stat()
        return {"st_size": info.st_size, "st_mode": info.st_mode, "st_uid": info.st_uid, "st_gid": info.st_gid}

    def feature_available(self, groups: list[str]) -> bool:
        return set(groups) <= self.features

    def pvs(self) -> list[str]:
        return []

    def vgs(self) -> list[str]:
        return []

    def list_filesystems(self) -> dict[str, str]:
        return {"/dev/sda1": "ext4"}

    # changes ----------------------------------------------------------------------------------
    def write(self, path: str, content: str | bytes) -> None:
        local = self.host(path, True)
        if not local.parent.is_dir():
            raise self._fail("write", f"{path}: No such file or directory")
        data = content.encode() if isinstance(content, str) else content
        if local.exists():
            with open(local, "r+b") as handle:
                handle.truncate(0)
                handle.write(data)
        else:
            local.write_bytes(data)

    def write_append(self, path: str, content: bytes) -> None:
        with open(self.host(path, True), "ab") as handle:
            handle.write(content)

    def mkdir(self, path: str) -> None:
        self.host(path).mkdir()

    def mkdir_p(self, path: str) -> None:
        self.host(path).mkdir(parents=True, exist_ok=True)

    def mktemp(self, template: str) -> str:
        path = template.replace("XXXXXX", "abc123")
        self.host(path).write_bytes(b"")
        return path

    def touch(self, path: str) -> None:
        self.host(path, True).touch()

    def truncate(self, path: str) -> None:
        local = self.host(path, True)
        if not local.is_file():
            raise self._fail("truncate", f"{path}: No such file or directory")
        local.write_bytes(b"")

    def chmod(self, mode: int, path: str) -> None:
        os.chmod(self.host(path, True), mode)

    def chown(self, uid: int, gid: int, path: str) -> None:
        os.lchown(self.host(path), uid, gid)

    def ln_sf(self, target: str, link: str) -> None:
        local = self.host(link)
        if local.is_dir() and not local.is_symlink():
            local = local / Path(target).name
        if local.is_symlink() or local.exists():
            local.unlink()
        os.symlink(target, local)

    def rm_rf(self, path: str) -> None:
        local = self.host(path)
        if local.is_dir() and not local.is_symlink():
            shutil.rmtree(local)
        elif local.exists() or local.is_symlink():
            local.unlink()

    def rm_f(self, path: str) -> None:
        local = self.host(path)
        if local.is_dir() and not local.is_symlink():
            raise self._fail("rm_f", f"{path}: Is a directory")
        if local.exists() or local.is_symlink():
            local.unlink()

    def cp_a(self, src: str, dest: str) -> None:
        source, target = self.host(src), self.host(dest)
        if target.is_dir():
            target = target / source.name
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)

    def mv(self, src: str, dest: str) -> None:
        shutil.move(self.host(src), self.host(dest))

    def upload(self, filename: str, remote: str) -> None:
        shutil.copyfile(filename, self.host(remote, True))

    def copy_in(self, local: str, remotedir: str) -> None:
        target = self.host(remotedir, True) / Path(local).name
        if Path(local).is_dir():
            shutil.copytree(local, target, symlinks=True)
        else:
            shutil.copy2(local, target)

    def tar_in(self, tarfile_path: str, directory: str, compress: str | None = None) -> None:
        self.last_tar_compress = compress
        with tarfile.open(tarfile_path) as archive:
            archive.extractall(self.host(directory, True))  # noqa: S202 - a test's own archive

    def scrub_file(self, path: str) -> None:
        self.host(path).unlink()

    def set_uuid_random(self, device: str) -> None:
        self.uuids_changed.append(device)

    def selinux_relabel(self, specfile: str, path: str, force: bool | None = None) -> None:
        if not self.is_file(specfile):
            raise self._fail("selinux_relabel", f"{specfile}: No such file or directory")
        self.relabelled.append((specfile, path))

    def command(self, argv: list[str]) -> str:
        self.commands.append(list(argv))
        program = argv[1 if argv[0] == "env" else 0:]
        program = [a for a in program if "=" not in a or a.startswith("-")] if argv[0] == "env" else program
        handler = self.programs.get(program[0])
        return handler(argv) if handler else ""

    def sh(self, command: str) -> str:
        self.shell.append(command)
        handler = self.programs.get("sh")
        return handler([command]) if handler else ""

    def mode(self, path: str) -> int:
        return stat.S_IMODE(self.host(path).lstat().st_mode)


def debian_root(root: Path) -> Path:
    """A few files of a Debian guest, enough for the operations."""
    for directory in ("etc/systemd/system", "etc/init.d", "etc/ssh", "root", "home", "tmp", "var/tmp", "var/log/apt",
                      "usr/bin", "usr/sbin", "usr/share/zoneinfo/Europe", "var/lib/dhcp", "var/cache/apt/archives",
                      "var/spool/cron/crontabs", "lib/systemd/system"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("old-name\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\told-name\n::1\tlocalhost ip6-localhost\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/bin/false\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n")
    (root / "etc/group").write_text("root:x:0:\nsudo:x:27:\nnogroup:x:65534:\n")
    (root / "etc/timezone").write_text("Etc/UTC\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "usr/share/zoneinfo/Europe/Paris").write_bytes(b"TZif")
    (root / "usr/bin/systemctl").write_text("")
    (root / "usr/bin/perl").write_text("")
    (root / "usr/sbin/sshd").write_text("")
    return root
