"""Bootstrap a Debian root filesystem with mmdebstrap into a tarball, cached by its inputs.

The tarball becomes a bootable disk inside the build's one appliance (see guest/layout.py).
"""

from __future__ import annotations

import hashlib
import json

from imagebuilder.cache import Cache
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Bootstrap
from imagebuilder.run import run
from imagebuilder.sources.base import BaseImage

# What a disk that boots by itself under libvirt needs, besides what the recipe adds.
BOOT_PACKAGES = ("linux-image-amd64", "grub-pc", "systemd-sysv", "udev", "initramfs-tools", "e2fsprogs",
                 "ifupdown", "isc-dhcp-client", "qemu-guest-agent", "openssh-server")
_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*")
_LAYOUT_VERSION = 1


def cache_key(spec: Bootstrap) -> str:
    """A digest of everything that goes into the tarball."""
    version = run(["mmdebstrap", "--version"]).stdout.strip()
    inputs = {"suite": spec.suite, "mirror": spec.mirror, "packages": sorted(set(spec.packages)),
              "boot": BOOT_PACKAGES, "excludes": _EXCLUDES, "tool": version, "layout": _LAYOUT_VERSION}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def fetch(spec: Bootstrap, cache: Cache, reporter: Reporter) -> BaseImage:
    """The root filesystem tarball for spec, from the cache or made now (about a minute)."""
    key = cache_key(spec)
    source = f"bootstrap:{spec.suite}@{spec.mirror}"
    cached = cache.lookup("bootstrap", f"{key}.tar")
    if cached:
        reporter.info(f"bootstrap of {spec.suite} found in the cache ({key[:12]}…)")
        return BaseImage(path=cached, kind="rootfs", digest=f"sha256:{key}", source=source)
    reporter.info(f"bootstrapping Debian {spec.suite} from {spec.mirror} with mmdebstrap")
    packages = ",".join(dict.fromkeys(BOOT_PACKAGES + spec.packages))
    with cache.writing("bootstrap") as tmp:
        argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", f"--include={packages}"]
        argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES]
        argv += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", spec.suite, str(tmp), spec.mirror]
        run(argv, timeout=1800)
        final = cache.commit(tmp, "bootstrap", f"{key}.tar")
    return BaseImage(path=final, kind="rootfs", digest=f"sha256:{key}", source=source)
