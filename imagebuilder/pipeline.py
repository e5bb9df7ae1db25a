"""The build, as a straight list of stages: preflight, fetch, prepare, customize, publish, deploy.

This module owns clean-up: whatever a failed or interrupted build created is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from imagebuilder import accel as accelerator
from imagebuilder import disk, files, manifest, rebuild, sharedcache, stages, versions
from imagebuilder.attest import records
from imagebuilder.cache import Cache
from imagebuilder.deploy import hosts as libvirt_hosts, retention
from imagebuilder.errors import BuildError, VirtError
from imagebuilder.guest.customize import customize
from imagebuilder.guest.pkgcache import PackageCache
from imagebuilder.manifest import Manifest
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe, Sign
from imagebuilder.run import run
from imagebuilder.publish import Elsewhere, is_current
from imagebuilder.sources import kinds
from imagebuilder.sources.base import BaseImage
from imagebuilder.undo import Undo
from imagebuilder.virt import connection, domain, storage

BOOTSTRAP_DEFAULT_SIZE = 4 << 30
STEP_OFFSET = 1  # stages are base, prepare, then one per step: step k (from 1) is stage k + 1


@dataclass
class BuildOptions:
    """Command-line choices that are not part of the recipe."""

    accel: str | None = None
    cache_dir: Path | None = None
    force: bool = False
    output_file: Path | None = None
    keep_on_failure: bool = False
    manifest_path: Path | None = None
    no_cache: bool = False
    sign: Sign | None = None  # --sign-key: instead of the recipe's [sign]
    push: tuple[str, ...] = ()                 # --push: containerDisk refs, besides [[output.oci]]
    cache_from: tuple[str, ...] = ()           # --cache-from: registries shared stage results come from
    cache_to: str | None = None                # --cache-to: the registry they go to
    cache_secret_file: Path | None = None      # the stage-key secret the sharing machines hold in common


@dataclass
class BuildResult:
    """What a finished build made."""

    manifest_path: Path
    manifest: Manifest
    outputs: list[dict[str, Any]] = field(default_factory=list)
    up_to_date: bool = False


def build(recipe: Recipe, options: BuildOptions, reporter: Reporter) -> BuildResult:
    """Run every stage of recipe; on any failure remove what this run created, then re-raise."""
    undo = Undo(reporter)
    with ExitStack() as resources:
        try:
            job = _Build(recipe, options, reporter, undo, resources)
            resources.enter_context(job.lock_outputs())
            result = job.run()
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
        self.hosts = libvirt_hosts.plan_hosts(recipe, self.to_libvirt, targets=options.output_file is None)
        self.pool_dir: Path | None = None
        self.outputs: list[dict[str, Any]] = []
        self.cache = Cache(options.cache_dir)
        self.shared = sharedcache.open_shared(recipe, options, self.cache, reporter)
        self.secret = self.shared.secret if self.shared else stages.secret_for(self.cache.root)
        self.elsewhere = Elsewhere(recipe, use_recipe=options.output_file is None, pushes=options.push)
        self.force = options.force
        self.stages: list[stages.Stage] = []
        self.versions: list[dict[str, Any]] = []  # every version of a versioned volume name, oldest first
        self.held: int | None = None  # the version `imagebuilder versions --use` holds the alias at
        self.sign = options.sign or recipe.sign
        self.contents: records.Contents | None = None  # the finished image's OS and packages (for the SBOM)
        self.image_digest = ""  # the finished image's, once it is published
        self.started = datetime.now(timezone.utc)
        self.packages = None if options.no_cache else PackageCache(self.cache)  # apt's downloads across builds

    def run(self) -> BuildResult:
        accel, why = accelerator.decide(self.options.accel)
        self.reporter.info(f"accelerator: {accel} ({why})")
        path = self.manifest_path()
        earlier = manifest.previous(path)
        with self.reporter.stage("check"):
            current = self.current(earlier)
        if current is not None:
            self.reporter.info(f"up to date: the outputs of the build recorded in {path} hold this result")
            return BuildResult(path, current, current.outputs, up_to_date=True)
        if not self.force and self.replaces_own(earlier):
            self.force = True
            self.reporter.info("replacing the outputs of this recipe's earlier build")
        self.versions = list(earlier.versions) if earlier else []
        self.held = earlier.held if earlier else None
        if self.held is not None and self.held_volume() is None:
            self.reporter.info(f"the alias was held at version {self.held}, which is gone: it follows new versions again")
            self.held = None
        with self.reporter.stage("preflight"):
            self.preflight(accel)
            if self.sign is not None:
                records.check_key(self.sign)
        with self.reporter.stage("fetch"):
            base = self.fetch()
        self.stages = stages.plan(self.recipe, base.digest, self.secret)
        with self.reporter.stage("prepare"):
            work, grown, done = self.prepare(base)
        with self.reporter.stage("customize"):
            facts = self.customize(work, accel, base, grown, done)
        if accelerator.effective(accel) != accel:
            accel, why = accelerator.decide(self.options.accel)
        with self.reporter.stage("publish"):
            self.publish(work, facts, earlier.outputs if earlier else [])
        for output in self.outputs:
            output["stamp"] = rebuild.stamp(output["path"]) if output.get("path") else None
        deployed = None
        if self.recipe.domain and any(host.define for host in self.hosts):
            with self.reporter.stage("deploy"):
                deployed = self.deploy(facts)
        if self.recipe.output.keep and self.versions:
            with self.reporter.stage("retention"):
                retention.prune(self.versions, self.recipe.output.keep, self.template_of, self.reporter, self.held)
        document = manifest.make(self.recipe, base, accel, facts, self.outputs, deployed, self.reporter.timings)
        document.accelerator_reason = why
        document.stages = [{"name": s.name, "key": s.key, "own": s.own} for s in self.stages]
        document.requested = self.requested()
        document.versions, document.held = self.versions, self.held
        with self.reporter.phase("records (SBOM, provenance)"):
            document.records = self.write_records(base, accel, path, earlier)
            self.elsewhere.attach_records(self.outputs, document.records, work.parent, self.undo, self.reporter)
        document.shared_cache = self.shared.record() if self.shared else None
        document.phases = self.reporter.phases.records
        document.package_cache = self.packages.record() if self.packages else None
        document.save(path)
        self.reporter.info(f"manifest: {path}")
        return BuildResult(path, document, self.outputs)

    def replaces_own(self, earlier: Manifest | None) -> bool:
        """Whether the outputs in the way are the ones this recipe's earlier build made, untouched since
        (then a rebuild may replace them without --force; anything else still needs --force)."""
        names = ("file", "volumes", "domain", "elsewhere")
        if not earlier or any(earlier.requested.get(k) != self.requested().get(k) for k in names):
            return False
        return all(rebuild.stamp(o["path"]) == o.get("stamp") for o in earlier.outputs
                   if o["type"] == "file")

    def lock_outputs(self) -> AbstractContextManager[None]:
        """One build of the same outputs at a time (two runs of one recipe, a timer and a person):
        the second waits, then finds them up to date or rebuilds them; never a race for a name."""
        return self.cache.lock(self.outputs_key(), on_wait=lambda: self.reporter.info(
            "waiting for another build of the same outputs to finish"))

    def manifest_path(self) -> Path:
        """Where this build's manifest goes: --manifest, else beside the file, else the state directory."""
        return self.options.manifest_path or manifest.default_path(
            self.recipe, self.file_out, self.recipe.output.pool if self.to_libvirt else None)

    def outputs_key(self) -> str:
        """Names every output this build writes: the file, each volume, the domain."""
        return json.dumps({"file": str(self.file_out.resolve()) if self.file_out else None,
                           "volumes": sorted([h.uri, h.pool_name, h.template or h.volume] for h in self.hosts),
                           "domain": [self.recipe.output.uri, self.recipe.domain.name] if self.recipe.domain
                           else None}, sort_keys=True)

    def requested(self) -> dict[str, Any]:
        """The outputs this build is asked for, to tell whether an earlier build made the same ones:
        their names, and a digest of the [domain] settings (a changed domain is defined anew)."""
        spec = self.recipe.domain
        asked = {"file": str(self.file_out) if self.file_out else None,
                 "volumes": [[h.uri, h.pool_name, h.template or h.volume] for h in self.hosts],
                 "domain": spec.name if spec else None,
                 "domain_settings": hashlib.sha256(repr(spec).encode()).hexdigest()[:16] if spec else None}
        if self.elsewhere.requested():  # only then: earlier manifests without it still compare equal
            asked["elsewhere"] = self.elsewhere.requested()
        return asked

    def current(self, earlier: Manifest | None) -> Manifest | None:
        """The earlier manifest, if its outputs already hold what this build would make (no download,
        launch, conversion or upload needed); None when something must be built."""
        if self.options.no_cache or earlier is None:
            return None
        digest = self.base_identity.digest
        if digest is None:
            self.reporter.info("the base must be downloaded to know whether it changed")
            return None
        final = stages.plan(self.recipe, digest, self.secret)[-1].key
        reason = rebuild.why_not_current(earlier, final, self.requested(), self._volume_exists, self._domain_exists,
                                         is_current)
        if reason:
            self.reporter.info(f"will build: {reason}")
            return None
        return earlier

    @staticmethod
    def _volume_exists(output: dict[str, Any]) -> bool:
        """For the up-to-date check: a volume that cannot be checked counts as missing (the build
        runs, and its preflight says what is wrong)."""
        try:
            with connection.connect(output["uri"]) as conn:
                return storage.volume_exists_in(conn, output["pool"], output["volume"])
        except VirtError:
            return False

    @staticmethod
    def _domain_exists(recorded: dict[str, Any]) -> bool:
        with connection.connect(recorded.get("uri")) as conn:
            return domain.domain_exists(conn, recorded["name"])

    def preflight(self, accel: str) -> None:
        """Check every output before any work: the file, and on every libvirt host the pool, the
        volume and domain names, networks, data disks and what the hypervisor offers."""
        if self.file_out and self.file_out.exists() and not self.force:
            raise BuildError(f"output file {self.file_out} already exists (use --force to replace it)")
        libvirt_hosts.preflight(self.hosts, self.recipe, accel, self.force, self.resources, self.reporter)
        self.elsewhere.preflight(self.force)
        self.pool_dir = next((host.local_dir for host in self.hosts if host.main), None)

    @cached_property
    def base_identity(self) -> kinds.Identity:
        """What the base is now, asked once per build: the check and the fetch both start from it."""
        return kinds.lookup(self.recipe.base.kind).identify(self.recipe, self.cache, self.reporter)

    def fetch(self) -> BaseImage:
        """The base image that identifying it found, from the cache when possible."""
        source, known = kinds.lookup(self.recipe.base.kind), self.base_identity
        entry = self.shared and known.digest and source.cache_entry(known.digest)
        stage = stages.plan(self.recipe, known.digest, self.secret)[0] if entry else None
        if entry:
            self.shared.pull(stage, *entry)
        fetched = source.fetch(self.recipe, known, self.cache, self.reporter)
        if entry and self.cache.lookup(*entry):
            self.shared.push(stage, entry[0], self.cache.path(*entry))
        return fetched

    def prepare(self, base: BaseImage) -> tuple[Path, bool, int]:
        """The working image in the output format at its working place: from the latest checkpoint
        in the cache, else from the base (grown to disk.size). Returns (path, grown, steps done)."""
        fmt, size = self.recipe.disk.format, self.recipe.disk.size
        if self.to_libvirt and self.pool_dir:
            where = self.pool_dir
        elif self.file_out:
            where = self.file_out.parent
        else:
            where = self.cache.root / "work"
        where.mkdir(parents=True, exist_ok=True)
        work = where / f".{self.recipe.name}.{os.getpid()}.imagebuilder-part"
        self.undo.temporary(f"temporary image {work}", lambda: work.unlink(missing_ok=True))
        resume = None if self.options.no_cache else rebuild.resume_point(self.stages, self.cache)
        if self.shared and not self.options.no_cache:  # a longer prefix another machine made
            self.shared.pull_checkpoint(self.stages, resume)
            resume = rebuild.resume_point(self.stages, self.cache)
        if resume is not None:
            saved = rebuild.checkpoint(self.cache, self.stages[resume])
            self.reporter.info(f"resuming from the cached result of {self.stages[resume].name}")
            if self.shared:  # made before this machine shared its cache, perhaps: the others may lack it
                self.shared.push(self.stages[resume], "stages", saved)
            with self.reporter.phase("conversion (checkpoint)"):
                disk.convert(saved, "qcow2", work, fmt,
                             self.reporter.transfer(f"convert to {fmt}", disk.probe(saved)[1]))
            return work, False, resume - STEP_OFFSET
        if base.kind == "rootfs":
            disk.create(work, fmt, size or BOOTSTRAP_DEFAULT_SIZE)
            return work, False, 0
        with self.reporter.phase("conversion"):
            disk.convert(base.path, base.format, work, fmt, self.reporter.transfer(f"convert to {fmt}",
                                                                                    base.virtual_size))
        with self.reporter.phase("grow"):
            grown = bool(size) and disk.grow(work, fmt, size)
        return work, grown, 0

    def customize(self, work: Path, accel: str, base: BaseImage, grown: bool, done: int) -> dict[str, str]:
        """Apply the steps not done yet: one appliance launch per stretch between checkpoints, the
        image saved in the cache at each checkpoint (a relaunch costs less than redoing the step)."""
        total, fmt = len(self.recipe.steps), self.recipe.disk.format
        breaks = [] if self.options.no_cache else \
            [k for k in range(done + 1, total) if self.stages[k + STEP_OFFSET].checkpoint]
        facts: dict[str, str] = {}
        for first, end in zip([done] + breaks, breaks + [total]):
            facts = customize(work, fmt, accel, self.recipe, base, grown and first == 0, self.reporter,
                              steps=(first, end), finish=end == total, after=self.read_contents,
                              packages=self.packages)
            if end < total:
                stage = self.stages[end + STEP_OFFSET]
                with self.reporter.phase("checkpoint save"), self.cache.writing("stages") as tmp:
                    disk.convert(work, fmt, tmp, "qcow2")
                    self.cache.commit(tmp, "stages", rebuild.checkpoint(self.cache, stage).name)
                self.reporter.info(f"checkpoint: kept the image after {stage.name} in the cache")
                if self.shared:
                    self.shared.push(stage, "stages", rebuild.checkpoint(self.cache, stage))
        return facts

    def read_contents(self, ctx: Any) -> None:
        """In the customize session, after sysprep: what the SBOM (and the tree digest) need."""
        self.contents = records.read(ctx.g, ctx.os["root"], tree=self.recipe.tree_digest, say=self.reporter.info)

    def write_records(self, base: BaseImage, accel: str, path: Path, earlier: Manifest | None) -> dict[str, Any]:
        """The SBOMs and the signed provenance beside the manifest, and one line of what changed;
        a version's record names them, with the recipe and base it was built from."""
        if self.contents is None:
            return {}
        version = self.versions[-1] if any(host.template for host in self.hosts) else None
        before = records.earlier_packages(earlier)
        written = records.write(self.recipe, base, self.contents, self.outputs, path, accel, self.started,
                                self.sign, version["n"] if version else None, self.reporter, self.image_digest)
        records.summarise_change(before, written, self.reporter)
        if version is not None:
            version.update(records=written, recipe=self.recipe.digest, base=base.digest,
                           steps=[step.describe() for step in self.recipe.steps])
        return written

    def publish(self, work: Path, facts: dict[str, str], earlier: list[dict[str, Any]]) -> None:
        """Make the image visible under its final names: registries, repositories and other formats, uploads
        to the hosts that need them (all at once), the file, then the main volume by a rename in its pool.
        `earlier`: the outputs of the build the manifest recorded before this one."""
        fmt, force = self.recipe.disk.format, self.force
        if self.recipe.disk.compress:
            self.reporter.info("compressing the image (qcow2 compressed clusters)")
            with self.reporter.phase("compression"):
                disk.compress(work)
        with self.reporter.phase("digest"):
            digest = self.image_digest = files.file_digest(work)
        if any(host.template for host in self.hosts):
            when = datetime.now(timezone.utc)
            number = retention.choose_names(self.hosts, self.versions, digest, when)
            self.versions.append(retention.record(self.hosts, number, digest, when))
            self.reporter.info(f"version {number}: {', '.join(h.volume for h in self.hosts if h.template)}")
        with self.reporter.phase("other formats and registries"):
            self.outputs += self.elsewhere.publish(work, fmt, digest, facts, earlier, force, self.undo, self.reporter)
        with self.reporter.phase("uploads"):
            self.outputs += libvirt_hosts.upload_all(self.hosts, work, fmt, digest, force, self.undo, self.reporter)
        if self.file_out:
            self.file_out.parent.mkdir(parents=True, exist_ok=True)
            if self.pool_dir:
                partial = self.file_out.with_name(f".{self.file_out.name}.part")
                self.undo.temporary(f"temporary file {partial}", lambda: partial.unlink(missing_ok=True))
                run(["cp", "--sparse=always", "--reflink=auto", str(work), str(partial)])  # holes stay holes
                self.place_file(partial)
            else:
                self.place_file(work)
            self.undo.created(f"output file {self.file_out}", lambda: self.file_out.unlink(missing_ok=True))
            self.outputs.append({"type": "file", "path": str(self.file_out), "format": fmt, "digest": digest})
            self.reporter.info(f"image file: {self.file_out}")
        self.outputs += libvirt_hosts.adopt_main(self.hosts, work, fmt, digest, force, self.undo, self.reporter,
                                                 held=self.held_volume())

    def held_volume(self) -> str | None:
        """The main volume of the version the alias is held at, if it is held."""
        entry = next((e for e in self.versions if e["n"] == self.held), None) if self.held is not None else None
        out = self.recipe.output
        return versions.volume_of(entry, out.uri, out.pool) if entry else None

    def template_of(self, uri: str, pool: str) -> str | None:
        """The volume name template this recipe now has for pool at uri (None: not an output)."""
        return next((host.template for host in self.hosts if (host.uri, host.pool_name) == (uri, pool)), None)

    def place_file(self, finished: Path) -> None:
        """Rename the finished image to the output file; without --force never over a file that
        appeared since the pre-flight check (another build of the same output)."""
        try:
            files.place(finished, self.file_out, replace=self.force)
        except FileExistsError:
            raise BuildError(f"output file {self.file_out} appeared while this build ran; it is left alone "
                             "(use --force to replace it)") from None

    def deploy(self, facts: dict[str, str]) -> dict[str, Any]:
        """Define the domain where asked, start it on the main host and wait until it is ready."""
        return libvirt_hosts.deploy(self.hosts, self.recipe, facts, self.force, self.undo, self.reporter)


