"""`imagebuilder mount` / `umount` without an appliance: what is refused before anything starts."""

from __future__ import annotations

import contextlib
import subprocess

import pytest
from typer.testing import CliRunner

from imagebuilder.cli import app
from imagebuilder.errors import HostError
from imagebuilder.guest import mount

runner = CliRunner()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def test_a_missing_image_or_volume(tmp_path, monkeypatch):
    result = runner.invoke(app, ["mount", str(tmp_path / "none.qcow2"), str(tmp_path)])
    assert result.exit_code == 2 and f"{tmp_path / 'none.qcow2'}: no such file" in result.stderr
    result = runner.invoke(app, ["mount", str(tmp_path / "none.qcow2"), str(tmp_path), "--timeout", "soon"])
    assert result.exit_code == 2 and "--timeout" in result.stderr


def test_rw_is_refused_while_a_running_domain_or_a_process_uses_the_image(image, tmp_path, monkeypatch):
    # guestmount's manual: mounting a live guest read-write corrupts it
    from imagebuilder.deploy import retention
    from imagebuilder.virt import connection, domain

    monkeypatch.setattr(retention, "held_open", lambda path: ["process 42 (qemu-system-x86)"])
    monkeypatch.setattr(connection, "connect", lambda uri: contextlib.nullcontext("conn"))
    monkeypatch.setattr(domain, "running_on", lambda conn, path: ["web"] if path == str(image) else [])
    monkeypatch.setattr(mount, "start", lambda *a: pytest.fail("started"))
    result = runner.invoke(app, ["mount", "--rw", str(image), str(tmp_path)])
    assert result.exit_code == 2
    assert f"--rw: {image} is in use (domain web, process 42 (qemu-system-x86))" in result.stderr

    def no_libvirt(uri):
        raise HostError("cannot connect to libvirt")

    monkeypatch.setattr(connection, "connect", no_libvirt)  # the open files still tell
    result = runner.invoke(app, ["mount", "--rw", str(image), str(tmp_path)])
    assert result.exit_code == 2 and "is in use (process 42" in result.stderr


def test_read_only_mounts_are_not_checked_and_start_gets_the_format(image, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(mount, "start", lambda *a: calls.append(a[:4]) or 1)
    result = runner.invoke(app, ["mount", str(image), str(tmp_path), "--accel", "tcg"])
    assert result.exit_code == 0, result.output
    assert calls == [(image, "qcow2", tmp_path, False)]
    assert "is mounted at" in result.stdout and "(read-only)" in result.stdout


def test_start_refuses_a_mount_point_that_is_not_a_free_directory(image, tmp_path):
    with pytest.raises(Exception, match="not a directory"):
        mount.start(image, "qcow2", image, False, "tcg", 5, print)
    with pytest.raises(Exception, match="something is mounted there already"):
        mount.start(image, "qcow2", mount.Path("/proc"), False, "tcg", 5, print)


def test_umount_of_a_directory_with_nothing_mounted(tmp_path):
    result = runner.invoke(app, ["umount", str(tmp_path)])
    assert result.exit_code == 2 and "nothing is mounted there" in result.stderr
    result = runner.invoke(app, ["umount", "/proc"])
    assert result.exit_code == 2 and "not a FUSE mount" in result.stderr


def test_the_state_directory_must_be_private(tmp_path, monkeypatch):
    # it may be under /tmp: a directory someone else made there first is refused
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    state = mount._state_file(tmp_path / "mnt")
    assert mount._private(state) == state and oct(state.parent.stat().st_mode & 0o777) == "0o700"
    state.parent.chmod(0o777)
    with pytest.raises(HostError, match="is not a private directory of this user"):
        mount._private(state)
