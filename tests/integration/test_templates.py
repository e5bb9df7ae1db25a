"""A virt-builder repository on 127.0.0.1: a clearsigned index, two templates, listed and built from.

The templates are the tiny guest with the serial echo in its MBR (a Debian 12 to inspection, one
partition to grow): once as raw compressed with xz, once as the qcow2 itself. A distribution's
image would only add minutes of compressing and copying to what these tests show.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import run_cli
from tests.signing import make_key

pytestmark = pytest.mark.integration

SECTOR = 512


def sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as file:
        while chunk := file.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def partitions(image: Path) -> list[dict]:
    """The partition table of a raw image, as sfdisk reads it (sectors)."""
    proc = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)["partitiontable"]["partitions"]


def ext4_size(image: Path, offset: int) -> int:
    """The size in bytes of the ext2/3/4 filesystem starting at offset, from its superblock."""
    with open(image, "rb") as file:
        file.seek(offset + 1024)
        block = file.read(1024)
    assert block[0x38:0x3A] == b"\x53\xef", "no ext2/3/4 superblock there"
    blocks_lo, = struct.unpack_from("<I", block, 4)
    log_block, = struct.unpack_from("<I", block, 24)
    incompat, = struct.unpack_from("<I", block, 0x60)
    blocks_hi = struct.unpack_from("<I", block, 0x150)[0] if incompat & 0x80 else 0
    return (blocks_lo | blocks_hi << 32) * (1024 << log_block)


@pytest.fixture(scope="session")
def xz_template(echo_tiny, tmp_path_factory) -> dict:
    """The tiny guest (one partition, bootable) as raw .xz, its sha512, and its root partition (the expand
    hint): a template that downloads, unpacks and grows in seconds."""
    root = tmp_path_factory.mktemp("xz-template")
    work, target = root / "tiny.raw", root / "tiny.raw.xz"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(echo_tiny), str(work)], check=True)
    with open(target, "wb") as out:
        subprocess.run(["xz", "-1", "-c", str(work)], stdout=out, check=True)
    expand = max(partitions(work), key=lambda p: p["start"])["node"].replace(str(work), "/dev/sda")
    return {"expand": expand, "size": work.stat().st_size, "sha512": sha512(target),
            "compressed_size": target.stat().st_size, "path": target}


INDEX = """# imagebuilder test repository
[ibtest-raw]
name=Debian 12 (raw, xz)
osinfo=debian12
arch=x86_64
file=images/ibtest-raw.img.xz
checksum[sha512]={raw_sha512}
format=raw
size={size}
compressed_size={compressed_size}
expand={expand}
aliases=ibtest-latest
revision=2
notes=The session's base image, raw and compressed with xz.
 
 Made by the integration tests.

[ibtest-qcow2]
name=Debian 12 (qcow2)
arch=x86_64
file=images/ibtest-qcow2.qcow2
checksum[sha512]={qcow2_sha512}
format=qcow2
size={size}
expand={expand}

[ibtest-hidden]
arch=x86_64
file=images/ibtest-qcow2.qcow2
checksum[sha512]={qcow2_sha512}
format=qcow2
size={size}
hidden=true
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory, http_root, echo_tiny, xz_template) -> dict:
    """The repository served over HTTP: index.asc signed by a throwaway key, and a tampered copy."""
    directory, base_url = http_root
    root = directory / "builder"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ibtest-raw.img.xz").symlink_to(xz_template["path"])
    (root / "images" / "ibtest-qcow2.qcow2").symlink_to(echo_tiny)
    key = make_key(tmp_path_factory.mktemp("repo-key"))
    (root / "index").write_text(INDEX.format(raw_sha512=xz_template["sha512"], size=xz_template["size"],
                                             compressed_size=xz_template["compressed_size"],
                                             expand=xz_template["expand"], qcow2_sha512=sha512(echo_tiny)))
    key.clearsign(root / "index", root / "index.asc")
    tampered = root / "tampered"
    tampered.mkdir()
    (tampered / "images").symlink_to(root / "images")
    signed = (root / "index.asc").read_text()
    (tampered / "index.asc").write_text(signed.replace("file=images/ibtest-raw.img.xz", "file=images/evil.img.xz"))
    empty = tmp_path_factory.mktemp("no-config")
    yield {"dir": root, "url": f"{base_url}/builder/index.asc", "tampered": f"{base_url}/builder/tampered/index.asc",
           "key": key.public, "expand": xz_template["expand"],
           "env": {"XDG_CONFIG_HOME": str(empty), "VIRT_BUILDER_DIRS": str(empty)}}
    shutil.rmtree(root)


