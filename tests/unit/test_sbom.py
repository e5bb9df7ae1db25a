"""SBOM pieces without a VM: package databases, Debian licences, PURLs, and both documents valid."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from imagebuilder.sbom import cyclonedx, databases, licences, spdx
from imagebuilder.sbom.model import Artifact, Inventory, OperatingSystem, Package, purl

DEBIAN = OperatingSystem("debian", "12.15", "Debian GNU/Linux 12 (bookworm)", "deb", "x86_64")

STATUS = """\
Package: nginx-light
Status: install ok installed
Architecture: amd64
Source: nginx (1.22.1-9)
Version: 1.22.1-9+b1
Maintainer: Debian Nginx Maintainers <pkg-nginx-maintainers@alioth-lists.debian.net>
Homepage: https://nginx.org
Description: nginx web/proxy server (basic version)
 Nginx ("engine X") is a high-performance web and reverse proxy server.
 .
 This package provides a version of nginx with the basic set of modules.

Package: removed-but-configured
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: libc6
Status: install ok installed
Architecture: i386
Source: glibc
Version: 2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library: Shared libraries

Package: perl-base
Status: install ok installed
Architecture: amd64
Source: perl
Version: 1:5.36.0-7+deb12u1
Maintainer: Niko Tyni <ntyni@debian.org>
Description: minimal Perl system
"""

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: example
Source: https://example.org

Files: *
Copyright: 2001 Someone
License: GPL-2+ or Artistic, and BSD-3-clause

Files: debian/*
Copyright: 2020 Debian
License: Expat

Files: contrib/*
Copyright: 2003 Else
License: Example-Permissive

License: Example-Permissive
 Do what you like with this file.
 .
 No warranty.
"""


def test_dpkg_status_gives_installed_packages_with_source_maintainer_and_epoch():
    packages = {p.key: p for p in databases.parse_dpkg_status(STATUS)}
    assert sorted(packages) == ["libc6:i386", "nginx-light:amd64", "perl-base:amd64"], "config-files only is not installed"
    nginx = packages["nginx-light:amd64"]
    assert (nginx.source, nginx.source_version, nginx.version) == ("nginx", "1.22.1-9", "1.22.1-9+b1")
    assert nginx.supplier.startswith("Debian Nginx Maintainers <") and nginx.homepage == "https://nginx.org"
    assert nginx.summary == "nginx web/proxy server (basic version)"
    assert packages["perl-base:amd64"].epoch == 1 and packages["libc6:i386"].source == "glibc"


def test_apk_database_gives_licence_and_origin():
    text = ("C:Q1abc=\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\no:busybox\nm:Sören Tempel <soeren@alpine>\n"
            "U:https://busybox.net/\nT:Size optimized toolbox\n\nP:libcrypto3\nV:3.1.4-r1\nA:x86_64\n"
            "L:Apache-2.0\no:openssl\n")
    busybox, crypto = databases.parse_apk_installed(text)
    assert (busybox.name, busybox.version, busybox.licence, busybox.source) == \
        ("busybox", "1.36.1-r5", "GPL-2.0-only", "busybox")
    assert crypto.source == "openssl"


