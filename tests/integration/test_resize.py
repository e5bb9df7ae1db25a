"""Growing disks like virt-resize --expand / --lv-expand, in the build's one appliance."""

from __future__ import annotations

import json

import guestfs
import pytest

from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

GiB = 1 << 30


def appliance(*drives: tuple[str, str, bool]):
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    for path, fmt, readonly in drives:
        g.add_drive_opts(path, format=fmt, readonly=readonly)
    g.launch()
    return g


@pytest.fixture(scope="module")
def lvm_image(base_image, tmp_path_factory):
    """A 1.5 GiB raw disk: GPT, one partition holding an LVM PV, vg0/root (1 GiB ext4) with a
    minimal Debian root (/etc, /bin, ls) that inspection recognizes."""
    path = tmp_path_factory.mktemp("lvm") / "lvm.raw"
    with open(path, "wb") as handle:
        handle.truncate(1536 << 20)
    g = appliance((str(base_image), "qcow2", True), (str(path), "raw", False))
    try:
        g.part_init("/dev/sdb", "gpt")
        g.part_add("/dev/sdb", "p", 2048, -34)
        g.pvcreate("/dev/sdb1")
        g.vgcreate("vg0", ["/dev/sdb1"])
        g.lvcreate("root", "vg0", 1024)
        g.mkfs("ext4", "/dev/vg0/root")
        g.mkmountpoint("/src")
        g.mkmountpoint("/dst")
        root = next(r for r in g.inspect_os())
        g.mount_ro(root, "/src")
        g.mount("/dev/vg0/root", "/dst")
        g.cp_a("/src/etc", "/dst/")
        g.mkdir_p("/dst/usr/bin")
        g.cp_a("/src/usr/bin/ls", "/dst/usr/bin/")
        g.ln_s("usr/bin", "/dst/bin")
        g.write("/dst/etc/fstab", "/dev/vg0/root / ext4 defaults 0 1\n")
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    return path


def test_lvm_root_is_expanded_with_its_volume_group(lvm_image, tmp_path, cache_dir):
    recipe = tmp_path / "lvm.toml"
    recipe.write_text(f'[image]\nname = "lvm"\n[base]\npath = "{lvm_image}"\n[disk]\nsize = "3G"\nformat = "qcow2"\n'
                      '[output]\npath = "out/lvm.qcow2"\n')
    proc = run_cli("build", str(recipe), "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "expanded /dev/sda1 and /dev/vg0/root" in proc.stderr
    g = appliance((str(tmp_path / "out" / "lvm.qcow2"), "qcow2", True))
    try:
        assert g.blockdev_getsize64("/dev/vg0/root") > 2.9 * GiB
        g.mount_ro("/dev/vg0/root", "/")
        stat = g.statvfs("/")
        assert stat["blocks"] * stat["bsize"] > 2.7 * GiB
        assert g.cat("/etc/fstab") == "/dev/vg0/root / ext4 defaults 0 1\n"
    finally:
        g.close()


def test_shrinking_is_refused_before_any_launch(lvm_image, tmp_path, cache_dir, launch_counter):
    recipe = tmp_path / "small.toml"
    recipe.write_text(f'[image]\nname = "small"\n[base]\npath = "{lvm_image}"\n[disk]\nsize = "1G"\n'
                      '[output]\npath = "out/small.qcow2"\n')
    env, launches = launch_counter
    proc = run_cli("build", str(recipe), "--cache-dir", str(cache_dir), "--json", env=env)
    assert proc.returncode == 1
    assert "smaller than the base image" in proc.stderr and "shrinking is not supported" in proc.stderr
    assert launches() == 0
    assert not (tmp_path / "out" / "small.qcow2").exists()
    assert list((tmp_path / "out").glob(".*")) == []
    errors = [json.loads(line) for line in proc.stdout.splitlines() if '"error"' in line]
    assert errors and errors[-1]["exit_code"] == 1


def test_qcow2_compression_shrinks_the_file_and_keeps_the_content(tmp_path):
    from imagebuilder import disk
    from imagebuilder.run import run
    raw = tmp_path / "data.raw"
    with open(raw, "wb") as handle:
        handle.truncate(64 << 20)
        handle.write(b"compressible text " * (2 << 20))
    image = tmp_path / "data.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)])
    before = image.stat().st_size
    disk.compress(image)
    assert image.stat().st_size < before / 4
    run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(image)])
    assert list(tmp_path.glob("*.packed")) == []
