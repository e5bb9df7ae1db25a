"""Benchmark: N clones of a golden image as thin overlays against N full copies, in time and bytes.

Puts the golden image into a scratch dir pool on qemu:///system, then times, through libvirt's
storage API both ways:

* thin: N qcow2 overlays whose backing store is the golden volume (what `imagebuilder up` and
  `imagebuilder clone` make; virt/clone.py);
* full: N full copies of the golden volume (`createXMLFrom`, what virt-clone does to a disk);

and prints the seconds and the bytes allocated on disk for each, and their ratios. With
`--personalize` it also times imagebuilder's offline personalization of the N overlays (identity
reset and host name, one appliance launch for all of them).

    .venv/bin/python bench/clone.py [--image IMAGE.qcow2] [--count 10] [--personalize]

Without --image it uses the newest Debian base image the integration tests cached under
/var/tmp/imagebuilder-tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagebuilder import accel as accelerator  # noqa: E402
from imagebuilder.disk import probe  # noqa: E402
from imagebuilder.guest.clones import CloneDisk, personalize  # noqa: E402
from imagebuilder.progress import Reporter  # noqa: E402
from imagebuilder.run import run  # noqa: E402
from imagebuilder.virt import storage  # noqa: E402
from imagebuilder.virt.clone import create_overlay, volume_facts  # noqa: E402
from imagebuilder.virt.connection import connect  # noqa: E402

MiB = 1 << 20


def default_image() -> Path:
    found = sorted(Path("/var/tmp/imagebuilder-tests").glob("base-*.qcow2"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit("no image: pass --image, or run the integration tests once (they cache a Debian image)")
    return found[-1]


def copy_xml(name: str, fmt: str) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = "0"  # libvirt takes the source's
    ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
    return ET.tostring(root, encoding="unicode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--personalize", action="store_true")
    options = parser.parse_args()
    image = options.image or default_image()
    fmt, _size = probe(image)
    scratch = Path(tempfile.mkdtemp(prefix="ibbench-clone-", dir="/var/tmp"))
    scratch.chmod(0o755)
    name = f"ibbench-clone-{os.getpid()}"
    with connect(options.uri) as conn:
        pool = storage.create_dir_pool(conn, name, scratch)
        try:
            run(["cp", "--sparse=always", "--reflink=never", str(image), str(scratch / f"golden.{fmt}")])
            pool.refresh(0)
            golden = pool.storageVolLookupByName(f"golden.{fmt}")
            _fmt, capacity, golden_bytes = volume_facts(golden)
            print(f"golden image: {image.name} ({fmt}, {capacity / MiB:.0f} MiB virtual, "
                  f"{golden_bytes / MiB:.1f} MiB allocated); {options.count} clones each way")

            began = time.monotonic()
            thin = [create_overlay(pool, f"thin-{n}.qcow2", golden) for n in range(options.count)]
            thin_seconds = time.monotonic() - began
            thin_bytes = sum(volume_facts(vol)[2] for vol in thin)

            began = time.monotonic()
            full = [pool.createXMLFrom(copy_xml(f"full-{n}.{fmt}", fmt), golden, 0) for n in range(options.count)]
            os.sync()
            full_seconds = time.monotonic() - began
            full_bytes = sum(volume_facts(vol)[2] for vol in full)

            print(f"thin overlays: {thin_seconds:8.2f} s  {thin_bytes / MiB:10.1f} MiB")
            print(f"full copies:   {full_seconds:8.2f} s  {full_bytes / MiB:10.1f} MiB")
            print(f"ratio full/thin: {full_seconds / thin_seconds:.0f}x the time, "
                  f"{full_bytes / max(thin_bytes, 1):.0f}x the bytes")
            if options.personalize:
                accel = accelerator.choose(None)
                disks = [CloneDisk(Path(vol.path()), f"clone-{n}", f"clone-{n}") for n, vol in enumerate(thin)]
                began = time.monotonic()
                launches = personalize(disks, accel, Reporter("plain", open(os.devnull, "w")))
                seconds = time.monotonic() - began
                after = sum(volume_facts(vol)[2] for vol in thin)
                print(f"personalizing the {options.count} overlays ({accel}, {launches} appliance launch): "
                      f"{seconds:.1f} s, overlays now {after / MiB:.1f} MiB in all")
        finally:
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                vol.delete(0)
            storage.remove_pool(conn, name)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
