"""The build, as a straight list of stages: preflight, fetch, prepare, customize, publish, deploy.

This module owns clean-up: whatever a failed or interrupted build created is removed.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder import accel as accelerator
from imagebuilder import disk, manifest
from imagebuilder.cache import Cache
from imagebuilder.errors import BuildError
from imagebuilder.guest.customize import customize
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.sources import bootstrap, local, url
from imagebuilder.sources.base import BaseImage
from imagebuilder.undo import Undo
from imagebuilder.virt import connection, domain, storage, wait

BOOTSTRAP_DEFAULT_SIZE = 4 << 30


@dataclass
class BuildOptions:
    """Command-line choices that are not part of the recipe."""

    accel: str | None = None
    cache_dir: Path | None = None
    force: bool = False
    output_file: Path | None = None
    keep_on_failure: bool = False
    manifest_path: Path | None = None


@dataclass
class BuildResult:
    """What a finished build made."""

    manifest_path: Path
    manifest: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)


def build(recipe: Recipe, options: BuildOptions, reporter: Reporter) -> BuildResult:
    """Run every stage of recipe; on any failure remove what this run created, then re-raise."""
    undo = Undo(reporter)
    with ExitStack() as resources:
        try:
            result = _Build(recipe, options, reporter, undo, resources).run()
        except BaseException:
            undo.finish(failed=True, keep_created=options.keep_on_failure)
            raise
        undo.finish(failed=False)
    return result


class _Build:
    def __init__(self, recipe: Recipe, options: BuildOptions, reporter: Reporter, undo: Undo,
                 resources: ExitStack):
        self.recipe, self.options, self.reporter, self.undo = recipe, options, reporter, undo
        self.resources = resources
        self.file_out = options.output_file or recipe.output.path
        self.to_libvirt = recipe.output.libvirt and options.output_file is None
        self.conn: Any = None
        self.pool: Any = None
        self.pool_dir: Path | None = None
        self.outputs: list[dict[str, Any]] = []

    def run(self) -> BuildResult:
        accel = accelerator.choose(self.options.accel)
        self.reporter.info(f"accelerator: {accel}")
        with self.reporter.stage("preflight"):
            self.preflight()
        with self.reporter.stage("fetch"):
            base = self.fetch()
        with self.reporter.stage("prepare"):
            work, grown = self.prepare(base)
        with self.reporter.stage("customize"):
            facts = customize(work, self.recipe.disk.format, accel, self.recipe, base, grown, self.reporter)
        with self.reporter.stage("publish"):
            self.publish(work)
        deployed = None
        if self.recipe.domain and self.to_libvirt:
            with self.reporter.stage("deploy"):
                deployed = self.deploy(accel)
        document = manifest.make(self.recipe, base, accel, facts, self.outputs, deployed, self.reporter.timings)
        path = self.options.manifest_path or manifest.default_path(
            self.recipe, self.file_out, self.recipe.output.pool if self.to_libvirt else None)
        manifest.write(document, path)
        self.reporter.info(f"manifest: {path}")
        return BuildResult(path, document, self.outputs)

    def preflight(self) -> None:
        """Check every output before any work: the file, the pool, the volume and the domain name."""
        if self.file_out and self.file_out.exists() and not self.options.force:
            raise BuildError(f"output file {self.file_out} already exists (use --force to replace it)")
        if not self.to_libvirt:
            return
        out = self.recipe.output
        self.conn = self.resources.enter_context(connection.connect(out.uri))
        self.pool, created = storage.ensure_pool(self.conn, out.pool)
        if created:
            self.reporter.info(f"created the storage pool '{out.pool}'")
        if storage.volume_exists(self.pool, out.volume) and not self.options.force:
            raise BuildError(f"volume {out.volume} already exists in pool {out.pool} (use --force to replace it)")
        spec = self.recipe.domain
        if spec and domain.domain_exists(self.conn, spec.name) and not self.options.force:
            raise BuildError(f"domain {spec.name} already exists (use --force to replace it)")
        self.pool_dir = storage.local_target_dir(self.conn, self.pool)

    def fetch(self) -> BaseImage:
        """The base image, from the cache when possible."""
        base, cache = self.recipe.base, Cache(self.options.cache_dir)
        if base.kind == "url":
            check = url.Verification(base.checksum, base.checksum_url, base.signature_url, base.keyring)
            return url.fetch(base.url, check, cache, self.reporter)
        if base.kind == "path":
            return local.fetch(base.path)
        return bootstrap.fetch(base.bootstrap, cache, self.reporter)

    def prepare(self, base: BaseImage) -> tuple[Path, bool]:
        """Convert the base into the output format at its working place and grow it; returns (path, grown)."""
        fmt, size = self.recipe.disk.format, self.recipe.disk.size
        if self.to_libvirt and self.pool_dir:
            where = self.pool_dir
        elif self.file_out:
            where = self.file_out.parent
        else:
            where = Cache(self.options.cache_dir).root / "work"
        where.mkdir(parents=True, exist_ok=True)
        work = where / f".{self.recipe.name}.{os.getpid()}.imagebuilder-part"
        self.undo.temporary(f"temporary image {work}", lambda: work.unlink(missing_ok=True))
        if base.kind == "rootfs":
            disk.create(work, fmt, size or BOOTSTRAP_DEFAULT_SIZE)
            return work, False
        transfer = self.reporter.transfer(f"convert to {fmt}", base.virtual_size)
        disk.convert(base.path, base.format, work, fmt, transfer)
        grown = bool(size) and disk.grow(work, fmt, size)
        return work, grown

    def publish(self, work: Path) -> None:
        """Make the image visible under its final names: a file, a pool volume, or both."""
        fmt = self.recipe.disk.format
        digest = manifest.file_digest(work)
        if self.file_out:
            self.file_out.parent.mkdir(parents=True, exist_ok=True)
            if self.to_libvirt:
                partial = self.file_out.with_name(f".{self.file_out.name}.part")
                self.undo.temporary(f"temporary file {partial}", lambda: partial.unlink(missing_ok=True))
                shutil.copyfile(work, partial)
                os.replace(partial, self.file_out)
            else:
                os.replace(work, self.file_out)
            self.undo.created(f"output file {self.file_out}", lambda: self.file_out.unlink(missing_ok=True))
            self.outputs.append({"type": "file", "path": str(self.file_out), "format": fmt, "digest": digest})
            self.reporter.info(f"image file: {self.file_out}")
        if self.to_libvirt:
            self.publish_volume(work, digest)

    def publish_volume(self, work: Path, digest: str) -> None:
        out, fmt = self.recipe.output, self.recipe.disk.format
        if self.pool_dir:
            vol = storage.adopt_file(self.pool, work, out.volume, self.options.force)
        else:
            transfer = self.reporter.transfer(f"upload {out.volume}", work.stat().st_size)
            vol = storage.upload_file(self.conn, self.pool, out.volume, work, fmt, self.options.force, transfer)
        self.undo.created(f"volume {out.volume} in pool {out.pool}",
                          lambda: storage.delete_volume(self.pool, out.volume))
        self.outputs.append({"type": "volume", "uri": out.uri, "pool": out.pool, "volume": out.volume,
                             "path": vol.path(), "format": fmt, "digest": digest})
        self.reporter.info(f"volume: {out.pool}/{out.volume} ({vol.path()})")

    def deploy(self, accel: str) -> dict[str, Any]:
        """Define the domain, start it and wait until it is ready."""
        spec, out = self.recipe.domain, self.recipe.output
        if spec.network and domain.ensure_network(self.conn, spec.network):
            self.reporter.info(f"created and started the network '{spec.network}'")
            self.undo.created(f"network {spec.network}", lambda: domain.remove_network(self.conn, spec.network))
        if domain.domain_exists(self.conn, spec.name):
            domain.remove_domain(self.conn, spec.name)
            self.reporter.info(f"removed the existing domain {spec.name} (--force)")
        serial_log = f"/var/log/libvirt/qemu/{spec.name}-serial.log" if connection.is_local(self.conn) else None
        xml = domain.domain_xml(domain.DomainSpec(
            name=spec.name, memory_bytes=spec.memory, vcpus=spec.vcpus, pool=out.pool, volume=out.volume,
            disk_format=self.recipe.disk.format, network=spec.network, accel=accel, graphics=spec.graphics,
            serial_log=serial_log))
        domain.validate_xml(xml)
        dom = domain.define(self.conn, xml)
        self.undo.created(f"domain {spec.name}", lambda: domain.remove_domain(self.conn, spec.name))
        self.reporter.info(f"defined domain {spec.name}")
        if spec.start:
            domain.start(dom)
            self.reporter.info(f"started domain {spec.name}")
            if spec.wait == "agent":
                self.reporter.info(f"waiting up to {spec.timeout}s for the guest agent")
                wait.wait_for_agent(dom, spec.timeout, serial_log)
                self.reporter.info("guest agent answered: the domain is ready")
        return {"name": spec.name, "uri": out.uri, "started": spec.start, "wait": spec.wait,
                "accelerator": accel, "serial_log": serial_log}
