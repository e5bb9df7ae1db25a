"""Fleets of clones from one golden image: `up`, `down` and `destroy` of a recipe's machines, and
`clone` for ad hoc clones of any golden volume.

What `up` makes for each machine: a thin qcow2 overlay NAME.qcow2 in the golden volume's pool
(its backing store is the golden volume; nothing is copied), its new data disks, a cloud-init
seed when the recipe has [cloud_init], and a domain whose imagebuilder metadata names all of
them. That metadata is how `up`, `down` and `destroy` know their own machines: a domain without
it, or made for another golden volume, is never touched.

Identity: the golden image is sysprepped by its build (empty machine-id; no SSH host keys, with a
unit that runs `ssh-keygen -A` before sshd), so each clone makes its own at first boot. The host
name is written into the overlays offline, every new machine of one run in ONE appliance launch
(the identity reset is applied again there, so a golden image from elsewhere is safe too). With
[cloud_init] the seed's local-hostname sets the name and no appliance starts at all (unless the
recipe turned those sysprep operations off). Offline is the default because it needs nothing in
the guest (cloud-init must be in the image, and costs every machine its boot stages), the name is
right from the first moment of the first boot (journal, DHCP request), and its cost does not grow
much with the number of machines: one launch for all of them (ten clones in about 30 s under TCG
here, most of it the launch).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from imagebuilder import accel as accelerator
from imagebuilder import cloudinit, files, manifest, osinfo
from imagebuilder.deploy import watchdog
from imagebuilder.deploy.spec import serial_log_path
from imagebuilder.errors import BuildError, InputError, VirtError
from imagebuilder.guest import args, commands_file, clones
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.hardware import generate_mac
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Machine, Recipe, Step
from imagebuilder.undo import Undo
from imagebuilder.units import format_size
from imagebuilder.virt import capabilities, clone as virt_clone, connection, domain, network, storage, wait
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, NicSpec, domain_xml, validate_xml

ROLE = "clone"


@dataclass
class FleetOptions:
    """Command-line choices for `up`."""

    accel: str | None = None
    cache_dir: Path | None = None
    parallel: int = 0        # boot at most this many machines at once; 0: all
    wait: bool = True        # wait until each started machine is ready ([domain] wait)


@dataclass
class UpResult:
    """What `up` did, machine by machine."""

    built_golden: bool = False
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    drift: dict[str, list[str]] = field(default_factory=dict)
    seeds: dict[str, str] = field(default_factory=dict)   # machine -> seed volume made or replaced
    launches: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        return dict(self.__dict__)


def _require_fleet(recipe: Recipe) -> None:
    if not recipe.machines:
        raise InputError(f"{recipe.file}: the recipe has no machines; add [[machines]] entries or a [fleet] "
                         "section (or use `imagebuilder build` for a single domain)")


def golden_label(recipe: Recipe) -> str:
    """POOL/VOLUME of the recipe's golden volume, as the machines' metadata names it."""
    return f"{recipe.output.pool}/{recipe.output.volume}"


def _ours(dom: libvirt.virDomain, golden: str, machine: str) -> dict[str, str] | None:
    """The domain's labels if this fleet made it, else None."""
    found = virt_clone.labels(dom)
    if found.get("role") == ROLE and found.get("golden") == golden and found.get("machine") == machine:
        return found
    return None


# up


def up(recipe: Recipe, options: FleetOptions, reporter: Reporter) -> UpResult:
    """Make the machines of the recipe exist and run: build the golden image if its volume is missing,
    create missing machines, start stopped ones, leave the others alone and report how they differ
    from the recipe. A failure removes what this run created."""
    _require_fleet(recipe)
    accel = accelerator.choose(options.accel)
    out = recipe.output
    result = UpResult()
    with connection.connect(out.uri) as conn:
        pool, _ = storage.ensure_pool(conn, out.pool)
        pool.refresh(0)
        result.built_golden = not storage.volume_exists(pool, out.volume)
    if result.built_golden:
        from imagebuilder.pipeline import BuildOptions, build

        reporter.info(f"the golden volume {golden_label(recipe)} does not exist: building it")
        build(recipe, BuildOptions(accel=accel, cache_dir=options.cache_dir), reporter)
    with connection.connect(out.uri) as conn, _undoing(reporter) as undo:
        _Up(conn, recipe, accel, options, reporter, undo, result).run()
    return result