@contextmanager
def outputs_locked(recipe: Recipe, options: BuildOptions, reporter: Reporter) -> Iterator[Path]:
    """Hold the lock a build of the recipe holds on its outputs (no build runs meanwhile); yields
    the path of the recipe's manifest."""
    with ExitStack() as resources:
        job = _Build(recipe, options, reporter, Undo(reporter), resources)
        with job.lock_outputs():
            yield job.manifest_path()


def plan(recipe: Recipe, options: BuildOptions, reporter: Reporter) -> dict[str, Any]:
    """What a build would do now, stage by stage, with the reason for each stage that would run."""
    with ExitStack() as resources:
        job = _Build(recipe, options, reporter, Undo(reporter), resources)
        earlier = manifest.previous(job.manifest_path())
        digest = job.base_identity.digest
        if digest is None:
            return {"up_to_date": False, "reason": "the base must be downloaded to know its digest",
                    "stages": [{"name": "everything", "status": "will run", "why": "base digest unknown"}],
                    **_version_plan(job, earlier)}
        chain = stages.plan(recipe, digest, job.secret)
        reason = None if options.no_cache else rebuild.why_not_current(
            earlier, chain[-1].key, job.requested(), job._volume_exists, job._domain_exists, is_current)
    if reason is None:
        return {"up_to_date": True, "reason": "the outputs hold this result",
                "stages": [{"name": s.name, "status": "up to date", "why": ""} for s in chain]}
    resume = None if options.no_cache else rebuild.resume_point(chain, job.cache)
    before = {entry["name"]: entry for entry in (earlier.stages if earlier else [])}
    rows, changed = [], False
    for index, stage in enumerate(chain):
        old = before.get(stage.name)
        own_changed = old is not None and old.get("own") != stage.own
        if resume is not None and index <= resume:
            status, why = "cached", "checkpoint in the cache" if index == resume else ""
        elif old is None:
            status, why = "will run", "no earlier build" if not before else "new stage"
        elif own_changed:
            status, why = "will run", "its inputs changed" if stage.cacheable else "never cached (random input)"
        elif changed:
            status, why = "will run", "an earlier stage changed"
        else:
            status, why = "will run", "no cached result"
        changed = changed or own_changed or old is None
        rows.append({"name": stage.name, "status": status, "why": why, "key": stage.key[:12]})
    return {"up_to_date": False, "reason": reason, "stages": rows, **_version_plan(job, earlier)}


def _version_plan(job: _Build, earlier: Manifest | None) -> dict[str, Any]:
    """For versioned volume names: the next version's name and what retention would delete."""
    template = next((host.template for host in job.hosts if host.template), None)
    if template is None:
        return {}
    earlier = earlier or Manifest()
    return {"versions": versions.plan(template, job.recipe.output.keep, earlier.versions, datetime.now(timezone.utc),
                                      earlier.held)}
