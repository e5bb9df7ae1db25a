"""[base]: where the base image comes from (a URL, a local path, a bootstrap or a template)."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from imagebuilder import arches, registry, values
from imagebuilder.recipe.model import Base, Bootstrap
from imagebuilder.recipe.tables import Table
from imagebuilder.sources.distros import distribution
from imagebuilder.sources.index import normalize_arch
from imagebuilder.values import ArgContext

_CHECKSUM = re.compile(r"^(sha256|sha512):([0-9a-fA-F]+)$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
MIRROR_ENV = "IMAGEBUILDER_MIRROR"
BASE_SOURCES = ("url", "oci", "path", "bootstrap", "template")
_TEMPLATE = re.compile(r"^[A-Za-z0-9._:-]+$")  # a virt-builder os-version (or alias; ':' in simplestreams ids)


def parse_base(table: Table, ctx: ArgContext, arch: str | None = None) -> Base:
    """[base]: exactly one source, with the keys that source takes, for an image of arch ([image] arch;
    None: the host's, or a template's own arch)."""
    sources = [key for key in BASE_SOURCES if key in table.data]
    if len(sources) != 1:
        problem = f"choose one of {', '.join(repr(k) for k in BASE_SOURCES)}" if not sources else \
            f"'{sources[0]}' and '{sources[1]}' exclude each other; keep one"
        raise table.error(sources[1] if len(sources) > 1 else None, problem)
    table.finish(_BASE_KEYS[sources[0]])  # an unknown (mistyped) key first: it explains what follows
    if sources[0] == "template":
        arch = _template_arch(table, arch)
    arch = arch or arches.host().name
    if sources[0] == "bootstrap":
        base = _bootstrap_base(table, arches.lookup(arch))
    else:
        base = {"url": _url_base, "oci": _oci_base, "path": _path_base, "template": _template_base}[sources[0]](table, ctx)
    table.finish()
    return dataclasses.replace(base, arch=arch)


def _template_arch(table: Table, image_arch: str | None) -> str | None:
    """A template's arch: [base] arch (which virt-builder's users know) or [image] arch, never two different."""
    arch = table.convert("arch", str, lambda value: arches.lookup(normalize_arch(value)).name)
    if arch is not None and image_arch is not None and arch != image_arch:
        raise table.error("arch", f"the template's arch is the image's, and [image] arch is {image_arch}; "
                                  "write it once, under [image]")
    return arch or image_arch


_BASE_KEYS = {"url": ("url", "checksum", "checksum_url", "signature_url", "keyring"), "oci": ("oci",), "path": ("path",),
              "bootstrap": ("bootstrap",), "template": ("template", "arch", "repo", "repo_key")}


def _url_base(table: Table, ctx: ArgContext) -> Base:
    url = table.get("url", str)
    _check_url(table, "url", url, ctx)
    checksum = table.get("checksum", str)
    checksum_url = table.get("checksum_url", str)
    signature_url = table.get("signature_url", str)
    _check_relative_url(table, "checksum_url", checksum_url, ctx)
    _check_relative_url(table, "signature_url", signature_url, ctx)
    keyring = table.get("keyring", str)
    if checksum is not None and checksum_url is not None:
        raise table.error("checksum_url", "'checksum' and 'checksum_url' exclude each other; keep one")
    if checksum is None and checksum_url is None:
        raise table.error("checksum", "a url base needs checksum = \"sha256:…\" or checksum_url = \"…/SHA256SUMS\" "
                                      "(or checksum = \"none\" to skip verification)")
    if checksum not in (None, "none"):
        _check_checksum(table, checksum)
    if (signature_url is None) != (keyring is None):
        missing = "keyring" if keyring is None else "signature_url"
        raise table.error(missing, "a signed checksum file needs both 'signature_url' and 'keyring'")
    if signature_url is not None and checksum_url is None:
        raise table.error("signature_url", "a signature is checked on a checksum file: add checksum_url")
    keyring_path = None
    if keyring is not None:
        keyring_path = table.convert("keyring", str, lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve()))
        if not keyring_path.is_file():
            raise table.error("keyring", f"keyring '{keyring}' does not exist (looked for {keyring_path})")
    return Base(url=url, checksum=None if checksum in (None, "none") else checksum.lower(),
                checksum_url=checksum_url, signature_url=signature_url, keyring=keyring_path)


def _check_url(table: Table, key: str, url: str, ctx: ArgContext | None = None) -> None:
    parsed = urlparse(url)
    if not parsed.scheme or "://" not in url:
        raise table.error(key, f"'{url}' is not a URL; write it like \"https://host/path\" or \"file:///path\"")
    if parsed.scheme not in ("http", "https", "file"):
        raise table.error(key, f"unsupported URL scheme '{parsed.scheme}' (use http, https or file)")
    if parsed.password is not None:
        raise table.error(key, "a password in a URL would show in logs and manifests; put the credentials "
                               "in ~/.netrc instead")
    if parsed.scheme == "file" and ctx is not None:
        try:
            ctx.inside(url, Path(unquote(parsed.path)).resolve())
        except ValueError as exc:
            raise table.error(key, str(exc)) from None


def _check_relative_url(table: Table, key: str, url: str | None, ctx: ArgContext) -> None:
    """A URL that may be relative to the image's URL (checksum_url, signature_url)."""
    if url is not None and "://" in url:
        _check_url(table, key, url, ctx)