@contextmanager
def _undoing(reporter: Reporter) -> Iterator[Undo]:
    """An Undo that removes what was made if the block fails. Enter it after the connection its
    actions use, so that it finishes before that connection closes."""
    undo = Undo(reporter)
    try:
        yield undo
    except BaseException:
        undo.finish(failed=True)
        raise
    undo.finish(failed=False)


class _Up:
    def __init__(self, conn: libvirt.virConnect, recipe: Recipe, accel: str, options: FleetOptions,
                 reporter: Reporter, undo: Undo, result: UpResult):
        self.conn, self.recipe, self.accel, self.options = conn, recipe, accel, options
        self.reporter, self.undo, self.result = reporter, undo, result
        self.pool, _ = storage.ensure_pool(conn, recipe.output.pool)
        self.pool.refresh(0)
        self.golden = self.pool.storageVolLookupByName(recipe.output.volume)
        self.label = golden_label(recipe)
        self.os_id = _manifest_osinfo(recipe)

    def run(self) -> None:
        missing: list[Machine] = []
        existing: list[tuple[Machine, libvirt.virDomain, dict[str, str]]] = []
        for machine in self.recipe.machines:
            dom = domain.find(self.conn, machine.name)
            if dom is None:
                missing.append(machine)
                continue
            found = _ours(dom, self.label, machine.name)
            if found is None:
                raise BuildError(f"domain {machine.name} exists at {self.conn.getURI()} but is not a machine this "
                                 f"fleet made from {self.label}; it is left alone (rename the machine, or remove "
                                 "that domain yourself)")
            existing.append((machine, dom, found))
        specs = self.preflight(missing)
        to_boot: list[tuple[Machine, libvirt.virDomain]] = []
        if missing:
            to_boot += self.create(missing, specs)
        for machine, dom, found in existing:
            self.check(machine, dom, found)
            if machine.domain.start and not dom.isActive():
                to_boot.append((machine, dom))
            elif machine.name not in self.result.drift:
                self.result.unchanged.append(machine.name)
        self.boot(to_boot)

    # creating machines

    def preflight(self, missing: list[Machine]) -> dict[str, DomainSpec]:
        """Check before making anything: volume names free, data disks, networks, what the host offers."""
        specs = {}
        formats: dict[tuple[str, str], str] = {}
        for machine in missing:
            if storage.find_volume(self.pool, machine.overlay) is not None:
                raise BuildError(f"volume {machine.overlay} already exists in pool {self.pool.name()}, but there is "
                                 f"no machine {machine.name}; it is left alone (remove it, or rename the machine)")
            for data in machine.domain.disks:
                pool_name = data.pool or self.pool.name()
                pool = self.pool if pool_name == self.pool.name() else storage.ensure_pool(self.conn, pool_name)[0]
                exists = storage.volume_exists(pool, data.volume)
                if data.size is None and not exists:
                    raise BuildError(f"{machine.name}: data disk volume {data.volume} does not exist in pool {pool_name}")
                if data.size is None:
                    formats[(pool_name, data.volume)] = storage.volume_format(pool, data.volume)
                elif exists:
                    raise BuildError(f"{machine.name}: volume {data.volume} (a new data disk) already exists in pool "
                                     f"{pool_name}; it is left alone")
            for name in machine.domain.networks:
                network.check_network(self.conn, name)
            spec = self.spec(machine, None, formats)
            capabilities.check(self.conn, spec)
            specs[machine.name] = spec
        self.formats = formats
        return specs

    def spec(self, machine: Machine, seed: cloudinit.Seed | None, formats: dict[tuple[str, str], str],
             made_disks: tuple[str, ...] = ()) -> DomainSpec:
        d, pool = machine.domain, self.pool.name()
        disks = [DiskSpec(pool, machine.overlay, "qcow2")]
        for data in d.disks:
            data_pool = data.pool or pool
            disks.append(DiskSpec(data_pool, data.volume, data.format or formats.get((data_pool, data.volume), "raw"),
                                  data.bus))
        nics = tuple(NicSpec("network" if nic.network else "bridge", nic.network or nic.bridge or "",
                             nic.mac or generate_mac(), nic.model) for nic in d.interfaces)
        labels = {"recipe": str(self.recipe.file.resolve()), "recipe-sha256": self.recipe.digest, "role": ROLE,
                  "machine": machine.name, "golden": self.label, "overlay": machine.overlay,
                  "disks": " ".join(made_disks)}
        if seed is not None:
            labels.update({"seed": seed.volume, "seed-sha256": seed.digest})
        return DomainSpec(
            name=d.name, memory_bytes=d.memory, vcpus=d.vcpus, disks=tuple(disks), nics=nics,
            accel=accelerator.effective(self.accel),
            cpu=d.cpu, machine=d.machine, firmware=d.firmware, graphics=d.graphics, listen=d.listen, video=d.video,
            memballoon=d.memballoon, rng=d.rng, agent=d.agent, serial_log=serial_log_path(d.name),
            osinfo_id=d.osinfo or self.os_id, uuid=str(uuidlib.uuid4()),
            description=f"{machine.name}: a clone of {self.label}, made by imagebuilder from {self.recipe.file.name}",
            labels=labels, cdroms=(DiskSpec(pool, seed.volume, "raw", "scsi"),) if seed else ())

    def create(self, missing: list[Machine], specs: dict[str, DomainSpec]) -> list[tuple[Machine, libvirt.virDomain]]:
        conn, pool, reporter = self.conn, self.pool, self.reporter
        offline = _needs_offline(self.recipe)
        if offline and not connection.is_local(conn):
            raise BuildError(f"host names are written into the overlays offline, which needs the pool on this host "
                             f"({conn.getURI()} is not); add [cloud_init] to the recipe so that cloud-init sets them")
        made: dict[str, list[str]] = {}
        for machine in missing:
            vol = virt_clone.create_overlay(pool, machine.overlay, self.golden)
            self._made_volume(pool, machine.overlay)
            _fmt, _capacity, allocation = virt_clone.volume_facts(vol)
            reporter.info(f"{machine.name}: overlay {pool.name()}/{machine.overlay} on {self.golden.name()} "
                          f"({format_size(allocation)} allocated)")
            made[machine.name] = []
            for data in machine.domain.disks:
                if data.size is None:
                    continue
                data_pool = pool if (data.pool or pool.name()) == pool.name() else \
                    storage.ensure_pool(conn, data.pool)[0]
                storage.create_volume(data_pool, data.volume, data.size, data.format or "qcow2")
                self._made_volume(data_pool, data.volume)
                made[machine.name].append(data.volume)
                reporter.info(f"{machine.name}: data disk {data_pool.name()}/{data.volume} ({format_size(data.size)})")
        if offline:
            disks = [clones.CloneDisk(Path(pool.storageVolLookupByName(m.overlay).path()), m.name, m.hostname)
                     for m in missing]
            self.result.launches += clones.personalize(disks, self.accel, reporter)
        seeds = {m.name: self.seed(m) for m in missing} if self.recipe.cloud_init else {}
        for name in dict.fromkeys(n for m in missing for n in m.domain.networks):
            if network.ensure_network(conn, name):
                reporter.info(f"created and started the network '{name}'")
                self.undo.created(f"network {name}", lambda n=name: network.remove_network(conn, n))
        defined = []
        for machine in missing:
            spec = self.spec(machine, seeds.get(machine.name), self.formats, tuple(made[machine.name]))
            spec = _with_macs(spec, specs[machine.name])
            xml = domain_xml(spec)
            validate_xml(xml)
            dom = domain.define(conn, xml)
            self.undo.created(f"domain {machine.name}", lambda u=spec.uuid: domain.remove_by_uuid(conn, u))
            reporter.info(f"{machine.name}: defined (MAC {', '.join(n.mac for n in spec.nics) or 'none'})")
            self.result.created.append(machine.name)
            if machine.domain.start:
                defined.append((machine, dom))
        return defined

    def _made_volume(self, pool: libvirt.virStoragePool, name: str) -> None:
        self.undo.created(f"volume {pool.name()}/{name}", lambda: storage.delete_volume(pool, name))

    def seed(self, machine: Machine, undoable: bool = True) -> cloudinit.Seed:
        """The machine's seed volume: uploaded unless a volume of that content is there already.
        `undoable`: remove it if this run fails (a new machine's seed; not one an existing machine uses)."""
        seed = cloudinit.seed_for(self.recipe.cloud_init, machine.name, machine.hostname)
        if storage.find_volume(self.pool, seed.volume) is not None:
            self.reporter.info(f"{machine.name}: cloud-init seed {seed.volume} is there already")
            return seed
        with tempfile.TemporaryDirectory(prefix="imagebuilder-seed-") as tmp:
            iso = cloudinit.write_iso(seed, Path(tmp) / seed.volume)
            virt_clone.upload_seed(self.conn, self.pool, seed.volume, iso)
        if undoable:
            self._made_volume(self.pool, seed.volume)
        self.result.seeds[machine.name] = seed.volume
        self.reporter.info(f"{machine.name}: cloud-init seed {self.pool.name()}/{seed.volume}")
        return seed

    # machines that exist

    def check(self, machine: Machine, dom: libvirt.virDomain, found: dict[str, str]) -> None:
        """Report how the machine differs from the recipe; bring its seed up to date."""
        problems = drift(machine, dom, self.pool.name())
        stale = found.get("stale-seeds", "").split()
        if stale and not dom.isActive():  # seeds replaced while it ran: no longer open now
            for volume in stale:
                if storage.delete_volume(self.pool, volume):
                    self.reporter.info(f"{machine.name}: removed the replaced seed {volume}")
            found = {k: v for k, v in found.items() if k != "stale-seeds"}
            virt_clone.set_labels(dom, found)
        if self.recipe.cloud_init:
            problems += self.update_seed(machine, dom, found)
        elif found.get("seed"):
            problems.append(f"it has the cloud-init seed {found['seed']}, the recipe has no [cloud_init]")
        for problem in problems:
            self.reporter.info(f"{machine.name}: drift: {problem}")
        if problems:
            self.result.drift[machine.name] = problems

    def update_seed(self, machine: Machine, dom: libvirt.virDomain, found: dict[str, str]) -> list[str]:
        seed = cloudinit.seed_for(self.recipe.cloud_init, machine.name, machine.hostname)
        if found.get("seed-sha256") == seed.digest:
            return []
        old = found.get("seed")
        pool = self.pool.name()
        if not old or (pool, old) not in virt_clone.cdrom_volumes(dom):
            return ["it has no cloud-init seed CD-ROM; destroy and `up` it again to give it one"]
        existed = storage.find_volume(self.pool, seed.volume) is not None
        self.seed(machine, undoable=False)
        try:
            live = virt_clone.swap_cdrom(dom, (pool, old), (pool, seed.volume))
        except BaseException:
            if not existed:
                storage.delete_volume(self.pool, seed.volume)
            raise
        # from here on the machine uses the new seed: a later failure of this run must not remove it
        labels = {**found, "seed": seed.volume, "seed-sha256": seed.digest}
        if live:
            storage.delete_volume(self.pool, old)
        else:
            labels["stale-seeds"] = " ".join(filter(None, [found.get("stale-seeds", ""), old]))
        virt_clone.set_labels(dom, labels)
        when = "at its next boot" if dom.isActive() else "when it starts"
        self.reporter.info(f"{machine.name}: the cloud-init seed changed: {old} -> {seed.volume} (applied {when})")
        self.result.seeds[machine.name] = seed.volume
        return []

    # booting

    def boot(self, machines: list[tuple[Machine, libvirt.virDomain]]) -> None:
        """Start the machines, at most `parallel` booting at once, and wait until each is ready."""
        limit = self.options.parallel or len(machines)
        pending, booting = list(machines), []
        while pending or booting:
            while pending and len(booting) < limit:
                machine, dom = pending.pop(0)
                dom, accel = watchdog.start(self.conn, dom, self.reporter.info)
                self.reporter.info(f"{machine.name}: started ({accel})")
                self.result.started.append(machine.name)
                booting.append((machine, dom))
            machine, dom = booting.pop(0)
            spec = machine.domain
            if not self.options.wait or spec.wait == "none":
                continue
            log = serial_log_path(machine.name) if connection.is_local(self.conn) else None
            seen = wait.wait_ready(self.conn, dom, spec.wait, spec.wait_text, spec.timeout, log)
            self.reporter.info(f"{machine.name}: {seen}")


