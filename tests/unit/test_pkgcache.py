"""The package cache across builds, without a VM: keys, the argv apt runs with, the scratch disk made and
read on the host (mke2fs and debugfs, for real), and the guest side against a fake guest whose apt-get
reads the packages its archives have and downloads the others."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from imagebuilder.cache import Cache
from imagebuilder.guest import pkgcache
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.guest.packages import MANAGERS
from imagebuilder.progress import Reporter
from imagebuilder.recipe.model import Step
from tests.unit.fakeguest import FakeGuest, debian_root

def test_key_names_distribution_release_and_arch():
    assert pkgcache.key("debian", "bookworm", "x86_64") == "debian~bookworm~x86_64"
    assert pkgcache.key("opensuse", "15.5", "aarch64") == "opensuse~15.5~aarch64"
    assert pkgcache.key("debian", "", "x86/64 ~x") == "debian~unknown~x86_64__x"


@pytest.mark.parametrize(("text", "expected"), [
    ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n', "bookworm"),
    ('NAME="Fedora Linux"\nVERSION_ID=40\n', "40"),
    ('NAME="Arch Linux"\nBUILD_ID=rolling\n', "unknown"),
])
def test_release_from_os_release(tmp_path, text, expected):
    guest = FakeGuest(debian_root(tmp_path))
    guest.write("/etc/os-release", text)
    assert pkgcache.release(guest) == expected


def test_apt_options_come_before_the_package_names():
    argv = MANAGERS["apt"].argv("install", ("tree", "bc"), pkgcache.Apt.options)
    assert argv == ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "-o",
                    "Dpkg::Options::=--force-confnew", "install", "-o", f"Dir::Cache={pkgcache.MOUNT}",
                    "-o", "APT::Keep-Downloaded-Packages=true", "tree", "bc"]
    assert MANAGERS["apt"].argv("refresh") == ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y",
                                               "-o", "Dpkg::Options::=--force-confnew", "update"]


def _debugfs(image: Path, *commands: str) -> str:
    """Run debugfs commands on an ext4 image (-w: writing), as the guest would change it."""
    writes = any(command.split()[0] in ("mkdir", "write") for command in commands)
    argv = [pkgcache._tool("debugfs"), *(["-w"] if writes else []), "-f", "-", str(image)]
    return subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True, check=True).stdout


def test_scratch_disk_only_when_a_step_downloads_packages(tmp_path):
    host = pkgcache.PackageCache(Cache(tmp_path / "cache"))
    with host.scratch([Step("write", ("/etc/motd", "x"), 1), Step("uninstall", ("nano",), 2)], "sha256:b") as none:
        assert none is None
    for op, arg in (("install", ("tree",)), ("update", True)):
        with host.scratch([Step("hostname", "web", 1), Step(op, arg, 2)], "sha256:b") as scratch:
            assert scratch.path.parent == tmp_path / "cache" / "work" and scratch.carried is None
            assert "lost+found" in _debugfs(scratch.path, "ls -l /")  # an empty ext4 filesystem
        assert not scratch.path.exists()
    with pytest.raises(RuntimeError), host.scratch([Step("install", ("tree",), 1)], None) as scratch:
        raise RuntimeError("the build failed")
    assert list((tmp_path / "cache" / "work").iterdir()) == [] and host.record() is None


def test_what_apt_left_on_the_scratch_disk_is_kept_and_carried_to_the_next_build(tmp_path):
    cache = Cache(tmp_path / "cache")
    deb, lists = tmp_path / "tree.deb", tmp_path / "lists.tar"
    deb.write_bytes(b"d" * 5000)
    lists.write_bytes(b"l" * 3000)
    host = pkgcache.PackageCache(cache)
    with host.scratch([Step("install", ("tree",), 1)], "sha256:base") as scratch:
        _debugfs(scratch.path, "mkdir archives", f"write {lists} lists.tar", "cd archives",
                 f"write {deb} tree_2.1.0-1_amd64.deb", f"write {deb} unused.deb")
        scratch.key, scratch.lists = "debian~bookworm~x86_64", True
        scratch.fetched = {"tree_2.1.0-1_amd64.deb": 5000}  # as the guest side found it
    where = cache.path("packages", "debian~bookworm~x86_64")
    assert sorted(p.name for p in (where / "archives").iterdir()) == ["tree_2.1.0-1_amd64.deb"]
    assert (where / "archives" / "tree_2.1.0-1_amd64.deb").read_bytes() == deb.read_bytes()
    assert (where / "lists.tar").read_bytes() == lists.read_bytes()
    assert [p.name for p in (where / "bases").iterdir()] == ["sha256_base"]

    other = cache.path("packages", "other~release~x86_64")
    other.mkdir()
    os.utime(other, (time.time() + 60, time.time() + 60))  # used more recently, but not by this base
    with pkgcache.PackageCache(cache).scratch([Step("install", ("tree",), 1)], "sha256:base") as scratch:
        assert scratch.carried == "debian~bookworm~x86_64"
        assert "tree_2.1.0-1_amd64.deb" in _debugfs(scratch.path, "ls -l /archives")
        assert "lists.tar" in _debugfs(scratch.path, "ls -l /")
    os.utime(other, (time.time() + 60, time.time() + 60))
    with pkgcache.PackageCache(cache).scratch([Step("install", ("tree",), 1)], "sha256:new") as scratch:
        assert scratch.carried == "other~release~x86_64"  # an unknown base: the most recently used key


class Appliance(FakeGuest):
    """The calls the guest side makes besides the operations' (the scratch disk "mounts" in place)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.mounted: list[tuple[str, str, str]] = []
        self.programs["tar"] = self.tar

    def device(self, label: str) -> str:
        return {pkgcache.LABEL: "/dev/sdb"}[label]

    def mount_options(self, options: str, device: str, mountpoint: str) -> None:
        self.mounted.append((options, device, mountpoint))

    def umount(self, mountpoint: str) -> None:
        self.mounted = [m for m in self.mounted if m[2] != mountpoint]
        shutil.rmtree(self.host(mountpoint))  # what was on the scratch disk goes with it
        self.host(mountpoint).mkdir()

    def rmdir(self, path: str) -> None:
        self.host(path).rmdir()

    def inspect_get_arch(self, _root: str) -> str:
        return "x86_64"

    def lstatnslist(self, directory: str, names: list[str]) -> list[dict[str, int]]:
        found = [os.lstat(self.host(f"{directory}/{name}")) for name in names]
        return [{"st_mode": s.st_mode, "st_size": s.st_size, "st_atime_sec": s.st_atime_ns // 10**9,
                 "st_atime_nsec": s.st_atime_ns % 10**9, "st_mtime_sec": s.st_mtime_ns // 10**9,
                 "st_mtime_nsec": s.st_mtime_ns % 10**9} for s in found]

    def tar(self, argv: list[str]) -> str:
        """The guest's tar: -xf ARCHIVE -C DIR, or -cf ARCHIVE -C DIR --exclude=… ."""
        archive, directory = self.host(argv[2]), self.host(argv[4])
        if argv[1] == "-xf":
            with tarfile.open(archive) as tar:
                tar.extractall(directory)  # noqa: S202 - the test's own archive
            return ""
        skip = {a.split("=", 1)[1] for a in argv if a.startswith("--exclude=")}
        with tarfile.open(archive, "w") as tar:
            for item in sorted(directory.iterdir()):
                if f"./{item.name}" not in skip:
                    tar.add(item, arcname=f"./{item.name}")
        return ""


