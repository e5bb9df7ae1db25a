"""The libvirt adapter against the host's libvirtd (qemu:///system).

Every pool, volume, domain and network made here has a random name and is removed by its fixture
even when a test fails; nothing that existed before is changed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import secrets
import threading
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from imagebuilder.errors import BuildError, HostError, InputError, VirtError
from imagebuilder.hardware import generate_mac
from imagebuilder.progress import Reporter
from imagebuilder.run import run
from imagebuilder.virt.connection import connect, is_local
from imagebuilder.virt import capabilities
from imagebuilder.virt.domain import define, domain_exists, remove_by_uuid, remove_domain, start
from imagebuilder.virt.domainxml import (
    OSINFO_NS, DiskSpec, DomainSpec, NicSpec, domain_xml, read_metadata, validate_xml,
)
from imagebuilder.virt.network import check_network, ensure_network, network_exists, remove_network
from imagebuilder.virt.storage import (
    Cancelled, adopt_file, check_volume_name, create_volume, delete_volume, ensure_pool, local_target_dir,
    upload_file, volume_exists, volume_format,
)
from imagebuilder.virt.wait import agent_exec, read_serial_tail, wait_for_agent

from tests.integration.helpers import sha256, unique
from tests.integration.virt_helpers import forget_logs

pytestmark = pytest.mark.integration

URI = "qemu:///system"
MiB = 1024**2
GiB = 1024**3


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 1 GiB raw file holding 8 MiB of data in the middle, and the same as qcow2."""
    root = tmp_path_factory.mktemp("images")
    raw, qcow2 = root / "src.raw", root / "src.qcow2"
    with open(raw, "wb") as file:
        file.truncate(GiB)
        file.seek(GiB // 2 - 4 * MiB)
        file.write(os.urandom(8 * MiB))
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    return {"raw": raw, "qcow2": qcow2}


def quiet_transfer():
    return Reporter(mode="plain", stream=io.StringIO()).transfer("upload", None)


# connection


def test_connect_failure_is_a_host_error(capfd):
    with pytest.raises(HostError, match="cannot connect to libvirt at qemu:///system\\?socket=.*: "
                                        ".*/nonexistent/libvirt-sock") as caught, \
            connect("qemu:///system?socket=/nonexistent/libvirt-sock"):
        pass
    assert "libvirtd" in caught.value.hint
    assert capfd.readouterr().err == ""  # libvirt's message is in the error, not printed


class FakeConn:
    def __init__(self, uri):
        self.uri = uri

    def getURI(self):
        return self.uri


@pytest.mark.parametrize("uri,local", [("qemu:///system", True), ("qemu+unix:///session", True),
                                       ("qemu+ssh://builder/system", False),
                                       ("qemu+tcp://10.0.0.1:16509/system", False),
                                       ("test:///default", False)])
def test_is_local(uri, local):
    assert is_local(FakeConn(uri)) is local


def test_real_connection_is_local(conn):
    assert is_local(conn)


# pools and volumes


def test_ensure_pool_starts_an_existing_pool(conn, pool):
    pool.destroy()
    found, created = ensure_pool(conn, pool.name())
    assert found.name() == pool.name() and not created
    assert pool.isActive()


def test_ensure_pool_names_a_missing_pool(conn, pool):
    missing = unique("nopool")
    with pytest.raises(VirtError, match=f"{missing} does not exist.*{pool.name()}"):
        ensure_pool(conn, missing)


def test_local_target_dir(conn, pool, pool_dir):
    assert local_target_dir(conn, pool) == pool_dir


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "..", "x" * 256, "a\0b"])
def test_bad_volume_names(name):
    with pytest.raises(InputError):
        check_volume_name(name)


@pytest.mark.parametrize("name", ["web-01.qcow2", "a", "x" * 255, "web_01.v2+build.raw"])
def test_good_volume_names_are_taken_by_libvirt_too(pool, pool_dir, name):
    check_volume_name(name)
    create_volume(pool, name, MiB, "raw")
    assert volume_exists(pool, name) and (pool_dir / name).is_file()


