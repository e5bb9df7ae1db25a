"""The build's provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, made and
checked with the in-toto attestation bindings.

Subjects: the image and every published copy of it (file, volumes), by sha256. The build
definition: the recipe (by digest), the resolved base image, the host files steps read (secrets by
name only), the tool's version. The run details: the builder, this run's id and times, and the SBOMs
written with it.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

from imagebuilder import __version__
from imagebuilder.sbom.model import Artifact

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://imagebuilder.invalid/provenance/recipe/v1"  # documented in docs/trust.md
BUILDER_ENV = "IMAGEBUILDER_BUILDER_ID"


@dataclass
class BuildFacts:
    """What the provenance says: subjects, inputs and the run."""

    subjects: list[Artifact]
    recipe: Artifact
    base: Artifact
    base_kind: str
    host_files: list[Artifact]
    secret_files: list[str] = field(default_factory=list)
    accelerator: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    byproducts: list[Artifact] = field(default_factory=list)
    builder: str = ""


def builder_id(configured: str | None = None) -> str:
    """Who built: [sign] builder, else $IMAGEBUILDER_BUILDER_ID, else this user on this host."""
    return configured or os.environ.get(BUILDER_ENV) or f"urn:imagebuilder:builder:{_user()}@{socket.getfqdn()}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _descriptor(artifact: Artifact) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": artifact.name, "digest": {artifact.algorithm: artifact.hex}}
    if artifact.location:
        entry["uri"] = artifact.location
    if artifact.role:
        entry["annotations"] = {"role": artifact.role}
    return entry


def statement(facts: BuildFacts) -> Statement:
    """The in-toto statement, checked by the bindings (subject digests, predicate fields)."""
    dependencies = [_descriptor(facts.base)] + [_descriptor(f) for f in facts.host_files]
    dependencies += [{"name": name, "annotations": {"role": "host-file", "secret": True}} for name in facts.secret_files]
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"recipe": _descriptor(facts.recipe)},
            "internalParameters": {"imagebuilder": __version__, "accelerator": facts.accelerator,
                                   "baseKind": facts.base_kind},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": facts.builder or builder_id(), "version": {"imagebuilder": __version__}},
            "metadata": {"invocationId": f"urn:uuid:{uuid.uuid4()}",
                         **({"startedOn": _time(facts.started)} if facts.started else {}),
                         **({"finishedOn": _time(facts.finished)} if facts.finished else {})},
            "byproducts": [_descriptor(b) for b in facts.byproducts],
        },
    }
    json_format.ParseDict(predicate, provenance_pb2.Provenance())  # unknown or mistyped fields raise here
    subjects = [ResourceDescriptor(name=s.name, digest={s.algorithm: s.hex}).pb for s in facts.subjects]
    made = Statement(subjects, PREDICATE_TYPE, predicate)
    made.validate()
    return made


def payload(made: Statement) -> bytes:
    """The statement as the JSON bytes the envelope signs."""
    return json.dumps(json_format.MessageToDict(made.pb), sort_keys=True).encode()


def parse(data: bytes) -> dict[str, Any]:
    """A signed payload read back as a statement: ValueError unless it is an in-toto Statement v1
    with a valid SLSA Provenance v1 predicate."""
    from in_toto_attestation.v1 import statement_pb2
    try:
        message = json_format.Parse(data, statement_pb2.Statement())
    except json_format.ParseError as exc:
        raise ValueError(f"not an in-toto statement: {exc}") from None
    Statement.copy_from_pb(message).validate()
    if message.predicate_type != PREDICATE_TYPE:
        raise ValueError(f"the predicate is '{message.predicate_type}', not SLSA provenance v1")
    document = json_format.MessageToDict(message)
    json_format.ParseDict(document["predicate"], provenance_pb2.Provenance())
    return document


def _time(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")
