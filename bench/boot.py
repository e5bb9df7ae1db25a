"""Benchmark: how long images take to boot under TCG, side by side, each to the same marks on its
serial console (GRUB's greeting, the kernel's banner, the initramfs's /init, systemd's basic.target,
the login prompt), with the ratio of each image's time to the first one's.

Made to compare a bootstrap with Debian's generic kernel against one with its cloud kernel
([base.bootstrap] kernel = "linux-image-cloud-amd64"): build the same recipe both ways, then

    .venv/bin/python bench/boot.py generic.qcow2 cloud.qcow2

Each image boots once, on a throwaway overlay (-snapshot), with nothing else running ideally; the
images must print to ttyS0 (imagebuilder's bootstrap layout does).
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import subprocess
import time
from pathlib import Path

MARKS = (("GRUB", rb"GRUB"), ("kernel", rb"Linux version"), ("/init", rb"Run /init"),
         ("basic.target", rb"Reached target.{0,40}Basic"), ("login", rb"login:"))
LIMIT = 600  # seconds; a boot that has not reached the login prompt by then is reported as such


def boot(image: Path) -> dict[str, float]:
    """Seconds from qemu's start to each mark (the marks not reached within LIMIT are missing)."""
    argv = ["qemu-system-x86_64", "-machine", "accel=tcg", "-cpu", "max", "-m", "1024", "-display", "none",
            "-serial", "stdio", "-monitor", "none", "-snapshot", "-drive", f"file={image},if=virtio",
            "-netdev", "user,id=n", "-device", "virtio-net,netdev=n"]
    start = time.monotonic()
    seen: dict[str, float] = {}
    tail = b""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        try:
            while len(seen) < len(MARKS) and time.monotonic() - start < LIMIT:
                if not selector.select(timeout=1):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                tail = (tail + chunk)[-4096:]
                for name, pattern in MARKS:
                    if name not in seen and re.search(pattern, tail):
                        seen[name] = time.monotonic() - start
        finally:
            proc.kill()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="+")
    images = parser.parse_args().images
    results = [(image, boot(image)) for image in images]
    print(f"{'image':40} " + " ".join(f"{name:>13}" for name, _ in MARKS) + f" {'login vs 1st':>13}")
    first = results[0][1].get("login")
    for image, seen in results:
        cells = " ".join(f"{seen[name]:12.1f}s" if name in seen else f"{'-':>13}" for name, _ in MARKS)
        login = seen.get("login")
        ratio = f"{login / first:12.2f}x" if login and first else f"{'-':>13}"
        print(f"{image.name[:40]:40} {cells} {ratio}")


if __name__ == "__main__":
    main()