def test_adopt_file(pool, pool_dir):
    first = pool_dir / ".ib-tmp-1"
    first.write_bytes(b"one")
    vol = adopt_file(pool, first, "disk.img", force=False)
    assert vol.name() == "disk.img" and vol.path() == str(pool_dir / "disk.img")
    assert os.listdir(pool_dir) == ["disk.img"]
    assert volume_exists(pool, "disk.img")

    second = pool_dir / ".ib-tmp-2"
    second.write_bytes(b"two")
    with pytest.raises(BuildError, match=f"volume disk.img already exists in pool {pool.name()} "
                                         r"\(use --force to replace it\)"):
        adopt_file(pool, second, "disk.img", force=False)
    assert (pool_dir / "disk.img").read_bytes() == b"one" and second.exists()

    adopt_file(pool, second, "disk.img", force=True)
    assert os.listdir(pool_dir) == ["disk.img"]
    assert (pool_dir / "disk.img").read_bytes() == b"two"


def test_adopt_file_refuses_a_file_outside_the_pool(pool, tmp_path):
    outside = tmp_path / "img"
    outside.write_bytes(b"x")
    with pytest.raises(BuildError, match="is not in the directory of pool"):
        adopt_file(pool, outside, "disk.img", force=False)
    assert outside.exists()


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_upload_is_sparse_and_exact(conn, pool, pool_dir, images, fmt):
    src = images[fmt]
    transfer = quiet_transfer()
    vol = upload_file(conn, pool, f"up.{fmt}", src, fmt, force=False, advance=transfer.advance)
    path = Path(vol.path())
    assert path.parent == pool_dir
    assert vol.info()[1] == GiB  # capacity
    run(["qemu-img", "compare", "-f", fmt, "-F", fmt, str(src), str(path)])
    assert sha256(path) == sha256(src)
    allocated = src.stat().st_blocks * 512
    assert 8 * MiB <= transfer.done <= allocated + MiB
    assert path.stat().st_blocks * 512 <= allocated + 2 * MiB  # holes stayed holes


def test_upload_refuses_existing_volume_unless_forced(conn, pool, images):
    src = images["qcow2"]
    upload_file(conn, pool, "disk.qcow2", src, "qcow2", force=False)
    with pytest.raises(BuildError, match="already exists.*--force"):
        upload_file(conn, pool, "disk.qcow2", src, "qcow2", force=False)
    vol = upload_file(conn, pool, "disk.qcow2", src, "qcow2", force=True)
    assert sha256(Path(vol.path())) == sha256(src)


class Stop(RuntimeError):
    pass


class StoppingTransfer:
    """Stands for a Ctrl-C in the middle of an upload."""

    def advance(self, nbytes):
        raise Stop


def test_interrupted_upload_leaves_no_volume(conn, pool, pool_dir, images):
    with pytest.raises(Stop):
        upload_file(conn, pool, "cut.qcow2", images["qcow2"], "qcow2", force=False,
                    advance=StoppingTransfer().advance)
    pool.refresh(0)
    assert not volume_exists(pool, "cut.qcow2")
    assert os.listdir(pool_dir) == []


def test_upload_of_a_bad_image_creates_nothing(conn, pool, pool_dir, tmp_path):
    bogus = tmp_path / "bogus.qcow2"
    bogus.write_bytes(b"not an image")
    with pytest.raises(BuildError, match="qemu-img info"):
        upload_file(conn, pool, "bogus.qcow2", bogus, "qcow2", force=False)
    assert os.listdir(pool_dir) == []


def test_delete_volume(pool, pool_dir):
    (pool_dir / "gone.img").write_bytes(b"x")
    pool.refresh(0)
    assert delete_volume(pool, "gone.img") is True
    assert delete_volume(pool, "gone.img") is False
    assert not (pool_dir / "gone.img").exists()


# networks


