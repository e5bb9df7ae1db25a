"""Shared fixtures for tests against real libguestfs, libvirtd and qemu.

Expensive things are made once and cached on disk by their inputs: the Debian images the tests
start from (images.py, under /var/tmp, which qemu running as libvirt-qemu can read) and the
bootstrap tarballs in the shared cache.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from imagebuilder.virt.connection import connect
from imagebuilder.virt.storage import create_dir_pool, remove_pool
from tests.integration import images
from tests.integration.helpers import appliance_launches, unique

ROOT = Path(__file__).resolve().parents[2]
TEST_HOME = images.TEST_HOME
URI = "qemu:///system"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 780) -> subprocess.CompletedProcess[str]:
    """Run the imagebuilder command line in a child process, as a user would. Past `timeout` (inside
    the per-test limit) it gets SIGTERM, as from `systemctl stop`, so that it cleans up; then SIGKILL."""
    full_env = {**os.environ, **(env or {})}
    argv = [sys.executable, "-m", "imagebuilder.cli", *args]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                          cwd=cwd or ROOT, stdin=subprocess.DEVNULL) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.terminate()
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The cache the test builds share (kept across sessions: the bootstrap tarball lives here)."""
    images.CACHE.mkdir(parents=True, exist_ok=True)
    return images.CACHE


@pytest.fixture(scope="session")
def base_image(cache_dir) -> Path:
    """A bootable Debian 12 qcow2 made by `imagebuilder build` from tests/integration/recipes/base.toml."""
    return images.image("base")


@pytest.fixture(scope="session")
def cloud_init_image(cache_dir) -> Path:
    """A bootable Debian 12 with cloud-init, from tests/integration/recipes/cloud-init.toml."""
    return images.image("cloud-init")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def http_root():
    """A directory served over HTTP on 127.0.0.1; yields (directory, base URL)."""
    directory = Path(tempfile.mkdtemp(prefix="ibtest-http-"))
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(directory)


@pytest.fixture(scope="module")
def conn():
    """A connection to the host's libvirtd."""
    with connect(URI) as conn:
        yield conn


@pytest.fixture
def pool_dir():
    """A directory for a throwaway pool; not under pytest's 0700 tmp dirs, so qemu can reach it."""
    path = Path(tempfile.mkdtemp(prefix="ibtest-pool-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def throwaway_pool(conn, path: Path, kind: str):
    """A dir pool at path, removed with its volumes afterwards (the directory stays)."""
    name = unique(kind)
    pool = create_dir_pool(conn, name, path)
    try:
        yield pool
    finally:
        try:
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                vol.delete(0)
        finally:
            remove_pool(conn, name)


@pytest.fixture
def pool(conn, pool_dir):
    """A throwaway dir pool, removed with its volumes afterwards."""
    yield from throwaway_pool(conn, pool_dir, "pool")


@pytest.fixture(scope="session")
def remote_uri():
    """A second libvirtd standing for a remote host (qemu+tcp://127.0.0.1:PORT/system, no auth,
    its own mount namespace; see tests/integration/loopback.py); stopped at the end of the session."""
    from tests.integration.loopback import LoopbackLibvirtd
    with LoopbackLibvirtd() as daemon:
        yield daemon.uri


@pytest.fixture(scope="module")
def remote_conn(remote_uri):
    """A connection to the loopback libvirtd that stands for a remote host."""
    with connect(remote_uri) as conn:
        yield conn


def remote_dir_pool(remote_conn):
    """A dir pool made through the remote connection, in a temp dir; removed with its volumes after."""
    from tests.integration.loopback import make_pool_dir
    path = make_pool_dir("ibtest-rpool-")
    try:
        yield from throwaway_pool(remote_conn, path, "rpool")
    finally:
        shutil.rmtree(path)


@pytest.fixture
def remote_pool(remote_conn):
    """A dir pool on the loopback "remote" host."""
    yield from remote_dir_pool(remote_conn)


@pytest.fixture(scope="session")
def echo_tiny():
    """The tiny guest with the serial echo in its MBR: inspection finds Debian 12 on its partition, so a
    real build customizes it (one short appliance launch), and it boots in a second and prints OK."""
    from tests.integration.loopback import make_pool_dir
    from tests.integration.tinyguest import make_tiny_guest
    from tests.integration.virt_helpers import ECHO_SECTOR
    path = make_pool_dir("ibtest-echotiny-") / "echo-tiny.qcow2"
    make_tiny_guest(path, boot_sector=ECHO_SECTOR)
    yield path
    shutil.rmtree(path.parent)


@pytest.fixture(scope="session")
def qemu_logger() -> Path:
    """A qemu-system-x86_64 for $LIBGUESTFS_HV that appends its arguments to the file $IBTEST_QEMU_LOG
    names, then runs the real one. One path for the whole session: the accelerator verdict is kept
    per qemu binary, so `auto` probes KVM once, not once per test."""
    TEST_HOME.mkdir(parents=True, exist_ok=True)
    wrapper = TEST_HOME / "qemu-logger"
    real = shutil.which("qemu-system-x86_64")
    text = f'#!/bin/sh\n[ -n "$IBTEST_QEMU_LOG" ] && echo "$*" >> "$IBTEST_QEMU_LOG"\nexec {real} "$@"\n'
    if not wrapper.exists() or wrapper.read_text() != text:
        tmp = wrapper.with_name(f".{wrapper.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, wrapper)
    return wrapper


@pytest.fixture
def launch_counter(tmp_path, qemu_logger):
    """(env, count): env makes libguestfs run qemu through a wrapper that logs each appliance launch."""
    log = tmp_path / "qemu.log"

    def count() -> int:
        return len(appliance_launches(log))

    return {"LIBGUESTFS_HV": str(qemu_logger), "IBTEST_QEMU_LOG": str(log)}, count


@pytest.fixture(scope="session")
def local_registry():
    """Debian's docker-registry on 127.0.0.1 (see tests/integration/registry.py): a user and password
    that reach skopeo only through REGISTRY_AUTH_FILE; stopped at the end of the session."""
    from tests.integration.registry import LocalRegistry
    with LocalRegistry() as registry:
        yield registry
