"""A stage cache shared between machines through a registry (`--cache-from`, `--cache-to`, [cache]).

Each entry is an OCI artifact tagged with its stage key: a checkpoint (the image after a step) or a
base (a downloaded image, a bootstrap tarball). A build with an empty local cache pulls the latest
checkpoint of its chain that a registry has, and resumes after it; a build pushes every checkpoint and
base it made. Stage keys are HMACs under a secret that the sharing machines must hold in common (a
file, `--cache-secret-file` or [cache] secret_file). Each entry carries an HMAC of its key and its
blob's digest under that secret, checked before the entry is used: someone who may push to the
registry but lacks the secret cannot slip in an image. A registry that cannot be reached is reported
and the build goes on locally.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebuilder import ocilayout, registry
from imagebuilder.cache import Cache
from imagebuilder.errors import InputError
from imagebuilder.ocilayout import Descriptor, Layout
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Recipe
from imagebuilder.stages import Stage

ARTIFACT_TYPE = "application/vnd.imagebuilder.stage.v1"
LAYER_TYPES = {"stages": "application/vnd.imagebuilder.checkpoint.v1+qcow2",
               "images": "application/vnd.imagebuilder.base-image.v1",
               "bootstrap": "application/vnd.imagebuilder.bootstrap.v1+tar"}
MAC = "org.imagebuilder.stage.mac"
STAGE = "org.imagebuilder.stage.name"
SECRET_ENV = "IMAGEBUILDER_CACHE_SECRET_FILE"
MIN_SECRET = 16  # bytes


def read_secret(path: Path) -> bytes:
    """The shared stage-key secret in the file at path (at least 16 bytes); InputError otherwise."""
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"cannot read the shared cache secret {path}: {exc.strerror}") from None
    if len(value) < MIN_SECRET:
        raise InputError(f"the shared cache secret {path} is shorter than {MIN_SECRET} bytes",
                         hint="make one with `head -c 32 /dev/urandom | base64 > FILE`")
    return value


@dataclass
class SharedCache:
    """The registries a build reads entries from and the one it writes them to."""

    sources: list[str]
    target: str | None
    secret: bytes
    cache: Cache
    reporter: Reporter
    pulled: list[dict[str, Any]] = field(default_factory=list)
    pushed: list[dict[str, Any]] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)

    def record(self) -> dict[str, Any]:
        """What the manifest says about the shared cache: where, and every entry moved with its size."""
        return {"from": self.sources, "to": self.target, "pulled": self.pulled, "pushed": self.pushed,
                "unreachable": sorted(self.unreachable)}

    def _mac(self, key: str, digest: str) -> str:
        return hmac.new(self.secret, f"{key} {digest}".encode(), hashlib.sha256).hexdigest()

    def _usable(self, repo: str) -> bool:
        return repo not in self.unreachable

    def _lost(self, repo: str, exc: registry.RegistryError) -> None:
        self.unreachable.add(repo)
        self.reporter.info(f"warning: shared cache {repo} cannot be used ({exc.message}); building locally")

    def _find(self, repo: str, key: str) -> Descriptor | None:
        """The entry's blob if repo has a valid entry for key."""
        try:
            document, _ = registry.manifest(f"{repo}:{key}")
        except registry.RegistryError as exc:
            if not exc.missing:
                self._lost(repo, exc)
            return None
        layers = document.get("layers") or []
        if len(layers) != 1 or document.get("artifactType") != ARTIFACT_TYPE:
            return None
        layer = Descriptor.from_json(layers[0])
        if not hmac.compare_digest((document.get("annotations") or {}).get(MAC, ""), self._mac(key, layer.digest)):
            self.reporter.info(f"warning: the entry {repo}:{key[:12]}… is not signed with this cache's secret; "
                               "ignored")
            return None
        return layer

    def pull(self, stage: Stage, kind: str, name: str) -> bool:
        """Bring the entry for stage into the local cache as kind/name, from the first registry that has it."""
        if self.cache.lookup(kind, name):
            return True
        for repo in filter(self._usable, self.sources):
            layer = self._find(repo, stage.key)
            if layer is None:
                continue
            try:
                with self.cache.writing(kind) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".oci-") as d:
                    registry.pull_layout(f"{repo}:{stage.key}", Path(d), "entry")
                    entry, _ = Layout(Path(d)).manifest("entry")
                    if entry["layers"][0]["digest"] != layer.digest:  # the tag moved between the two requests
                        continue
                    os.replace(Layout(Path(d)).blob_path(layer.digest), tmp)
                    self.cache.commit(tmp, kind, name)
            except registry.RegistryError as exc:
                self._lost(repo, exc)
                continue
            self.pulled.append({"stage": stage.name, "key": stage.key, "from": repo, "bytes": layer.size})
            self.reporter.info(f"shared cache: pulled {stage.name} from {repo} ({layer.size >> 20} MiB)")
            return True
        return False

    def pull_checkpoint(self, stages: list[Stage], local: int | None) -> None:
        """Pull the latest checkpoint of the chain that a registry has and the local cache lacks."""
        for index in range(len(stages) - 1, -1 if local is None else local, -1):
            stage = stages[index]
            if stage.checkpoint and self.pull(stage, "stages", f"{stage.key}.qcow2"):
                return

    def push(self, stage: Stage, kind: str, path: Path) -> None:
        """Push the local entry at path for stage, unless the target registry has a valid one already."""
        if self.target is None or not self._usable(self.target):
            return
        if self._find(self.target, stage.key) is not None or not self._usable(self.target):
            return  # there already, or the lookup found the registry unreachable
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".oci-") as root:
            layout = Layout(Path(root))
            layer = layout.add_file(path, LAYER_TYPES[kind])
            empty = layout.add_bytes(b"{}", ocilayout.EMPTY)
            layout.add_manifest("entry", empty, [layer], {MAC: self._mac(stage.key, layer.digest), STAGE: stage.name},
                                artifact_type=ARTIFACT_TYPE)
            try:
                registry.push_layout(Path(root), "entry", f"{self.target}:{stage.key}")
            except registry.RegistryError as exc:
                self._lost(self.target, exc)
                return
        self.pushed.append({"stage": stage.name, "key": stage.key, "to": self.target, "bytes": layer.size})
        self.reporter.info(f"shared cache: pushed {stage.name} to {self.target} ({layer.size >> 20} MiB)")



def open_shared(recipe: Recipe, options: Any, cache: Cache, reporter: Reporter) -> SharedCache | None:
    """The shared cache of a build: the command line's registries and secret file, else the recipe's [cache];
    None when there is none. InputError when registries are named without the shared secret."""
    sources = list(options.cache_from or recipe.cache.sources)
    target = options.cache_to or recipe.cache.target
    if not sources and not target:
        return None
    secret_file = options.cache_secret_file or recipe.cache.secret_file
    if secret_file is None:
        raise InputError("a shared stage cache needs the key secret its machines share: --cache-secret-file FILE "
                         f"(or ${SECRET_ENV}, or [cache] secret_file)",
                         hint="make one with `head -c 32 /dev/urandom | base64 > FILE` and give every runner a copy")
    if target and target not in sources:
        sources.append(target)  # what a runner pushes, it may read back
    return SharedCache(sources, target, read_secret(Path(secret_file)), cache, reporter)
