"""The libvirt side of a build: every host the image goes to ([output] and [[output.targets]]),
checked before any work, published to concurrently, and the domain defined where asked.

Everything made here is registered with the build's Undo, so a failure removes exactly what this
run created: volumes, data disks, domains (by UUID) and the `default` network.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait as wait_futures
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder import accel as accelerator, arches, versions
from imagebuilder.deploy import retention, watchdog
from imagebuilder.deploy.spec import domain_spec, serial_log_path
from imagebuilder.errors import BuildError, ImageBuilderError
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.undo import Undo
from imagebuilder.units import format_size
from imagebuilder.virt import capabilities, clone, connection, domain, network, storage, wait
from imagebuilder.virt.domainxml import DomainSpec, domain_xml, validate_xml


@dataclass
class Host:
    """One libvirt destination: the [output] one (`main`) or a [[output.targets]] entry."""

    uri: str
    pool_name: str
    volume: str
    define: bool  # define the domain here
    main: bool  # the domain is started and awaited only on the main host
    conn: Any = None
    pool: Any = None
    local_dir: Path | None = None  # set when the image can be written straight into the pool
    accel: str = "tcg"
    disk_formats: dict[tuple[str, str], str] = field(default_factory=dict)
    template: str | None = None  # the volume name template; `volume` is its version's name once chosen
    alias: str | None = None  # main host, versioned names: the stable name the domain's disk uses

    @property
    def label(self) -> str:
        """How messages name this destination."""
        return f"{self.pool_name}/{self.volume} at {self.uri}"

    @property
    def disk_volume(self) -> str:
        """The volume the domain's disk names: the alias of versioned names, else the volume."""
        return self.alias or self.volume


# preflight


def plan_hosts(recipe: Recipe, libvirt_output: bool, targets: bool) -> list[Host]:
    """The destinations of the recipe, the main one first."""
    out = recipe.output
    hosts = [Host(out.uri, out.pool, out.volume, define=recipe.domain is not None, main=True,
                  template=_template(out.volume), alias=out.alias)] if libvirt_output else []
    if targets:
        hosts += [Host(t.uri, t.pool, t.volume, define=t.domain, main=False, template=_template(t.volume))
                  for t in out.targets]
    return hosts


def _template(volume: str) -> str | None:
    return volume if versions.is_template(volume) else None


def preflight(hosts: list[Host], recipe: Recipe, accel: str, force: bool, resources: ExitStack,
              reporter: Reporter) -> None:
    """Connect to every host and check it before any work: pool, volume names, domain, networks,
    data disks and what the hypervisor offers. Nothing is changed, except that a missing
    `default` pool is created."""
    for host in hosts:
        host.conn = resources.enter_context(connection.connect(host.uri))
        host.pool, created = storage.ensure_pool(host.conn, host.pool_name)
        if created:
            reporter.info(f"created the storage pool '{host.pool_name}' at {host.uri}")
        local = connection.is_local(host.conn)
        if host.main:
            host.local_dir = storage.local_target_dir(host.conn, host.pool)
        if host.alias:  # a symlink made by an earlier build is simply pointed at the new version
            retention.check_alias(host.local_dir, host.alias, f"{host.pool_name} at {host.uri}", force)
            if not (host.local_dir / host.alias).is_symlink():
                _check_replaceable(host, host.alias, force)
        elif not host.template:
            _check_replaceable(host, host.volume, force)
        host.accel = _accel(host, arches.domain_accel(recipe.base.arch, accel) if local
                            else capabilities.host_accel(host.conn, recipe.base.arch))
        if host.define and recipe.domain:
            _check_domain_host(host, recipe, force, reporter)


def _accel(host: Host, offered: str) -> str:
    """The accelerator for domains on host: what it offers, unless KVM was found to hang there."""
    if connection.is_local(host.conn):
        return accelerator.effective(offered)
    return "tcg" if accelerator.remote_demoted(host.uri) else offered


def _check_replaceable(host: Host, name: str, force: bool) -> None:
    """A volume this build would replace: only with --force, and never a golden image under clones
    (replacing it would change every clone's disk under it)."""
    storage.check_volume_name(name)
    if not storage.volume_exists(host.pool, name):
        return
    if not force:
        raise BuildError(f"volume {name} already exists in pool {host.pool_name} at {host.uri} "
                         "(use --force to replace it)")
    users = clone.users(host.conn, host.pool.storageVolLookupByName(name))
    if users:
        raise BuildError(f"volume {name} in pool {host.pool_name} at {host.uri} is the backing store "
                         f"of {', '.join(users)}; not even --force replaces it (destroy those clones, or "
                         "build into another volume name)")