def test_default_network_is_ensured_not_replaced(conn):
    try:
        conn.networkLookupByName("default")
        existed = True
    except libvirt.libvirtError:
        existed = False
    created = ensure_network(conn, "default")
    try:
        assert created is not existed
        assert conn.networkLookupByName("default").isActive()
    finally:
        if created:
            remove_network(conn, "default")


def test_missing_network_is_named(conn):
    name = unique("nonet")
    with pytest.raises(VirtError, match=f"network {name} does not exist"):
        ensure_network(conn, name)


@pytest.fixture
def throwaway_network(conn):
    name = unique("net")
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "bridge", name=f"ibt{secrets.token_hex(4)}")
    conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
    try:
        yield name
    finally:
        remove_network(conn, name)


def test_ensure_and_remove_network(conn, throwaway_network):
    assert ensure_network(conn, throwaway_network) is False
    assert conn.networkLookupByName(throwaway_network).isActive()
    assert remove_network(conn, throwaway_network) is True
    assert remove_network(conn, throwaway_network) is False


# domains and waiting


@pytest.fixture
def domain(conn, pool, pool_dir):
    """A defined, not started, domain booting an empty qcow2 disk, with no NIC."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(pool_dir / "boot.qcow2"), "64M"])
    pool.refresh(0)
    spec = DomainSpec(name=unique("dom"), memory_bytes=128 * MiB, vcpus=1,
                      disks=(DiskSpec(pool.name(), "boot.qcow2"),), serial_log=str(pool_dir / "serial.log"))
    xml = domain_xml(spec)
    validate_xml(xml)
    try:
        yield define(conn, xml), spec
    finally:
        remove_domain(conn, spec.name)
        forget_logs(spec.name)


def test_domain_lifecycle_and_agent_failures(conn, domain, capfd):
    dom, spec = domain
    assert domain_exists(conn, spec.name)
    with pytest.raises(VirtError, match="stopped while waiting for the guest agent to answer"):
        wait_for_agent(dom, timeout=5, poll=0.5)

    start(dom)
    assert dom.isActive()
    with pytest.raises(VirtError, match="timed out after 5s waiting for the guest agent to answer"):
        wait_for_agent(dom, timeout=5, serial_log=spec.serial_log, poll=0.5)
    with pytest.raises(VirtError, match="guest agent guest-exec failed"):
        agent_exec(dom, ["true"])
    assert capfd.readouterr().err == ""  # failed polls are not printed by libvirt

    assert remove_domain(conn, spec.name) is True
    assert not domain_exists(conn, spec.name)
    assert remove_domain(conn, spec.name) is False


def test_define_rejects_a_clash_with_a_different_uuid(conn, domain):
    _, spec = domain
    root = ET.fromstring(domain_xml(spec))
    ET.SubElement(root, "uuid").text = "00000000-0000-4000-8000-000000000001"
    with pytest.raises(VirtError, match="cannot define the domain"):
        define(conn, ET.tostring(root, encoding="unicode"))


def test_read_serial_tail(tmp_path):
    log = tmp_path / "serial.log"
    log.write_bytes(b"\x1b[2J\x1b[1;1HSeaBIOS\r\n\r\nBooting from Hard Disk...\r\n"
                    b"\x1b[0m\x1b[32m[  OK  ]\x1b[0m Started ssh\r\n\r\ndebian login: \r\n\r\n")
    assert read_serial_tail(str(log)) == ["SeaBIOS", "Booting from Hard Disk...",
                                          "[  OK  ] Started ssh", "debian login:"]
    assert read_serial_tail(str(log), lines=1) == ["debian login:"]
    assert read_serial_tail(str(tmp_path / "missing.log")) == []


def test_upload_stops_when_cancelled(conn, pool, pool_dir, images):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        upload_file(conn, pool, "never.qcow2", images["qcow2"], "qcow2", force=False, cancel=cancel)
    pool.refresh(0)
    assert not volume_exists(pool, "never.qcow2") and os.listdir(pool_dir) == []


def test_create_volume_and_its_format(pool, pool_dir):
    vol = create_volume(pool, "data.qcow2", GiB, "qcow2")
    assert vol.info()[1] == GiB and volume_format(pool, "data.qcow2") == "qcow2"
    assert (pool_dir / "data.qcow2").stat().st_blocks * 512 < 2 * MiB  # thin


def test_check_network(conn):
    missing = unique("nonet")
    with pytest.raises(VirtError, match=f"network {missing} does not exist on qemu:///system \\(existing networks"):
        check_network(conn, missing)
    assert network_exists(conn, missing) is False


def full_spec(pool_name: str, uuid: str) -> DomainSpec:
    return DomainSpec(
        name=unique("shape"), memory_bytes=256 * MiB, vcpus=2,
        disks=(DiskSpec(pool_name, "boot.qcow2"), DiskSpec(pool_name, "data.raw", "raw", "sata"),
               DiskSpec(pool_name, "logs.qcow2", bus="scsi")),
        nics=(NicSpec("network", "default", generate_mac()), NicSpec("bridge", "ibtest-nobr0", generate_mac(), "e1000e")),
        cpu="maximum", machine="q35", firmware="efi", graphics="spice", listen="0.0.0.0", video="qxl",
        memballoon=False, rng=False, osinfo_id="http://debian.org/debian/12", uuid=uuid,
        description="every option", labels={"recipe": "/r.toml", "recipe-sha256": "00"})


def test_libvirt_defines_every_domain_shape(conn, pool):
    """The richest XML we make is valid for the schema and accepted by the real libvirtd."""
    uuid = str(uuidlib.uuid4())
    spec = full_spec(pool.name(), uuid)
    xml = domain_xml(spec)
    validate_xml(xml)
    assert capabilities.check(conn, spec).startswith("pc-q35-")
    dom = define(conn, xml)
    try:
        stored = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = ET.fromstring(stored)
        assert root.findtext("uuid") == uuid
        assert root.find("os").get("firmware") == "efi"
        assert root.find("os/type").get("machine").startswith("pc-q35-")
        assert root.find("cpu").get("mode") == "maximum"
        assert [d.find("target").get("dev") for d in root.findall("devices/disk")] == ["vda", "sda", "sdb"]
        assert [n.find("mac").get("address") for n in root.findall("devices/interface")] == [
            n.mac for n in spec.nics]
        assert root.find("devices/graphics/listen").get("address") == "0.0.0.0"
        assert root.find("devices/memballoon").get("model") == "none"
        assert read_metadata(stored) == {"osinfo": "http://debian.org/debian/12", "recipe": "/r.toml",
                                         "recipe-sha256": "00"}
        assert root.find(f"metadata/{{{OSINFO_NS}}}libosinfo") is not None
        validate_xml(stored)  # what libvirt made of it is valid too
    finally:
        assert remove_by_uuid(conn, uuid) is True
    assert remove_by_uuid(conn, uuid) is False


def test_remove_by_uuid_spares_a_namesake(conn, domain):
    _, spec = domain
    assert remove_by_uuid(conn, str(uuidlib.uuid4())) is False
    assert domain_exists(conn, spec.name)


def test_capabilities_name_the_recipe_key(conn, pool):
    spec = full_spec(pool.name(), str(uuidlib.uuid4()))
    for change, message in (({"machine": "nosuchmachine"}, "domain.machine 'nosuchmachine' is not available"),
                            ({"cpu": "host-passthrough"}, "domain.cpu 'host-passthrough' is not available with TCG"),
                            ({"machine": "pc", "vcpus": 300}, "domain.vcpus 300 is more than machine pc takes")):
        with pytest.raises(VirtError, match=re.escape(message)):
            capabilities.check(conn, dataclasses.replace(spec, **change))
    offered = {domain.get("type") for domain in ET.fromstring(conn.getCapabilities()).findall(
        "guest/arch[@name='x86_64']/domain")}
    assert capabilities.host_accel(conn) == ("kvm" if "kvm" in offered else "tcg")
    assert "pc" in capabilities.machines(conn, "tcg") and "q35" in capabilities.machines(conn, "tcg")
