"""[[output.oci]], [[output.repo]], [[output.files]] and [cache]: where the image goes besides libvirt
(registries, virt-builder repositories, other hypervisors' formats) and the stage cache shared
between machines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from imagebuilder import registry, versions
from imagebuilder.recipe.model import FileOutput, OciOutput, RepoOutput, SharedCacheSettings
from imagebuilder.recipe.tables import Table
from imagebuilder.values import ArgContext

FILE_FORMATS = ("vmdk", "vhd", "vhdx", "ova", "qcow2", "raw")
SUFFIXES = {".vmdk": "vmdk", ".vhd": "vhd", ".vhdx": "vhdx", ".ova": "ova", ".qcow2": "qcow2", ".raw": "raw",
            ".img": "raw"}
COMPRESSIONS = ("gzip", "zstd", "none")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_publish(table: Table, name: str, ctx: ArgContext) -> dict[str, Any]:
    """The oci, repos and files outputs of an [output] table, as keyword arguments of Output."""
    oci = tuple(_oci(item) for item in table.tables("oci"))
    repos = tuple(_repo(item, name, ctx) for item in table.tables("repo"))
    files = tuple(_file(item, ctx) for item in table.tables("files"))
    seen: dict[Path, int] = {}
    for index, item in enumerate(files):
        if item.path in seen:
            raise table.loader.error(table.path + ("files", index, "path"),
                                     f"{item.path} is already output.files[{seen[item.path]}]")
        seen[item.path] = index
    return {"oci": oci, "repos": repos, "files": files}


def check_oci_ref(text: str) -> str:
    """An image reference to push to: a tag, which may have placeholders such as {date} and {n}."""
    sample = versions.sample(text) if versions.is_template(text) else text
    parsed = registry.parse_reference(sample)
    if parsed.digest:
        raise ValueError(f"'{text}' names a digest; a push names a tag (the digest is known after the push)")
    if parsed.tag is None:
        raise ValueError(f"'{text}' has no tag; write it like \"registry.example/team/web:{{date}}-{{n}}\"")
    return text


def _oci(table: Table) -> OciOutput:
    ref = table.convert("ref", str, check_oci_ref)
    if ref is None:
        raise table.error(None, "missing required key 'ref'")
    output = OciOutput(ref=ref, compression=table.choice("compression", COMPRESSIONS, "gzip"))
    table.finish()
    return output


def _inside(ctx: ArgContext):
    return lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve())


def _repo(table: Table, image: str, ctx: ArgContext) -> RepoOutput:
    path = table.convert("path", str, _inside(ctx))
    if path is None:
        raise table.error(None, "missing required key 'path' (the repository's directory)")
    name = table.get("name", str, image)
    if not _TEMPLATE_NAME.match(name):
        raise table.error("name", f"'{name}' is not a template name (letters, digits, '.', '_', '-')")
    level = table.get("xz_level", int, 6)
    if not 0 <= level <= 9:
        raise table.error("xz_level", f"xz levels go from 0 to 9, not {level}")
    notes = table.get("notes", str)
    title = table.get("title", str)
    for key, value in (("notes", notes), ("title", title)):
        if value is not None and "\n[" in value:
            raise table.error(key, "a line that starts with '[' would begin a new section of the index")
    if title is not None and "\n" in title:
        raise table.error("title", "the index's name= is one line")
    repo = RepoOutput(path=path, name=name, title=title, key=table.get("key", str),
                      gnupghome=table.convert("gnupghome", str, _inside(ctx)), osinfo=table.get("osinfo", str),
                      notes=notes, arch=table.get("arch", str, "x86_64"), xz_level=level)
    table.finish()
    return repo


def _file(table: Table, ctx: ArgContext) -> FileOutput:
    raw = table.get("path", str)
    if raw is None:
        raise table.error(None, "missing required key 'path'")
    path = table.convert("path", str, _inside(ctx))
    fmt = table.get("format", str, SUFFIXES.get(path.suffix.lower()))
    if fmt is None:
        raise table.error("path", f"cannot tell the format from '{path.name}'; add format = one of "
                                  f"{', '.join(FILE_FORMATS)}")
    if fmt not in FILE_FORMATS:
        raise table.error("format", f"'{fmt}' is not one of {', '.join(FILE_FORMATS)}")
    table.finish()
    return FileOutput(path=path, format=fmt)


def parse_cache(table: Table | None, ctx: ArgContext) -> SharedCacheSettings:
    """[cache]: from (a repository or a list of them), to, and secret_file (the key secret the machines
    share; the command line may give it instead, so its absence is noticed when a build starts)."""
    if table is None:
        return SharedCacheSettings()
    raw = table.get("from", (str, list), [])
    sources = table.convert("from", (str, list), lambda value: [
        registry.check_repository(_string(item)) for item in ([value] if isinstance(value, str) else value)])
    settings = SharedCacheSettings(sources=tuple(sources or ()) if raw else (),
                                   target=table.convert("to", str, registry.check_repository),
                                   secret_file=table.convert("secret_file", str, _inside(ctx)))
    table.finish()
    return settings


def _string(item: object) -> str:
    if not isinstance(item, str):
        raise ValueError("expected a repository or a list of them")
    return item
