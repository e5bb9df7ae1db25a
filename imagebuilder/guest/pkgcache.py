"""The package cache across builds, as mkosi keeps one: what apt downloads stays on the host, under the
cache directory, keyed by distribution, release and architecture, and never in the image.

    CACHE/packages/debian~bookworm~x86_64/archives/*.deb   the packages apt downloaded, by apt's file names
    CACHE/packages/debian~bookworm~x86_64/lists.tar        /var/lib/apt/lists after the latest refresh
    CACHE/packages/debian~bookworm~x86_64/bases/DIGEST     the bases whose guests had this key

Bulk data goes by disk, not through libguestfs's file calls (about 5 MB/s under TCG, against 0.5 s
for `mke2fs -d` to copy 90 MB). A launch whose steps install or upgrade packages gets a scratch disk
that mke2fs made on the host from a key's directory: the key its base had last time, else the most
recently used one (the key is known only once the appliance has inspected the guest; a wrong guess
costs downloads, never correctness: apt checks every file against the lists' hashes). At the first
package step of an apt guest the disk is mounted at MOUNT in the guest's tree (apt runs chrooted
there) and apt runs with its cache directory on it (`-o Dir::Cache=MOUNT`): it uses the cached
packages it needs and downloads the others there, not into the image. The cached lists are unpacked
into the guest's /var/lib/apt/lists before the refresh (apt-get update then fetches only what
changed) and packed again if it changed them. After the launch, debugfs reads the new packages and
lists off the disk into the host cache, and the disk is deleted. Other package managers run uncached.

Two builds at once are safe: each has its own scratch disk, and a package or the lists reach the host
cache only whole, by a rename. A key's directory is one `cache list` entry; `cache prune` deletes it
under the key's lock, which a build holds while it reads or writes that directory.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder.cache import Cache
from imagebuilder.errors import BuildError, HostError
from imagebuilder.run import run

KIND = "packages"
STATE = "package_cache"  # the key of the launch's Apt in GuestContext.state
LABEL = "pkgcache"  # the scratch disk's label in the appliance
MOUNT = "/var/cache/imagebuilder-packages"  # where the guest's apt sees it while the steps run
LISTS = "/var/lib/apt/lists"
SCRATCH_SIZE = "64G"  # a sparse raw file: it takes only what is written
STEPS = ("install", "update")  # the operations that download packages


@dataclass
class Stats:
    """What one build took from the cache and what apt downloaded, in packages and bytes."""

    key: str = ""
    reused: int = 0
    reused_bytes: int = 0
    fetched: int = 0
    fetched_bytes: int = 0


@dataclass
class Scratch:
    """One launch's scratch disk, and what the guest side left on it for the host."""

    path: Path
    carried: str | None  # the key whose packages and lists it was made with
    key: str = ""  # the guest's, set at the first package step
    fetched: dict[str, int] = field(default_factory=dict)  # /archives/NAME.deb apt downloaded, with sizes
    lists: bool = False  # /lists.tar was written anew


