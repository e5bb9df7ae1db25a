"""Decisions that delete or keep something refuse when libvirt cannot tell: a pool whose volumes
cannot be listed or a domain whose XML cannot be read may hold a clone of the golden volume, so
`destroy` does not delete it, and says why."""

from __future__ import annotations

import libvirt
import pytest

from imagebuilder.errors import VirtError
from imagebuilder.virt import clone, storage


class Failure(libvirt.libvirtError):
    def __init__(self, message: str, code: int):
        Exception.__init__(self, message)
        self.code, self.err = code, None

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return str(self)

    def get_error_domain(self) -> int:
        return libvirt.VIR_FROM_STORAGE


class Pool:
    def __init__(self, name: str, volumes=(), fails: bool = False):
        self._name, self.volumes, self.fails = name, list(volumes), fails

    def name(self) -> str:
        return self._name

    def refresh(self, _flags: int) -> None:
        pass

    def listAllVolumes(self):  # noqa: N802 - libvirt's name
        if self.fails:
            raise Failure("cannot open directory: Permission denied", libvirt.VIR_ERR_SYSTEM_ERROR)
        return self.volumes


class Golden:
    def __init__(self, pool: Pool):
        self.pool = pool

    def path(self) -> str:
        return "/var/lib/libvirt/images/gold.qcow2"

    def name(self) -> str:
        return "gold.qcow2"

    def storagePoolLookupByVolume(self):  # noqa: N802
        return self.pool


class Domain:
    def __init__(self, name: str, error: int | None):
        self._name, self.error = name, error

    def name(self) -> str:
        return self._name

    def XMLDesc(self, _flags: int) -> str:  # noqa: N802
        if self.error is not None:
            raise Failure("XML unavailable", self.error)
        return "<domain><devices/></domain>"


class Conn:
    def __init__(self, pools, domains=()):
        self.pools, self.domains = pools, list(domains)

    def getURI(self) -> str:  # noqa: N802
        return "qemu:///system"

    def listAllStoragePools(self, _flags: int = 0):  # noqa: N802
        return self.pools

    def listAllDomains(self, _flags: int = 0):  # noqa: N802
        return self.domains

    def storagePoolLookupByName(self, name: str):  # noqa: N802
        if name == "broken":
            raise Failure("connection lost", libvirt.VIR_ERR_RPC)
        raise Failure(f"no pool {name}", libvirt.VIR_ERR_NO_STORAGE_POOL)


def test_a_pool_that_cannot_be_listed_keeps_the_golden_volume():
    own = Pool("default")
    conn = Conn([own, Pool("elsewhere", fails=True)])
    with pytest.raises(VirtError, match="cannot tell whether a clone uses gold.qcow2: the volumes of pool "
                                        "elsewhere cannot be listed"):
        clone.users(conn, Golden(own))


def test_a_domain_whose_xml_cannot_be_read_keeps_the_golden_volume():
    own = Pool("default")
    conn = Conn([own], [Domain("web", libvirt.VIR_ERR_RPC)])
    with pytest.raises(VirtError, match="cannot tell whether domain web uses gold.qcow2"):
        clone.users(conn, Golden(own))


def test_a_domain_undefined_meanwhile_uses_nothing():
    own = Pool("default")
    conn = Conn([own], [Domain("gone", libvirt.VIR_ERR_NO_DOMAIN), Domain("web", None)])
    assert clone.users(conn, Golden(own)) == []


def test_a_missing_pool_holds_no_volume_but_a_failing_lookup_is_not_an_answer():
    conn = Conn([])
    assert storage.volume_exists_in(conn, "nosuchpool", "x.qcow2") is False
    with pytest.raises(VirtError, match="cannot look up storage pool broken"):
        storage.volume_exists_in(conn, "broken", "x.qcow2")


def test_destroy_refuses_to_delete_the_golden_volume_when_it_cannot_know(monkeypatch, tmp_path):
    """Against libvirt's test driver: the golden volume stays, and destroy says why."""
    from imagebuilder import fleet, recipe
    from imagebuilder.progress import Reporter
    from imagebuilder.virt.connection import connect

    with connect("test:///default") as conn:
        pool = conn.storagePoolLookupByName("default-pool")
        storage.create_volume(pool, "gold.qcow2", 1 << 20, "qcow2")
        recipe_file = tmp_path / "fleet.toml"
        recipe_file.write_text('[image]\nname = "gold"\n[base]\npath = "base.qcow2"\n'
                               '[output]\nuri = "test:///default"\npool = "default-pool"\n'
                               '[domain]\nmemory = "64M"\n[[machines]]\nname = "web-1"\n')
        (tmp_path / "base.qcow2").write_bytes(b"")

        def cannot_tell(*_args):
            raise VirtError("cannot tell whether a clone uses gold.qcow2: the volumes of pool elsewhere cannot "
                            "be listed")

        monkeypatch.setattr(fleet.virt_clone, "users", cannot_tell)
        monkeypatch.setattr(fleet.connection, "connect", lambda _uri: _same_connection(conn))
        with pytest.raises(VirtError, match="cannot tell whether a clone uses gold.qcow2"):
            fleet.destroy(recipe.load(recipe_file), False, Reporter("plain"))
        pool.refresh(0)
        assert "gold.qcow2" in pool.listVolumes()


class _same_connection:  # noqa: N801 - stands for connection.connect's context manager
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *_exc):
        return False


def test_a_running_domain_on_a_pool_volume_is_found_by_the_volume_file():
    """Disks of type volume name a pool and a volume, not a file: the file is looked up (so that
    `imagebuilder test` finds the domain a build started from the image)."""
    from imagebuilder.virt.connection import connect
    from imagebuilder.virt.domain import running_on
    from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, domain_xml

    with connect("test:///default") as conn:
        pool = conn.storagePoolLookupByName("default-pool")
        vol = storage.create_volume(pool, "running.qcow2", 1 << 20, "qcow2")
        dom = conn.createXML(domain_xml(DomainSpec(name="runs-from-a-volume", memory_bytes=64 << 20, vcpus=1,
                                                   disks=(DiskSpec("default-pool", "running.qcow2"),))), 0)
        try:
            assert running_on(conn, vol.path()) == ["runs-from-a-volume"]
            assert running_on(conn, vol.path() + ".other") == []
        finally:
            dom.destroy()