@pytest.mark.parametrize("debian, expected", [
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("Expat", "MIT"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("Apache-2.0", "Apache-2.0"),
    ("public-domain", "LicenseRef-public-domain"),
    ("GPL-2+ or Artistic, and BSD-3-clause", "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND (BSD-3-Clause)"),
    ("MPL-2.0 or GPL-2+ and LGPL-2.1+", "MPL-2.0 OR (GPL-2.0-or-later AND LGPL-2.1-or-later)"),
    ("GPL-2+ with OpenSSL exception", "LicenseRef-GPL-2-with-OpenSSL-exception"),
    ("custom license", "LicenseRef-custom-license"),
])
def test_debian_licence_names_become_spdx_expressions(debian, expected):
    assert licences.debian_expression(debian) == expected


def test_machine_readable_copyright_file_declares_every_licence_with_texts_for_refs():
    expression, texts = licences.from_copyright(COPYRIGHT)
    assert expression == "BSD-3-Clause AND LicenseRef-Example-Permissive AND MIT AND (Artistic-1.0-Perl OR GPL-2.0-or-later)"
    assert texts == {"LicenseRef-Example-Permissive": "Do what you like with this file.\n\nNo warranty."}


def test_free_form_copyright_file_declares_nothing():
    assert licences.from_copyright("This package was debianized by someone.\nIt is GPL.\n") == (None, {})


def test_purls_carry_arch_distro_and_source():
    nginx = Package("nginx-light", "1.22.1-9+b1", "amd64", source="nginx")
    assert purl(nginx, DEBIAN) == "pkg:deb/debian/nginx-light@1.22.1-9%2Bb1?arch=amd64&distro=debian-12&upstream=nginx"
    perl = Package("perl-base", "1:5.36.0-7", "amd64", source="perl-base", epoch=1)
    assert purl(perl, DEBIAN) == "pkg:deb/debian/perl-base@1:5.36.0-7?arch=amd64&distro=debian-12"
    fedora = OperatingSystem("fedora", "40.0", package_format="rpm")
    assert purl(Package("curl", "1:8.6.0-7.fc40", "x86_64", epoch=1), fedora) == \
        "pkg:rpm/fedora/curl@8.6.0-7.fc40?arch=x86_64&distro=fedora-40&epoch=1"
    alpine = OperatingSystem("alpine", "3.19", package_format="apk")
    assert purl(Package("busybox", "1.36.1-r5", "x86_64"), alpine) == \
        "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64&distro=alpine-3.19"


def inventory() -> Inventory:
    packages = [Package("nginx-light", "1.22.1-9+b1", "amd64", "nginx", "1.22.1-9",
                        "Debian Nginx Maintainers <pkg-nginx-maintainers@alioth-lists.debian.net>", "https://nginx.org",
                        "nginx web server", "BSD-2-Clause AND LicenseRef-Example-Permissive"),
                Package("libc6", "2.36-9+deb12u4", "amd64", "glibc", supplier="GNU Libc Maintainers <x@debian.org>")]
    inputs = [Artifact("recipe", "web.toml", "a" * 64, "/srv/web.toml"),
              Artifact("base", "debian-12.qcow2", "b" * 64, "http://127.0.0.1:8000/debian-12.qcow2"),
              Artifact("host-file", "files/motd", "c" * 64, "/srv/files/motd")]
    return Inventory(Artifact("image", "web.qcow2", "d" * 64), DEBIAN, packages, inputs,
                     {"LicenseRef-Example-Permissive": "Do what you like."}, datetime(2026, 11, 29, tzinfo=timezone.utc))


def test_spdx_document_is_valid_and_names_packages_and_inputs(tmp_path):
    path = tmp_path / "web.spdx.json"
    spdx.write(inventory(), path)
    assert validate_full_spdx_document(parse_file(str(path))) == []
    data = json.loads(path.read_text())
    nginx = next(p for p in data["packages"] if p["name"] == "nginx-light")
    assert nginx["externalRefs"][0]["referenceLocator"].startswith("pkg:deb/debian/nginx-light@")
    assert nginx["licenseDeclared"] == "BSD-2-Clause AND LicenseRef-Example-Permissive"
    assert nginx["supplier"] == "Organization: Debian Nginx Maintainers (pkg-nginx-maintainers@alioth-lists.debian.net)"
    assert [e["licenseId"] for e in data["hasExtractedLicensingInfos"]] == ["LicenseRef-Example-Permissive"]
    relations = {(r["relationshipType"], r["relatedSpdxElement"]) for r in data["relationships"]}
    assert ("DESCRIBES", "SPDXRef-Image") in relations
    inputs = {p["name"]: p["checksums"][0]["checksumValue"] for p in data["packages"] if "imagebuilder role" in
              p.get("comment", "") and p["name"] != "web.qcow2"}
    assert inputs == {"web.toml": "a" * 64, "debian-12.qcow2": "b" * 64, "files/motd": "c" * 64}
    assert sum(1 for r in data["relationships"] if r["relationshipType"] == "GENERATED_FROM") == 3


def test_cyclonedx_document_is_valid_and_reads_back(tmp_path):
    path = tmp_path / "web.cdx.json"
    cyclonedx.write(inventory(), path)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(path.read_text()) is None
    data = json.loads(path.read_text())
    assert data["specVersion"] == "1.6" and data["metadata"]["component"]["hashes"][0]["content"] == "d" * 64
    read = {p.key: p for p in cyclonedx.read_packages(path)}
    assert read["nginx-light:amd64"].version == "1.22.1-9+b1" and read["nginx-light:amd64"].source == "nginx"
    assert set(read) == {"nginx-light:amd64", "libc6:amd64"}


def test_sboms_of_the_same_image_are_the_same_documents(tmp_path, monkeypatch):
    from imagebuilder.sbom.model import build_time
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764374400")
    made = inventory()
    made.created = build_time(datetime.now(timezone.utc))
    assert made.created == datetime(2025, 11, 29, tzinfo=timezone.utc)
    for number in (1, 2):
        spdx.write(made, tmp_path / f"{number}.spdx.json")
        cyclonedx.write(made, tmp_path / f"{number}.cdx.json")
    assert (tmp_path / "1.spdx.json").read_text() == (tmp_path / "2.spdx.json").read_text()
    assert (tmp_path / "1.cdx.json").read_text() == (tmp_path / "2.cdx.json").read_text()


def test_an_image_without_a_package_database_gets_an_sbom_without_packages():
    """A build must not fail for want of a package list (a minimal or foreign guest): no packages,
    and the build says why."""
    from imagebuilder.attest import records
    from imagebuilder.errors import GuestError

    class NoDatabase:
        def inspect_get_major_version(self, _root): return 12
        def inspect_get_minor_version(self, _root): return 5
        def inspect_get_distro(self, _root): return "debian"
        def inspect_get_product_name(self, _root): return "12.5"
        def inspect_get_package_format(self, _root): return "deb"
        def inspect_get_arch(self, _root): return "x86_64"

        def inspect_list_applications2(self, _root):
            raise GuestError("inspect_list_applications2: filesize: /var/lib/dpkg/status: No such file or directory")

    said: list[str] = []
    contents = records.read(NoDatabase(), "/dev/sda1", say=said.append)
    assert contents.packages == [] and contents.os.distro == "debian"
    assert said == ["the SBOM lists no packages: its package database cannot be read (inspect_list_applications2: "
                    "filesize: /var/lib/dpkg/status: No such file or directory)"]


def test_a_base_known_by_its_sha512_keeps_that_hash(tmp_path):
    """A virt-builder template is identified by its checksum[sha512]: both documents name the base by
    that hash, and stay valid."""
    made = inventory()
    made.inputs[1] = Artifact.of("base", "debian-12.xz", "sha512:" + "e" * 128, "http://127.0.0.1:8000/index")
    spdx.write(made, tmp_path / "web.spdx.json")
    cyclonedx.write(made, tmp_path / "web.cdx.json")
    assert validate_full_spdx_document(parse_file(str(tmp_path / "web.spdx.json"))) == []
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str((tmp_path / "web.cdx.json").read_text()) is None
    base = next(p for p in json.loads((tmp_path / "web.spdx.json").read_text())["packages"]
                if p["name"] == "debian-12.xz")
    assert base["checksums"] == [{"algorithm": "SHA512", "checksumValue": "e" * 128}]
    component = next(c for c in json.loads((tmp_path / "web.cdx.json").read_text())["components"]
                     if c["name"] == "debian-12.xz")
    assert component["hashes"] == [{"alg": "SHA-512", "content": "e" * 128}]
