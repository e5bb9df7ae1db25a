"""Where a build publishes besides libvirt pools and its image file: registries (KubeVirt
containerDisks), virt-builder repositories, and other hypervisors' formats.

`preflight` checks them before any work; `publish` writes them once the image is finished, each
complete before it is visible, and registers with the build's Undo what a later failure removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imagebuilder import files, ocilayout, registry, versions
from imagebuilder.errors import BuildError
from imagebuilder.ocilayout import Descriptor
from imagebuilder.progress import Reporter
from imagebuilder.publish import containerdisk, formats, ova, repo
from imagebuilder.recipe import Domain, Recipe
from imagebuilder.recipe.model import OciOutput
from imagebuilder.run import require
from imagebuilder.undo import Undo

# the media types a build's records are attached under: IANA's for SPDX and CycloneDX JSON, and the
# in-toto attestation framework's `application/vnd.in-toto.<predicate>+dsse` for a signed statement
RECORD_TYPES = {"spdx": "application/spdx+json", "cyclonedx": "application/vnd.cyclonedx+json",
                "provenance": "application/vnd.in-toto.provenance+dsse"}


@dataclass
class Elsewhere:
    """The outputs of one build outside libvirt: the recipe's (unless only a file was asked for, -o) and
    the command line's `--push` refs."""

    recipe: Recipe
    use_recipe: bool
    pushes: tuple[str, ...] = ()

    @property
    def oci(self) -> list[OciOutput]:
        own = list(self.recipe.output.oci) if self.use_recipe else []
        return own + [OciOutput(ref) for ref in self.pushes]

    @property
    def files(self) -> list:
        return list(self.recipe.output.files) if self.use_recipe else []

    @property
    def repos(self) -> list:
        return list(self.recipe.output.repos) if self.use_recipe else []

    def requested(self) -> list[str]:
        """Names of these outputs, for telling whether an earlier build was asked for the same ones."""
        return [f"oci {o.ref}" for o in self.oci] + [f"repo {r.path} {r.name}" for r in self.repos] + \
            [f"file {f.path} {f.format}" for f in self.files]

    def preflight(self, force: bool) -> None:
        """Before any work: the tools are there, and no output file is in the way (unless --force)."""
        if self.oci:
            require("skopeo")
        if self.repos:
            require("xz")
        for item in self.files:
            if item.path.exists() and not force:
                raise BuildError(f"output file {item.path} already exists (use --force to replace it)")

    def publish(self, image: Path, fmt: str, digest: str, facts: dict[str, str], earlier: list[dict[str, Any]],
                force: bool, undo: Undo, reporter: Reporter) -> list[dict[str, Any]]:
        """Write every output from the finished image; returns their manifest records."""
        records = [self._file(image, fmt, item.path, item.format, facts, force, undo, reporter)
                   for item in self.files]
        osinfo = (self.recipe.domain.osinfo if self.recipe.domain else None) or facts.get("osinfo")
        records += [repo.publish(item, image, fmt, facts, osinfo, undo.created, reporter) for item in self.repos]
        number = versions.next_number([r for r in earlier if r.get("type") == "oci"])
        when = datetime.now(timezone.utc)
        for item in self.oci:
            records.append(self._push(image, fmt, digest, item, when, number, undo, reporter))
        return records

    def _file(self, image: Path, fmt: str, dest: Path, target: str, facts: dict[str, str], force: bool, undo: Undo,
              reporter: Reporter) -> dict[str, Any]:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.part")
        undo.temporary(f"temporary file {partial}", lambda: partial.unlink(missing_ok=True))
        partial.unlink(missing_ok=True)
        if target == "ova":
            spec = self.recipe.domain or Domain(name=self.recipe.name)
            ova.write(image, fmt, partial, self.recipe.name, spec, facts, reporter)
        else:
            formats.convert(image, fmt, partial, target, reporter)
        try:
            files.place(partial, dest, replace=force)
        except FileExistsError:
            raise BuildError(f"output file {dest} appeared while this build ran; it is left alone "
                             "(use --force to replace it)") from None
        undo.created(f"output file {dest}", lambda: dest.unlink(missing_ok=True))
        reporter.info(f"{target} file: {dest}")
        return {"type": "file", "path": str(dest), "format": target, "digest": files.file_digest(dest)}

    def _push(self, image: Path, fmt: str, digest: str, item: OciOutput, when: datetime, number: int, undo: Undo,
              reporter: Reporter) -> dict[str, Any]:
        ref = versions.render(item.ref, when, digest, number) if versions.is_template(item.ref) else item.ref
        reporter.info(f"pushing the containerDisk {ref} ({item.compression} layer)")
        annotations = {"org.opencontainers.image.created": when.isoformat(timespec="seconds"),
                       "org.opencontainers.image.title": self.recipe.name,
                       "org.imagebuilder.disk.digest": digest,
                       "org.imagebuilder.recipe.digest": f"sha256:{self.recipe.digest}"}
        pushed = containerdisk.push(image, f"{self.recipe.name}.{fmt}", ref, item.compression, annotations,
                                    image.parent)
        repository = registry.parse_reference(ref).repo
        undo.created(f"image {ref}", lambda: registry.delete(f"{repository}@{pushed.digest}"))
        reporter.info(f"pushed {ref} ({pushed.digest})")
        return {"type": "oci", "ref": ref, "digest": pushed.digest, "size": pushed.size, "n": number,
                "pinned": f"{repository}@{pushed.digest}"}

    @staticmethod
    def attach_records(outputs: list[dict[str, Any]], written: dict[str, Any], scratch: Path, undo: Undo,
                       reporter: Reporter) -> None:
        """Attach the build's records (SBOMs, signed provenance) to every image it pushed, as OCI referrers;
        each output's record lists the referrers' digests."""
        files = [containerdisk.Attachment(Path(written[kind]["path"]), media_type)
                 for kind, media_type in RECORD_TYPES.items() if kind in written]
        for output in outputs:
            if output["type"] != "oci" or not files:
                continue
            repository = registry.parse_reference(output["ref"]).repo
            subject = Descriptor(ocilayout.MANIFEST, output["digest"], output["size"])
            output["referrers"] = containerdisk.attach(repository, subject, files, scratch)
            for digest in output["referrers"]:
                undo.created(f"referrer {repository}@{digest}",
                             lambda d=digest: registry.delete(f"{repository}@{d}"))  # type: ignore[misc]
            reporter.info(f"attached {', '.join(f.path.name for f in files)} to {output['ref']} as referrers")


def is_current(output: dict[str, Any]) -> bool:
    """Whether the registry still has the pushed image under its tag (for the up-to-date check)."""
    try:
        _, digest = registry.manifest(output["ref"])
    except registry.RegistryError:
        return False
    return digest == output["digest"]
