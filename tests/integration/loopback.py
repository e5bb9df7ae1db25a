"""A second libvirtd on this machine that stands for a remote host (tests and bench/upload.py).

It runs in a private mount namespace (`unshare --mount`) with empty tmpfs over libvirt's state,
configuration, cache, log and runtime directories, so it shares nothing with the host's libvirtd:
no pools, networks, domains or sockets. It listens on 127.0.0.1 over TCP without authentication,
which is only acceptable because it lives for one test session on the loopback interface.
Clients reach it as qemu+tcp://127.0.0.1:PORT/system, a URI imagebuilder treats as remote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagebuilder.errors import HostError
from imagebuilder.virt.connection import connect

# Fixed text, arguments passed as $1 to $5 (never pasted in). The shell makes the mounts, then
# becomes _INIT, the PID namespace's init, which runs libvirtd.
_SCRIPT = """
for dir in /run/libvirt /var/lib/libvirt /etc/libvirt /var/cache/libvirt /var/log/libvirt; do
    mount -t tmpfs -o mode=0755 tmpfs "$dir"
done
# no virtlogd in here: qemu writes its own logs (domains start, and log their serial consoles)
echo 'stdio_handler = "file"' > /etc/libvirt/qemu.conf
mkdir /var/log/libvirt/qemu
if [ -n "$6" ]; then
    mount --bind /usr/bin/qemu-system-x86_64 "$7"
    mount --bind "$6" /usr/bin/qemu-system-x86_64
fi
exec "$4" -c "$5" libvirtd $3 --config "$1" --pid-file "$2"
"""

# The init of the namespace: it reaps every orphan (libvirt daemonizes qemu probes and dnsmasq and
# waits for them to vanish; libvirtd itself as init would leave them zombies), passes SIGTERM on
# to libvirtd, and ends when libvirtd does, which ends everything else in the namespace.
_INIT = """
import os, signal, subprocess, sys
daemon = subprocess.Popen([arg for arg in sys.argv[1:] if arg])
signal.signal(signal.SIGTERM, lambda *_: daemon.send_signal(signal.SIGTERM))
while True:
    pid, status = os.wait()
    if pid == daemon.pid:
        sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackLibvirtd:
    """Start with `with LoopbackLibvirtd() as daemon:`; `daemon.uri` reaches it.

    `private_network=True` gives the daemon its own network namespace as well, so the networks it
    makes (the `default` NAT network, virbr0, dnsmasq) cannot touch the host's. It is then reached
    through a unix socket in its work directory instead of TCP.
    """

    def __init__(self, private_network: bool = False, qemu: Path | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="ibtest-remote-libvirtd-"))
        self.private_network = private_network
        self.qemu = qemu  # stands for this host's qemu-system-x86_64 in the daemon's namespace
        self.port = _free_port()
        if private_network:
            self.uri = f"qemu+unix:///system?socket={self.workdir}/run/libvirt-sock"
        else:
            self.uri = f"qemu+tcp://127.0.0.1:{self.port}/system"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> None:
        """Start the daemon and wait until it answers; RuntimeError with its log if it does not."""
        for tool in ("unshare", "libvirtd"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is needed for the loopback libvirtd")
        config = self.workdir / "libvirtd.conf"
        listen = ("listen_tls = 0\nlisten_tcp = 1\n"
                  f'listen_addr = "127.0.0.1"\ntcp_port = "{self.port}"\nauth_tcp = "none"\n')
        if self.private_network:
            (self.workdir / "run").mkdir()
            listen = f'unix_sock_dir = "{self.workdir / "run"}"\n'
        config.write_text(listen + f'log_outputs = "3:file:{self.workdir / "libvirtd.log"}"\n')
        # A PID namespace too, with libvirtd as its init: when libvirtd ends, the kernel ends and
        # reaps every process it started (dnsmasq, qemu), so nothing can outlive the fixture.
        namespaces = ["--mount", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"]
        namespaces += ["--net"] if self.private_network else []
        if self.qemu:
            self.real_qemu.touch()
        output = open(self.workdir / "output.log", "wb")
        try:
            self.proc = subprocess.Popen(
                ["unshare", *namespaces, "--propagation", "private", "/bin/sh", "-ec", _SCRIPT, "sh",
                 str(config), str(self.workdir / "libvirtd.pid"), "" if self.private_network else "--listen",
                 sys.executable, _INIT, str(self.qemu or ""), str(self.real_qemu)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            output.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the loopback libvirtd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with connect(self.uri):
                    return
            except HostError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the loopback libvirtd does not answer at {self.uri}: {self.log_tail()}")
                time.sleep(0.3)

    @property
    def real_qemu(self) -> Path:
        """With `qemu` given: where the real qemu-system-x86_64 is reachable in the daemon's namespace
        (an empty file on this host, bound over there)."""
        return self.qemu.parent / "qemu-real" if self.qemu else Path("")

    def log_tail(self) -> str:
        """The end of what the daemon wrote, for failure messages."""
        text = ""
        for name in ("output.log", "libvirtd.log"):
            path = self.workdir / name
            if path.exists():
                text += path.read_text(errors="replace")[-1500:]
        return text

    def _daemon_pid(self) -> int | None:
        """The namespace init's pid as this host sees it: the one child of `unshare --fork`."""
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def stop(self) -> None:
        """End the daemon (SIGTERM, then SIGKILL) and remove its files; its namespaces, and every
        process in them, go with it."""
        if self.proc is not None and self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pid = self._daemon_pid()
                if pid is not None:
                    os.kill(pid, sig)
                try:
                    self.proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LoopbackLibvirtd:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def make_pool_dir(prefix: str) -> Path:
    """A directory for a dir pool that qemu could read (not under pytest's 0700 temp dirs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


def is_running(pid: int) -> bool:
    """True if the process exists (for checking that nothing was left behind)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