class PackageCache:
    """The host side: each key's directory, the scratch disks made from them, and this build's Stats."""

    def __init__(self, cache: Cache):
        self.cache = cache
        self.stats = Stats()

    @contextmanager
    def scratch(self, steps: Sequence[Any], base: str | None) -> Iterator[Scratch | None]:
        """A scratch disk when one of steps downloads packages, else None; after a successful launch, what
        apt left on it goes to the host cache. Deleted afterwards (a killed build's is swept away later)."""
        if not any(step.op in STEPS for step in steps):
            yield None
            return
        with self.cache.writing("work") as path:
            carried = self._guess(base)
            with self.entry(carried) if carried else nullcontext(None) as source:
                argv = [_tool("mke2fs"), "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-E", "root_owner=0:0"]
                run([*argv, *(["-d", str(source)] if source else []), str(path), SCRATCH_SIZE])
            scratch = Scratch(path, carried)
            yield scratch
            if scratch.key:
                self._keep(scratch, base)

    @contextmanager
    def entry(self, key: str) -> Iterator[Path]:
        """The key's directory, made if missing, marked as used, and locked against `cache prune`."""
        with self.cache.lock(f"{KIND}/{key}"):
            path = self.cache.path(KIND, key)
            (path / "archives").mkdir(parents=True, exist_ok=True)
            os.utime(path)
            yield path

    def record(self) -> dict[str, Any] | None:
        """The manifest's `package_cache`: the key, packages reused and fetched (None: no cache used)."""
        return asdict(self.stats) if self.stats.key else None

    def _guess(self, base: str | None) -> str | None:
        """The key the guest of base had last time, else the most recently used one, else None."""
        root = self.cache.root / KIND
        marked = sorted(root.glob(f"*/bases/{_safe(base)}")) if base else []
        if marked:
            return marked[0].parent.parent.name
        keys = [p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
        return max(keys, key=lambda p: p.stat().st_mtime).name if keys else None

    def _keep(self, scratch: Scratch, base: str | None) -> None:
        """Copy the new packages and lists off the scratch disk into the key's directory (debugfs)."""
        kind = f"{KIND}/{scratch.key}"
        with self.entry(scratch.key) as where, ExitStack() as temporary:
            wanted = {f"/archives/{name}": (f"{kind}/archives", name, size) for name, size in scratch.fetched.items()
                      if not (where / "archives" / name).is_file()}
            if scratch.lists:
                wanted["/lists.tar"] = (kind, "lists.tar", None)
            copies = {source: temporary.enter_context(self.cache.writing(kind)) for source in wanted}
            script = temporary.enter_context(self.cache.writing("work"))
            script.write_text("".join(f'dump {source} "{copy}"\n' for source, copy in copies.items()))
            proc = run([_tool("debugfs"), "-f", str(script), str(scratch.path)])
            for source, copy in copies.items():
                directory, name, size = wanted[source]
                got = copy.stat().st_size
                if not got or size not in (None, got):
                    raise BuildError(f"debugfs could not read {source} off the package cache's scratch disk: "
                                     f"{proc.stderr.strip()[-300:]}")
                self.cache.commit(copy, directory, name)
            if base:
                (where / "bases").mkdir(exist_ok=True)
                (where / "bases" / _safe(base)).touch()


def key(distro: str, release: str, arch: str) -> str:
    """A key's directory name: debian~bookworm~x86_64 (anything but letters, digits, . _ - becomes _)."""
    return "~".join(_safe(part) or "unknown" for part in (distro, release, arch))


@contextmanager
def in_launch(ctx: Any, host: PackageCache | None, scratch: Scratch | None) -> Iterator[None]:
    """Offer the scratch disk to the package steps run inside (None: no cache); then take it out of the guest."""
    if host is None or scratch is None:
        yield
        return
    apt = ctx.state[STATE] = Apt(ctx, host, scratch)
    yield
    del ctx.state[STATE]
    apt.close()


def use(ctx: Any, manager: str, action: str) -> Apt | _Unused:
    """What a package step runs with: the launch's cache for apt's install and upgrade (and its refresh)."""
    apt = ctx.state.get(STATE)
    if apt is None or manager != "apt" or action not in ("install", "upgrade"):
        return UNUSED
    apt.start()
    return apt


class Apt:
    """The guest side, for one appliance launch: the scratch disk is mounted at the first package step."""

    options = ("-o", f"Dir::Cache={MOUNT}", "-o", "APT::Keep-Downloaded-Packages=true")

    def __init__(self, ctx: Any, host: PackageCache, scratch: Scratch):
        self.ctx, self.host, self.scratch = ctx, host, scratch

    def start(self) -> None:
        """Mount the scratch disk at MOUNT, with every read marking a file's atime (see packages)."""
        if self.scratch.key:
            return
        g, facts = self.ctx.g, self.ctx.os
        g.mkdir_p(MOUNT)
        g.mount_options("strictatime", g.device(LABEL), MOUNT)
        g.mkdir_p(f"{MOUNT}/archives/partial")
        self.scratch.key = self.host.stats.key = key(facts["distro"], release(g), g.inspect_get_arch(facts["root"]))
        self.ctx.reporter.info(f"package cache: {self.host.cache.path(KIND, self.scratch.key)}")

    @contextmanager
    def lists(self) -> Iterator[None]:
        """Around the refresh: the cached lists into the guest before, packed again after if they changed."""
        g = self.ctx.g
        g.mkdir_p(LISTS)
        if self.scratch.carried == self.scratch.key and g.is_file(f"{MOUNT}/lists.tar"):
            g.command(["tar", "-xf", f"{MOUNT}/lists.tar", "-C", LISTS])
        before = _files(g, LISTS, "st_size", "st_mtime_sec", "st_mtime_nsec")
        yield
        after = _files(g, LISTS, "st_size", "st_mtime_sec", "st_mtime_nsec")
        if {n: v for n, v in after.items() if n != "lock"} != {n: v for n, v in before.items() if n != "lock"}:
            g.command(["tar", "-cf", f"{MOUNT}/lists.tar", "-C", LISTS, "--exclude=./partial", "--exclude=./lock", "."])
            self.scratch.lists = True

    @contextmanager
    def packages(self) -> Iterator[None]:
        """Around an install or upgrade: a cached package apt read (its atime moved) was reused; a new one
        was downloaded, and goes to the host cache after the launch."""
        g, stats, archives = self.ctx.g, self.host.stats, f"{MOUNT}/archives"
        before = _files(g, archives, "st_size", "st_atime_sec", "st_atime_nsec")
        yield
        for name, (size, *read) in _files(g, archives, "st_size", "st_atime_sec", "st_atime_nsec").items():
            if not name.endswith(".deb"):
                continue
            if name not in before:
                self.scratch.fetched[name] = size
                stats.fetched += 1
                stats.fetched_bytes += size
            elif tuple(read) != before[name][1:]:
                stats.reused += 1
                stats.reused_bytes += size

    def close(self) -> None:
        """Unmount the scratch disk and remove its mount point: the image keeps nothing of the cache."""
        if self.scratch.key:
            self.ctx.g.umount(MOUNT)
            self.ctx.g.rmdir(MOUNT)


class _Unused:
    """apt, dnf and the others as without a cache."""

    options: tuple[str, ...] = ()

    def lists(self) -> nullcontext[None]:
        return nullcontext()

    def packages(self) -> nullcontext[None]:
        return nullcontext()


UNUSED = _Unused()


def release(g: Any) -> str:
    """The release's code name from os-release (bookworm), else its version number, else "unknown"."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if g.is_file(path, followsymlinks=True):
            text = g.read_file(path).decode(errors="replace")
            fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            for name in ("VERSION_CODENAME", "VERSION_ID"):
                if fields.get(name, "").strip().strip("\"'"):
                    return fields[name].strip().strip("\"'")
    return "unknown"


def _files(g: Any, directory: str, *fields: str) -> dict[str, tuple[int, ...]]:
    """The regular files in a guest directory, with these fields of their lstat (one call for all)."""
    names = g.ls(directory)
    return {name: tuple(info[f] for f in fields) for name, info in
            zip(names, g.lstatnslist(directory, names) if names else []) if stat.S_ISREG(info["st_mode"])}


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


def _tool(name: str) -> str:
    """An e2fsprogs program: on PATH, or in the sbin directories a user's PATH may lack."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise HostError(f"{name} not found", "install e2fsprogs")
    return found
