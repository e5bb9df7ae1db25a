"""Faults in the middle of real builds, and what they leave behind: nothing.

Each test breaks a build for real (a download cut off, a full disk, a killed appliance, a signal at
each stage, a libvirtd that went away, two builds at once, kill -9) and compares the host before and
after: the files in the cache, work, output, pool and temporary directories, the volumes of the pools
involved, the domains of the test's names, and the processes whose command line names one of the
test's directories (qemu, qemu-img, the appliance). Then the next build must work with the same cache.

Every build runs the command line in a process of its own, as a user would. Faults before the
customize stage need no appliance at all. The tiny guest of tinyguest.py makes appliance work
cheap: killing the appliance, a failing run_command, a signal while it runs, secrets, and one real
"next build" after a fault of each stage. Where a test is about a later stage (a signal while
publishing or deploying) or about locks, the customize stage is replaced by a pause
(tests/integration/stub_cli.py) and the test's name says so (`customize_stubbed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imagebuilder.cache import Cache
from imagebuilder.virt.connection import connect
from imagebuilder.virt.domain import remove_domain
from imagebuilder.virt.storage import create_dir_pool, remove_pool
from tests.integration.conftest import ROOT
from tests.integration.helpers import appliance_launches, sha256, unique
from tests.integration.httpserver import FileServer
from tests.integration.loopback import LoopbackLibvirtd, make_pool_dir
from tests.integration.tcpproxy import HoldingProxy
from tests.integration.tinyguest import make_tiny_guest
from tests.integration.virt_helpers import echo_image, forget_logs

pytestmark = pytest.mark.integration

MiB = 1 << 20
QEMU_IMG = shutil.which("qemu-img")
ALLOWED_NEW = ("/locks/", "/stage-secret")   # lock files and the stage-key secret are meant to stay
COMPLETE_ENTRY = ("/images/sha256-", "/index.json")


# --- what the host holds ---------------------------------------------------------------------------

def our_processes(markers: list[str]) -> list[str]:
    """Processes (other than this one) whose command line names one of the markers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in cmdline for marker in markers):
            found.append(f"{entry.name}: {cmdline[:300]}")
    return found


@dataclass
class HostState:
    files: set[str]
    volumes: dict[str, set[str]]
    domains: set[str]


@dataclass
class Watch:
    """What a test looks at: directories (recursively), pools, domains named with a prefix, and
    processes whose command line mentions one of `markers`."""

    dirs: list[Path]
    pools: list = field(default_factory=list)
    conn: object = None
    prefix: str = "ibtest-"  # the test's own names: other tests (other workers) make ibtest-… domains too
    markers: list[str] = field(default_factory=list)

    def state(self) -> HostState:
        files = set()
        for directory in self.dirs:
            if directory.exists():
                files |= {str(p) for p in directory.rglob("*") if not p.is_dir()}
        volumes = {}
        for pool in self.pools:
            pool.refresh(0)
            volumes[pool.name()] = {vol.name() for vol in pool.listAllVolumes()}
        domains = {d.name() for d in self.conn.listAllDomains() if d.name().startswith(self.prefix)} \
            if self.conn is not None else set()
        return HostState(files, volumes, domains)

    def assert_nothing_left(self, before: HostState, fetched: bool = False) -> None:
        """No new file (but lock files; and with `fetched`, the complete cache entry of the base and
        the index naming it), volume, domain or process of ours since `before`."""
        deadline = time.monotonic() + 30
        while our_processes(self.markers) and time.monotonic() < deadline:
            time.sleep(0.2)  # a killed qemu takes a moment to go
        assert our_processes(self.markers) == []
        after = self.state()
        allowed = ALLOWED_NEW + (COMPLETE_ENTRY if fetched else ())
        new = sorted(f for f in after.files - before.files if not any(a in f for a in allowed))
        assert new == [], "left behind"
        assert after.volumes == before.volumes
        assert after.domains == before.domains


# --- the command line in a process of its own -----------------------------------------------------

