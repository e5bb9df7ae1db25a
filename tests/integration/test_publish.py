"""Publishing where images are consumed, against a real registry (docker-registry on 127.0.0.1), the
real virt-builder and qemu-img, sharing two builds and one boot:

- build A (from the session's base image) writes the image file, an OVA, a VHD and a VHDX, and pushes
  a KubeVirt containerDisk with its SBOMs and signed provenance as referrers; skopeo, a client this
  project did not write, reads them back;
- build B takes that containerDisk as its base (`[base] oci`, pinned by digest) and writes a signed
  virt-builder repository; virt-builder lists it, verifies it and builds from it with --no-network;
- the image virt-builder made boots, and the guest agent reads the host name build B set: one boot
  proves both the OCI base and the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imagebuilder import registry
from imagebuilder.publish import containerdisk
from imagebuilder.publish.elsewhere import RECORD_TYPES
from tests.integration.conftest import run_cli
from tests.integration.helpers import peer_libguestfs_env, sha256, unique
from tests.signing import make_key
from tests.signing_keys import pem_keys

pytestmark = pytest.mark.integration

BUILD_A = """[image]
name = "golden"
[base]
path = "{image}"
[[steps]]
write = "/etc/motd:published by imagebuilder"
[output]
path = "out/golden.qcow2"
[[output.oci]]
ref = "{registry}/ibtest/golden:{{date}}-{{n}}"
[[output.files]]
path = "out/golden.ova"
[[output.files]]
path = "out/golden.vhd"
[[output.files]]
path = "out/golden.vhdx"
[domain]
memory = "1536M"
vcpus = 2
[[domain.interfaces]]
network = "default"
[[domain.interfaces]]
bridge = "br0"
model = "e1000"
[sign]
key = "{key}"
"""

BUILD_B = """[image]
name = "golden-oci"
[base]
oci = "{ref}"
[[steps]]
hostname = "from-oci"
[[output.repo]]
path = "repo"
key = "test@example.invalid"
gnupghome = "{gnupghome}"
xz_level = 0
notes = "Built from a containerDisk.\\nSecond line."
"""


def skopeo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    conf = ["--registries-conf", env["CONTAINERS_REGISTRIES_CONF"]]
    return subprocess.run(["skopeo", *conf, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600, check=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def build_a(tmp_path_factory, base_image, local_registry) -> dict:
    """Build A's directory, manifest and output."""
    work = tmp_path_factory.mktemp("publish-a")
    key, _ = pem_keys(work, "release")
    (work / "recipe.toml").write_text(BUILD_A.format(image=base_image, registry=local_registry.host, key=key))
    proc = run_cli("build", str(work / "recipe.toml"), "--cache-dir", str(work / "cache"),
                   env=local_registry.env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert local_registry.password not in proc.stdout + proc.stderr
    document = json.loads((work / "out" / "golden.manifest.json").read_text())
    return {"dir": work, "manifest": document, "stderr": proc.stderr,
            "oci": next(o for o in document["outputs"] if o["type"] == "oci")}


def test_the_containerdisk_reads_back_as_kubevirt_expects(build_a, local_registry, tmp_path):
    pushed, env = build_a["oci"], local_registry.env
    assert pushed["ref"].startswith(f"{local_registry.host}/ibtest/golden:") and pushed["ref"].endswith("-1")
    facts = json.loads(skopeo("inspect", f"docker://{pushed['ref']}", env=env).stdout)
    assert facts["Digest"] == pushed["digest"]
    assert (facts["Os"], facts["Architecture"]) == ("linux", "amd64")
    image_digest = next(o for o in build_a["manifest"]["outputs"] if o["type"] == "file"
                        and o["format"] == "qcow2")["digest"]
    raw = json.loads(skopeo("inspect", "--raw", f"docker://{pushed['ref']}", env=env).stdout)
    assert raw["annotations"]["org.imagebuilder.disk.digest"] == image_digest
    [layer] = raw["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    skopeo("copy", f"docker://{pushed['ref']}", f"oci:{tmp_path / 'copy'}:golden", env=env)
    blob = tmp_path / "copy" / "blobs" / "sha256" / layer["digest"].split(":")[1]
    with tarfile.open(blob, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["disk", "disk/golden.qcow2"]
        assert all((m.uid, m.gid) == (107, 107) for m in members.values())
        assert members["disk"].isdir() and members["disk/golden.qcow2"].mode == 0o440
        inside = hashlib.sha256(tar.extractfile("disk/golden.qcow2").read()).hexdigest()  # type: ignore[union-attr]
    assert f"sha256:{inside}" == image_digest


def test_unchanged_it_is_up_to_date_while_the_registry_has_the_image(build_a, local_registry):
    before = len(local_registry.requests())
    proc = run_cli("build", str(build_a["dir"] / "recipe.toml"), "--cache-dir", str(build_a["dir"] / "cache"),
                   "--if-changed", env=local_registry.env, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, "no change\n"), proc.stderr[-2000:]
    assert not [r for r in local_registry.requests()[before:] if r["method"] in ("PUT", "PATCH", "POST")]


def test_the_sboms_and_provenance_are_referrers_of_the_pushed_image(build_a, local_registry):
    pushed, records = build_a["oci"], build_a["manifest"]["records"]
    tag = f"{local_registry.host}/ibtest/golden:sha256-{pushed['digest'].split(':')[1]}"
    index = json.loads(skopeo("inspect", "--raw", f"docker://{tag}", env=local_registry.env).stdout)
    listed = {m["digest"] for m in index["manifests"]}
    assert set(pushed["referrers"]) <= listed
    artifacts = {}
    for digest in pushed["referrers"]:
        artifact = json.loads(skopeo("inspect", "--raw", f"docker://{local_registry.host}/ibtest/golden@{digest}",
                                     env=local_registry.env).stdout)
        artifacts[artifact["artifactType"]] = artifact
    assert sorted(artifacts) == sorted(RECORD_TYPES.values())
    for kind, media_type in RECORD_TYPES.items():
        artifact = artifacts[media_type]
        assert artifact["subject"] == {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": pushed["digest"], "size": pushed["size"]}
        [layer] = artifact["layers"]
        assert (layer["mediaType"], layer["digest"]) == (media_type, f"sha256:{records[kind]['sha256']}")
        assert layer["annotations"]["org.opencontainers.image.title"] == Path(records[kind]["path"]).name


def test_a_second_push_skips_the_blobs_and_a_new_referrer_keeps_the_others(build_a, local_registry, tmp_path,
                                                                            monkeypatch):
    for key, value in local_registry.env.items():
        monkeypatch.setenv(key, value)
    image = build_a["dir"] / "out" / "golden.qcow2"
    raw, _ = registry.manifest(build_a["oci"]["ref"])
    before = len(local_registry.requests())
    ref = f"{local_registry.host}/ibtest/golden:again"
    subject = containerdisk.push(image, "golden.qcow2", ref, "gzip", raw["annotations"], tmp_path)
    assert subject.digest == build_a["oci"]["digest"]  # the same disk and annotations make the same image
    layer = raw["layers"][0]["digest"]
    assert not [r for r in local_registry.requests()[before:] if r["method"] in ("PUT", "PATCH")
                and layer.split(":")[1] in r["path"]], "the layer the registry had was uploaded again"
    tag = f"{local_registry.host}/ibtest/golden:sha256-{subject.digest.split(':')[1]}"
    earlier = {m["digest"] for m in registry.manifest(tag)[0]["manifests"]}
    notes = tmp_path / "release-notes.txt"
    notes.write_text("second push\n")
    [added] = containerdisk.attach(f"{local_registry.host}/ibtest/golden", subject,
                                   [containerdisk.Attachment(notes, "text/plain")], tmp_path)
    assert {m["digest"] for m in registry.manifest(tag)[0]["manifests"]} == earlier | {added}
    artifact, _ = registry.manifest(f"{local_registry.host}/ibtest/golden@{added}")
    assert artifact["subject"]["digest"] == subject.digest and artifact["layers"][0]["mediaType"] == "text/plain"


def test_other_hypervisors_formats(build_a, tmp_path):
    out = build_a["dir"] / "out"
    size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(out / "golden.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)["virtual-size"]
    vhdx = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(out / "golden.vhdx")],
                                     capture_output=True, text=True, check=True).stdout)
    assert (vhdx["format"], vhdx["virtual-size"]) == ("vhdx", size)
    subprocess.run(["qemu-img", "check", str(out / "golden.vhdx")], check=True, capture_output=True)
    # a fixed VHD has its footer last; qemu-img reads it as vpc when told so, and has no check for vpc
    vhd = json.loads(subprocess.run(["qemu-img", "info", "-f", "vpc", "--output=json", str(out / "golden.vhd")],
                                    capture_output=True, text=True, check=True).stdout)
    assert vhd["virtual-size"] == size and size % (1 << 20) == 0
    footer = (out / "golden.vhd").read_bytes()[-512:]
    assert footer[:8] == b"conectix" and int.from_bytes(footer[60:64], "big") == 2  # disk type 2: fixed
    assert (out / "golden.vhd").stat().st_size == size + 512
    assert int.from_bytes(footer[48:56], "big") == size  # current size
    with tarfile.open(out / "golden.ova") as tar:
        names = tar.getnames()
        assert names == ["golden.ovf", "golden.mf", "golden-disk1.vmdk"]
        assert all(m.isfile() for m in tar.getmembers()) and tar.getmembers()[0].name.endswith(".ovf")
        tar.extractall(tmp_path)
    for line in (tmp_path / "golden.mf").read_text().splitlines():
        name, digest = line.removeprefix("SHA256(").split(")= ")
        assert sha256(tmp_path / name) == digest
    vmdk = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(tmp_path / "golden-disk1.vmdk")],
                                     capture_output=True, text=True, check=True).stdout)
    assert vmdk["format-specific"]["data"]["create-type"] == "streamOptimized" and vmdk["virtual-size"] == size
    subprocess.run(["qemu-img", "check", str(tmp_path / "golden-disk1.vmdk")], check=True, capture_output=True)
    check_envelope(tmp_path / "golden.ovf", tmp_path / "golden-disk1.vmdk", size)


OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"


def check_envelope(ovf: Path, vmdk: Path, capacity: int) -> None:
    """The OVF 1.0 envelope's structure as DSP0243 1.0 orders it, and what it says about the machine.
    (DMTF's dsp8023 schema file cannot be fetched here, so its rules that apply are checked one by one.)"""
    subprocess.run(["xmllint", "--noout", str(ovf)], check=True, capture_output=True)
    root = ET.parse(ovf).getroot()
    assert root.tag == f"{OVF}Envelope"
    assert [child.tag.removeprefix(OVF) for child in root] == ["References", "DiskSection", "NetworkSection",
                                                                "VirtualSystem"]
    [file_ref] = root.find(f"{OVF}References")
    assert file_ref.get(f"{OVF}href") == vmdk.name and int(file_ref.get(f"{OVF}size")) == vmdk.stat().st_size
    disk = root.find(f"{OVF}DiskSection/{OVF}Disk")
    assert int(disk.get(f"{OVF}capacity")) == capacity and disk.get(f"{OVF}fileRef") == file_ref.get(f"{OVF}id")
    assert disk.get(f"{OVF}format").endswith("#streamOptimized")
    system = root.find(f"{OVF}VirtualSystem")
    assert system.get(f"{OVF}id") == "golden" and system[0].tag == f"{OVF}Info"
    items = {}
    for item in system.findall(f"{OVF}VirtualHardwareSection/{OVF}Item"):
        fields = [child.tag.removeprefix(RASD) for child in item]
        assert fields == sorted(fields), "CIM wants an Item's fields in alphabetical order"
        items.setdefault(item.find(f"{RASD}ResourceType").text, []).append(
            {child.tag.removeprefix(RASD): child.text for child in item})
    assert items["3"][0]["VirtualQuantity"] == "2"                          # vCPUs
    assert items["4"][0]["VirtualQuantity"] == "1536"                       # MiB of memory
    assert items["17"][0]["HostResource"] == f"ovf:/disk/{disk.get(f'{OVF}diskId')}"
    assert [(n["Connection"], n["ResourceSubType"]) for n in items["10"]] == [("default", "VmxNet3"), ("br0", "E1000")]
    networks = [n.get(f"{OVF}name") for n in root.findall(f"{OVF}NetworkSection/{OVF}Network")]
    assert networks == ["default", "br0"]


