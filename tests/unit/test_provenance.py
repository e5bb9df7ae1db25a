"""Provenance without a VM: the statement's layout, DSSE signing with PEM and OpenPGP keys, and
what verification refuses (a wrong key, an altered payload, a changed image)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import datetime, timezone

import pytest
from in_toto.models.metadata import Envelope as InTotoEnvelope

from imagebuilder.attest import provenance, signing, verify
from imagebuilder.errors import InputError
from imagebuilder.sbom.model import Artifact
from tests.signing_keys import openpgp_keys, pem_keys

WHEN = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def facts(image_digest: str = "a" * 64) -> provenance.BuildFacts:
    return provenance.BuildFacts(
        subjects=[Artifact("image", "web.qcow2", image_digest), Artifact("volume", "default/web-3.qcow2", image_digest)],
        recipe=Artifact("recipe", "web.toml", "b" * 64, "/srv/web.toml"),
        base=Artifact("base", "debian-12.qcow2", "c" * 64, "https://cloud.debian.org/debian-12.qcow2"),
        base_kind="url", host_files=[Artifact("host-file", "files/motd", "d" * 64, "/srv/files/motd")],
        secret_files=["secrets/root.pw"], accelerator="kvm", started=WHEN, finished=WHEN,
        byproducts=[Artifact("sbom", "web.spdx.json", "e" * 64)], builder="https://ci.example.org/runner/7")


def test_statement_holds_subjects_inputs_builder_and_times():
    document = json.loads(provenance.payload(provenance.statement(facts())))
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"
    assert [s["name"] for s in document["subject"]] == ["web.qcow2", "default/web-3.qcow2"]
    definition = document["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["recipe"]["digest"] == {"sha256": "b" * 64}
    dependencies = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert dependencies["debian-12.qcow2"]["digest"] == {"sha256": "c" * 64}
    assert dependencies["files/motd"]["digest"] == {"sha256": "d" * 64}
    assert "digest" not in dependencies["secrets/root.pw"], "a secret is named, never hashed"
    run = document["predicate"]["runDetails"]
    assert run["builder"]["id"] == "https://ci.example.org/runner/7"
    assert run["metadata"]["startedOn"] == "2026-11-29T12:00:00Z"
    assert run["metadata"]["invocationId"].startswith("urn:uuid:")
    assert provenance.parse(provenance.payload(provenance.statement(facts())))["subject"] == document["subject"]


def test_a_statement_without_a_subject_digest_is_refused():
    with pytest.raises(ValueError):
        provenance.parse(json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x"}],
                                     "predicateType": provenance.PREDICATE_TYPE, "predicate": {"a": 1}}).encode())


def test_pem_signed_envelope_verifies_here_and_with_in_toto(tmp_path):
    key, public = pem_keys(tmp_path, "release", b"s3cret")
    payload = provenance.payload(provenance.statement(facts()))
    envelope = signing.sign(payload, key, b"s3cret")
    assert signing.open_envelope(envelope, signing.public_keys(public)) == payload
    verifier = signing.public_keys(public)[0]
    InTotoEnvelope.from_dict(copy.deepcopy(envelope)).verify_signature({**verifier.to_dict(), "keyid": verifier.keyid})
    assert b"s3cret" not in json.dumps(envelope).encode()


def test_wrong_key_and_altered_payload_fail(tmp_path):
    key, public = pem_keys(tmp_path, "release")
    _other, other_public = pem_keys(tmp_path, "other")
    envelope = signing.sign(provenance.payload(provenance.statement(facts())), key)
    with pytest.raises(signing.SignatureError, match="does not verify with the given key"):
        signing.open_envelope(envelope, signing.public_keys(other_public))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "f" * 64
    forged = {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    with pytest.raises(signing.SignatureError, match="altered"):
        signing.open_envelope(forged, signing.public_keys(public))


def test_an_encrypted_key_without_its_passphrase_is_a_clear_input_error(tmp_path):
    key, _public = pem_keys(tmp_path, "release", b"s3cret")
    with pytest.raises(InputError, match="is encrypted: give its passphrase"):
        signing.sign(b"x", key)
    with pytest.raises(InputError, match="passphrase is wrong"):
        signing.sign(b"x", key, b"wrong")


def test_openpgp_key_with_passphrase_signs_through_a_throwaway_agent(tmp_path):
    secret, public = openpgp_keys(tmp_path, "correct horse")
    payload = provenance.payload(provenance.statement(facts()))
    envelope = signing.sign(payload, secret, b"correct horse")
    assert signing.open_envelope(envelope, signing.public_keys(public)) == payload
    with pytest.raises(InputError, match="passphrase is wrong"):
        signing.sign(payload, secret, b"battery staple")


def test_verify_a_file_image_finds_its_envelope_and_checks_its_digest(tmp_path):
    key, public = pem_keys(tmp_path, "release")
    image = tmp_path / "web.qcow2"
    image.write_bytes(b"an image")
    import hashlib
    digest = hashlib.sha256(b"an image").hexdigest()
    envelope = signing.sign(provenance.payload(provenance.statement(facts(digest))), key)
    (tmp_path / "web.intoto.jsonl").write_text(signing.dumps(envelope) + "\n")
    verified = verify.verify(verify.target(str(image), None, None), public)
    assert verified.subject == "web.qcow2" and verified.digest == f"sha256:{digest}"
    assert any("built by https://ci.example.org/runner/7" in line for line in verify.describe(verified))
    image.write_bytes(b"an image, changed")
    with pytest.raises(verify.VerificationFailed, match="changed after the build"):
        verify.verify(verify.target(str(image), None, None), public)


def test_a_subject_named_by_sha512_says_sha512():
    """A virt-builder repository file is named by its sha512: the subject carries that algorithm."""
    made = facts()
    made.subjects.append(Artifact.of("file", "golden-1.qcow2.xz", "sha512:" + "e" * 128))
    document = json.loads(provenance.payload(provenance.statement(made)))
    assert document["subject"][-1]["digest"] == {"sha512": "e" * 128}
    assert document["subject"][0]["digest"] == {"sha256": "a" * 64}
