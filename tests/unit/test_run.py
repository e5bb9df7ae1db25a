"""run(): a failed host program is a CommandError that names it, its exit code and the tail of its
error output, on one line, and never carries what was passed to it through its input or environment.
spawn(): output is read as it comes, within a bound, and the program never outlives the block."""

from __future__ import annotations

import os
import signal
import time

import pytest

from imagebuilder.errors import BuildError, HostError
from imagebuilder.run import CommandError, run, spawn

SECRET = "hunter2-passphrase"


def test_command_error_names_program_code_and_hint_on_one_line():
    error = CommandError(["/usr/bin/gpg", "--batch", "--import", "key file"], 2,
                         "gpg: reading\ngpg: no valid OpenPGP data found", hint="is it a key?")
    assert error.program == "gpg" and error.code == 2
    assert str(error) == ("/usr/bin/gpg --batch --import 'key file' failed with exit code 2; "
                          "gpg: reading | gpg: no valid OpenPGP data found (hint: is it a key?)")
    assert isinstance(error, BuildError)  # callers that catch BuildError still catch it


def test_command_error_for_a_signal_and_for_a_timeout():
    assert str(CommandError(["qemu-img", "convert"], -9)) == "qemu-img convert failed with killed by signal 9"
    timed_out = CommandError(["skopeo", "copy"], None, timeout=30)
    assert str(timed_out) == "skopeo copy timed out after 30s" and timed_out.code is None


def test_command_error_escapes_control_characters():
    assert "\x1b" not in str(CommandError(["sh"], 1, "\x1b[2Jcleared"))


def test_run_raises_command_error_with_exit_code_and_stderr_tail():
    script = "for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3"
    with pytest.raises(CommandError) as failed:
        run(["sh", "-c", script])
    assert failed.value.code == 3 and failed.value.program == "sh"
    assert failed.value.stderr.splitlines() == ["line3", "line4", "line5", "line6", "line7"]
    assert "failed with exit code 3; line3 | " in str(failed.value)


def test_input_and_environment_stay_out_of_the_error():
    with pytest.raises(CommandError) as failed:
        run(["sh", "-c", "read -r line; test \"$line\" = \"$TOKEN\"; echo no >&2; exit 4"],
            input=SECRET + "\n", env={"TOKEN": SECRET, "PATH": "/usr/bin:/bin"})
    assert failed.value.code == 4
    assert SECRET not in str(failed.value) and SECRET not in repr(vars(failed.value))


def test_run_times_out_as_command_error():
    with pytest.raises(CommandError, match=r"^sleep 30 timed out after 0s$") as failed:
        run(["sleep", "30"], timeout=0.2)
    assert failed.value.code is None


def test_check_false_returns_the_failure_and_bytes_output(tmp_path):
    proc = run(["sh", "-c", "printf '\\377'; exit 5"], check=False, text=False)
    assert proc.returncode == 5 and proc.stdout == b"\xff"
    with open(tmp_path / "out", "wb") as out:
        run(["sh", "-c", "printf data; echo progress >&2"], stdout=out)
    assert (tmp_path / "out").read_bytes() == b"data"


def _gone(pid: int) -> bool:
    """True once pid is neither running nor a zombie of ours (reaped)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")
    return False


def test_spawn_reads_output_as_it_comes():
    with spawn(["sh", "-c", "echo one; sleep 0.5; echo two >&2; echo three"], timeout=10) as child:
        assert child.read() == b"one\n" and child.poll() is None
        assert child.read() == b"three\n" and child.read() == b""
        assert child.stderr.read() == b"two\n" and child.wait() == 0


def test_spawn_kills_and_reaps_on_an_exception():
    with pytest.raises(RuntimeError):
        with spawn(["sh", "-c", "echo started; exec sleep 30"]) as child:
            assert child.read(timeout=10) == b"started\n"
            raise RuntimeError("the caller failed")
    assert child.returncode == -signal.SIGKILL and _gone(child.pid)


def test_spawn_stops_waiting_at_its_bound_and_leaves_nothing_running():
    started = time.monotonic()
    with spawn(["sleep", "30"], timeout=0.3) as child:
        assert child.read() is None  # nothing came within the bound
        assert child.read(timeout=5) is None  # the bound is past: no more waiting
    assert time.monotonic() - started < 5
    assert child.returncode == -signal.SIGKILL and _gone(child.pid)


def test_spawn_of_a_missing_program_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostError, match="qemu-img not found on PATH.*install qemu-utils"):
        with spawn(["qemu-img", "info"]):
            pytest.fail("started")
