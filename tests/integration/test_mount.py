"""`imagebuilder mount` / `umount` against real libguestfs and FUSE, as `guestmount -i` / `guestunmount`:
the session's base image served at a directory, read through it, unmounted, and nothing left behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imagebuilder.guest import mount
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def _group(pid: int) -> list[int]:
    """The processes of the mount process's group (itself, libguestfs's helper, qemu)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, g in (line.split() for line in out.splitlines()) if int(g) == pid]


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _group(pid):
            return True
        time.sleep(0.2)
    return False


def _mounted(directory: Path) -> bool:
    return any(line.split()[4] == str(directory) for line in Path("/proc/self/mountinfo").read_text().splitlines())


@pytest.fixture
def mountpoint(tmp_path):
    directory = tmp_path / "guest"
    directory.mkdir()
    yield directory
    if _mounted(directory):  # a failed test must not leave a FUSE mount behind
        subprocess.run(["fusermount", "-uz", str(directory)], check=False)


def test_mount_reads_the_guest_and_umount_leaves_nothing(base_image, mountpoint):
    proc = run_cli("mount", str(base_image), str(mountpoint), timeout=600)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(mount._state_file(mountpoint.resolve()).read_text())
    pid = state["pid"]
    assert _group(pid), "the mount process is not running"
    release = (mountpoint / "etc" / "os-release").read_text()
    assert "ID=debian" in release and 'VERSION_ID="12"' in release
    with pytest.raises(OSError) as info:  # read-only by default, as guestmount --ro
        (mountpoint / "etc" / "imagebuilder-was-here").write_text("x")
    assert info.value.errno == errno.EROFS

    proc = run_cli("umount", str(mountpoint), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not _mounted(mountpoint)
    assert _gone(pid, 30), f"left behind: {_group(pid)}"  # umount waited; the zombie is reaped by init
    assert not mount._state_file(mountpoint.resolve()).exists()
    assert list(mountpoint.iterdir()) == []

    proc = run_cli("umount", str(mountpoint), timeout=60)
    assert proc.returncode == 2 and "nothing is mounted there" in proc.stderr


def test_a_stopped_mount_process_unmounts_and_ends_its_appliance(base_image, mountpoint):
    # SIGTERM (systemd stopping it, a kill) ends it as umount does: no stale FUSE mount, no qemu
    proc = run_cli("mount", str(base_image), str(mountpoint), timeout=600)
    assert proc.returncode == 0, proc.stderr
    pid = json.loads(mount._state_file(mountpoint.resolve()).read_text())["pid"]
    assert (mountpoint / "etc" / "hostname").exists()
    os.kill(pid, signal.SIGTERM)
    assert _gone(pid, mount.STOP_SECONDS), f"left behind: {_group(pid)}"
    assert not _mounted(mountpoint)
    # a start that misses its deadline ends its process, appliance included
    proc = run_cli("mount", str(base_image), str(mountpoint), "--timeout", "1s", timeout=300)
    assert proc.returncode == 1 and "did not show the guest within 1 s" in proc.stderr
    assert not _mounted(mountpoint)
    left = subprocess.run(["pgrep", "-f", f"imagebuilder.guest.mount .*{mountpoint}"], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