class Child:
    """`imagebuilder ARGS` running (`stub`: with the customize stage replaced by a pause); its stderr
    lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], *, stub: bool):
        module = "tests.integration.stub_cli" if stub else "imagebuilder.cli"
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env={**os.environ, **env},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.stdout = ""
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err.start()
        self._out.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _read_out(self) -> None:
        self.stdout = self.proc.stdout.read()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Until a line of progress contains text; fails if the build ends first."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None:
                self._err.join(5)
                if any(text in line for line in self.lines):
                    return
                pytest.fail(f"the build ended (exit {self.proc.returncode}) before {text!r}:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} after {timeout}s:\n{self.stderr[-3000:]}")
            time.sleep(0.02)

    def until(self, condition, timeout: float = 120, what: str = "") -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the build ended (exit {self.proc.returncode}) before {what}:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not {what} after {timeout}s:\n{self.stderr[-3000:]}")
            time.sleep(0.02)

    def interrupt(self, sig: int) -> None:
        """SIGINT to the whole process group, as Ctrl-C at a terminal does; others to the process."""
        if sig == signal.SIGINT or sig == signal.SIGKILL:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 600) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"the build did not end within {timeout}s:\n{self.stderr[-3000:]}")
        self._err.join(10)
        self._out.join(10)
        return code


@pytest.fixture
def sandbox(tmp_path, qemu_logger):
    """(env, log): the environment every child build gets (temporary files and the appliance's sockets
    under the test's directory; a qemu wrapper that logs the arguments of every qemu that libguestfs
    runs) and that log."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "appliances.log"
    env = {"TMPDIR": str(tmp), "LIBGUESTFS_TMPDIR": str(tmp), "XDG_RUNTIME_DIR": str(tmp),
           "LIBGUESTFS_CACHEDIR": os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp"), "LIBGUESTFS_HV": str(qemu_logger),
           "IBTEST_QEMU_LOG": str(log), "XDG_STATE_HOME": str(tmp_path / "state")}
    return env, log


@contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs mounted at path (a full disk on demand); always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "ibtest-tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)])


# --- images ---------------------------------------------------------------------------------------

def random_disk(path: Path, size: int, data: int) -> Path:
    """A raw disk of `size` bytes holding `data` random bytes at its start (the rest a hole)."""
    with open(path, "wb") as handle:
        remaining = data
        while remaining:
            chunk = os.urandom(min(remaining, 16 * MiB))
            handle.write(chunk)
            remaining -= len(chunk)
        handle.truncate(size)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """disk.raw (32 MiB, 12 MiB of data), served over HTTP also as mirror/disk.raw; big.raw (256 MiB of
    data) for stages that must last a moment; the tiny guest (qcow2) and the serial echo guest."""
    root = tmp_path_factory.mktemp("fault-images")
    disk = random_disk(root / "disk.raw", 32 * MiB, 12 * MiB)
    (root / "mirror").mkdir()
    (root / "mirror" / "disk.raw").symlink_to(disk)
    big = random_disk(make_pool_dir("ibtest-big-") / "big.raw", 256 * MiB, 256 * MiB)
    tiny = make_tiny_guest(make_pool_dir("ibtest-tiny-") / "tiny.qcow2")
    shutil.copy(tiny, root / "tiny.qcow2")
    echo = echo_image(make_pool_dir("ibtest-echo-") / "echo.img")
    echo.chmod(0o644)
    yield {"root": root, "disk": disk, "digest": f"sha256:{sha256(disk)}", "big": big, "tiny": tiny, "echo": echo,
           "tiny_digest": f"sha256:{sha256(tiny)}"}
    for image in (big, tiny, echo):
        shutil.rmtree(image.parent)


@pytest.fixture
def server(images):
    with FileServer(images["root"]) as served:
        yield served


def url_recipe(path: Path, name: str, url: str, checksum: str, output: str) -> Path:
    path.write_text(f'[image]\nname = "{name}"\n[base]\nurl = "{url}"\nchecksum = "{checksum}"\n'
                    f'[sysprep]\nenabled = false\n{output}')
    return path


def build_args(recipe: Path, cache: Path, *more: str) -> list[str]:
    return ["build", str(recipe), "--cache-dir", str(cache), "--manifest", str(recipe.with_suffix(".manifest.json")),
            *more]


