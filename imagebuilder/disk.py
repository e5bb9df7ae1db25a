"""Disk images on the host through qemu-img: inspect, convert with progress, create, grow."""

from __future__ import annotations

import json
import re
from pathlib import Path

from imagebuilder import files
from imagebuilder.errors import BuildError, SourceError
from imagebuilder.progress import Transfer
from imagebuilder.run import CommandError, run, spawn, tail

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def info(path: Path) -> dict:
    """qemu-img's facts about an image (format, virtual-size, backing file …)."""
    proc = run(["qemu-img", "info", "--output=json", str(path)])
    return json.loads(proc.stdout)


def probe(path: Path) -> tuple[str, int]:
    """The format and virtual size of a base image; refuse images that reference backing files."""
    facts = info(path)
    if facts.get("backing-filename"):
        raise SourceError(f"{path} refers to a backing file ({facts['backing-filename']}); refusing to use it as a base")
    return facts["format"], int(facts["virtual-size"])


def convert(src: Path, src_fmt: str, dst: Path, dst_fmt: str, transfer: Transfer | None = None,
            options: tuple[str, ...] = ()) -> None:
    """Copy src into a new dst in dst_fmt, sparse, reporting progress as a percentage of the virtual size;
    `options` go to qemu-img convert (such as -o subformat=streamOptimized)."""
    argv = ["qemu-img", "convert", "-p", "-f", src_fmt, "-O", dst_fmt, *options, str(src), str(dst)]
    buffer = b""
    with spawn(argv) as child:  # on Ctrl-C or SIGTERM qemu-img is killed: it must not go on writing
        while chunk := child.read():
            buffer = (buffer + chunk)[-256:]
            found = _PROGRESS.findall(buffer)
            if found and transfer and transfer.total:
                transfer.set(int(float(found[-1]) / 100 * transfer.total))
        stderr = child.stderr.read().decode(errors="replace")
        code = child.wait()
    if code != 0:
        if files.NO_SPACE_TEXT in stderr:
            raise files.no_space(dst.parent, f"the {dst_fmt} image {dst.name}")
        raise CommandError(argv, code, tail(stderr))
    if transfer:
        transfer.set(transfer.total or 0)
        transfer.finish()


def create(path: Path, fmt: str, size: int) -> None:
    """A new empty image."""
    run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)])


def grow(path: Path, fmt: str, size: int) -> bool:
    """Grow the image to size bytes; True if it grew. Shrinking is refused."""
    current = int(info(path)["virtual-size"])
    if size < current:
        raise BuildError(f"disk.size {size} bytes is smaller than the base image ({current} bytes); "
                         "shrinking is not supported")
    if size == current:
        return False
    run(["qemu-img", "resize", "-q", "-f", fmt, str(path), str(size)])
    return True


def compress(path: Path) -> None:
    """Rewrite a qcow2 image with compressed clusters (smaller to store and ship; reads cost more)."""
    packed = path.with_name(path.name + ".packed")
    try:
        run(["qemu-img", "convert", "-c", "-f", "qcow2", "-O", "qcow2", str(path), str(packed)])
        packed.replace(path)
    finally:
        packed.unlink(missing_ok=True)