def test_list_and_notes(repo):
    # virt-builder's own validator accepts the index this test serves.
    subprocess.run(["virt-index-validate", str(repo["dir"] / "index.asc")], check=True, capture_output=True)
    args = ["--repo", repo["url"], "--repo-key", str(repo["key"])]
    proc = run_cli("templates", "list", *args, env=repo["env"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ibtest-raw               x86_64     Debian 12 (raw, xz)",
                                        "ibtest-qcow2             x86_64     Debian 12 (qcow2)"]
    assert "not verified" not in proc.stderr
    # side by side with virt-builder: the same listing, and the same JSON where virt-builder has a key
    vb_args = ["virt-builder", "--no-check-signature", "--no-cache", "--source", repo["url"], "--list"]
    theirs = subprocess.run(vb_args, env={**os.environ, **repo["env"]}, capture_output=True, text=True, timeout=120,
                            check=True, stdin=subprocess.DEVNULL)
    assert proc.stdout == theirs.stdout
    proc = run_cli("templates", "list", *args, "--json", env=repo["env"], timeout=120)
    document = json.loads(proc.stdout)
    assert document["sources"][0]["verified"] is True
    theirs = subprocess.run(vb_args + ["--list-format", "json"], env={**os.environ, **repo["env"]},
                            capture_output=True, text=True, timeout=120, check=True, stdin=subprocess.DEVNULL)
    vb_templates = json.loads(theirs.stdout)["templates"]
    assert [{key: ours[key] for key in vb if key in ours} for ours, vb in zip(document["templates"], vb_templates)] \
        == vb_templates
    raw = next(t for t in document["templates"] if t["os-version"] == "ibtest-raw")
    assert (raw["revision"], raw["aliases"], raw["expand"]) == (2, ["ibtest-latest"], repo["expand"])
    proc = run_cli("templates", "notes", "ibtest-latest", *args, env=repo["env"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "The session's base image, raw and compressed with xz.\n\nMade by the integration tests.\n"


def test_tampered_index_is_refused(repo, tmp_path, cache_dir, launch_counter):
    proc = run_cli("templates", "list", "--repo", repo["tampered"], "--repo-key", str(repo["key"]),
                   env=repo["env"], timeout=120)
    assert proc.returncode == 1
    assert "the signature of the index of repository" in proc.stderr and "is not valid" in proc.stderr
    recipe = tmp_path / "recipe.toml"
    shutil.copy(repo["key"], tmp_path / "repo.asc")
    recipe.write_text(f'[image]\nname = "ibtest-tampered"\n[base]\ntemplate = "ibtest-raw"\n'
                      f'repo = "{repo["tampered"]}"\nrepo_key = "repo.asc"\n')
    env, launches = launch_counter
    proc = run_cli("build", str(recipe), "--output", str(tmp_path / "out.qcow2"), "--cache-dir", str(cache_dir),
                   env={**env, **repo["env"]}, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "is not valid" in proc.stderr and "download" not in proc.stderr
    assert launches() == 0 and not (tmp_path / "out.qcow2").exists()


def test_build_from_the_xz_template_grows_the_hinted_partition(repo, xz_template, tmp_path, cache_dir,
                                                               launch_counter):
    shutil.copy(repo["key"], tmp_path / "repo.asc")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[image]\nname = "ibtest-template"\n\n[base]\ntemplate = "ibtest-latest"\n'
                      f'repo = "{repo["url"]}"\nrepo_key = "repo.asc"\n\n'
                      '[disk]\nsize = "3G"\nformat = "raw"\n\n[[steps]]\nhostname = "from-template"\n')
    output = tmp_path / "out.raw"
    env, launches = launch_counter
    proc = run_cli("build", str(recipe), "--output", str(output), "--cache-dir", str(cache_dir),
                   env={**env, **repo["env"]}, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert launches() == 1
    assert "template ibtest-raw (x86_64, revision 2)" in proc.stderr
    assert f"expanded {repo['expand']} to fill the disk (the template's expand hint)" in proc.stderr
    assert output.stat().st_size == 3 << 30
    hinted = next(p for p in partitions(output) if p["node"].endswith(repo["expand"].removeprefix("/dev/sda")))
    end = (hinted["start"] + hinted["size"]) * SECTOR
    assert end > (3 << 30) - (1 << 20), "the hinted partition does not reach the end of the disk"
    fs_size = ext4_size(output, hinted["start"] * SECTOR)
    assert fs_size > (2 << 30) + (512 << 20), f"the root filesystem is {fs_size} bytes"
    manifest = json.loads((tmp_path / "ibtest-template.manifest.json").read_text())
    assert manifest["base"]["source"].startswith("template:ibtest-raw@x86_64 ")
    assert manifest["base"]["digest"] == f"sha512:{xz_template['sha512']}"


# An index as users' real ones are: good entries and entries that virt-builder reads leniently or
# imagebuilder refuses, side by side. Written in the current libguestfs form (blank lines inside a
# section) for the good entry that is built from.
MIXED = """[ibtest-good]
name=Debian 12 (a good entry,
 with its name on two lines)
arch=amd64

file=images/ibtest-qcow2.qcow2
checksum[sha512]={qcow2_sha512}

format=qcow2
size={size}
expand={expand_bare}
revision=0
aliases=ibtest-mixed ibtest-zero

[ibtest-bad-checksum]
arch=x86_64
file=images/ibtest-qcow2.qcow2
checksum[sha512]={short}
size={size}

[ibtest-two-checksums]
arch=x86_64
file=images/ibtest-qcow2.qcow2
checksum={qcow2_sha512}
checksum[sha512]={other}
size={size}

[ibtest-bad-arch]
arch=x86 64
file=images/ibtest-qcow2.qcow2
size={size}

[ibtest-zero]
arch=x86_64
file=images/ibtest-qcow2.qcow2
checksum[sha512]={qcow2_sha512}
size=0
"""


def test_a_bad_entry_does_not_hide_the_repository(repo, echo_tiny, tmp_path, cache_dir, launch_counter):
    text = MIXED.format(qcow2_sha512=sha512(echo_tiny), size=echo_tiny.stat().st_size, short="ab" * 32,
                        other="cd" * 64, expand_bare=repo["expand"].removeprefix("/dev/"))
    (repo["dir"] / "mixed-index").write_text(text)
    url = repo["url"].replace("index.asc", "mixed-index")
    lines = text.splitlines()

    def line_of(prefix: str, after: str = "") -> int:
        start = lines.index(after) if after else 0
        return next(n for n, line in enumerate(lines[start:], start + 1) if line.startswith(prefix))

    # libguestfs 1.48 refuses all of it (a blank line inside a section is a syntax error there)
    theirs = subprocess.run(["virt-builder", "--no-check-signature", "--no-cache", "--source", url, "--list"],
                            env={**os.environ, **repo["env"]}, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert theirs.returncode != 0 and "syntax error" in theirs.stderr
    proc = run_cli("templates", "list", "--repo", url, env=repo["env"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the good entries, in the file's order; the bad ones only in warnings that name file, line and field
    assert [line.split()[:2] for line in proc.stdout.splitlines()] == [["ibtest-good", "amd64"],
                                                                       ["ibtest-zero", "x86_64"]]
    expected = {
        f"{url}:{line_of('checksum[sha512]=', '[ibtest-bad-checksum]')}: [ibtest-bad-checksum] field "
        "'checksum[sha512]' must be 128 hex digits (SHA-512), got 64 characters; this template is skipped",
        f"{url}:{line_of('checksum=', '[ibtest-two-checksums]')}: [ibtest-two-checksums] fields 'checksum' and "
        "'checksum[sha512]' give different checksums; this template is skipped",
        f"{url}:{line_of('arch=x86 64')}: [ibtest-bad-arch] field 'arch' must be one word such as x86_64, "
        "not 'x86 64'; this template is skipped",
        f"{url}:1: [ibtest-good] field 'aliases': 'ibtest-zero' is the name of [ibtest-zero] (line "
        f"{line_of('[ibtest-zero]')}); the alias is ignored, the name means [ibtest-zero]",
    }
    warnings = {line.removeprefix("warning: ") for line in proc.stderr.splitlines()}
    assert expected <= warnings, proc.stderr
    assert f"{url}:{line_of('name=')}: [ibtest-good] field 'name' continues on the next line; its lines are " \
           "joined" in warnings
    assert f"{url}:{line_of('size=0')}: [ibtest-zero] field 'size' is 0; the image's own size is used" in warnings

    # a build names the good entry by an alias, for x86_64 (amd64 in the index), and grows its hinted partition
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[image]\nname = "ibtest-mixed"\n[base]\ntemplate = "ibtest-mixed"\nrepo = "{url}"\n'
                      '[disk]\nsize = "3G"\n')
    output = tmp_path / "out.qcow2"
    env, launches = launch_counter
    proc = run_cli("build", str(recipe), "--output", str(output), "--cache-dir", str(cache_dir),
                   env={**env, **repo["env"]}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert launches() == 1 and output.exists()
    assert "template ibtest-good (amd64, revision 0)" in proc.stderr
    assert f"expanded {repo['expand']} to fill the disk (the template's expand hint)" in proc.stderr
    for warning in expected:
        assert f"warning: {warning}" in proc.stderr
    # a build that names a bad entry is refused with its file, line and field, before any download
    recipe.write_text(recipe.read_text().replace('"ibtest-mixed"\nrepo', '"ibtest-bad-arch"\nrepo'))
    proc = run_cli("build", str(recipe), "--output", str(tmp_path / "bad.qcow2"), "--cache-dir", str(cache_dir),
                   env={**env, **repo["env"]}, timeout=300)
    assert proc.returncode == 1 and launches() == 1, proc.stderr
    assert f"template 'ibtest-bad-arch' in repository {url} cannot be used: {url}:{line_of('arch=x86 64')}: " \
           "[ibtest-bad-arch] field 'arch' must be one word" in proc.stderr