class FakeApt:
    """apt-get in the fake guest: `update` writes a list file unless it is there; install reads the
    packages Dir::Cache's archives have (atime), and downloads the others there."""

    SIZES = {"tree": 5000, "bc": 7000}

    def __init__(self, guest: Appliance):
        self.guest, self.downloaded = guest, []

    def __call__(self, argv: list[str]) -> str:
        verb = argv[7]  # env VAR apt-get -q -y -o OPTION VERB …
        if verb == "update":
            listed = self.guest.host(f"{pkgcache.LISTS}/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages")
            if not listed.exists():
                listed.write_text("Package: tree\n")
            return ""
        if verb == "remove":
            return ""
        archives = self.guest.host(next(a.split("=", 1)[1] for a in argv if a.startswith("Dir::Cache=")) + "/archives")
        for name, size in self.SIZES.items():
            deb = archives / f"{name}_1.0_amd64.deb"
            if name not in argv:
                continue
            (archives / "lock").touch()
            if deb.exists():
                os.utime(deb, ns=(time.time_ns() + 10**9, deb.stat().st_mtime_ns))  # read: strictatime
            else:
                deb.write_bytes(b"d" * size)
                self.downloaded.append(deb.name)
        return ""


def _launch(root: Path, carried: dict[str, bytes]) -> tuple[Appliance, FakeApt, pkgcache.PackageCache, pkgcache.Scratch]:
    """One fake launch that installs tree and bc, its scratch disk holding `carried` (path: content)."""
    guest = Appliance(debian_root(root))
    guest.write("/etc/os-release", "ID=debian\nVERSION_CODENAME=bookworm\n")
    for path, content in carried.items():
        guest.host(f"{pkgcache.MOUNT}/{path}").parent.mkdir(parents=True, exist_ok=True)
        guest.host(f"{pkgcache.MOUNT}/{path}").write_bytes(content)
    apt = guest.programs["apt-get"] = FakeApt(guest)
    host = pkgcache.PackageCache(Cache(root / "cache"))
    scratch = pkgcache.Scratch(root / "scratch.raw", "debian~bookworm~x86_64" if carried else None)
    ctx = GuestContext(guest, Reporter("plain", io.StringIO()),
                       {"package_management": "apt", "distro": "debian", "root": "/dev/sda1"})
    with pkgcache.in_launch(ctx, host, scratch):
        REGISTRY["install"].apply(ctx, ("tree", "bc"))
        REGISTRY["uninstall"].apply(ctx, ("bc",))
        assert guest.mounted == [("strictatime", "/dev/sdb", pkgcache.MOUNT)]
    assert guest.mounted == [] and not guest.exists(pkgcache.MOUNT)
    return guest, apt, host, scratch