def test_oci_base_to_virt_builder_repository_to_a_boot_customize_stubbed(build_a, local_registry, tmp_path, conn, pool,
                                                                        pool_dir, monkeypatch):
    """A real build from the containerDisk into a virt-builder repository that virt-builder itself reads;
    its image is then booted as it is (customize stubbed: the build before it customized it for real)."""
    key = make_key(tmp_path / "key")
    pinned = build_a["oci"]["pinned"]
    (tmp_path / "recipe.toml").write_text(BUILD_B.format(ref=pinned, gnupghome=key.home))
    env = {**local_registry.env, "GNUPGHOME": str(key.home)}
    try:
        proc = run_cli("build", str(tmp_path / "recipe.toml"), "--cache-dir", str(tmp_path / "cache"),
                       "--manifest", str(tmp_path / "b.manifest.json"), env=env, timeout=900)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "gpg-agent"], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads((tmp_path / "b.manifest.json").read_text())
    assert document["base"]["digest"] == build_a["oci"]["digest"]
    assert document["base"]["source"] == f"oci:{pinned}"
    repo = tmp_path / "repo"
    index = (repo / "index").read_text()
    assert "[golden-oci]\n" in index and "revision=1\n" in index and "file=golden-oci-1.qcow2.xz\n" in index
    assert "notes=Built from a containerDisk.\n Second line.\n" in index
    subprocess.run(["virt-index-validate", str(repo / "index.asc")], check=True, capture_output=True)
    again = run_cli("build", str(tmp_path / "recipe.toml"), "--cache-dir", str(tmp_path / "cache"), "--manifest",
                    str(tmp_path / "b.manifest.json"), "--if-changed", env=env, timeout=300)
    assert (again.returncode, again.stdout) == (0, "no change\n"), again.stderr[-2000:]  # pinned: no request

    # plain virt-builder, configured as its users configure a repository
    config = tmp_path / "config"
    (config / "virt-builder" / "repos.d").mkdir(parents=True)
    (config / "virt-builder" / "repos.d" / "ibtest.conf").write_text(
        f"[ibtest]\nuri={(repo / 'index.asc').as_uri()}\ngpgkey={key.public.as_uri()}\n")
    vb_env = {**os.environ, "XDG_CONFIG_HOME": str(config), "VIRT_BUILDER_DIRS": str(tmp_path / "none"),
              "LIBGUESTFS_BACKEND": "direct", **peer_libguestfs_env()}
    listing = subprocess.run(["virt-builder", "--list", "--list-format", "json"], env=vb_env, capture_output=True,
                             text=True, timeout=300, check=True, stdin=subprocess.DEVNULL)
    [template] = json.loads(listing.stdout)["templates"]
    assert (template["os-version"], template["arch"]) == ("golden-oci", "x86_64")
    assert template["notes"]["C"] == "Built from a containerDisk.\nSecond line."
    made = pool_dir / "from-vb.qcow2"
    built = subprocess.run(["virt-builder", "golden-oci", "--no-network", "--no-cache", "--format", "qcow2",
                            "-o", str(made)], env=vb_env, capture_output=True, text=True, timeout=900,
                           stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stderr[-2000:]
    # the signature is checked: the same repository with one byte of its index changed is refused
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "index.asc").write_text((repo / "index.asc").read_text().replace("revision=1", "revision=9"))
    (config / "virt-builder" / "repos.d" / "ibtest.conf").write_text(
        f"[ibtest]\nuri={(tampered / 'index.asc').as_uri()}\ngpgkey={key.public.as_uri()}\n")
    refused = subprocess.run(["virt-builder", "--list"], env=vb_env, capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr
    boot_and_read_hostname(monkeypatch, tmp_path, conn, pool, made)


def boot_and_read_hostname(monkeypatch, tmp_path: Path, conn, pool, image: Path) -> None:  # noqa: ANN001
    """Deploy the image as it is (customize stubbed: no appliance) into pool, boot it and ask its agent for /etc/hostname."""
    from imagebuilder.virt.domain import remove_domain
    from imagebuilder.virt.wait import agent_exec
    from tests.integration.virt_helpers import build_customize_stubbed, forget_logs
    name = unique("vb")
    recipe = tmp_path / "boot.toml"
    recipe.write_text(f'[image]\nname = "{name}"\n[base]\npath = "{image}"\n[output]\npool = "{pool.name()}"\n'
                      '[domain]\nmemory = "768M"\nnetwork = "none"\nwait = "agent"\ntimeout = "15m"\n')
    try:
        result, progress = build_customize_stubbed(monkeypatch, recipe, facts={"osinfo": "debian12",
                                                                               "distro": "debian"})
        code, out, _ = agent_exec(conn.lookupByName(name), ["cat", "/etc/hostname"], timeout=60)
        assert (code, out.strip()) == (0, "from-oci")
    finally:
        remove_domain(conn, name)
        forget_logs(name)
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