def next_build_works(tmp_path: Path, env: dict[str, str], cache: Path, server: FileServer, images: dict, *,
                     customize: str) -> None:
    """A build after the fault, with the same cache, succeeds (and its base is the right one).
    customize="real": of the tiny guest, through the appliance; "stubbed": of disk.raw, without it."""
    real = customize == "real"
    name, digest = ("tiny.qcow2", images["tiny_digest"]) if real else ("disk.raw", images["digest"])
    recipe = url_recipe(tmp_path / "next.toml", unique("next"), server.url(name), digest,
                        '[output]\npath = "next/next.qcow2"\n')
    child = Child(build_args(recipe, cache), env, stub=not real)
    assert child.finish() == 0, child.stderr[-3000:]
    entry = Cache(cache).lookup("images", digest.replace(":", "-"))
    assert entry is not None and f"sha256:{sha256(entry)}" == digest
    if real:
        assert "(debian 12." in child.stderr, child.stderr[-2000:]  # inspection found the tiny guest
    shutil.rmtree(tmp_path / "next")


def last_error(child: Child) -> str:
    errors = [line for line in child.lines if line.startswith("error: ")]
    assert len(errors) == 1, child.stderr[-3000:]
    return errors[0]


# --- fetch ----------------------------------------------------------------------------------------

def test_download_cut_off_and_server_gone(tmp_path, sandbox, images, server):
    env, _ = sandbox
    cache, out = tmp_path / "cache", tmp_path / "out"
    recipe = url_recipe(tmp_path / "r.toml", unique("cut"), server.url("disk.raw"), images["digest"],
                        '[output]\npath = "out/cut.qcow2"\n')
    watch = Watch([cache, out, tmp_path / "tmp"], markers=[str(tmp_path)])
    before = watch.state()
    server.behaviour.hold("/disk.raw", 3 * MiB)
    server.behaviour.cut_after["/disk.raw"] = 3 * MiB

    child = Child(build_args(recipe, cache), env, stub=False)
    child.until(server.behaviour.held.is_set, what="3 MiB sent")
    server.__exit__()   # the server goes away: every retry is refused
    server.behaviour.release.set()  # and the held response ends there: the download is cut off

    assert child.finish() == 1
    assert re.match(r"error: downloading http://127\.0\.0\.1:\d+/disk\.raw failed after \d attempts: ",
                    last_error(child))
    watch.assert_nothing_left(before)
    with Cache(cache).index() as index:
        assert index == {}
    with FileServer(images["root"]) as again:
        next_build_works(tmp_path, env, cache, again, images, customize="real")


def test_checksum_mismatch(tmp_path, sandbox, images, server, conn, pool, pool_dir):
    env, _ = sandbox
    cache = tmp_path / "cache"
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    name = unique("sum")
    recipe = url_recipe(tmp_path / "r.toml", name, server.url("disk.raw"), wrong, f'[output]\npool = "{pool.name()}"\n')
    watch = Watch([cache, pool_dir, tmp_path / "tmp"], [pool], conn, prefix=name,
                  markers=[str(tmp_path), str(pool_dir)])
    before = watch.state()

    child = Child(build_args(recipe, cache), env, stub=False)

    assert child.finish() == 1
    assert last_error(child) == (f"error: checksum mismatch for {server.url('disk.raw')}: expected {wrong}, "
                                 f"got {images['digest']}")
    watch.assert_nothing_left(before)
    next_build_works(tmp_path, env, cache, server, images, customize="stubbed")


def test_cache_on_a_full_disk(tmp_path, sandbox, images, server):
    env, _ = sandbox
    with tmpfs(tmp_path / "cache", "6m") as cache:
        recipe = url_recipe(tmp_path / "r.toml", unique("full"), server.url("disk.raw"), images["digest"],
                            '[output]\npath = "out/full.qcow2"\n')
        watch = Watch([cache, tmp_path / "out", tmp_path / "tmp"], markers=[str(tmp_path)])
        before = watch.state()

        child = Child(build_args(recipe, cache), env, stub=False)

        assert child.finish() == 1
        assert last_error(child).startswith(f"error: no space left on the filesystem of {cache}/images while "
                                            "writing the download of disk.raw (hint: free space there")
        watch.assert_nothing_left(before)
        subprocess.run(["mount", "-o", "remount,size=64m", str(cache)], check=True)  # space freed
        next_build_works(tmp_path, env, cache, server, images, customize="stubbed")


