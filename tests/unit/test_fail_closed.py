"""Decisions that delete or keep something refuse when libvirt cannot tell: a pool whose volumes
cannot be listed or a domain whose XML cannot be read may hold a clone of the golden volume, so
`destroy` does not delete it, and says why. Only libvirt's "not found" codes mean absent."""

from __future__ import annotations

import libvirt
import pytest

from imagebuilder.errors import VirtError
from imagebuilder.virt import clone, domain, storage
from imagebuilder.virt.lookup import NO_DOMAIN, NO_POOL, lookup_or_none


def Failure(message: str, code: int, origin: int = libvirt.VIR_FROM_STORAGE) -> libvirt.libvirtError:  # noqa: N802
    """A libvirtError as libvirt-python makes it: its `err` tuple (code, domain, message, level, …)."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, origin, message, libvirt.VIR_ERR_ERROR, message, None, None, -1, -1)
    return exc


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


class Blind:
    """A test-driver connection that also lists a pool or a domain libvirt cannot read."""

    def __init__(self, conn, pools=(), domains=()):
        self.conn, self.pools, self.domains = conn, list(pools), list(domains)

    def __getattr__(self, name: str):
        return getattr(self.conn, name)

    def listAllStoragePools(self, flags: int = 0):  # noqa: N802
        return self.conn.listAllStoragePools(flags) + self.pools

    def listAllDomains(self, flags: int = 0):  # noqa: N802
        return self.conn.listAllDomains(flags) + self.domains

    def __enter__(self):  # as connection.connect's context manager
        return self

    def __exit__(self, *_exc):
        return False


@pytest.mark.parametrize("blind, reason", [
    ({"pools": [Pool("elsewhere", fails=True)]},
     "cannot tell whether a clone uses gold.qcow2: the volumes of pool elsewhere cannot be listed: cannot open "
     "directory: Permission denied"),
    ({"domains": [Domain("web", libvirt.VIR_ERR_OPERATION_FAILED)]},
     "cannot tell whether domain web uses gold.qcow2: its XML cannot be read: XML unavailable"),
], ids=["pool-cannot-be-listed", "domain-xml-cannot-be-read"])
def test_destroy_refuses_to_delete_the_golden_volume_when_it_cannot_know(monkeypatch, tmp_path, blind, reason):
    """Against libvirt's test driver, with clone.users itself: the golden volume stays, and destroy says why."""
    from imagebuilder import recipe
    from imagebuilder.fleet.destroy import destroy
    from imagebuilder.progress import Reporter
    from imagebuilder.virt import connection

    with connection.connect("test:///default") as conn:
        pool = conn.storagePoolLookupByName("default-pool")
        storage.create_volume(pool, "gold.qcow2", 1 << 20, "qcow2")
        try:
            recipe_file = tmp_path / "fleet.toml"
            recipe_file.write_text('[image]\nname = "gold"\n[base]\npath = "base.qcow2"\n'
                                   '[output]\nuri = "test:///default"\npool = "default-pool"\n'
                                   '[domain]\nmemory = "64M"\n[[machines]]\nname = "web-1"\n')
            (tmp_path / "base.qcow2").write_bytes(b"")
            monkeypatch.setattr(connection, "connect", lambda _uri: Blind(conn, **blind))
            with pytest.raises(VirtError) as refused:
                destroy(recipe.load(recipe_file), False, Reporter("plain"))
            assert refused.value.message == reason
            pool.refresh(0)
            assert "gold.qcow2" in pool.listVolumes()
        finally:
            storage.delete_volume(pool, "gold.qcow2")


def test_a_lookup_is_none_only_when_libvirt_says_not_found():
    def missing(name):
        raise Failure(f"Domain not found: no domain with matching name '{name}'", libvirt.VIR_ERR_NO_DOMAIN,
                      libvirt.VIR_FROM_QEMU)

    assert lookup_or_none(missing, "web", NO_DOMAIN, "domain") is None
    assert lookup_or_none(str.upper, "web", NO_DOMAIN, "domain") == "WEB"
    with pytest.raises(VirtError, match="cannot look up domain web: Domain not found"):
        lookup_or_none(missing, "web", NO_POOL, "domain")  # another kind's "not found" is no answer here


def test_a_lookup_that_fails_otherwise_raises_with_libvirt_reason():
    def lost(_name):
        raise Failure("End of file while reading data: Input/output error", libvirt.VIR_ERR_SYSTEM_ERROR,
                      libvirt.VIR_FROM_RPC)

    with pytest.raises(VirtError) as failed:
        lookup_or_none(lost, "default", NO_POOL, "storage pool")
    assert failed.value.message == "cannot look up storage pool default: End of file while reading data: " \
                                   "Input/output error"
    assert "connection to libvirt was lost" in failed.value.hint


class Running:
    def __init__(self, name: str, error: int):
        self._name, self.error = name, error

    def name(self) -> str:
        return self._name

    def isActive(self) -> int:  # noqa: N802
        raise Failure("cannot query", self.error, libvirt.VIR_FROM_DOMAIN)


def test_a_domain_that_is_gone_does_not_run_but_an_unanswered_query_is_no_answer():
    assert domain.is_active(Running("gone", libvirt.VIR_ERR_NO_DOMAIN)) is False
    with pytest.raises(VirtError, match="cannot query domain web: cannot query"):
        domain.is_active(Running("web", libvirt.VIR_ERR_OPERATION_FAILED))


def test_running_on_refuses_when_a_running_domain_cannot_be_read():
    """`imagebuilder test` and `mount --rw` go by it: a domain it cannot read may run from the image."""
    conn = Conn([], [Domain("web", libvirt.VIR_ERR_OPERATION_FAILED), Domain("gone", libvirt.VIR_ERR_NO_DOMAIN)])
    with pytest.raises(VirtError, match="cannot tell whether domain web runs from /images/a.qcow2"):
        domain.running_on(conn, "/images/a.qcow2")
    conn.domains.pop(0)
    assert domain.running_on(conn, "/images/a.qcow2") == []


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


class _ListedDomain:
    """A domain as `vm list` reads it; `error` (a libvirt error code) is raised by info()."""

    def __init__(self, name: str, error: int | None = None):
        self._name, self.error = name, error

    def name(self) -> str:
        return self._name

    def info(self):
        if self.error is not None:
            raise Failure("read failed", self.error, libvirt.VIR_FROM_QEMU)
        return [libvirt.VIR_DOMAIN_RUNNING, 1 << 20, 1 << 20, 1, 0]

    def XMLDesc(self, _flags: int) -> str:  # noqa: N802 - libvirt's name
        return "<domain type='kvm'><name>x</name></domain>"

    def autostart(self) -> int:
        return 0

    def isPersistent(self) -> int:  # noqa: N802 - libvirt's name
        return 1


class _Listing:
    def __init__(self, domains):
        self.domains = domains

    def listAllDomains(self, _flags: int):  # noqa: N802 - libvirt's name
        return self.domains

    def getURI(self) -> str:  # noqa: N802 - libvirt's name
        return "test:///listing"


def test_a_domain_undefined_while_listed_is_left_out_and_any_other_error_refuses():
    gone = _Listing([_ListedDomain("b"), _ListedDomain("gone", libvirt.VIR_ERR_NO_DOMAIN), _ListedDomain("a")])
    assert [info.name for info in domain.list_domains(gone)] == ["a", "b"]
    broken = _Listing([_ListedDomain("a"), _ListedDomain("broken", libvirt.VIR_ERR_INTERNAL_ERROR)])
    with pytest.raises(VirtError, match="cannot list the domains of test:///listing"):
        domain.list_domains(broken)
