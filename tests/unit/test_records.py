"""What a build writes beside its manifest (without a VM): SBOMs, the signed provenance, its subjects
and inputs; secrets (a password file, the key's passphrase) appear in none of them."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime, timezone

from imagebuilder import recipe
from imagebuilder.attest import records, signing
from imagebuilder.manifest import Manifest
from imagebuilder.progress import Reporter
from imagebuilder.sbom.model import Artifact, OperatingSystem, Package
from imagebuilder.sources.base import BaseImage
from tests.signing_keys import pem_keys

RECIPE = """
[image]
name = "web"
[base]
url = "https://cloud.example.org/debian-12.qcow2"
checksum = "none"
[[steps]]
upload = "files/motd:/etc/motd"
[[steps]]
root_password = "file:secrets/root.pw"
[output]
pool = "default"
volume = "web-{n}.qcow2"
[sign]
key = "keys/release.key"
passphrase = "env:IBTEST_SIGN_PASS"
builder = "https://ci.example.org/runner/7"
"""


def test_records_of_a_versioned_signed_build(tmp_path, monkeypatch):
    monkeypatch.setenv("IBTEST_SIGN_PASS", "correct horse")
    for name, text in (("files/motd", "hello\n"), ("secrets/root.pw", "hunter2\n")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "keys").mkdir()
    _key, public = pem_keys(tmp_path / "keys", "release", b"correct horse")
    (tmp_path / "web.toml").write_text(RECIPE)
    loaded = recipe.load(tmp_path / "web.toml")
    base = BaseImage(tmp_path / "base.qcow2", "disk", "sha256:" + "b" * 64, "https://cloud.example.org/debian-12.qcow2")
    outputs = [{"type": "volume", "uri": "qemu:///system", "pool": "default", "volume": "web-3.qcow2",
                "path": "/var/lib/libvirt/images/web-3.qcow2", "digest": "sha256:" + "a" * 64}]
    contents = records.Contents(OperatingSystem("debian", "12.15", "Debian 12", "deb", "x86_64"),
                                [Package("tree", "2.1.0-1", "amd64", "tree", licence="GPL-2.0-or-later")])
    stream = io.StringIO()
    manifest = tmp_path / "state" / "web.manifest.json"
    written = records.write(loaded, base, contents, outputs, manifest, "tcg", datetime.now(timezone.utc),
                            loaded.sign, 3, Reporter("plain", stream), "sha256:" + "a" * 64)
    assert {k: v["path"].rsplit("/", 1)[-1] for k, v in written.items() if isinstance(v, dict)} == \
        {"spdx": "web-3.spdx.json", "cyclonedx": "web-3.cdx.json", "provenance": "web-3.intoto.jsonl"}
    envelope = json.loads((tmp_path / "state" / "web-3.intoto.jsonl").read_text())
    statement = json.loads(signing.open_envelope(envelope, signing.public_keys(public)))
    assert [s["name"] for s in statement["subject"]] == ["web.qcow2", "default/web-3.qcow2"]
    dependencies = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["files/motd"]["digest"]["sha256"] and "digest" not in dependencies["secrets/root.pw"]
    assert dependencies["debian-12.qcow2"]["uri"] == "https://cloud.example.org/debian-12.qcow2"
    everything = "".join(p.read_text() for p in (tmp_path / "state").iterdir()) + stream.getvalue()
    everything += base64.b64decode(envelope["payload"]).decode()
    assert "hunter2" not in everything and "correct horse" not in everything
    assert "signed by" in stream.getvalue()


def test_the_change_line_compares_with_the_sbom_the_new_one_replaces(tmp_path):
    (tmp_path / "web.toml").write_text('[image]\nname = "web"\n[base]\npath = "base.qcow2"\n[output]\npath = "web.qcow2"\n')
    (tmp_path / "base.qcow2").write_bytes(b"")
    loaded = recipe.load(tmp_path / "web.toml")
    base = BaseImage(tmp_path / "base.qcow2", "disk", "sha256:" + "b" * 64, str(tmp_path / "base.qcow2"))
    outputs = [{"type": "file", "path": str(tmp_path / "web.qcow2"), "digest": "sha256:" + "a" * 64}]
    system = OperatingSystem("debian", "12.15", "Debian 12", "deb", "x86_64")
    manifest = tmp_path / "web.manifest.json"
    earlier = Manifest(records=records.write(loaded, base, records.Contents(system, [Package("openssl", "3.0.15-1", "amd64")]),
                                        outputs, manifest, "tcg", datetime.now(timezone.utc), None, None,
                                        Reporter("plain", io.StringIO()), "sha256:" + "a" * 64))
    before = records.earlier_packages(earlier)
    newer = records.Contents(system, [Package("openssl", "3.0.16-1", "amd64"), Package("tree", "2.1.0-1", "amd64")])
    written = records.write(loaded, base, newer, outputs, manifest, "tcg", datetime.now(timezone.utc), None, None,
                            Reporter("plain", io.StringIO()), "sha256:" + "a" * 64)
    assert written["cyclonedx"]["path"] == earlier.records["cyclonedx"]["path"], "the same file, replaced"
    stream = io.StringIO()
    records.summarise_change(before, written, Reporter("plain", stream))
    assert "changes since the last build: 1 package upgraded: openssl 3.0.15-1 → 3.0.16-1; " \
           "1 package added: tree 2.1.0-1" in stream.getvalue()


def test_a_file_published_by_its_sha512_is_a_sha512_subject():
    """A virt-builder repository output is named by sha512 (its index's hash): the SPDX checksum and the
    provenance subject say so instead of calling 128 hex digits a sha256."""
    sha512 = "ab" * 64
    outputs = [{"type": "file", "path": "/srv/repo/golden.xz", "digest": f"sha512:{sha512}"}]
    _, published = records.subjects(Artifact.of("image", "golden.qcow2", "sha256:" + "cd" * 32), outputs)
    assert (published.name, published.algorithm, published.hex) == ("golden.xz", "sha512", sha512)


def test_a_pushed_image_is_a_subject_by_its_manifest_digest_and_the_image_keeps_its_own():
    """Outputs come in publishing order (other formats and registries first): the image subject carries
    the image's digest, not the first output's, and a registry image is named by its ref."""
    image = Artifact.of("image", "golden.qcow2", "sha256:" + "cd" * 32)
    outputs = [{"type": "file", "path": "/out/golden.ova", "digest": "sha256:" + "0a" * 32},
               {"type": "oci", "ref": "127.0.0.1:5000/golden:1", "digest": "sha256:" + "0b" * 32, "size": 612}]
    found = records.subjects(image, outputs)
    assert [(a.name, a.hex) for a in found] == [("golden.qcow2", "cd" * 32), ("golden.ova", "0a" * 32),
                                                ("127.0.0.1:5000/golden:1", "0b" * 32)]