def _with_macs(spec: DomainSpec, checked: DomainSpec) -> DomainSpec:
    """`spec` with the MACs generated for the spec the pre-flight check saw (one address per NIC, once)."""
    from dataclasses import replace

    return replace(spec, nics=checked.nics)


def _needs_offline(recipe: Recipe) -> bool:
    """Whether new machines get an appliance pass: always without cloud-init (the host name), and with
    it when the golden image was built without resetting the machine-id and SSH host keys."""
    return recipe.cloud_init is None or not set(clones.IDENTITY) <= set(recipe.sysprep)


def _manifest(recipe: Recipe) -> dict[str, Any] | None:
    path = manifest.default_path(recipe, None, recipe.output.pool)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _manifest_osinfo(recipe: Recipe) -> str | None:
    """The libosinfo id of the golden image's OS, as its build's manifest records it."""
    document = _manifest(recipe) or {}
    short = (document.get("os") or {}).get("osinfo")
    found = osinfo.lookup(short) if isinstance(short, str) and short else None
    return found.id if found else None


def drift(machine: Machine, dom: libvirt.virDomain, pool: str) -> list[str]:
    """How the domain's definition differs from the machine the recipe describes (empty: it matches)."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    d, found = machine.domain, []
    memory = _bytes(root.find("memory"))
    if memory // 1024 != d.memory // 1024:
        found.append(f"memory is {format_size(memory)}, the recipe says {format_size(d.memory)}")
    vcpus = int(root.findtext("vcpu") or 0)
    if vcpus != d.vcpus:
        found.append(f"vcpus is {vcpus}, the recipe says {d.vcpus}")
    nics = [(i.get("type"), (i.find("source").attrib.get("network") or i.find("source").attrib.get("bridge"))
             if i.find("source") is not None else None, (i.find("mac").get("address") if i.find("mac") is not None
                                                         else None)) for i in root.findall("devices/interface")]
    wanted = [("network" if n.network else "bridge", n.network or n.bridge, n.mac) for n in d.interfaces]
    if [(kind, source) for kind, source, _ in nics] != [(kind, source) for kind, source, _ in wanted]:
        found.append(f"its interfaces are on {_nic_text(nics) or 'nothing'}, the recipe says "
                     f"{_nic_text(wanted) or 'none'}")
    else:
        for (_, _, mac), (_, _, want) in zip(nics, wanted):
            if want and mac != want:
                found.append(f"MAC address is {mac}, the recipe says {want}")
    disks = [(s.get("pool"), s.get("volume")) for disk in root.findall("devices/disk[@device='disk']")
             if (s := disk.find("source")) is not None]
    wanted_disks = [(pool, machine.overlay)] + [(data.pool or pool, data.volume) for data in d.disks]
    if disks != wanted_disks:
        found.append(f"its disks are {_disk_text(disks)}, the recipe says {_disk_text(wanted_disks)}")
    return found


def _bytes(elem: ET.Element | None) -> int:
    if elem is None or not elem.text:
        return 0
    scale = {"b": 1, "bytes": 1, "kib": 1 << 10, "k": 1 << 10, "mib": 1 << 20, "m": 1 << 20, "gib": 1 << 30,
             "g": 1 << 30}.get(elem.get("unit", "KiB").lower(), 1 << 10)
    return int(elem.text) * scale


def _nic_text(nics: list[tuple[Any, Any, Any]]) -> str:
    return ", ".join(f"{kind} {source}" for kind, source, _ in nics)


def _disk_text(disks: list[tuple[Any, Any]]) -> str:
    return ", ".join(f"{pool}/{volume}" for pool, volume in disks)


# down


def down(recipe: Recipe, timeout: float, force: bool, reporter: Reporter) -> list[str]:
    """Shut the fleet's running machines down (the guest agent, else ACPI), all at once; return their names.

    With `force`, a machine still running after `timeout` seconds is killed; without, VirtError.
    """
    _require_fleet(recipe)
    label = golden_label(recipe)
    with connection.connect(recipe.output.uri) as conn:
        asked = []
        for machine in recipe.machines:
            dom = domain.find(conn, machine.name)
            if dom is None:
                reporter.info(f"{machine.name}: not defined")
            elif _ours(dom, label, machine.name) is None:
                reporter.info(f"{machine.name}: left alone (not a machine this fleet made)")
            elif not dom.isActive():
                reporter.info(f"{machine.name}: not running")
            else:
                try:
                    dom.shutdownFlags(domain.STOP_METHODS["any"])
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise VirtError(f"cannot shut down {machine.name}: {exc.get_error_message()}") from None
                asked.append((machine.name, dom))
        deadline = time.monotonic() + timeout
        stopped, late = [], []
        for name, dom in asked:
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(1)
            if dom.isActive():
                late.append((name, dom))
            else:
                stopped.append(name)
                reporter.info(f"{name}: stopped")
        for name, dom in late:
            if not force:
                raise VirtError(f"{', '.join(n for n, _ in late)} still running {timeout:.0f}s after the shutdown "
                                "request", hint="`imagebuilder down --force` kills what does not stop in time")
            domain.kill(dom)
            stopped.append(name)
            reporter.info(f"{name}: killed (it did not stop within {timeout:.0f}s)")
    return stopped


# destroy


class GoldenInUse(BuildError):
    """`destroy` removed the machines, but the golden volume still has users and stays."""


def destroy(recipe: Recipe, keep_golden: bool, reporter: Reporter) -> list[str]:
    """Remove the fleet's machines with the overlays, seeds and data disks they made, then the golden
    volume, unless a clone (anyone's) still uses it: GoldenInUse then, after removing everything else.
    Returns what was removed."""
    _require_fleet(recipe)
    out, label = recipe.output, golden_label(recipe)
    removed: list[str] = []
    with connection.connect(out.uri) as conn:
        pool = storage.find_pool(conn, out.pool)
        golden = storage.find_volume(pool, out.volume) if pool is not None else None
        for machine in recipe.machines:
            dom = domain.find(conn, machine.name)
            if dom is None:
                continue
            found = _ours(dom, label, machine.name)
            if found is None:
                reporter.info(f"{machine.name}: left alone (not a machine this fleet made)")
                continue
            volumes = _made_volumes(conn, found, pool, golden)
            domain.kill(dom)
            domain.undefine(dom)
            removed.append(f"domain {machine.name}")
            reporter.info(f"{machine.name}: removed the domain")
            for vol_pool, name in volumes:
                if storage.delete_volume(vol_pool, name):
                    removed.append(f"volume {vol_pool.name()}/{name}")
                    reporter.info(f"{machine.name}: removed {vol_pool.name()}/{name}")
        if golden is None or keep_golden:
            return removed
        in_use = virt_clone.users(conn, golden)
        if in_use:
            raise GoldenInUse(f"the golden volume {label} is kept: {', '.join(in_use)} still "
                              f"{'uses' if len(in_use) == 1 else 'use'} it as backing store; a golden image is "
                              "never deleted while a clone depends on it",
                              hint="remove those clones first, then run destroy again")
        reason = _not_ours(recipe, golden, conn)
        if reason:
            reporter.info(f"the golden volume {label} is left alone: {reason}")
            return removed
        storage.delete_volume(pool, out.volume)
        removed.append(f"volume {label}")
        reporter.info(f"removed the golden volume {label}")
    return removed


def _made_volumes(conn: libvirt.virConnect, found: dict[str, str], pool: libvirt.virStoragePool | None,
                  golden: libvirt.virStorageVol | None) -> list[tuple[libvirt.virStoragePool, str]]:
    """The volumes the machine's metadata says `up` made: those still attached to it or its seeds; the
    overlay only while its backing store is still the golden volume."""
    if pool is None:
        return []
    names = []
    overlay = found.get("overlay")
    if overlay and (vol := storage.find_volume(pool, overlay)) is not None and golden is not None and \
            virt_clone.backing_path(vol) == golden.path():
        names.append(overlay)
    names += found.get("disks", "").split()
    names += [found["seed"]] if found.get("seed") else []
    names += found.get("stale-seeds", "").split()
    return [(pool, name) for name in dict.fromkeys(names)]


def _not_ours(recipe: Recipe, golden: libvirt.virStorageVol, conn: libvirt.virConnect) -> str | None:
    """Why the golden volume is not known as this recipe's build (None: it is, by its manifest)."""
    document = _manifest(recipe)
    path = manifest.default_path(recipe, None, recipe.output.pool)
    if document is None:
        return f"no manifest of a build of this recipe names it ({path})"
    outputs = [o for o in document.get("outputs") or [] if o.get("type") == "volume"
               and (o.get("uri"), o.get("pool"), o.get("volume")) == (recipe.output.uri, recipe.output.pool,
                                                                     recipe.output.volume)]
    if not outputs:
        return f"the manifest {path} does not name it"
    if connection.is_local(conn) and Path(golden.path()).is_file():
        if files.file_digest(Path(golden.path())) != outputs[0].get("digest"):
            return f"its content is not what the build recorded in {path} (replaced since?)"
    return None


# clone


def clone_names(name: str, count: int) -> list[str]:
    """NAME for one clone; NAME with {n} replaced, or NAME-1 … NAME-N, for several."""
    if count < 1:
        raise InputError("--count must be 1 or more")
    if "{n}" in name:
        return [name.replace("{n}", str(n)) for n in range(1, count + 1)]
    return [name] if count == 1 else [f"{name}-{n}" for n in range(1, count + 1)]


def parse_steps(texts: list[str], name: str, base_dir: Path) -> tuple[Step, ...]:
    """`--customize` values, one virt-customize command each (`OP ARG`, as in a commands file), with
    {name} replaced by the clone's name."""
    steps = []
    for text in texts:
        line = text.replace("{name}", name)
        items = [c for c in commands_file.parse_text(line) if isinstance(c, commands_file.Command)]
        if len(items) != 1:
            raise InputError(f"--customize {text!r}: write one command such as 'write /etc/motd:hello'")
        command = items[0]
        try:
            commands_file.check_name(command, "--customize")
            op = REGISTRY[command.op]
            arg = op.parse(True if op.flag else command.arg, args.ArgContext(base_dir))
        except ValueError as exc:
            raise InputError(f"--customize {text!r}: {exc}") from None
        except InputError as exc:
            raise InputError(f"--customize {text!r}: {exc.message.split(': ', 1)[-1]}") from None
        steps.append(Step(command.op, arg, None))
    return tuple(steps)


def clone(uri: str | None, pool_name: str, volume: str, name: str, count: int, customize: list[str],
          accel: str | None, reporter: Reporter, base_dir: Path | None = None) -> list[str]:
    """Ad hoc clones of a golden volume: overlays NAME.qcow2 in its pool, each with its identity reset,
    its host name (the clone's name) and the --customize steps, all in one appliance launch. The golden
    volume is only read; its digest is checked before and after. Returns the new volumes' names."""
    names = clone_names(name, count)
    plans = [(n, parse_steps(customize, n, base_dir or Path.cwd())) for n in names]
    accel = accelerator.choose(accel)
    with connection.connect(uri) as conn, _undoing(reporter) as undo:
        pool = storage.find_pool(conn, pool_name)
        if pool is None:
            raise InputError(f"no storage pool {pool_name} at {conn.getURI()}")
        golden = storage.find_volume(pool, volume)
        if golden is None:
            raise InputError(f"no volume {volume} in pool {pool_name} at {conn.getURI()}")
        if not connection.is_local(conn):
            raise BuildError(f"clones are personalized offline, which needs the pool on this host "
                             f"({conn.getURI()} is not)")
        for clone_name in names:
            storage.check_volume_name(f"{clone_name}.qcow2")
            if storage.find_volume(pool, f"{clone_name}.qcow2") is not None:
                raise BuildError(f"volume {clone_name}.qcow2 already exists in pool {pool_name}; it is left alone")
        golden_path = Path(golden.path())
        before = files.file_digest(golden_path)
        disks = []
        for clone_name, steps in plans:
            vol = virt_clone.create_overlay(pool, f"{clone_name}.qcow2", golden)
            undo.created(f"volume {pool_name}/{clone_name}.qcow2",
                         lambda n=f"{clone_name}.qcow2": storage.delete_volume(pool, n))
            hostname = _hostname_or_none(clone_name)
            if hostname is None:
                reporter.info(f"{clone_name} is not a valid host name; the clone keeps the golden image's")
            disks.append(clones.CloneDisk(Path(vol.path()), clone_name, hostname, steps))
            reporter.info(f"{clone_name}: overlay {pool_name}/{clone_name}.qcow2 on {volume}")
        needs_network = any(REGISTRY[s.op].needs_network for _, steps in plans for s in steps)
        clones.personalize(disks, accel, reporter, network=needs_network)
        after = files.file_digest(golden_path)
        if after != before:
            raise BuildError(f"the golden volume {pool_name}/{volume} changed while cloning ({before} -> {after})")
        reporter.info(f"golden volume {pool_name}/{volume} unchanged: {before}")
    return [f"{n}.qcow2" for n in names]


def _hostname_or_none(name: str) -> str | None:
    try:
        return args.hostname(name)
    except ValueError:
        return None
