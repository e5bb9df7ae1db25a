"""`format=simplestreams` repositories (virt-builder's cirros.conf kind), read as virt-builder reads them.

The repository's `uri` is a directory. Its `streams/v1/index.json` (or, when the repository has a
key, `streams/v1/index.sjson` clearsigned by it) lists product files; the entries of format
`products:1.0` and datatype `image-downloads` name them by `path`. Each product of a product file
becomes one template:

- its os-version is the product's id, its arch the product's `arch`;
- of its `versions`, the greatest version key (compared as text) that has a `disk.img` (or
  `disk1.img`) item is taken; the template's revision is that key;
- the item's `path` (relative to the repository's uri) is the file, its `size` the size, its
  `sha512` or `sha256` the checksum; the version's (or the product's) `pubname` is the printable
  name and the one alias.

A product that lacks what a template needs is skipped with a warning; a file that is not JSON of
the expected format makes the repository unreadable.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any
from urllib.parse import urljoin

from imagebuilder.errors import SourceError
from imagebuilder.sources import index, repos

_DISK_ITEMS = ("disk.img", "disk1.img")
_HEX = re.compile(r"[0-9a-f]+")
MAX_PRODUCT_FILES = 64


def load(repo: repos.Repo) -> repos.RepoIndex:
    """The templates of a simplestreams repository."""
    base = repo.uri if repo.uri.endswith("/") else repo.uri + "/"
    name = "streams/v1/index.sjson" if repo.gpgkey else "streams/v1/index.json"
    top = _document(repo, base, name, "index:1.0")
    paths = [entry.get("path") for entry in _object(top.get("index"), repo, name).values()
             if isinstance(entry, dict) and entry.get("format") == "products:1.0"
             and entry.get("datatype") == "image-downloads"]
    if len(paths) > MAX_PRODUCT_FILES:
        raise SourceError(f"repository {repo}: {name} lists {len(paths)} product files; refusing more than "
                          f"{MAX_PRODUCT_FILES}")
    templates: list[index.Template] = []
    skipped: list[index.Skipped] = []
    for path in paths:
        if not isinstance(path, str) or "://" in path or path.startswith("/"):
            raise SourceError(f"repository {repo}: {name} names a product file {path!r} outside the repository")
        products = _object(_document(repo, base, path, "products:1.0").get("products"), repo, path)
        for product_id, product in products.items():
            try:
                templates.append(_template(product_id, product))
            except ValueError as exc:
                arch = product.get("arch") if isinstance(product, dict) else None
                skipped.append(index.Skipped(product_id, arch if isinstance(arch, str) else None, (), 0,
                                             f"product in {path}: {exc}"))
    found = index.Index(urljoin(base, name), tuple(templates), tuple(skipped), base=base)
    warnings = tuple(f"{found.describe_skipped(s)}; this template is skipped" for s in skipped)
    return repos.RepoIndex(repo, dataclasses.replace(found, warnings=warnings), repo.gpgkey is not None)


def _document(repo: repos.Repo, base: str, path: str, fmt: str) -> dict[str, Any]:
    text, _first, _verified = repos.read_text(repo, urljoin(base, path), path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"repository {repo}: {path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, dict) or document.get("format") != fmt:
        found = document.get("format") if isinstance(document, dict) else None
        raise SourceError(f"repository {repo}: {path} is not a Simple Streams {fmt} file (format: {found})")
    return document


def _object(value: Any, repo: repos.Repo, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourceError(f"repository {repo}: {path} has no JSON object where Simple Streams has one")
    return value


def _template(product_id: str, product: Any) -> index.Template:
    """One product as a template; ValueError if it lacks something a template needs."""
    if not isinstance(product, dict) or not isinstance(product.get("arch"), str) or \
            not re.fullmatch(r"[A-Za-z0-9_.-]+", product["arch"]):
        raise ValueError("no usable 'arch'")
    versions = product.get("versions")
    if not isinstance(versions, dict):
        raise ValueError("no 'versions'")
    with_disk = sorted(((key, version) for key, version in versions.items() if isinstance(version, dict)
                        and isinstance(version.get("items"), dict)
                        and any(isinstance(version["items"].get(n), dict) for n in _DISK_ITEMS)), reverse=True)
    if not with_disk:
        raise ValueError("no version with a disk.img item")
    key, version = with_disk[0]
    item = next(version["items"][n] for n in _DISK_ITEMS if isinstance(version["items"].get(n), dict))
    pubname = version.get("pubname", product.get("pubname"))
    path, size = item.get("path"), item.get("size")
    if not isinstance(pubname, str) or not pubname:
        raise ValueError(f"version {key} has no 'pubname'")
    if not isinstance(path, str) or not path or "://" in path or path.startswith("/"):
        raise ValueError(f"version {key}: the disk item's 'path' must be relative to the repository")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"version {key}: the disk item has no whole 'size'")
    return index.Template(name=product_id, arch=product["arch"], file=path, size=size, line=0,
                          printable_name=pubname, checksum=_checksum(item), revision=key,
                          aliases=(pubname,))


def _checksum(item: dict[str, Any]) -> str | None:
    for algo, length in (("sha512", 128), ("sha256", 64)):
        value = item.get(algo)
        if isinstance(value, str) and len(value) == length and _HEX.fullmatch(value.lower()):
            return f"{algo}:{value.lower()}"
    return None
