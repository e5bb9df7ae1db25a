"""Container registries through skopeo: copy between a registry and an OCI layout on disk, read a
manifest, resolve a tag to its digest.

skopeo (containers/image) does the registry protocol: streamed uploads, blobs the registry already
has are skipped, every blob and manifest is checked against its digest, and a failed copy is retried
(`--retry-times`; a retry skips the blobs that arrived). Credentials are read by skopeo itself from
where the container tools keep them ($REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
~/.docker/config.json), so they are never on a command line or in our output. Registries served
over plain HTTP (a registry on 127.0.0.1, say) are marked `insecure = true` in registries.conf
(/etc/containers/registries.conf, or the file $CONTAINERS_REGISTRIES_CONF names).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

from imagebuilder.errors import BuildError
from imagebuilder.run import CommandError, run

REGISTRIES_CONF_ENV = "CONTAINERS_REGISTRIES_CONF"
COPY_TIMEOUT = 3600  # seconds: one copy of a multi-GiB image over a slow link still ends
LOOKUP_TIMEOUT = 60
RETRIES = 3
_MISSING = ("manifest unknown", "name unknown", "not found", "404")
# a repository reference: host[:port]/path, then :tag and/or @sha256:hex
_REF = re.compile(r"^(?P<repo>[a-z0-9.-]+(?::\d+)?/[a-z0-9._/-]+?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
                  r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


class RegistryError(BuildError):
    """A registry could not be read or written; `missing` when it answered that the thing is not there."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message, hint=None if missing else
                         "check the address, the credentials (REGISTRY_AUTH_FILE, ~/.docker/config.json, "
                         "containers auth.json) and, for a plain-HTTP registry, registries.conf")
        self.missing = missing


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: repository, tag and/or pinned digest."""

    repo: str
    tag: str | None = None
    digest: str | None = None

    @property
    def pinned(self) -> str:
        """The reference skopeo reads: by digest when there is one (a tag beside it is only a name)."""
        return f"{self.repo}@{self.digest}" if self.digest else f"{self.repo}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        return self.repo + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> Reference:
    """A reference such as registry.example/golden/web:1 or …/web@sha256:HEX; ValueError otherwise."""
    text = text.removeprefix("docker://")
    if "@" in text.split("/", 1)[0]:
        raise ValueError("credentials do not belong in a reference (they would show in logs); the registry "
                         "tools' auth file holds them (REGISTRY_AUTH_FILE, ~/.docker/config.json)")
    match = _REF.match(text)
    if not match:
        raise ValueError(f"'{text}' is not an image reference; write it like \"registry.example/team/web:tag\" "
                         "or \"registry.example/team/web@sha256:…\" (a registry host first)")
    return Reference(match["repo"], match["tag"], match["digest"])


def check_repository(text: str) -> str:
    """A repository (no tag, no digest), such as the one a shared cache tags its entries in; ValueError otherwise."""
    parsed = parse_reference(text)
    if parsed.tag or parsed.digest:
        raise ValueError(f"'{text}' names a tag or digest; write a repository such as "
                         "\"registry.example/team/imagebuilder-cache\" (the cache tags its entries with stage keys)")
    return parsed.repo


def _skopeo(args: list[str], timeout: int) -> CompletedProcess[bytes]:
    """Run skopeo with the registries.conf the environment names; RegistryError on failure."""
    argv = ["skopeo"]
    conf = os.environ.get(REGISTRIES_CONF_ENV)
    if conf:
        argv += ["--registries-conf", conf]  # skopeo 1.9 reads the file only when told
    argv += ["--command-timeout", f"{timeout}s", *args]
    try:
        proc = run(argv, timeout=timeout + 30, text=False, check=False)
    except CommandError:  # with check=False, only a timeout
        raise RegistryError(f"skopeo {args[0]} timed out after {timeout}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        detail = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", detail).replace('\\"', '"')
        raise RegistryError(f"{shlex.join(['skopeo', *args])}: {detail}",
                            missing=any(word in detail for word in _MISSING))
    return proc


def copy(source: str, destination: str, timeout: int = COPY_TIMEOUT, index_only: bool = False) -> None:
    """Copy an image or artifact between transports (docker://REF, oci:DIR:TAG), digests kept;
    index_only: an index alone, whose manifests the destination has."""
    # an index's own digest does not matter (a tag names it), and skopeo 1.9 writes one only by re-encoding it
    options = ["--multi-arch", "index-only"] if index_only else ["--preserve-digests"]
    _skopeo(["copy", "--quiet", "--retry-times", str(RETRIES), *options, source, destination], timeout)


def manifest(ref: str) -> tuple[dict, str]:
    """The raw manifest of docker://ref and its digest; RegistryError(missing=True) when it is not there."""
    raw = _skopeo(["inspect", "--raw", "--retry-times", "1", f"docker://{ref}"], LOOKUP_TIMEOUT).stdout
    try:
        document = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{ref}: the registry's answer is not a manifest") from None
    return document, f"sha256:{hashlib.sha256(raw).hexdigest()}"


def delete(ref: str) -> None:
    """Delete the manifest ref names (by digest) from its registry."""
    _skopeo(["delete", "--retry-times", str(RETRIES), f"docker://{ref}"], LOOKUP_TIMEOUT)


def push_layout(layout: Path, tag: str, ref: str, index_only: bool = False) -> None:
    """Push the manifest (or, index_only, the index) tagged `tag` in the OCI layout at `layout` to docker://ref."""
    copy(f"oci:{layout}:{tag}", f"docker://{ref}", index_only=index_only)


def pull_layout(ref: str, layout: Path, tag: str) -> None:
    """Pull docker://ref into the OCI layout at `layout` under `tag` (blobs checked against their digests)."""
    copy(f"docker://{ref}", f"oci:{layout}:{tag}")
