"""`format=simplestreams` repositories (item 4), read as virt-builder's simplestreams_parser.ml reads them:
streams/v1/index.json lists product files; each product is one template, its newest version that has
a disk.img item, named by the product id, aliased by its pubname."""

from __future__ import annotations

import json
import re

import pytest

from imagebuilder.errors import SourceError
from imagebuilder.sources import repos, template
from tests.signing import make_key

SHA256 = "12" * 32


def products() -> dict:
    def version(pubname: str, path: str, size: int, **sums: str) -> dict:
        return {"pubname": pubname, "items": {"root.tar.xz": {"path": "x.tar.xz", "size": 1},
                                              "disk.img": {"path": path, "size": size, **sums}}}

    return {"format": "products:1.0", "products": {
        "org.example:tiny:1:x86_64": {"arch": "x86_64", "versions": {
            "20240101": version("tiny-1.0-x86_64", "1.0/tiny-x86_64.img", 1000, sha256=SHA256),
            "20240301": version("tiny-1.1-x86_64", "1.1/tiny-x86_64.img", 2000, sha256=SHA256, md5="00" * 16),
            "20240401": {"pubname": "tiny-1.2-x86_64", "items": {"lxc.tar.xz": {"path": "l", "size": 1}}},
        }},
        "org.example:tiny:1:i386": {"arch": "i386", "pubname": "tiny-i386", "versions": {
            "20240101": {"items": {"disk1.img": {"path": "1.0/tiny-i386.img", "size": 900, "sha512": "ef" * 64}}},
        }},
        "org.example:broken:1:x86_64": {"versions": {}},
    }}


def write_repo(root, signed_by=None):
    streams = root / "streams" / "v1"
    streams.mkdir(parents=True)
    listing = {"format": "index:1.0", "index": {
        "org.example:released": {"format": "products:1.0", "datatype": "image-downloads",
                                 "path": "streams/v1/products.json"},
        "org.example:other": {"format": "products:1.0", "datatype": "image-ids", "path": "streams/v1/ids.json"},
    }}
    (streams / "index.json").write_text(json.dumps(listing))
    (streams / "products.json").write_text(json.dumps(products()))
    if signed_by is not None:
        listing["index"]["org.example:released"]["path"] = "streams/v1/products.sjson"
        (streams / "index.plain").write_text(json.dumps(listing))
        signed_by.clearsign(streams / "index.plain", streams / "index.sjson")
        signed_by.clearsign(streams / "products.json", streams / "products.sjson")
    return repos.Repo("cirros-like", root.as_uri(), gpgkey=signed_by.public if signed_by else None,
                      format="simplestreams")


def test_products_become_templates_as_in_virt_builder(tmp_path):
    loaded = repos.load(write_repo(tmp_path))
    tiny, tiny_i386 = loaded.index.templates
    # the newest version with a disk image (20240401 has none); its pubname is the name and the alias
    assert (tiny.name, tiny.arch, tiny.revision, tiny.printable_name, tiny.aliases, tiny.size, tiny.checksum) == \
        ("org.example:tiny:1:x86_64", "x86_64", "20240301", "tiny-1.1-x86_64", ("tiny-1.1-x86_64",), 2000,
         f"sha256:{SHA256}")
    assert (tiny_i386.printable_name, tiny_i386.file, tiny_i386.checksum) == \
        ("tiny-i386", "1.0/tiny-i386.img", "sha512:" + "ef" * 64)
    (skipped,) = loaded.index.skipped
    assert skipped.name == "org.example:broken:1:x86_64" and "no usable 'arch'" in skipped.problem
    assert loaded.index.warnings[0].startswith(f"{tmp_path.as_uri()}/streams/v1/index.json: "
                                               "[org.example:broken:1:x86_64] ")
    assert not loaded.verified


def test_a_template_is_found_by_its_pubname_and_its_file_is_relative_to_the_repository(tmp_path):
    search = repos.search([write_repo(tmp_path)])
    found = template.resolve("tiny-1.1-x86_64", "x86_64", search)
    assert found.file_url == f"{tmp_path.as_uri()}/1.1/tiny-x86_64.img"
    assert template.resolve("tiny-i386", "i686", search).template.arch == "i386"  # i686 is i386


def test_a_signed_repository_reads_the_sjson_files(tmp_path):
    # virt-builder: with a key, streams/v1/index.sjson and the product files it names are verified
    repo = write_repo(tmp_path / "repo", signed_by=make_key(tmp_path / "key"))
    loaded = repos.load(repo)
    assert loaded.verified and len(loaded.index.templates) == 2
    products_file = tmp_path / "repo" / "streams" / "v1" / "products.sjson"
    products_file.write_text(products_file.read_text().replace("2000", "2001"))
    with pytest.raises(SourceError, match="the signature of streams/v1/products.sjson of repository .* is not valid"):
        repos.load(repo)


@pytest.mark.parametrize(("name", "content", "words"), [
    ("index.json", "not json", "streams/v1/index.json is not JSON"),
    ("index.json", '{"format": "products:1.0"}', "is not a Simple Streams index:1.0 file (format: products:1.0)"),
    ("products.json", '{"format": "index:1.0"}', "is not a Simple Streams products:1.0 file"),
])
def test_a_file_that_is_not_simple_streams_makes_the_repository_unreadable(tmp_path, name, content, words):
    repo = write_repo(tmp_path)
    (tmp_path / "streams" / "v1" / name).write_text(content)
    with pytest.raises(SourceError, match=re.escape(words)):
        repos.load(repo)
