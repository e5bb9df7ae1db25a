"""Bootstrap a Debian or Ubuntu root filesystem with mmdebstrap into a tarball, cached by its inputs.

The tarball becomes a bootable disk inside the build's one appliance (see guest/layout.py):
GRUB for every firmware the architecture has goes in (BIOS and UEFI on x86_64, UEFI on aarch64).
A root of another architecture than the host's is made through qemu-user and binfmt_misc, which
mmdebstrap uses by itself once the host has them (scripts/setup.sh sets them up).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from imagebuilder import arches
from imagebuilder.arches import Arch
from imagebuilder.cache import Cache
from imagebuilder.errors import HostError, SourceError
from imagebuilder.guest import emulation
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Bootstrap, Recipe
from imagebuilder.run import CommandError, run
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.distros import distribution
from imagebuilder.sources.source import Identity, Source, source

_COMMON = ("systemd-sysv", "udev", "initramfs-tools", "e2fsprogs",
           "dosfstools", "ifupdown", "isc-dhcp-client", "qemu-guest-agent", "openssh-server", "dbus")
_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*")
# mmdebstrap copies the build host's /etc/resolv.conf and /etc/hostname (with their modes) into the
# chroot, for debootstrap compatibility; nothing of the build host belongs in an image, so they go
# (the layout writes the image's own /etc/hostname; DHCP writes resolv.conf at boot).
_HERMETIC = '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'


def command(spec: Bootstrap, target: str, arch: Arch) -> list[str]:
    """The mmdebstrap command line that writes spec's root filesystem for arch as a tarball to target."""
    dist = distribution(spec.suite)
    kernel = spec.kernel or dist.kernel_for(arch.debian)
    packages = ",".join(dict.fromkeys((kernel,) + arch.grub_packages + _COMMON + spec.packages))
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", f"--architectures={arch.debian}",
            f"--components={dist.components}", f"--include={packages}"]
    if dist.keyring:
        argv.append(f"--keyring={dist.keyring}")
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES]
    argv += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", _HERMETIC, spec.suite, target, spec.mirror]
    return argv


def identify(spec: Bootstrap, arch: Arch) -> str:
    """The tarball's digest, without making it: a sha256 of everything that goes into it, the command
    line, mmdebstrap's version and the date of the mirror's Release file (so a new mirror state means a
    new bootstrap)."""
    version = run(["mmdebstrap", "--version"]).stdout.strip()
    inputs = {"argv": command(spec, "TARGET", arch), "tool": version, "release": release_date(spec),
              "source_date_epoch": os.environ.get("SOURCE_DATE_EPOCH")}  # mmdebstrap clamps times to it
    return f"sha256:{hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()}"


def release_date(spec: Bootstrap) -> str:
    """The Date: of the suite's Release file on the mirror (one small request)."""
    where = f"{spec.mirror.rstrip('/')}/dists/{spec.suite}/Release"
    parsed = urlparse(where)
    try:
        if parsed.scheme == "file":
            text = Path(unquote(parsed.path)).read_text(errors="replace")
        else:
            response = requests.get(where, timeout=(15, 60))
            response.raise_for_status()
            text = response.text
    except (requests.RequestException, OSError) as exc:
        raise SourceError(f"cannot read {where}: {exc}", hint="is the mirror reachable?") from None
    for line in text.splitlines():
        if line.startswith("Date:"):
            return line.split(":", 1)[1].strip()
    raise SourceError(f"{where} has no Date: field; is it a Debian mirror?")


def fetch(spec: Bootstrap, arch: Arch, digest: str, cache: Cache, reporter: Reporter) -> BaseImage:
    """The root filesystem tarball for spec and arch, whose digest identify gave, from the cache or made
    now (about a minute; several under emulation)."""
    key = digest.removeprefix("sha256:")
    source = f"bootstrap:{spec.suite}/{arch.debian}@{spec.mirror}"
    with cache.lock(f"bootstrap:{key}"):
        cached = cache.lookup("bootstrap", f"{key}.tar")
        if cached:
            reporter.info(f"bootstrap of {spec.suite} ({arch.debian}) found in the cache ({key[:12]}…)")
        else:
            foreign = arches.foreign(arch.name)
            if foreign:
                check_emulation(arch)
            reporter.info(f"bootstrapping {distribution(spec.suite).name} {spec.suite} ({arch.debian}"
                          f"{', through qemu-user' if foreign else ''}) from {spec.mirror} with mmdebstrap")
            with cache.writing("bootstrap") as tmp:
                run(command(spec, str(tmp), arch), timeout=3600 if foreign else 1800,
                    env={**os.environ, **emulation.environment(arch)} if foreign else None)
                cached = cache.commit(tmp, "bootstrap", f"{key}.tar")
    return BaseImage(path=cached, kind="rootfs", digest=digest, source=source)


def check_emulation(arch: Arch) -> None:
    """HostError unless this host runs arch's programs through qemu-user (binfmt_misc), as mmdebstrap
    needs for a foreign root; arch-test, which mmdebstrap uses too, tells."""
    try:
        run(["arch-test", arch.debian], timeout=60)
    except (CommandError, HostError) as exc:
        raise HostError(f"this host cannot run {arch.name} programs, which bootstrapping an {arch.name} "
                        f"image needs ({exc.message})",
                        hint="install qemu-user-static and arch-test, and register qemu-user with binfmt_misc: "
                             "scripts/setup.sh does both") from None


@source("bootstrap")
class BootstrapSource(Source):
    """[base.bootstrap]: known by a digest of everything that goes into the tarball."""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        return Identity(identify(recipe.base.bootstrap, arches.lookup(recipe.base.arch)))

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        return fetch(recipe.base.bootstrap, arches.lookup(recipe.base.arch), known.digest, cache, reporter)

    def cache_entry(self, digest: str) -> tuple[str, str]:
        return "bootstrap", f"{digest.removeprefix('sha256:')}.tar"
