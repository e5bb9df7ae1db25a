"""The bootstrap layout addresses the image's disk by its label, not by a name: with another disk
attached before it, GRUB still goes onto the image, the other disk stays untouched, and the image
boots by itself under libvirt."""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imagebuilder import accel
from imagebuilder.arches import ARCHES
from imagebuilder.cache import Cache
from imagebuilder.guest import layout
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.session import Drive, GuestSession
from imagebuilder.progress import Reporter
from imagebuilder.run import run
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml
from imagebuilder.deploy.spec import serial_log_path
from imagebuilder.virt.wait import SerialLog, wait_for_serial
from tests.integration.helpers import unique

pytestmark = pytest.mark.integration

MiB = 1024**2


def _bootstrap_tarball(base_image, cache_dir):
    """The root filesystem tarball the session's base image was made from (in the shared cache)."""
    digest = json.loads(base_image.with_suffix(".manifest.json").read_text())["base"]["digest"]
    tarball = Cache(cache_dir).lookup("bootstrap", f"{digest.removeprefix('sha256:')}.tar")
    assert tarball is not None, "the base image's bootstrap tarball is not in the test cache"
    return tarball


def test_layout_lands_on_the_image_when_another_disk_comes_first(base_image, cache_dir, conn, pool, pool_dir):
    tarball = _bootstrap_tarball(base_image, cache_dir)
    other, image = pool_dir / "other.raw", pool_dir / "image.qcow2"
    with open(other, "wb") as file:
        file.truncate(64 * MiB)
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "3G"])
    chosen = accel.choose("auto")
    with layout.rootfs_drive(tarball, pool_dir) as rootfs, \
            GuestSession([Drive(other, "raw", "other"), Drive(image, "qcow2"), rootfs], chosen, network=False) as g:
        assert g.device() == "/dev/sdb" and g.device("other") == "/dev/sda"
        layout.install_rootfs(GuestContext(g, Reporter("plain")), "layout-test", ARCHES["x86_64"])
        g.umount_all()
        chosen = g.accel
    with open(other, "rb") as file:
        assert not any(file.read()), "the disk attached before the image was written to"

    name = unique("layout")
    pool.refresh(0)
    spec = DomainSpec(name=name, memory_bytes=1 << 30, vcpus=1, disks=(DiskSpec(pool.name(), image.name),),
                      accel=chosen, serial_log=serial_log_path(name), graphics="spice", video="qxl")
    dom = conn.createXML(domain_xml(spec), 0)
    try:  # GRUB (from the image's own disk) starts the kernel, which mounts the root and runs systemd
        wait_for_serial(dom, "Welcome to Debian", 600, SerialLog(spec.serial_log))
        assert re.search(r"EXT4-fs \(vda3\): mounted filesystem", SerialLog(spec.serial_log).text())
        graphics = ET.fromstring(dom.XMLDesc(0)).find("devices/graphics")  # and a SPICE display listens
        assert (graphics.get("type"), graphics.get("listen")) == ("spice", "127.0.0.1")
        socket.create_connection(("127.0.0.1", int(graphics.get("port"))), timeout=30).close()
    finally:
        dom.destroy()
        Path(spec.serial_log).unlink(missing_ok=True)