def _check_domain_host(host: Host, recipe: Recipe, force: bool, reporter: Reporter) -> None:
    spec = recipe.domain
    if domain.domain_exists(host.conn, spec.name) and not force:
        raise BuildError(f"domain {spec.name} already exists at {host.uri} (use --force to replace it)")
    for name in spec.networks:
        if host.main:
            network.check_network(host.conn, name)
        elif not network.network_exists(host.conn, name):
            reporter.info(f"warning: network {name} does not exist at {host.uri}; the domain defined "
                          "there will not start until it does")
    for data in spec.disks:
        pool_name = data.pool or host.pool_name
        pool = host.pool if pool_name == host.pool_name else storage.ensure_pool(host.conn, pool_name)[0]
        exists = storage.volume_exists(pool, data.volume)
        if data.size is None and not exists:
            raise BuildError(f"data disk volume {data.volume} does not exist in pool {pool_name} at {host.uri}")
        if data.size is None:
            host.disk_formats[(pool_name, data.volume)] = storage.volume_format(pool, data.volume)
        elif exists and not force:
            raise BuildError(f"volume {data.volume} (a new data disk) already exists in pool {pool_name} at "
                             f"{host.uri} (use --force to replace it)")
        if data.size is not None and (pool_name, data.volume) == (host.pool_name, host.disk_volume):
            raise BuildError(f"data disk volume {data.volume} is the image volume itself")
    capabilities.check(host.conn, domain_spec(recipe, host.pool_name, host.disk_volume, host.accel,
                                              disk_formats=host.disk_formats))


# publish


def upload_all(hosts: list[Host], work: Path, fmt: str, digest: str, force: bool, undo: Undo,
               reporter: Reporter) -> list[dict[str, Any]]:
    """Send the image to every host that cannot take it zero-copy, all at once (a thread and a
    connection each). If one fails the others are cancelled; every volume made is removed."""
    uploads = [host for host in hosts if host.local_dir is None]
    if not uploads:
        return []
    allocated = work.stat().st_blocks * 512
    cancel = threading.Event()

    def one(host: Host) -> dict[str, Any]:
        transfer = reporter.transfer(f"upload to {host.label}", allocated)
        started = time.monotonic()
        vol = storage.upload_file(host.conn, host.pool, host.volume, work, fmt, force and not host.template,
                                  transfer.advance, cancel)
        transfer.finish()
        return {"type": "volume", "uri": host.uri, "pool": host.pool_name, "volume": host.volume,
                "path": vol.path(), "format": fmt, "digest": digest, "method": "sparse upload",
                "bytes_sent": transfer.done, "seconds": round(time.monotonic() - started, 3)}

    outputs: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=len(uploads), thread_name_prefix="upload") as executor:
        futures: dict[Future, Host] = {executor.submit(one, host): host for host in uploads}
        try:
            done, _ = wait_futures(futures, return_when=FIRST_EXCEPTION)
            if any(future.exception() for future in done):
                cancel.set()
            wait_futures(futures)
        finally:
            cancel.set()  # on Ctrl-C as well: stop the rest, then record what did finish
            wait_futures(futures)
            for future, host in futures.items():
                if future.exception() is None:
                    _created_volume(host, undo)
                    outputs.append(future.result())
                    reporter.info(f"volume: {host.label} ({format_size(future.result()['bytes_sent'])} sent in "
                                  f"{future.result()['seconds']:.1f}s)")
    errors = [(host, future.exception()) for future, host in futures.items() if future.exception()]
    real = [(host, exc) for host, exc in errors if not isinstance(exc, storage.Cancelled)]
    for host, exc in real[1:]:
        reporter.info(f"upload to {host.label} failed as well: {exc}")
    if real:
        host, exc = real[0]
        if isinstance(exc, ImageBuilderError):
            raise type(exc)(f"{host.uri}: {exc.message}", hint=exc.hint) from None
        raise exc
    return outputs


def _created_volume(host: Host, undo: Undo) -> None:
    undo.created(f"volume {host.label}", lambda: storage.delete_volume(host.pool, host.volume))


def adopt_main(hosts: list[Host], work: Path, fmt: str, digest: str, force: bool, undo: Undo,
               reporter: Reporter, held: str | None = None) -> list[dict[str, Any]]:
    """Make the image, already in the main host's pool directory, its volume by a rename; then
    point the alias of a versioned name at it, unless the alias is held at the version `held`."""
    main = next((host for host in hosts if host.main and host.local_dir is not None), None)
    if main is None:
        return []
    vol = storage.adopt_file(main.pool, work, main.volume, force and not main.template)  # a version: never over one
    _created_volume(main, undo)
    reporter.info(f"volume: {main.label} ({vol.path()}, written in place)")
    output = {"type": "volume", "uri": main.uri, "pool": main.pool_name, "volume": main.volume,
              "path": vol.path(), "format": fmt, "digest": digest, "method": "in place"}
    if main.alias and held:
        reporter.info(f"alias: {main.pool_name}/{main.alias} stays held at {held} (`imagebuilder versions "
                      "--use newest` releases it)")
        output.update(alias=main.alias, alias_names=held)
    elif main.alias:
        retention.point_alias(main.pool, main.local_dir, main.alias, main.volume, undo)
        reporter.info(f"alias: {main.pool_name}/{main.alias} -> {main.volume}")
        output["alias"] = main.alias
    return [output]


