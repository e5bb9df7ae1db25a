"""Bootstrap a Debian or Ubuntu root filesystem with mmdebstrap into a tarball, cached by its inputs.

The tarball becomes a bootable disk inside the build's one appliance (see guest/layout.py):
GRUB for both BIOS and UEFI goes in, so one image boots under either firmware.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from imagebuilder.cache import Cache
from imagebuilder.errors import SourceError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Bootstrap, Recipe
from imagebuilder.run import run
from imagebuilder.sources.base import BaseImage
from imagebuilder.sources.distros import distribution
from imagebuilder.sources.source import Identity, Source, source

_COMMON = ("grub-pc", "grub-efi-amd64-bin", "systemd-sysv", "udev", "initramfs-tools", "e2fsprogs",
           "dosfstools", "ifupdown", "isc-dhcp-client", "qemu-guest-agent", "openssh-server", "dbus")
_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*")
# mmdebstrap copies the build host's /etc/resolv.conf and /etc/hostname (with their modes) into the
# chroot, for debootstrap compatibility; nothing of the build host belongs in an image, so they go
# (the layout writes the image's own /etc/hostname; DHCP writes resolv.conf at boot).
_HERMETIC = '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'


def command(spec: Bootstrap, target: str) -> list[str]:
    """The mmdebstrap command line that writes spec's root filesystem as a tarball to target."""
    dist = distribution(spec.suite)
    packages = ",".join(dict.fromkeys((spec.kernel or dist.kernel,) + _COMMON + spec.packages))
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", f"--components={dist.components}",
            f"--include={packages}"]
    if dist.keyring:
        argv.append(f"--keyring={dist.keyring}")
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES]
    argv += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", _HERMETIC, spec.suite, target, spec.mirror]
    return argv


def identify(spec: Bootstrap) -> str:
    """The tarball's digest, without making it: a sha256 of everything that goes into it, the command
    line, mmdebstrap's version and the date of the mirror's Release file (so a new mirror state means a
    new bootstrap)."""
    version = run(["mmdebstrap", "--version"]).stdout.strip()
    inputs = {"argv": command(spec, "TARGET"), "tool": version, "release": release_date(spec),
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


def fetch(spec: Bootstrap, digest: str, cache: Cache, reporter: Reporter) -> BaseImage:
    """The root filesystem tarball for spec, whose digest identify gave, from the cache or made now
    (about a minute)."""
    key = digest.removeprefix("sha256:")
    source = f"bootstrap:{spec.suite}@{spec.mirror}"
    with cache.lock(f"bootstrap:{key}"):
        cached = cache.lookup("bootstrap", f"{key}.tar")
        if cached:
            reporter.info(f"bootstrap of {spec.suite} found in the cache ({key[:12]}…)")
        else:
            reporter.info(f"bootstrapping {distribution(spec.suite).name} {spec.suite} from {spec.mirror} "
                          "with mmdebstrap")
            with cache.writing("bootstrap") as tmp:
                run(command(spec, str(tmp)), timeout=1800)
                cached = cache.commit(tmp, "bootstrap", f"{key}.tar")
    return BaseImage(path=cached, kind="rootfs", digest=digest, source=source)


@source("bootstrap")
class BootstrapSource(Source):
    """[base.bootstrap]: known by a digest of everything that goes into the tarball."""

    def identify(self, recipe: Recipe, cache: Cache, reporter: Reporter) -> Identity:
        return Identity(identify(recipe.base.bootstrap))

    def fetch(self, recipe: Recipe, known: Identity, cache: Cache, reporter: Reporter) -> BaseImage:
        return fetch(recipe.base.bootstrap, known.digest, cache, reporter)

    def cache_entry(self, digest: str) -> tuple[str, str]:
        return "bootstrap", f"{digest.removeprefix('sha256:')}.tar"
