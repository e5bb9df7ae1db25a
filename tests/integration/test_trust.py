"""SBOMs, signed provenance, `verify` and `diff` on real builds (two versions of one recipe in a
throwaway pool, from the session base image): the SBOM passes both formats' own validators and
costs no appliance launch (that it lists what dpkg in the booted guest lists is checked on the
demo's boot, in test_build.py); a signed build verifies, and a changed image, a wrong key or an
altered envelope each fail with a clear message."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from in_toto.models.metadata import Envelope as InTotoEnvelope
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from imagebuilder.attest import signing
from tests.integration.conftest import run_cli
from tests.integration.helpers import sbom_packages, sha256, unique
from tests.signing_keys import openpgp_keys, pem_keys

pytestmark = pytest.mark.integration

RECIPE = """
[image]
name = "{name}"

[base]
path = "{base}"

[[steps]]
write = "/etc/motd:signed and listed\\n"
{more}
[output]
pool = "{pool}"
volume = "{name}-{{n}}.qcow2"

[sign]
key = "{key}"
{passphrase}"""


def test_sbom_provenance_verify_and_diff(tmp_path, base_image, pool, pool_dir, launch_counter):
    env, launches = launch_counter
    env = {**env, "XDG_STATE_HOME": str(tmp_path / "state"), "RELEASE_PASSPHRASE": "correct horse"}
    name = unique("trust")
    records = tmp_path / "state" / "imagebuilder" / "manifests" / pool.name()
    key, public = pem_keys(tmp_path, "release", b"correct horse")
    gpg_key, gpg_public = openpgp_keys(tmp_path, "correct horse")
    recipe = tmp_path / "trust.toml"

    def build(more: str, signing_key: Path) -> subprocess.CompletedProcess[str]:
        recipe.write_text(RECIPE.format(name=name, base=base_image, pool=pool.name(), more=more, key=signing_key.name,
                                        passphrase='passphrase = "env:RELEASE_PASSPHRASE"'))
        proc = run_cli("build", str(recipe), "--cache-dir", str(tmp_path / "cache"), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    # version 1: signed with an encrypted ed25519 key
    first = build("", key)
    assert launches() == 1, "the SBOM and the provenance cost no appliance launch"
    spdx, cdx, envelope = (records / f"{name}-1{suffix}" for suffix in (".spdx.json", ".cdx.json", ".intoto.jsonl"))
    assert not validate_full_spdx_document(parse_file(str(spdx))), "spdx-tools finds the SPDX document valid"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx.read_text()) is None
    listed = json.loads(cdx.read_text())
    purls = {c["name"]: c["purl"] for c in listed["components"] if c.get("purl")}
    assert purls["dpkg"].startswith("pkg:deb/debian/dpkg@") and "arch=amd64" in purls["dpkg"] \
        and "distro=debian-12" in purls["dpkg"]
    apt = next(c for c in listed["components"] if c["name"] == "apt")
    assert apt["supplier"]["name"] == "APT Development Team" and "GPL-2.0-or-later" in apt["licenses"][0]["expression"]
    roles = {p["value"] for c in listed["components"] for p in c.get("properties", []) if p["name"] == "imagebuilder:role"}
    assert roles == {"base", "recipe"}
    assert "correct horse" not in envelope.read_text() + first.stdout + first.stderr

    volume_one = f"{name}-1.qcow2"
    ok = run_cli("verify", f"{pool.name()}/{volume_one}", "--key", str(public), env=env)
    assert ok.returncode == 0, ok.stderr
    assert f"OK: {pool.name()}/{volume_one} is sha256:" in ok.stdout and "read in place" in ok.stdout
    assert "recipe trust.toml sha256:" in ok.stdout and "base " in ok.stdout, ok.stdout

    # the in-toto library's own verifier accepts the envelope
    data = json.loads(envelope.read_text())
    verifier = signing.public_keys(public)[0]
    InTotoEnvelope.from_dict(copy.deepcopy(data)).verify_signature({**verifier.to_dict(), "keyid": verifier.keyid})

    # a flipped byte, a wrong key, an altered envelope: each fails with a clear message and exit 1
    tampered = tmp_path / "tampered.qcow2"
    subprocess.run(["cp", "--sparse=always", str(pool_dir / volume_one), str(tampered)], check=True)
    with open(tampered, "r+b") as handle:
        handle.seek(1 << 20)
        byte = handle.read(1)
        handle.seek(1 << 20)
        handle.write(bytes([byte[0] ^ 0xFF]))
    changed = run_cli("verify", str(tampered), "--key", str(public), "--provenance", str(envelope), env=env)
    assert changed.returncode == 1 and "the image was changed after the build" in changed.stderr, changed.stderr
    _other, other_public = pem_keys(tmp_path, "other")
    wrong = run_cli("verify", f"{pool.name()}/{volume_one}", "--key", str(other_public), env=env)
    assert wrong.returncode == 1 and "does not verify with the given key" in wrong.stderr, wrong.stderr
    statement = json.loads(base64.b64decode(data["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    altered = tmp_path / "altered.intoto.jsonl"
    altered.write_text(json.dumps({**data, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}))
    forged = run_cli("verify", f"{pool.name()}/{volume_one}", "--key", str(public), "--provenance", str(altered),
                     env=env)
    assert forged.returncode == 1 and "does not verify" in forged.stderr, forged.stderr

    # version 2: one more package, signed with an OpenPGP key; the log names what changed
    second = build('[[steps]]\ninstall = ["tree"]\n', gpg_key)
    assert launches() == 2
    assert "changes since the last build: 1 package added: tree " in second.stderr, second.stderr
    volume_two = f"{name}-2.qcow2"
    ok = run_cli("verify", str(pool_dir / volume_two), "--key", str(gpg_public), env=env)
    assert ok.returncode == 0 and f"OK: {pool.name()}/{volume_two} is sha256:" in ok.stdout, ok.stderr
    diff = json.loads(run_cli("versions", str(recipe), "--diff", "1", "2", "--json", env=env).stdout)
    assert [p["name"] for p in diff["packages"]["added"]] == ["tree:amd64"]
    assert diff["packages"]["removed"] == [] and diff["packages"]["upgraded"] == []
    assert "step added: install: tree" in diff["build"]

    # diff reads both images in one launch: tree added, /etc/motd the same
    compared = run_cli("diff", str(pool_dir / volume_one), str(pool_dir / volume_two), "--json",
                       env=env)
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert [p["name"] for p in result["packages"]["added"]] == ["tree:amd64"]
    assert "/etc/motd" not in result["files"]["changed"]
    assert launches() == 3, "two images, one launch"


def test_verify_a_volume_on_a_remote_host_streams_it(tmp_path, remote_uri, remote_conn, remote_pool):
    """A volume elsewhere is downloaded through libvirt and hashed as it arrives (no appliance)."""
    from imagebuilder.attest import provenance
    from imagebuilder.sbom.model import Artifact
    from imagebuilder.virt.storage import upload_file

    image = tmp_path / "small.raw"
    with open(image, "wb") as handle:
        handle.write(b"a small image\n")
        handle.truncate(4 << 20)  # mostly a hole: the sparse upload keeps it one
    upload_file(remote_conn, remote_pool, "small.raw", image, "raw", force=False)
    key, public = pem_keys(tmp_path, "release")
    subject = f"{remote_pool.name()}/small.raw"
    statement = provenance.statement(provenance.BuildFacts(
        subjects=[Artifact("volume", subject, sha256(image))], recipe=Artifact("recipe", "r.toml", "1" * 64),
        base=Artifact("base", "b.qcow2", "2" * 64), base_kind="path", host_files=[]))
    envelope = tmp_path / "small.intoto.jsonl"
    envelope.write_text(signing.dumps(signing.sign(provenance.payload(statement), key)))
    ok = run_cli("verify", subject, "--key", str(public), "--provenance", str(envelope), "-c", remote_uri)
    assert ok.returncode == 0, ok.stderr
    assert f"downloaded through libvirt from {remote_uri}" in ok.stdout
    with open(image, "r+b") as handle:
        handle.write(b"A")
    remote_pool.storageVolLookupByName("small.raw").delete(0)
    upload_file(remote_conn, remote_pool, "small.raw", image, "raw", force=False)
    changed = run_cli("verify", subject, "--key", str(public), "--provenance", str(envelope), "-c", remote_uri)
    assert changed.returncode == 1 and "changed after the build" in changed.stderr, changed.stderr


PINNED = """
[image]
name = "repro"

