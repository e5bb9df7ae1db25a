"""The remote URI users use most: qemu+ssh://. A real sshd on 127.0.0.1, with a key this test makes,
stands for the remote host (its libvirtd is this host's, reached through ssh and virt-ssh-helper, so
everything travels as it would between machines): a real build uploads there, defines and starts the
domain there and waits for its serial console through the console stream; the vm commands reach it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from imagebuilder.virt.domain import domain_exists, remove_domain
from tests.integration.conftest import run_cli
from tests.integration.helpers import unique
from tests.integration.virt_helpers import forget_logs, volume_names

pytestmark = pytest.mark.integration

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ssh_uri():
    """qemu+ssh://root@127.0.0.1:PORT/system through an sshd of this test's own; stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="ibtest-ssh-"))
    port = _free_port()
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True)
    (home / "authorized_keys").write_text((home / "client.pub").read_text())
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host'}\nAuthorizedKeysFile {home / 'authorized_keys'}\n"
        f"PidFile {home / 'sshd.pid'}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    daemon = subprocess.Popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=open(home / "sshd.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert daemon.poll() is None, (home / "sshd.log").read_text()
                assert time.monotonic() < deadline, "sshd does not listen"
                time.sleep(0.2)
        yield (f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={home / 'client'}&no_verify=1&no_tty=1", home)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def test_build_to_a_qemu_ssh_host_uploads_defines_starts_and_waits_there(tmp_path, ssh_uri, conn, pool, echo_tiny,
                                                                        cache_dir):
    uri, home = ssh_uri
    env = {"HOME": str(home)}  # ssh's known_hosts goes there, not into the user's
    name = unique("ssh")
    recipe_file = tmp_path / "ssh.toml"
    recipe_file.write_text(f'[image]\nname = "{name}"\n[base]\npath = "{echo_tiny}"\n[sysprep]\nenabled = false\n'
                           '[[steps]]\nwrite = "/etc/motd:over ssh"\n'
                           f'[output]\nuri = "{uri}"\npool = "{pool.name()}"\n'
                           '[domain]\nmemory = "64M"\nagent = false\nnetwork = "none"\nwait = "serial:OK"\n'
                           'timeout = "120s"\n')
    manifest_file = tmp_path / "ssh.manifest.json"
    try:
        proc = run_cli("build", str(recipe_file), "--cache-dir", str(cache_dir), "--manifest", str(manifest_file),
                       env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "'OK' appeared on the serial console: the domain is ready" in proc.stderr
        document = json.loads(manifest_file.read_text())
        (output,) = document["outputs"]
        assert output["uri"] == uri and output["method"] == "sparse upload"  # remote: no zero-copy rename
        assert document["domain"]["uri"] == uri and document["domain"]["serial_log"]
        assert volume_names(pool) == {f"{name}.qcow2"}
        dom = conn.lookupByName(name)
        assert dom.isActive()

        listed = run_cli("vm", "list", "--json", "--connect", uri, env=env)
        assert listed.returncode == 0, listed.stderr
        assert [row["state"] for row in json.loads(listed.stdout) if row["name"] == name] == ["running"]
        removed = run_cli("vm", "remove", name, "--force", "--volumes", "--connect", uri, env=env)
        assert removed.returncode == 0, removed.stderr
        assert not domain_exists(conn, name) and volume_names(pool) == set()
    finally:
        remove_domain(conn, name)
        forget_logs(name)