def test_output_directory_full(tmp_path, sandbox, images, server):
    env, _ = sandbox
    cache = tmp_path / "cache"
    with tmpfs(tmp_path / "out", "4m") as out:
        recipe = url_recipe(tmp_path / "r.toml", unique("outfull"), server.url("disk.raw"), images["digest"],
                            '[output]\npath = "out/full.qcow2"\n')
        watch = Watch([cache, out, tmp_path / "tmp"], markers=[str(tmp_path)])
        before = watch.state()

        child = Child(build_args(recipe, cache), env, stub=False)

        assert child.finish() == 1
        assert re.match(rf"error: no space left on the filesystem of {out} while writing the qcow2 image "
                        r"\..*\.imagebuilder-part \(hint: ", last_error(child))
        watch.assert_nothing_left(before, fetched=True)
        assert list(out.iterdir()) == []
    next_build_works(tmp_path, env, cache, server, images, customize="real")


def test_pool_full(request, tmp_path, sandbox, images, server, conn):
    env, _ = sandbox
    cache = tmp_path / "cache"
    pool_dir = make_pool_dir("ibtest-fullpool-")
    request.addfinalizer(lambda: shutil.rmtree(pool_dir, ignore_errors=True))
    with tmpfs(pool_dir, "4m"):
        name = unique("fullpool")
        pool = create_dir_pool(conn, name, pool_dir)
        try:
            image_name = unique("poolfull")
            recipe = url_recipe(tmp_path / "r.toml", image_name, server.url("disk.raw"), images["digest"],
                                f'[output]\npool = "{name}"\n')
            watch = Watch([cache, pool_dir, tmp_path / "tmp"], [pool], conn, prefix=image_name,
                          markers=[str(tmp_path), str(pool_dir)])
            before = watch.state()

            child = Child(build_args(recipe, cache), env, stub=False)

            assert child.finish() == 1
            assert re.match(rf"error: no space left on the filesystem of {pool_dir} while writing", last_error(child))
            watch.assert_nothing_left(before, fetched=True)
            assert list(pool_dir.iterdir()) == []
        finally:
            remove_pool(conn, name)
    next_build_works(tmp_path, env, cache, server, images, customize="stubbed")


# --- libvirt --------------------------------------------------------------------------------------

def test_libvirtd_unreachable_before_any_work(tmp_path, sandbox, images, server):
    env, _ = sandbox
    cache = tmp_path / "cache"
    uri = f"qemu:///system?socket={tmp_path}/no-libvirtd/libvirt-sock"
    recipe = url_recipe(tmp_path / "r.toml", unique("nolibvirt"), server.url("disk.raw"), images["digest"],
                        f'[output]\nuri = "{uri}"\n')
    watch = Watch([cache, tmp_path / "tmp"], markers=[str(tmp_path)])
    before = watch.state()

    child = Child(build_args(recipe, cache), env, stub=False)

    assert child.finish() == 1
    assert last_error(child).startswith(f"error: cannot connect to libvirt at {uri}: ")
    assert "(hint: is libvirtd (or virtqemud) running" in last_error(child)
    assert server.sending == {}  # refused before the download
    watch.assert_nothing_left(before)


def test_libvirtd_gone_before_publish(tmp_path, sandbox, images):
    """The output host's libvirtd stops while the build customizes (a loopback libvirtd of this test's
    own, never the system's): the build fails at publish with libvirt's message and leaves nothing."""
    env, _ = sandbox
    pool_dir = make_pool_dir("ibtest-gonepool-")
    try:
        with LoopbackLibvirtd() as daemon:
            with connect(daemon.uri) as remote:
                create_dir_pool(remote, "ibtest-gone", pool_dir)
            recipe = tmp_path / "gone.toml"
            recipe.write_text(f'[image]\nname = "{unique("gone")}"\n[base]\npath = "{images["tiny"]}"\n'
                              '[sysprep]\nenabled = false\n[[steps]]\nrun_command = "sleep 5"\n'
                              f'[output]\nuri = "{daemon.uri}"\npool = "ibtest-gone"\n')
            watch = Watch([tmp_path / "cache", pool_dir], markers=[str(tmp_path), str(pool_dir), daemon.uri])
            before = watch.state()
            child = Child(build_args(recipe, tmp_path / "cache"), env, stub=False)
            child.wait_for("[1/1] run_command: sleep 5")
            daemon.stop()  # while the step sleeps: publish has not begun
            assert child.finish() == 1
        assert last_error(child).startswith(f"error: {daemon.uri}: ")
        assert last_error(child).endswith("(hint: the connection to libvirt was lost: is libvirtd still running "
                                          "there? Then build again)")
        assert "==> publish" in child.stderr
        watch.assert_nothing_left(before, fetched=True)
        assert list(pool_dir.iterdir()) == []
    finally:
        shutil.rmtree(pool_dir)


