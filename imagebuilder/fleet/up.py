"""`up`: make a recipe's machines exist and run. Missing machines get an overlay of the golden volume,
their data disks, a cloud-init seed and a domain; existing ones are started, their seeds kept up to
date and their drift from the recipe reported; a failure removes what the run made."""

from __future__ import annotations

import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from imagebuilder import accel as accelerator
from imagebuilder import arches
from imagebuilder import cloudinit
from imagebuilder.deploy import watchdog
from imagebuilder.deploy.spec import serial_log_path
from imagebuilder.errors import BuildError
from imagebuilder.fleet.common import ROLE, golden_label, manifest_osinfo, ours, require_fleet, undoing
from imagebuilder.fleet.drift import drift
from imagebuilder.guest import clones
from imagebuilder.hardware import generate_mac
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Machine, Recipe
from imagebuilder.undo import Undo
from imagebuilder.units import format_size
from imagebuilder.virt import capabilities, clone as virt_clone, connection, domain, network, storage, wait
from imagebuilder.virt.domainxml import DiskSpec, DomainSpec, NicSpec, domain_xml, validate_xml


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


def up(recipe: Recipe, options: FleetOptions, reporter: Reporter) -> UpResult:
    """Make the machines of the recipe exist and run: build the golden image if its volume is missing,
    create missing machines, start stopped ones, leave the others alone and report how they differ
    from the recipe. A failure removes what this run created."""
    require_fleet(recipe)
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
    with connection.connect(out.uri) as conn, undoing(reporter) as undo:
        _Up(conn, recipe, accel, options, reporter, undo, result).run()
    return result


class _Up:
    def __init__(self, conn: libvirt.virConnect, recipe: Recipe, accel: str, options: FleetOptions,
                 reporter: Reporter, undo: Undo, result: UpResult):
        self.conn, self.recipe, self.accel, self.options = conn, recipe, accel, options
        self.reporter, self.undo, self.result = reporter, undo, result
        self.pool, _ = storage.ensure_pool(conn, recipe.output.pool)
        self.pool.refresh(0)
        self.golden = self.pool.storageVolLookupByName(recipe.output.volume)
        self.label = golden_label(recipe)
        self.os_id = manifest_osinfo(recipe)

    def run(self) -> None:
        missing: list[Machine] = []
        existing: list[tuple[Machine, libvirt.virDomain, dict[str, str]]] = []
        for machine in self.recipe.machines:
            dom = domain.find(self.conn, machine.name)
            if dom is None:
                missing.append(machine)
                continue
            found = ours(dom, self.label, machine.name)
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
            accel=arches.domain_accel(self.recipe.base.arch, accelerator.effective(self.accel)),
            arch=self.recipe.base.arch, cpu=d.cpu, machine=d.machine, firmware=d.firmware, graphics=d.graphics, listen=d.listen, video=d.video,
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
            arch = arches.lookup(self.recipe.base.arch)
            self.result.launches += clones.personalize(disks, self.accel, reporter,
                                                       emulate=arch if arches.foreign(arch.name) else None)
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