# deploy


def deploy(hosts: list[Host], recipe: Recipe, facts: dict[str, str], force: bool, undo: Undo,
           reporter: Reporter) -> dict[str, Any]:
    """Define the domain on every host that asks for it, then start it on the main host and wait."""
    spec = recipe.domain
    defined = []
    for host in hosts:
        if host.define:
            host.accel = _accel(host, host.accel)  # a hang under KVM may have been found since the preflight
            with reporter.phase("define"):
                defined.append(_define(host, recipe, facts, force, undo, reporter))
    main = next((entry for entry in defined if entry["host"].main), None)
    result: dict[str, Any] = {"name": spec.name, "started": False, "wait": spec.wait}
    if main:
        host, dom, dspec = main["host"], main["dom"], main["spec"]
        if spec.start:
            with reporter.phase("start"):
                dom, host.accel = watchdog.start(host.conn, dom, reporter.info)
            reporter.info(f"started domain {spec.name} at {host.uri} ({host.accel})")
            result["started"] = True
            if spec.wait != "none":
                what = {"agent": "the guest agent", "ssh": "SSH",
                        "serial": f"{spec.wait_text!r} on the serial console"}[spec.wait]
                reporter.info(f"waiting up to {spec.timeout}s for {what}")
                local_log = dspec.serial_log if connection.is_local(host.conn) else None
                with reporter.phase("boot wait"):
                    seen = wait.wait_ready(host.conn, dom, spec.wait, spec.wait_text, spec.timeout, local_log)
                reporter.info(f"{seen}: the domain is ready")
        result.update(_describe(host, dspec))
    result["targets"] = [_describe(entry["host"], entry["spec"]) for entry in defined if not entry["host"].main]
    return result


def _describe(host: Host, dspec: DomainSpec) -> dict[str, Any]:
    return {"uri": host.uri, "uuid": dspec.uuid, "accelerator": host.accel, "machine": dspec.machine,
            "macs": [nic.mac for nic in dspec.nics], "osinfo": dspec.osinfo_id, "serial_log": dspec.serial_log}


def _define(host: Host, recipe: Recipe, facts: dict[str, str], force: bool, undo: Undo,
            reporter: Reporter) -> dict[str, Any]:
    spec, conn = recipe.domain, host.conn
    if host.main:
        for name in spec.networks:
            if network.ensure_network(conn, name):
                reporter.info(f"created and started the network '{name}' at {host.uri}")
                undo.created(f"network {name} at {host.uri}", lambda n=name: network.remove_network(conn, n))
    for data in spec.disks:
        if data.size is not None:
            _create_data_disk(host, data.pool or host.pool_name, data.volume, data.size, data.format or "qcow2",
                              force, undo, reporter)
    # Without --force a domain of this name that appeared since the pre-flight check stays: our
    # XML carries a fresh UUID, so libvirt refuses to define over it.
    if force and domain.domain_exists(conn, spec.name):
        domain.remove_domain(conn, spec.name)
        reporter.info(f"removed the existing domain {spec.name} at {host.uri} (--force)")
    dspec = domain_spec(recipe, host.pool_name, host.disk_volume, host.accel, facts, serial_log_path(spec.name),
                        host.disk_formats, reporter if host.main else None)
    xml = domain_xml(dspec)
    validate_xml(xml)
    dom = domain.define(conn, xml)
    undo.created(f"domain {spec.name} at {host.uri}", lambda: domain.remove_by_uuid(conn, dspec.uuid))
    reporter.info(f"defined domain {spec.name} at {host.uri}" + ("" if host.main else " (not started there)"))
    return {"host": host, "dom": dom, "spec": dspec}


def _create_data_disk(host: Host, pool_name: str, volume: str, size: int, fmt: str, force: bool, undo: Undo,
                      reporter: Reporter) -> None:
    pool = host.pool if pool_name == host.pool_name else storage.ensure_pool(host.conn, pool_name)[0]
    if force:
        storage.delete_volume(pool, volume)
    elif storage.volume_exists(pool, volume):
        raise BuildError(f"volume {volume} (a new data disk) appeared in pool {pool_name} at {host.uri} "
                         "since the pre-flight check; it is left alone")
    storage.create_volume(pool, volume, size, fmt)
    undo.created(f"data disk {pool_name}/{volume} at {host.uri}", lambda: storage.delete_volume(pool, volume))
    reporter.info(f"created data disk {pool_name}/{volume} ({format_size(size)}) at {host.uri}")