[base]
path = "{base}"

[[steps]]
hostname = "repro"

[[steps]]
write = "/etc/motd:the same every time\\n"

[reproducible]
tree_digest = true
"""


def test_two_builds_of_a_pinned_recipe_make_the_same_file_tree(tmp_path, echo_tiny, launch_counter):
    """Two cold builds of the tiny guest (a Debian 12 to inspection, with its own /etc, /bin and libc):
    whatever a build writes that varies from run to run (a time, a random name) shows in its tree
    the same way on any distribution, and the small tree keeps the two builds short."""
    env, launches = launch_counter
    recipe = tmp_path / "repro.toml"
    recipe.write_text(PINNED.format(base=echo_tiny))
    found = []
    for number in (1, 2):
        out = tmp_path / f"build{number}" / "repro.qcow2"
        proc = run_cli("build", str(recipe), "-o", str(out), "--no-cache",
                       "--cache-dir", str(tmp_path / "cache"), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        document = json.loads((out.parent / "repro.manifest.json").read_text())
        found.append((document["records"]["tree"], document["outputs"][0]["digest"]))
    (tree_one, image_one), (tree_two, image_two) = found
    assert tree_one["digest"] == tree_two["digest"] and tree_one["entries"] > 20, (tree_one, tree_two)
    assert launches() == 2, "the tree digest is read in the build's own launch"


def test_sbom_of_any_image_in_one_read_only_launch(tmp_path, base_image, launch_counter):
    env, launches = launch_counter
    before = sha256(base_image)
    spdx, cdx = tmp_path / "base.spdx.json", tmp_path / "base.cdx.json"
    proc = run_cli("sbom", str(base_image), "--spdx", str(spdx), "--cyclonedx", str(cdx), env=env)
    assert proc.returncode == 0, proc.stderr
    assert launches() == 1 and sha256(base_image) == before, "one launch, the image unchanged"
    assert not validate_full_spdx_document(parse_file(str(spdx)))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx.read_text()) is None
    names = {name.split(":")[0] for name, _version in sbom_packages(cdx)}
    assert {"dpkg", "apt", "systemd", "qemu-guest-agent"} <= names
    assert f"{len(names)} packages" in proc.stdout
