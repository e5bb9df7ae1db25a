"""`imagebuilder mount IMAGE DIR` and `umount DIR`: what `guestmount -i` and `guestunmount` do.

A background process (this module run as a program) opens the image in one appliance through
GuestSession, mounts the filesystems inspection finds (read-only unless asked), and serves them at
DIR with libguestfs's mount_local; mount_local_run runs in a thread until DIR is unmounted. The
command that started it waits, with a deadline, until DIR shows the guest (or the start failed) and
returns; the process stays, as guestmount's does.

`umount DIR` runs fusermount -u (retried while DIR is busy, within a deadline): mount_local_run
returns, the appliance shuts down (writes are synced) and the process exits; umount waits for that.
SIGTERM, SIGHUP or Ctrl-C to the background process end it the same way. Nothing waits without a
bound: past its deadline a process that does not end is killed with its appliance, and DIR unmounted
lazily.

Protocol with the starting command (one line each on the process's stdout): `warning TEXT`,
`ready`, or `error CODE TEXT`. A state file per DIR, in the user's runtime directory, names the
process for umount.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagebuilder.errors import GuestError, HostError, ImageBuilderError, InputError, Interrupted
from imagebuilder.run import run

STOP_SECONDS = 120  # for the appliance to shut down (it syncs) once DIR is unmounted
BUSY_SECONDS = 10   # for fusermount while DIR is busy, as guestunmount retries


def start(image: Path, fmt: str, directory: Path, rw: bool, accel: str, timeout: float,
          warn: Callable[[str], None]) -> int:
    """Serve the guest in image at directory from a background process; return its pid once it does."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory")
    if os.path.ismount(directory):
        raise InputError(f"{directory}: something is mounted there already")
    spec = {"image": str(image), "format": fmt, "dir": str(directory), "rw": rw, "accel": accel}
    proc = subprocess.Popen([sys.executable, "-m", "imagebuilder.guest.mount", json.dumps(spec)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        _await_ready(proc, timeout, warn)
    except BaseException:
        _end(proc.pid, directory)
        raise
    finally:
        proc.stdout.close()
    return proc.pid


def _await_ready(proc: subprocess.Popen, timeout: float, warn: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    output: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostError(f"the appliance did not show the guest within {timeout:.0f} s",
                                hint="run libguestfs-test-tool to see what is wrong, or give a longer --timeout")
            if not selector.select(left):
                continue
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=STOP_SECONDS)
                tail = " | ".join(output[-3:])
                raise GuestError(f"the mount process ended (exit code {proc.returncode})"
                                 + (f": {tail}" if tail else ""))
            kind, _, text = line.rstrip("\n").partition(" ")
            if kind == "ready":
                return
            if kind == "warning":
                warn(text)
            elif kind == "error":
                code, _, message = text.partition(" ")
                error = InputError(message) if code == "2" else GuestError(message)
                raise error
            else:
                output.append(line.strip())


def unmount(directory: Path, warn: Callable[[str], None], timeout: float = BUSY_SECONDS) -> None:
    """Unmount what `start` (or guestmount) serves at directory, and wait for its process to end; warn
    with what the process logged if it failed."""
    directory = directory.resolve()
    pid = _owner(directory)
    if _fuse_mounted(directory):
        _fusermount(directory, timeout)
    elif not os.path.ismount(directory) and pid is None:
        raise InputError(f"{directory}: nothing is mounted there")
    elif os.path.ismount(directory):
        raise InputError(f"{directory}: not a FUSE mount (use umount(8))")
    if pid is not None and not _wait_gone(pid, STOP_SECONDS):
        _end(pid, directory)
    _state_file(directory).unlink(missing_ok=True)
    log = _log_file(directory)
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines()[-5:]:
            warn(f"the mount process said: {line}")
        log.unlink()


def _fusermount(directory: Path, timeout: float, lazy: bool = False) -> None:
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    if tool is None:
        raise HostError("fusermount is missing", hint="install the fuse package")
    deadline = time.monotonic() + timeout
    while True:
        proc = run([tool, "-u", *(["-z"] if lazy else []), str(directory)], check=False)
        if proc.returncode == 0 or not _fuse_mounted(directory):
            return
        if time.monotonic() >= deadline:
            raise HostError(f"cannot unmount {directory}: {proc.stderr.strip() or 'fusermount failed'}",
                            hint="a process may still use it: `fuser -vm DIR` names it")
        time.sleep(0.5)


def _fuse_mounted(directory: Path) -> bool:
    """True if a FUSE filesystem is mounted at directory (from /proc/self/mountinfo)."""
    target = str(directory).replace("\\", "\\134").replace(" ", "\\040")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            fstype = fields[fields.index("-") + 1]
            if fstype.startswith("fuse"):
                return True
    return False


def _end(pid: int, directory: Path) -> None:
    """Last resort: end the process (SIGTERM, then its whole group, appliance included) and unmount."""
    for sig, wait in ((signal.SIGTERM, STOP_SECONDS / 4), (signal.SIGKILL, 10)):
        try:
            os.killpg(pid, sig) if sig == signal.SIGKILL else os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, wait):
            break
    if _fuse_mounted(directory):
        _fusermount(directory, 5, lazy=True)
    _state_file(directory).unlink(missing_ok=True)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            waited, _status = os.waitpid(pid, os.WNOHANG)  # our child: reap it
            if waited == pid:
                return True
        except ChildProcessError:
            if not _is_ours(pid):
                return True
        time.sleep(0.2)
    return False


def _is_ours(pid: int) -> bool:
    try:
        return b"imagebuilder.guest.mount" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _state_file(directory: Path) -> Path:
    """Where the process serving directory is named: in the user's runtime directory (root's: /run)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or ("/run" if os.geteuid() == 0 else tempfile.gettempdir())
    key = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path(base) / f"imagebuilder-{os.getuid()}" / "mounts" / f"{key}.json"


def _private(path: Path) -> Path:
    """path, after making its directory and the one above it, private to this user (and checking that
    nobody else made them first: they may be in /tmp)."""
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise HostError(f"{directory} is not a private directory of this user; refusing to use it")
    return path


def _log_file(directory: Path) -> Path:
    """Where the process writes what it has to say after `ready` (kept only if it ended in an error)."""
    return _state_file(directory).with_suffix(".log")


def _owner(directory: Path) -> int | None:
    """The pid of the imagebuilder process serving directory, if one is."""
    try:
        pid = json.loads(_state_file(directory).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None
    return pid if isinstance(pid, int) and _is_ours(pid) else None


# --- the background process ----------------------------------------------------------------------

class _Server:
    """The appliance and its FUSE mount, served from a worker thread; the main thread waits and handles
    signals (GuestSession's own Ctrl-C handling is for the main thread only, and would kill the appliance
    without syncing)."""

    def __init__(self, spec: dict[str, Any], say: Callable[[str], None]):
        self.spec, self.say = spec, say
        self.directory = Path(spec["dir"])
        self.mounted, self.stop = threading.Event(), threading.Event()
        # set by the worker as its last act: Thread.is_alive() cannot be trusted once a signal's exception
        # interrupted a join (Python 3.11 then marks the thread stopped while it still runs, and the
        # process would exit with the worker inside libguestfs, whose exit handler then waits forever)
        self.done = threading.Event()
        self.error: ImageBuilderError | None = None

    def run(self) -> None:
        """Serve until DIR is unmounted, or a signal comes; then leave no mount and no appliance."""
        worker = threading.Thread(target=self._work, name="mount-local", daemon=True)
        worker.start()
        try:
            try:
                while not self.done.wait(0.5):
                    pass
            except (KeyboardInterrupt, Interrupted):
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)  # one stop is enough; the deadline bounds it
                self.stop.set()
            self._finish(worker)
        finally:
            _state_file(self.directory).unlink(missing_ok=True)
        if self.error is not None:
            raise self.error

    def _finish(self, worker: threading.Thread) -> None:
        """Unmount DIR if it still is (a signal may have ended the FUSE loop without unmounting), and wait
        for the appliance to shut down; past the deadline, kill it."""
        deadline = time.monotonic() + STOP_SECONDS
        while True:
            mounted = self.mounted.is_set() and _fuse_mounted(self.directory)
            if not mounted and self.done.is_set():
                worker.join(1)
                return
            if time.monotonic() > deadline:
                os.killpg(0, signal.SIGKILL)  # the appliance is in this process group
            if mounted:
                try:
                    _fusermount(self.directory, 1, lazy=time.monotonic() > deadline - 30)
                except HostError:
                    pass  # busy: again in a moment
            self.done.wait(1)

    def _work(self) -> None:
        from imagebuilder.guest.inspect import mount_os
        from imagebuilder.guest.session import Drive, GuestSession

        spec, readonly = self.spec, not self.spec["rw"]
        try:
            with GuestSession(Drive(Path(spec["image"]), spec["format"], readonly=readonly), spec["accel"],
                              network=False, say=self.say) as g:
                for problem in mount_os(g, readonly):
                    self.say(f"warning {problem}")
                if self.stop.is_set():
                    return
                g.mount_local(str(self.directory), readonly=readonly)
                self.mounted.set()
                _private(_state_file(self.directory)).write_text(
                    json.dumps({"pid": os.getpid(), "dir": spec["dir"], "image": spec["image"]}))
                self.say("ready")
                g.mount_local_run()
        except ImageBuilderError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - reported to the starting command, not lost in a thread
            self.error = GuestError(f"{type(exc).__name__}: {exc}")
        finally:
            self.done.set()


def _serve(argv: list[str]) -> int:
    def stop(_signum: int, _frame: object) -> None:
        raise Interrupted("stopped by a signal")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    out = sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)
        if line == "ready":  # nobody reads any more: the starting command has returned
            log = os.open(_private(_log_file(Path(spec["dir"]))), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                          0o600)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)

    spec = json.loads(argv[1])
    os.chdir("/")  # hold no file system busy (the paths are absolute)
    try:
        _Server(spec, say).run()
    except ImageBuilderError as exc:
        say(f"error {exc.exit_code} {exc}")  # after "ready": into the log, which umount shows
        return exc.exit_code
    _log_file(Path(spec["dir"])).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv))
