"""Remote hosts: a second libvirtd on 127.0.0.1 (qemu+tcp, see loopback.py) stands for another
machine. Sparse stream uploads to it, [[output.targets]] publishing to several hosts at once,
clean failure across hosts, and the vm commands through LIBVIRT_DEFAULT_URI.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imagebuilder.errors import BuildError, VirtError
from imagebuilder.progress import Reporter
from imagebuilder.run import run
from imagebuilder.virt import storage
from imagebuilder.virt.connection import connect, is_local
from imagebuilder.virt.domain import domain_exists, remove_domain
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml
from imagebuilder.virt.network import network_exists
from imagebuilder.virt.storage import create_dir_pool, create_volume, remove_pool, upload_file
from tests.integration.conftest import remote_dir_pool, run_cli
from tests.integration.helpers import sha256, unique
from tests.integration.loopback import LoopbackLibvirtd, make_pool_dir
from tests.integration.virt_helpers import build_customize_stubbed, echo_image, volume_names

pytestmark = pytest.mark.integration

MiB = 1024**2
GiB = 1024**3


@pytest.fixture
def other_remote_pool(remote_conn):
    yield from remote_dir_pool(remote_conn)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A qcow2 of 1 GiB virtual size holding 24 MiB of random data in three places."""
    root = tmp_path_factory.mktemp("remote-images")
    raw, qcow2 = root / "src.raw", root / "src.qcow2"
    with open(raw, "wb") as file:
        file.truncate(GiB)
        for offset in (0, GiB // 2, GiB - 8 * MiB):
            file.seek(offset)
            file.write(os.urandom(8 * MiB))
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    raw.unlink()
    return qcow2


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_the_loopback_host_is_remote_and_separate(remote_conn, conn, pool):
    assert not is_local(remote_conn)
    assert remote_conn.getURI().startswith("qemu+tcp://127.0.0.1:")
    assert pool.name() in {p.name() for p in conn.listAllStoragePools()}
    assert pool.name() not in {p.name() for p in remote_conn.listAllStoragePools()}
    assert remote_conn.listAllDomains(0) == [] or all(d.name().startswith("ibtest-") for d in remote_conn.listAllDomains(0))


def test_sparse_upload_to_the_remote_host_sends_about_the_allocation(remote_conn, remote_pool, image):
    transfer = Reporter(mode="plain", stream=open(os.devnull, "w")).transfer("upload", allocated(image))
    vol = upload_file(remote_conn, remote_pool, "copy.qcow2", image, "qcow2", force=False, advance=transfer.advance)
    target = Path(vol.path())
    assert sha256(target) == sha256(image)
    assert 24 * MiB <= transfer.done <= 1.1 * allocated(image), (transfer.done, allocated(image))
    assert allocated(target) <= allocated(image) + 2 * MiB  # holes stayed holes on the remote side
    assert vol.info()[1] == GiB


RECIPE = """
[image]
name = "{name}"

[base]
path = "{image}"

[output]
pool = "{pool}"

[[output.targets]]
uri = "{remote}"
pool = "{remote_pool}"
domain = true

[[output.targets]]
uri = "{remote}"
pool = "{other_pool}"
volume = "{name}-copy.qcow2"

[domain]
memory = "128M"
start = false
"""


@pytest.fixture
def multi_recipe(tmp_path, image, pool, remote_uri, remote_pool, other_remote_pool):
    name = unique("multi")
    path = tmp_path / "multi.toml"
    path.write_text(RECIPE.format(name=name, image=image, pool=pool.name(), remote=remote_uri,
                                  remote_pool=remote_pool.name(), other_pool=other_remote_pool.name()))
    return path, name


def test_publish_to_several_hosts_at_once_customize_stubbed(monkeypatch, conn, pool, pool_dir, remote_conn, remote_pool,
                                          other_remote_pool, multi_recipe, image):
    recipe_file, name = multi_recipe
    both_started = threading.Barrier(2, timeout=120)  # breaks (and the build fails) if they ran one by one
    real_upload = storage.upload_file

    def upload_once_both_run(conn_, pool_, volume, *args, **kwargs):
        assert threading.current_thread() is not threading.main_thread()
        both_started.wait()
        return real_upload(conn_, pool_, volume, *args, **kwargs)

    monkeypatch.setattr(storage, "upload_file", upload_once_both_run)
    try:
        result, progress = build_customize_stubbed(monkeypatch, recipe_file)
        assert not both_started.broken  # the two uploads ran at once

        local, *uploads = sorted(result.outputs, key=lambda o: o.get("method") != "in place")
        assert local["method"] == "in place" and local["uri"] == "qemu:///system"
        assert os.listdir(pool_dir) == [f"{name}.qcow2"]  # one copy in the pool, no temp file
        digest = sha256(pool_dir / f"{name}.qcow2")
        assert {(o["pool"], o["volume"]) for o in uploads} == {(remote_pool.name(), f"{name}.qcow2"),
                                                               (other_remote_pool.name(), f"{name}-copy.qcow2")}
        for output in uploads:
            assert output["method"] == "sparse upload" and output["uri"].startswith("qemu+tcp://")
            assert 24 * MiB <= output["bytes_sent"] <= 1.1 * allocated(image)
            assert sha256(Path(output["path"])) == digest
            assert output["digest"] == local["digest"] == f"sha256:{digest}"

        deployed = result.manifest.domain
        assert deployed["started"] is False and deployed["uri"] == "qemu:///system"
        (target,) = deployed["targets"]
        remote_dom = remote_conn.lookupByUUIDString(target["uuid"])
        assert remote_dom.name() == name and not remote_dom.isActive()
        source = ET.fromstring(remote_dom.XMLDesc(0)).find("devices/disk/source")
        assert source.attrib == {"pool": remote_pool.name(), "volume": f"{name}.qcow2"}
        assert not domain_exists(remote_conn, f"{name}-copy")
        assert not conn.lookupByName(name).isActive()
        assert "defined domain" in progress and "(not started there)" in progress
    finally:
        remove_domain(conn, name)
        remove_domain(remote_conn, name)


def test_a_failed_upload_cancels_the_others_and_leaves_nothing_new_customize_stubbed(monkeypatch, conn, pool, pool_dir, remote_conn,
                                                                   remote_pool, other_remote_pool, multi_recipe):
    recipe_file, name = multi_recipe
    real_upload = storage.upload_file
    cancelled = []

    def second_after_the_first_failed(conn_, pool_, volume, *args, **kwargs):
        if pool_.name() == other_remote_pool.name():
            cancel = inspect.signature(real_upload).bind(conn_, pool_, volume, *args, **kwargs).arguments["cancel"]
            assert cancel.wait(120)  # the build cancels the others once the first upload failed
        try:
            return real_upload(conn_, pool_, volume, *args, **kwargs)
        except storage.Cancelled:
            cancelled.append(pool_.name())
            raise

    def someone_else_takes_the_name():  # after our pre-flight check
        create_volume(remote_pool, f"{name}.qcow2", MiB, "raw")

    monkeypatch.setattr(storage, "upload_file", second_after_the_first_failed)
    try:
        with pytest.raises(BuildError, match=f"{remote_pool.name()}/.*already exists|already exists in pool "
                                             f"{remote_pool.name()}") as caught:
            build_customize_stubbed(monkeypatch, recipe_file, on_customize=someone_else_takes_the_name)
        assert str(caught.value).startswith("qemu+tcp://127.0.0.1:")
        assert cancelled == [other_remote_pool.name()]
        assert volume_names(remote_pool) == {f"{name}.qcow2"}  # theirs, untouched
        assert remote_pool.storageVolLookupByName(f"{name}.qcow2").info()[1] == MiB
        assert volume_names(other_remote_pool) == set()
        assert volume_names(pool) == set() and os.listdir(pool_dir) == []
        assert not domain_exists(conn, name) and not domain_exists(remote_conn, name)
    finally:
        remove_domain(conn, name)
        remove_domain(remote_conn, name)


def test_vm_commands_follow_LIBVIRT_DEFAULT_URI(remote_uri, remote_conn, remote_pool):
    name = unique("rdom")
    create_volume(remote_pool, f"{name}.qcow2", 64 * MiB, "qcow2")
    remote_conn.defineXML(domain_xml(DomainSpec(name=name, memory_bytes=64 << 20, vcpus=1,
                                                disks=(DiskSpec(remote_pool.name(), f"{name}.qcow2"),))))
    env = {"LIBVIRT_DEFAULT_URI": remote_uri}
    try:
        listed = run_cli("vm", "list", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [r["state"] for r in json.loads(listed.stdout) if r["name"] == name] == ["shut off"]
        removed = run_cli("vm", "remove", name, "--volumes", env=env)
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.strip() == f"removed {name} and its volumes {name}.qcow2"
        assert not domain_exists(remote_conn, name) and volume_names(remote_pool) == set()
    finally:
        remove_domain(remote_conn, name)


NETWORK_RECIPE = """
[image]
name = "{name}"

[base]
path = "{image}"

[disk]
format = "raw"

[output]
uri = "{uri}"
pool = "{pool}"

[domain]
memory = "64M"
agent = false
wait = "none"
start = {start}
[[domain.interfaces]]
network = "default"
{second_nic}"""


def test_default_network_is_created_when_missing_and_removed_on_failure_customize_stubbed(monkeypatch, tmp_path):
    """On a libvirtd with its own network namespace (so its virbr0 cannot clash with the host's):
    a build that fails at start removes the `default` network it created; one that succeeds keeps it."""
    image = echo_image(tmp_path / "echo.img")
    with LoopbackLibvirtd(private_network=True) as daemon, connect(daemon.uri) as conn:
        assert not network_exists(conn, "default")
        path = make_pool_dir("ibtest-npool-")
        pool = create_dir_pool(conn, unique("npool"), path)
        name = unique("net")
        try:
            recipe_file = tmp_path / "net.toml"
            for start in ("true", "false"):
                # to fail at start: a second NIC on a host bridge that does not exist
                second_nic = '[[domain.interfaces]]\nbridge = "ibtnobr0"\n' if start == "true" else ""
                recipe_file.write_text(NETWORK_RECIPE.format(name=name, image=image, uri=daemon.uri,
                                                             pool=pool.name(), start=start, second_nic=second_nic))
                if start == "true":
                    with pytest.raises(VirtError, match=f"cannot start domain {name}") as caught:
                        build_customize_stubbed(monkeypatch, recipe_file)
                    assert "created and started the network 'default'" in caught.value.progress
                    assert not network_exists(conn, "default")
                    assert volume_names(pool) == set() and not domain_exists(conn, name)
                else:
                    result, progress = build_customize_stubbed(monkeypatch, recipe_file)
                    assert "created and started the network 'default'" in progress
                    net = conn.networkLookupByName("default")
                    assert net.isActive() and net.autostart()
                    bridge = ET.fromstring(net.XMLDesc(0)).find("bridge").get("name")
                    assert bridge == "virbr0"  # libvirt's standard network, in the daemon's namespace
                    assert ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find(
                        "devices/interface/source").get("network") == "default"
                    assert result.outputs[0]["method"] == "in place"  # a unix socket URI is local
        finally:
            remove_domain(conn, name)
            for vol in pool.listAllVolumes():
                vol.delete(0)
            remove_pool(conn, pool.name())
            shutil.rmtree(path)
