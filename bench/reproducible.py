"""How reproducible is a build? The same pinned recipe built twice (no cache, a file output each),
then compared: the file-tree digests ([reproducible] tree_digest), the image digests, and the raw
bytes, block by block, with the differing blocks counted per partition.

    .venv/bin/python bench/reproducible.py [--image PATH] [--format raw|qcow2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from baseimage import newest_test_base

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 4096

RECIPE = """[image]
name = "bench-repro"
[base]
path = "{image}"
[disk]
format = "{format}"
[[steps]]
hostname = "repro"
[[steps]]
write = "/etc/motd:the same every time\\n"
[reproducible]
tree_digest = true
[output]
path = "{out}"
"""


def build(work: Path, image: Path, fmt: str, number: int) -> dict:
    out = work / f"build{number}" / f"repro.{fmt}"
    recipe = work / f"build{number}.toml"
    recipe.write_text(RECIPE.format(image=image, format=fmt, out=out))
    proc = subprocess.run([sys.executable, "-m", "imagebuilder.cli", "build", str(recipe), "--no-cache",
                           "--cache-dir", str(work / "cache")], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    manifest = json.loads((out.parent / "bench-repro.manifest.json").read_text())
    return {"path": out, "digest": manifest["outputs"][0]["digest"], "tree": manifest["records"]["tree"]["digest"]}


def raw_copy(path: Path, work: Path, fmt: str) -> Path:
    if fmt == "raw":
        return path
    raw = path.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True, cwd=work)
    return raw


def partitions(raw: Path) -> list[tuple[str, int, int]]:
    """(name, first byte, end byte) of each partition, from sfdisk."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    size = table.get("sectorsize", 512)
    return [(p["node"].removeprefix(str(raw)), p["start"] * size, (p["start"] + p["size"]) * size)
            for p in table["partitions"]]


def differing_blocks(a: Path, b: Path) -> list[int]:
    found = []
    with open(a, "rb") as first, open(b, "rb") as second:
        offset = 0
        while True:
            x, y = first.read(BLOCK * 256), second.read(BLOCK * 256)
            if not x and not y:
                return found
            if x != y:
                for i in range(0, max(len(x), len(y)), BLOCK):
                    if x[i:i + BLOCK] != y[i:i + BLOCK]:
                        found.append(offset + i)
            offset += BLOCK * 256


def owners(raw: Path, start: int, offsets: list[int]) -> Counter:
    """Which ext4 inode of the first build (by path, or the journal) owns each differing block of the
    filesystem at start; a block no inode owns is the filesystem's own metadata or free space."""
    device = f"{raw}?offset={start}"
    size = int(re.search(r"Block size:\s+(\d+)", _debugfs(device, "stats")).group(1))
    numbers = sorted({(offset - start) // size for offset in offsets})
    found: Counter = Counter()
    inode_of: dict[int, int] = {}
    for chunk in range(0, len(numbers), 500):
        for line in _debugfs(device, "icheck " + " ".join(map(str, numbers[chunk:chunk + 500]))).splitlines()[1:]:
            block, _, inode = line.partition("\t")
            if inode.strip().isdigit():
                inode_of[int(block)] = int(inode)
    names = {}
    wanted = sorted(set(inode_of.values()) - {8})
    for line in _debugfs(device, "ncheck " + " ".join(map(str, wanted))).splitlines()[1:] if wanted else []:
        inode, _, path = line.partition("\t")
        names.setdefault(int(inode), path)
    for number in numbers:
        inode = inode_of.get(number)
        if inode is None:
            found["no file owns it: filesystem metadata (superblock, bitmaps, inode tables) or free space"] += 1
        elif inode == 8:
            found["the journal"] += 1
        else:
            found[_area(names.get(inode, f"inode {inode}"))] += 1
    return found


def _area(path: str) -> str:
    """A file's path, cut to its first three parts (what the per-area counts group by)."""
    return "/".join(path.split("/")[:4]) + ("/…" if path.count("/") > 3 else "")


def _debugfs(device: str, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, device], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--format", choices=("raw", "qcow2"), default="raw")
    args = parser.parse_args()
    image = (args.image or newest_test_base()).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-repro-", dir="/var/tmp") as scratch:
        work = Path(scratch)
        one, two = build(work, image, args.format, 1), build(work, image, args.format, 2)
        print(f"tree digest:  {'same' if one['tree'] == two['tree'] else 'DIFFERENT'} ({one['tree']})")
        print(f"image digest: {'same' if one['digest'] == two['digest'] else 'different'}")
        raw_one, raw_two = raw_copy(one["path"], work, args.format), raw_copy(two["path"], work, args.format)
        blocks = differing_blocks(raw_one, raw_two)
        total = raw_one.stat().st_size
        print(f"raw bytes:    {len(blocks)} of {total // BLOCK} blocks of {BLOCK} bytes differ "
              f"({len(blocks) * BLOCK / total:.4%})")
        for name, start, end in partitions(raw_one):
            inside = [offset for offset in blocks if start <= offset < end]
            print(f"  partition {name:6} {len(inside):8} blocks differ")
            if inside:
                for owner, count in owners(raw_one, start, inside).most_common(12):
                    print(f"      {count:8}  {owner}")
        outside = sum(1 for offset in blocks if not any(s <= offset < e for _n, s, e in partitions(raw_one)))
        print(f"  outside partitions {outside:4} blocks differ (partition table, GPT headers)")


if __name__ == "__main__":
    main()