# --- the appliance --------------------------------------------------------------------------------

def tiny_recipe(path: Path, name: str, image: Path, steps: str, more: str = "") -> Path:
    path.write_text(f'[image]\nname = "{name}"\n[base]\npath = "{image}"\n[disk]\nformat = "raw"\n'
                    f'[sysprep]\nenabled = false\n[output]\npath = "out/{name}.raw"\n{more}{steps}')
    return path


def test_appliance_killed_mid_customize(tmp_path, sandbox, images, server):
    env, _ = sandbox
    cache = tmp_path / "cache"
    recipe = tiny_recipe(tmp_path / "r.toml", unique("killed"), images["tiny"],
                         '[[steps]]\nrun_command = "sleep 600"\n')
    watch = Watch([cache, tmp_path / "out", tmp_path / "tmp"], markers=[str(tmp_path)])
    before = watch.state()
    child = Child(build_args(recipe, cache), env, stub=False)
    child.wait_for("[1/1] run_command: sleep 600")
    qemu = [p for p in our_processes([str(tmp_path)]) if "qemu-system" in p]
    assert len(qemu) == 1, qemu

    os.kill(int(qemu[0].split(":")[0]), signal.SIGKILL)

    assert child.finish() == 1
    assert re.match(rf"error: {re.escape(str(recipe))}:\d+: step 1 'run_command' failed: ", last_error(child))
    watch.assert_nothing_left(before, fetched=True)
    next_build_works(tmp_path, env, cache, server, images, customize="real")


def test_failing_run_command_names_the_step_and_shows_its_output(tmp_path, sandbox, images):
    """Its exit code and last lines of output, one line; a password set before it appears nowhere;
    and with [customize] network = true the appliance has a NIC (the control for the secrets test)."""
    env, appliances = sandbox
    (tmp_path / "root.pw").write_text("Fa1lingBuildPassw0rd\n")
    recipe = tiny_recipe(tmp_path / "r.toml", unique("runfail"), images["tiny"],
                         '[[steps]]\nroot_password = "file:root.pw"\n'
                         '[[steps]]\nrun_command = "echo first line; echo second line; echo to stderr >&2; exit 3"\n',
                         more="[customize]\nnetwork = true\n")
    watch = Watch([tmp_path / "cache", tmp_path / "out", tmp_path / "tmp"], markers=[str(tmp_path)])
    before = watch.state()

    child = Child(build_args(recipe, tmp_path / "cache", "--json"), env, stub=False)

    assert child.finish() == 1
    assert child.lines == [f"error: {recipe}:16: step 2 'run_command' failed: exit code 3; output: first line | "
                           "second line | to stderr"]
    assert "Fa1lingBuildPassw0rd" not in child.stdout + child.stderr
    assert json.loads(child.stdout.splitlines()[-1])["exit_code"] == 1
    watch.assert_nothing_left(before, fetched=True)
    launches = appliance_launches(appliances)
    assert len(launches) == 1 and "-netdev" in launches[0]


# --- signals at each stage ------------------------------------------------------------------------

STAGES = ["fetch", "prepare", "customize", "publish", "deploy"]
STUBBED = ("publish", "deploy")  # after customize: stubbed, so that a signal there costs no appliance launch
STAGE_IDS = [f"{stage}-customize_stubbed" if stage in STUBBED else stage for stage in STAGES]


