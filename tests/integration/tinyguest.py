"""A tiny Linux "guest" for tests that need a real appliance but not a real distribution.

A 32 MiB ext4 filesystem (no partition table) holding what libguestfs inspection looks for
(/etc/os-release of Debian 12, /etc/fstab, /bin) and just enough to run shell commands in it
(the host's dash, cat, sleep and their libc), plus /etc/passwd and /etc/shadow with root and two
users for password steps. It converts and uploads in a blink, so fault tests spend their time on
the fault, not on copying a distribution around. It does not boot.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

_FILES = {
    "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                      'VERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n',
    "etc/debian_version": "12.5\n",
    "etc/fstab": "LABEL=ibtiny / ext4 defaults 0 1\n",
    "etc/hostname": "tiny\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\ttiny\n",
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
                  "carol:x:1001:1001:Carol:/home/carol:/bin/sh\n",
    "etc/group": "root:x:0:\nalice:x:1000:\ncarol:x:1001:\n",
    "etc/shadow": "root:*:19700:0:99999:7:::\nalice:!:19700:0:99999:7:::\ncarol:!:19700:0:99999:7:::\n",
}
_PROGRAMS = {"bin/sh": "/bin/dash", "bin/cat": "/bin/cat", "bin/sleep": "/bin/sleep", "bin/ls": "/bin/ls",
             "bin/true": "/bin/true", "bin/false": "/bin/false"}


def _libraries(program: str) -> set[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.add(path)
    return found


def make_tiny_guest(path: Path, fmt: str = "qcow2", boot_sector: bytes | None = None) -> Path:
    """Write the tiny guest image to `path` (raw or qcow2) and return it. With `boot_sector` (a
    512-byte sector ending in 55 AA, such as virt_helpers.ECHO_SECTOR) the disk gets an MBR holding
    that code and the filesystem as its one partition: inspection finds the OS, and the disk boots."""
    with tempfile.TemporaryDirectory(prefix="ibtest-tiny-") as scratch:
        root = Path(scratch) / "root"
        for directory in ("etc", "bin", "dev", "proc", "sys", "tmp", "run", "root", "home/alice", "home/carol", "usr/bin",
                          "var/log"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        for name, text in _FILES.items():
            (root / name).write_text(text)
        (root / "etc" / "shadow").chmod(0o640)
        libraries: set[str] = set()
        for name, program in _PROGRAMS.items():
            real = Path(program).resolve()
            shutil.copy2(real, root / name)
            libraries |= _libraries(str(real))
        for library in libraries:
            target = root / library.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(library).resolve(), target)
        raw = Path(scratch) / "tiny.raw"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "ibtiny", "-d", str(root), str(raw), "32M"], check=True)
        if boot_sector is not None:
            raw = _with_mbr(raw, boot_sector)
        if fmt == "raw":
            shutil.move(raw, path)
        else:
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(path)], check=True)
    path.chmod(0o644)
    return path


def _with_mbr(filesystem: Path, boot_sector: bytes) -> Path:
    """A disk: the boot code and one Linux partition (from 1 MiB) in the MBR, then the filesystem."""
    start, sectors = 2048, filesystem.stat().st_size // 512
    entry = struct.pack("<B3sB3sII", 0x80, b"\0\0\0", 0x83, b"\0\0\0", start, sectors)
    mbr = boot_sector[:446] + entry + bytes(48) + b"\x55\xaa"
    disk = filesystem.with_name("disk.raw")
    with open(disk, "wb") as out, open(filesystem, "rb") as source:
        out.write(mbr.ljust(start * 512, b"\0"))
        shutil.copyfileobj(source, out)
    return disk