def test_the_guest_side_counts_reused_and_fetched_packages_and_packs_changed_lists(tmp_path):
    guest, apt, host, scratch = _launch(tmp_path / "one", {})
    assert apt.downloaded == ["tree_1.0_amd64.deb", "bc_1.0_amd64.deb"]
    assert scratch.key == "debian~bookworm~x86_64" and scratch.lists
    assert scratch.fetched == {"tree_1.0_amd64.deb": 5000, "bc_1.0_amd64.deb": 7000}
    assert host.record() == {"key": "debian~bookworm~x86_64", "reused": 0, "reused_bytes": 0,
                             "fetched": 2, "fetched_bytes": 12000}
    remove = next(argv for argv in guest.commands if "remove" in argv)
    assert not any(a.startswith("Dir::Cache") for a in remove), "a removal downloads nothing"
    packed = guest.commands[guest.commands.index(next(a for a in guest.commands if a[0] == "tar"))]
    assert packed[1] == "-cf" and "--exclude=./partial" in packed

    lists = io.BytesIO()
    with tarfile.open(fileobj=lists, mode="w") as tar:
        tar.add(guest.host(pkgcache.LISTS), arcname=".")
    guest, apt, host, scratch = _launch(tmp_path / "two", {
        "archives/tree_1.0_amd64.deb": b"d" * 5000, "archives/bc_1.0_amd64.deb": b"d" * 7000,
        "archives/old_0.9_amd64.deb": b"o" * 100, "lists.tar": lists.getvalue()})
    assert apt.downloaded == [] and scratch.fetched == {} and not scratch.lists, "unchanged lists are not packed"
    assert host.record() == {"key": "debian~bookworm~x86_64", "reused": 2, "reused_bytes": 12000,
                             "fetched": 0, "fetched_bytes": 0}
    assert [a[1] for a in guest.commands if a[0] == "tar"] == ["-xf"]
    assert guest.ls("/var/cache/apt/archives") == []


def test_other_managers_and_launches_without_a_scratch_disk_run_as_before(tmp_path):
    guest = Appliance(debian_root(tmp_path / "guest"))
    ctx = GuestContext(guest, Reporter("plain", io.StringIO()), {"package_management": "dnf"})
    scratch = pkgcache.Scratch(tmp_path / "scratch.raw", None)
    with pkgcache.in_launch(ctx, pkgcache.PackageCache(Cache(tmp_path / "cache")), scratch):
        REGISTRY["install"].apply(ctx, ("tree",))
    ctx = GuestContext(guest, Reporter("plain", io.StringIO()), {"package_management": "apt"})
    with pkgcache.in_launch(ctx, None, None):
        REGISTRY["install"].apply(ctx, ("tree",))
    assert guest.commands == [["env", "dnf", "-y", "install", "tree"],
                              MANAGERS["apt"].argv("refresh"), MANAGERS["apt"].argv("install", ("tree",))]
    assert guest.mounted == [] and scratch.key == "" and not (tmp_path / "cache" / "packages").exists()