@pytest.fixture(scope="module")
def remote(remote_uri):
    """A dir pool on the loopback libvirtd (a remote host: publishing there is an upload)."""
    path = make_pool_dir("ibtest-sigpool-")
    name = unique("sigpool")
    with connect(remote_uri) as remote_conn:
        pool = create_dir_pool(remote_conn, name, path)
        try:
            yield remote_uri, remote_conn, pool, path
        finally:
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                vol.delete(0)
            remove_pool(remote_conn, name)
            shutil.rmtree(path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_signal_at_each_stage(request, tmp_path, sandbox, images, server, conn, pool, pool_dir, stage, sig):
    """The build is held in the stage (a held download, a throttled conversion, a long step, a held
    upload, a wait that never ends) when the signal comes. Publish and deploy come after customize,
    which is stubbed for them (their ids say so); after SIGINT at each stage the next build is real."""
    env, _ = sandbox
    cache = tmp_path / "cache"
    name = unique(f"sig{stage}")
    pools, dirs, stub, proxy = [pool], [cache, pool_dir, tmp_path / "tmp"], stage in STUBBED, None
    if stage == "fetch":  # the download is held after 1 MiB
        server.behaviour.hold("/disk.raw", MiB)
        recipe = url_recipe(tmp_path / "r.toml", name, server.url("disk.raw"), images["digest"],
                            f'[output]\npool = "{pool.name()}"\n')
    elif stage in ("prepare", "publish"):  # 256 MiB of data to convert (and to upload to a remote host)
        output = f'[output]\npool = "{pool.name()}"\n'
        if stage == "prepare":  # qemu-img converts at 4 MiB/s (its own -r): a minute to catch it writing
            slow = tmp_path / "bin"
            slow.mkdir()
            (slow / "qemu-img").write_text(f'#!/bin/sh\nif [ "$1" = convert ]; then shift; exec {QEMU_IMG} convert '
                                           f'-r 4M "$@"; fi\nexec {QEMU_IMG} "$@"\n')
            (slow / "qemu-img").chmod(0o755)
            env = {**env, "PATH": f"{slow}:{os.environ['PATH']}"}
        if stage == "publish":  # the upload goes through a proxy that holds it after 16 MiB
            uri, _remote_conn, remote_pool, remote_dir = request.getfixturevalue("remote")
            port = int(uri.split(":")[2].split("/")[0])
            proxy = HoldingProxy(("127.0.0.1", port)).__enter__()
            request.addfinalizer(lambda: proxy.__exit__())
            proxy_uri = uri.replace(f":{port}/", f":{proxy.port}/")
            output = f'[output]\nuri = "{proxy_uri}"\npool = "{remote_pool.name()}"\n'
            pools, dirs = [remote_pool], dirs + [remote_dir]
        recipe = tmp_path / "r.toml"
        recipe.write_text(f'[image]\nname = "{name}"\n[base]\npath = "{images["big"]}"\n[disk]\nformat = "raw"\n'
                          f'[sysprep]\nenabled = false\n{output}')
    elif stage == "customize":  # the real appliance, busy with a long step
        recipe = tiny_recipe(tmp_path / "r.toml", name, images["tiny"], '[[steps]]\nrun_command = "sleep 600"\n')
        recipe.write_text(recipe.read_text().replace(f'path = "out/{name}.raw"', f'pool = "{pool.name()}"'))
    else:  # deploy: the echo guest boots and never shows what the build waits for
        recipe = tmp_path / "r.toml"
        recipe.write_text(f'[image]\nname = "{name}"\n[base]\npath = "{images["echo"]}"\n[disk]\nformat = "raw"\n'
                          f'[sysprep]\nenabled = false\n[output]\npool = "{pool.name()}"\n'
                          '[domain]\nmemory = "64M"\nagent = false\nnetwork = "none"\nwait = "serial:NEVER-SHOWN"\n'
                          'timeout = "10m"\n')
    watch = Watch(dirs, pools, conn, prefix=name, markers=[str(tmp_path), str(pool_dir)])
    before = watch.state()
    child = Child(build_args(recipe, cache), env, stub=stub)
    try:
        child.wait_for(f"==> {stage}")
        if stage == "fetch":
            child.until(server.behaviour.held.is_set, what="downloading")
        elif stage == "prepare":
            child.until(lambda: any(p.stat().st_blocks for p in pool_dir.glob(".*.imagebuilder-part")),
                        what="converting")
        elif stage == "customize":
            child.wait_for("[1/1] run_command: sleep 600")
        elif stage == "publish":
            proxy.hold(16 * MiB)
            child.until(proxy.held.is_set, what="uploading")
        elif stage == "deploy":
            child.wait_for("waiting up to")

        child.interrupt(sig)
        server.behaviour.release.set()
        if proxy is not None:
            proxy.release.set()  # the clean-up needs the connection

        assert child.finish(timeout=120) == 130, child.stderr
        assert last_error(child) == ("error: interrupted" if sig == signal.SIGINT else "error: stopped by SIGTERM")
        watch.assert_nothing_left(before, fetched=stage != "fetch")
    finally:
        remove_domain(conn, name)
        forget_logs(name)
    real_next = sig == signal.SIGINT and stage in STUBBED  # fetch, prepare and customize have theirs elsewhere
    next_build_works(tmp_path, env, cache, server, images, customize="real" if real_next else "stubbed")


# --- concurrency ----------------------------------------------------------------------------------

def test_two_builds_of_the_same_recipe_at_once(tmp_path, sandbox, images, server, conn, pool, pool_dir):
    """The second waits for the first (one lock per set of outputs), then finds its outputs up to
    date: both succeed, with one download, one appliance launch and one volume."""
    env, appliances = sandbox
    cache = tmp_path / "cache"
    name = unique("twice")
    recipe = url_recipe(tmp_path / "r.toml", name, server.url("tiny.qcow2"), images["tiny_digest"],
                        f'[output]\npool = "{pool.name()}"\n')
    server.behaviour.hold("/tiny.qcow2", MiB)

    first = Child(build_args(recipe, cache), env, stub=False)
    first.until(server.behaviour.held.is_set, what="downloading")
    second = Child(build_args(recipe, cache), env, stub=False)
    second.wait_for("waiting for another build of the same outputs to finish")
    server.behaviour.release.set()

    assert (first.finish(), second.finish()) == (0, 0), first.stderr + second.stderr
    assert "up to date" in second.stderr
    assert server.sent("tiny.qcow2") == images["tiny"].stat().st_size
    assert len(appliance_launches(appliances)) == 1
    pool.refresh(0)
    assert pool.listVolumes() == [f"{name}.qcow2"]
    assert sorted(os.listdir(pool_dir)) == [f"{name}.qcow2"]
    assert not [p for p in (tmp_path / "tmp").rglob("*")]


def test_two_recipes_sharing_a_base_share_one_cache_entry_customize_stubbed(tmp_path, sandbox, images, server):
    """Two recipes, their base at two URLs (mirrors) with one checksum, built at once (the second starts
    while the first's download is held): one download, one cache entry, both images right. About the
    cache, so customize is stubbed; the same lock with a real customize is tested just above."""
    env, _ = sandbox
    cache = tmp_path / "cache"
    server.behaviour.hold("/disk.raw", MiB)
    builds = []
    for index, path in enumerate(["disk.raw", "mirror/disk.raw"]):
        recipe = url_recipe(tmp_path / f"r{index}.toml", unique("shared"), server.url(path), images["digest"],
                            f'[output]\npath = "out/{index}.raw"\n[disk]\nformat = "raw"\n')
        builds.append(Child(build_args(recipe, cache), env, stub=True))
        if index == 0:
            builds[0].until(server.behaviour.held.is_set, what="downloading")
    builds[1].wait_for("==> fetch")
    server.behaviour.release.set()

    assert [b.finish() for b in builds] == [0, 0], builds[0].stderr + builds[1].stderr
    assert server.sent("disk.raw") + server.sent("mirror/disk.raw") == images["disk"].stat().st_size
    assert [e.name for e in Cache(cache).entries()] == [images["digest"].replace(":", "-")]
    for index in range(2):
        assert sha256(tmp_path / "out" / f"{index}.raw") == images["digest"].split(":")[1]


def test_cache_survives_kill_9_in_the_middle_of_a_write(tmp_path, sandbox, images, server):
    env, _ = sandbox
    cache = tmp_path / "cache"
    recipe = url_recipe(tmp_path / "r.toml", unique("kill9"), server.url("disk.raw"), images["digest"],
                        '[output]\npath = "out/k.qcow2"\n')
    server.behaviour.hold("/disk.raw", 2 * MiB)
    child = Child(build_args(recipe, cache), env, stub=False)
    child.until(server.behaviour.held.is_set, what="2 MiB downloaded")

    child.interrupt(signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL
    server.behaviour.release.set()

    assert Cache(cache).entries() == [] and Cache(cache).lookup("images", images["digest"].replace(":", "-")) is None
    partials = list((cache / "images").glob(".partial-*"))
    assert len(partials) == 1  # a kill -9 cannot clean up; nothing reads it as an entry
    old = time.time() - 3600
    os.utime(partials[0], (old, old))  # as if the kill happened an hour ago
    next_build_works(tmp_path, env, cache, server, images, customize="stubbed")
    assert list((cache / "images").glob(".partial-*")) == []  # swept by the next writer


# --- secrets and trust ----------------------------------------------------------------------------

def test_secrets_never_leave_the_build(tmp_path, sandbox, images):
    """Passwords from an environment variable, a file and a random one: never on any process's
    command line during the build (polled all along), nor in the output, the --json events or the
    manifest; the random one only in the file named for it, mode 0600. The appliance has no network:
    no step needs it."""
    env, appliances = sandbox
    env = {**env, "IBTEST_ROOT_PASSWORD": "EnvR00tPassw0rd-x9"}
    (tmp_path / "alice.pw").write_text("F1leAlicePassw0rd-y8\n")
    name = unique("secrets")
    base = shutil.copy(images["tiny"], tmp_path / "tiny.qcow2")  # inside the recipe's directory: --strict-paths
    recipe = tiny_recipe(tmp_path / "r.toml", name, base,
                         '[[steps]]\nroot_password = "env:IBTEST_ROOT_PASSWORD"\n'
                         '[[steps]]\npassword = { user = "alice", file = "alice.pw" }\n'
                         '[[steps]]\npassword = { user = "carol", random = "keys/carol.pw" }\n'
                         '[[steps]]\nrun_command = "cat /etc/hostname"\n')
    image = tmp_path / "out" / f"{name}.raw"
    secrets = {"EnvR00tPassw0rd-x9", "F1leAlicePassw0rd-y8"}
    seen: list[str] = []
    done = threading.Event()

    def scan() -> None:
        while not done.is_set():
            for entry in Path("/proc").iterdir():
                try:
                    cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                seen.extend(f"{entry.name}: {cmdline[:100]}" for s in secrets if s in cmdline)
            time.sleep(0.01)

    scanner = threading.Thread(target=scan, daemon=True)
    scanner.start()
    try:
        child = Child(build_args(recipe, tmp_path / "cache", "--json", "--no-inline-secrets", "--strict-paths"),
                      env, stub=False)
        code = child.finish()
    finally:
        done.set()
        scanner.join()
    assert code == 0, child.stderr[-3000:]
    random_file = tmp_path / "keys" / "carol.pw"
    carol = random_file.read_text().strip()
    assert len(carol) >= 16 and random_file.stat().st_mode & 0o777 == 0o600
    secrets.add(carol)
    assert seen == []
    manifest = recipe.with_suffix(".manifest.json").read_text()
    for text in (child.stdout, child.stderr, manifest):
        assert not [s for s in secrets if s in text]
    assert [json.loads(line)["event"] for line in child.stdout.splitlines()][-1] == "result"
    shadow = subprocess.run(["debugfs", "-R", "cat /etc/shadow", str(image)], capture_output=True, text=True,
                            check=True).stdout
    hashes = {line.split(":")[0]: line.split(":")[1] for line in shadow.splitlines()}
    import crypt  # noqa: PLC0415 - deprecated module, only here
    for user, password in (("root", "EnvR00tPassw0rd-x9"), ("alice", "F1leAlicePassw0rd-y8"), ("carol", carol)):
        assert crypt.crypt(password, hashes[user]) == hashes[user], user
    launches = appliance_launches(appliances)
    assert len(launches) == 1
    assert "-netdev" not in launches[0] and "virtio-net" not in launches[0] and "-nic" not in launches[0]
