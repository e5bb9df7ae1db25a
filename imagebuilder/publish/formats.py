"""The image in the formats other hypervisors import, through qemu-img: vmdk (streamOptimized, what
vSphere imports), vhd (fixed, its size a multiple of 1 MiB, what Azure takes), vhdx (Hyper-V), and
qcow2 or raw copies."""

from __future__ import annotations

from pathlib import Path

from imagebuilder import disk
from imagebuilder.progress import Reporter
from imagebuilder.run import run

MIB = 1 << 20
QEMU_FORMATS = {"vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "qcow2": "qcow2", "raw": "raw"}
STREAM_OPTIMIZED = ("-o", "subformat=streamOptimized")


def aligned(size: int, unit: int = MIB) -> int:
    """size rounded up to a multiple of unit."""
    return -(-size // unit) * unit


def convert(src: Path, src_fmt: str, dest: Path, fmt: str, reporter: Reporter) -> None:
    """Write src (of src_fmt) as a new image dest in fmt (one of QEMU_FORMATS)."""
    size = int(disk.info(src)["virtual-size"])
    transfer = reporter.transfer(f"convert to {fmt}", size)
    if fmt == "vmdk":
        disk.convert(src, src_fmt, dest, "vmdk", transfer, STREAM_OPTIMIZED)
    elif fmt == "vhd":
        # Fixed, with the exact size (force_size: no CHS rounding), grown to a whole MiB as Azure requires;
        # made first, then filled, since convert would make it exactly as large as the source.
        run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(dest),
                  str(aligned(size))])
        disk.convert(src, src_fmt, dest, "vpc", transfer, ("-n", "--target-is-zero"))
    else:
        disk.convert(src, src_fmt, dest, QEMU_FORMATS[fmt], transfer)