def _oci_base(table: Table, _ctx: ArgContext) -> Base:
    """A KubeVirt containerDisk in a registry: pinned by digest, or a tag resolved at every build."""
    return Base(oci=str(table.convert("oci", str, registry.parse_reference)))


def _path_base(table: Table, ctx: ArgContext) -> Base:
    path = table.get("path", str)
    resolved = table.convert("path", str, lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve()))
    if not resolved.is_file():
        raise table.error("path", f"base image '{path}' does not exist (looked for {resolved})")
    return Base(path=resolved)


def _bootstrap_base(table: Table, arch: arches.Arch) -> Base:
    boot = table.table("bootstrap")
    suite = boot.convert("suite", str, _check_suite, "bookworm")
    mirror = boot.get("mirror", str, os.environ.get(MIRROR_ENV) or distribution(suite).mirror_for(arch.name))
    _check_url(boot, "mirror", mirror)
    packages = boot.convert("packages", list, values.packages, ())
    kernel = boot.convert("kernel", str, lambda name: _kernel_for(name, arch), None)
    boot.finish()
    return Base(bootstrap=Bootstrap(suite, mirror, tuple(packages), kernel))


def _kernel_for(name: str, arch: arches.Arch) -> str:
    """One kernel package, not one named for another architecture (linux-image-cloud-amd64 on arm64)."""
    package = _one_package(name)
    for other in arches.ARCHES.values():
        if other is not arch and package.endswith(f"-{other.debian}"):
            raise ValueError(f"'{package}' is a kernel for {other.debian}, and this image is {arch.name} "
                             f"({arch.debian}): write {package.removesuffix(other.debian) + arch.debian}")
    return package


def _one_package(name: str) -> str:
    specs = values.packages(name)
    if len(specs) != 1:
        raise ValueError(f"expected one kernel package, got {len(specs)}")
    return specs[0]


def _check_suite(suite: str) -> str:
    distribution(suite)
    return suite


def _template_base(table: Table, ctx: ArgContext) -> Base:
    """A virt-builder template; whether it exists is known only once its repository's index is read."""
    template = table.get("template", str)
    if not _TEMPLATE.match(template):
        raise table.error("template", f"'{template}' is not a template name (letters, digits, '.', '_', '-', ':'; "
                                      "see `imagebuilder templates list`)")
    repo = table.get("repo", str)
    if repo is not None and "://" not in repo:  # a path, as libguestfs reads one: relative to the recipe
        repo = table.convert("repo", str, lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve())).as_uri()
    if repo is not None:
        _check_url(table, "repo", repo, ctx)
    key = table.get("repo_key", str)
    key_path = None
    if key is not None:
        if repo is None:
            raise table.error("repo_key", "'repo_key' signs the index named by 'repo'; add repo = \"…/index.asc\" "
                                          "(keys of configured repositories go in their repos.d file)")
        key_path = table.convert("repo_key", str, lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve()))
        if not key_path.is_file():
            raise table.error("repo_key", f"key '{key}' does not exist (looked for {key_path})")
    return Base(template=template, repo=repo, repo_key=key_path)


def _check_checksum(table: Table, checksum: str) -> None:
    match = _CHECKSUM.match(checksum)
    if not match:
        algo, sep, _ = checksum.partition(":")
        if sep and algo.lower() in _DIGEST_LENGTHS:
            raise table.error("checksum", f"a {algo.lower()} digest is written in hex digits (0-9, a-f)")
        if sep and re.fullmatch(r"[A-Za-z0-9-]+", algo):
            raise table.error("checksum", f"unsupported checksum type '{algo}'; write \"sha256:HEX\" or \"sha512:HEX\"")
        raise table.error("checksum", "write it as \"sha256:HEX\" or \"sha512:HEX\"")
    algo, hexdigest = match.groups()
    if len(hexdigest) != _DIGEST_LENGTHS[algo]:
        raise table.error("checksum", f"a {algo} digest has {_DIGEST_LENGTHS[algo]} hex digits, this one has {len(hexdigest)}")
