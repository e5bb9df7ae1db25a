"""Benchmark: publishing an image to libvirt: sparse vs. full stream uploads to a remote host, and
the local dir-pool publish against one qemu-img convert.

Makes a raw image of 4 GiB virtual size with about 500 MiB of random data in 50 extents (the rest
holes) and the same as qcow2, starts a loopback libvirtd (tests/integration/loopback.py) as the
"remote" host, and uploads each image into a dir pool there through imagebuilder's
storage.upload_file, sparse and not. Then, on the local qemu:///system, times what the build does
for a local dir pool: one qemu-img convert into the pool directory, then the publish (a rename and
a pool refresh), and for comparison a sparse stream upload into the same pool.

    .venv/bin/python bench/upload.py [--size 4G] [--data 500M]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagebuilder.progress import Reporter  # noqa: E402
from imagebuilder.run import run  # noqa: E402
from imagebuilder.units import parse_size  # noqa: E402
from imagebuilder.virt import storage  # noqa: E402
from imagebuilder.virt.connection import connect  # noqa: E402
from tests.integration.loopback import LoopbackLibvirtd, make_pool_dir  # noqa: E402

MiB = 1 << 20
EXTENTS = 50


def make_raw(path: Path, size: int, data: int, seed: int = 5) -> None:
    """A sparse raw file of `size` bytes with `data` bytes of random content in EXTENTS extents."""
    rng = random.Random(seed)
    extent = max(data // EXTENTS // MiB, 1) * MiB
    slots = rng.sample(range(size // extent), EXTENTS)
    with open(path, "wb") as file:
        file.truncate(size)
        for slot in sorted(slots):
            file.seek(slot * extent)
            file.write(os.urandom(extent))
        file.flush()
        os.fsync(file.fileno())


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def quiet_transfer(total: int):  # noqa: ANN201
    return Reporter("plain", open(os.devnull, "w")).transfer("upload", total)


def upload(conn, pool, image: Path, fmt: str, sparse: bool) -> tuple[int, float, int]:  # noqa: ANN001
    """(bytes sent, seconds, bytes allocated on the receiving side) of one upload; the volume is deleted."""
    transfer = quiet_transfer(allocated(image))
    name = f"bench.{fmt}"
    began = time.monotonic()
    vol = storage.upload_file(conn, pool, name, image, fmt, force=True, advance=transfer.advance, sparse=sparse)
    seconds = time.monotonic() - began
    landed = allocated(Path(vol.path()))
    vol.delete(0)
    return transfer.done, seconds, landed


def scratch_pool(conn, prefix: str):  # noqa: ANN001, ANN201
    path = make_pool_dir(prefix)
    name = f"{prefix}{os.getpid()}"
    return storage.create_dir_pool(conn, name, path), name, path


def drop_pool(conn, pool, name: str, path: Path) -> None:  # noqa: ANN001
    pool.refresh(0)
    for vol in pool.listAllVolumes():
        vol.delete(0)
    storage.remove_pool(conn, name)
    shutil.rmtree(path, ignore_errors=True)


def mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


def remote_uploads(images: dict[str, Path]) -> None:
    print("\n1. Upload to the loopback 'remote' libvirtd (qemu+tcp://127.0.0.1)")
    print(f"{'image':6} {'mode':10} {'allocated':>11} {'bytes sent':>11} {'sent/alloc':>10} "
          f"{'seconds':>8} {'landed':>11}")
    with LoopbackLibvirtd() as daemon, connect(daemon.uri) as conn:
        pool, name, path = scratch_pool(conn, "ibbench-rpool-")
        try:
            for fmt, sparse in (("raw", True), ("raw", False), ("qcow2", True), ("qcow2", False)):
                image = images[fmt]
                sent, seconds, landed = upload(conn, pool, image, fmt, sparse)
                print(f"{fmt:6} {'sparse' if sparse else 'full':10} {mib(allocated(image)):>11} {mib(sent):>11} "
                      f"{sent / allocated(image):>9.2f}x {seconds:>8.1f} {mib(landed):>11}")
        finally:
            drop_pool(conn, pool, name, path)


def local_publish(images: dict[str, Path]) -> None:
    print("\n2. Local dir pool on qemu:///system: what a build does, and the stream for comparison")
    with connect("qemu:///system") as conn:
        pool, name, path = scratch_pool(conn, "ibbench-lpool-")
        try:
            for fmt in ("raw", "qcow2"):
                part = path / f".bench.{fmt}.part"
                began = time.monotonic()
                run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(images["raw"]), str(part)])
                convert = time.monotonic() - began
                began = time.monotonic()
                storage.adopt_file(pool, part, f"bench.{fmt}", force=True)
                publish = time.monotonic() - began
                copies = len([p for p in os.listdir(path) if p.startswith(".bench")])
                pool.storageVolLookupByName(f"bench.{fmt}").delete(0)
                sent, stream, _ = upload(conn, pool, images[fmt], fmt, sparse=True)
                print(f"{fmt:6} qemu-img convert into the pool {convert:6.2f}s | publish (rename + refresh) "
                      f"{publish * 1000:6.1f} ms = {publish / convert:.4f}x the convert, temp copies left: {copies} "
                      f"| a sparse stream upload instead: {stream:5.2f}s ({mib(sent)} sent)")
        finally:
            drop_pool(conn, pool, name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4G", help="virtual size of the image")
    parser.add_argument("--data", default="500M", help="how much of it holds data")
    args = parser.parse_args()
    size, data = parse_size(args.size), parse_size(args.data)
    work = Path(tempfile.mkdtemp(prefix="ibbench-upload-", dir="/var/tmp"))
    try:
        images = {"raw": work / "image.raw", "qcow2": work / "image.qcow2"}
        make_raw(images["raw"], size, data)
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(images["raw"]), str(images["qcow2"])])
        for fmt, image in images.items():
            print(f"{fmt:6} image: virtual {mib(size)}, file {mib(image.stat().st_size)}, "
                  f"allocated {mib(allocated(image))}")
        remote_uploads(images)
        local_publish(images)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
