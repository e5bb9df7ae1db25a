"""[disk] and [output]: the image's format and size, and where it goes (pools, a file, more hosts)."""

from __future__ import annotations

import re
from pathlib import Path

from imagebuilder import units, versions
from imagebuilder.recipe.model import FORMATS, Disk, Output, Target
from imagebuilder.recipe.publish import parse_publish
from imagebuilder.recipe.tables import Table, check_name, check_volume
from imagebuilder.values import ArgContext

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def parse_disk(table: Table | None) -> Disk:
    """[disk]: the image's format, the size to grow it to, whether to compress it."""
    if table is None:
        return Disk()
    disk = Disk(format=table.choice("format", FORMATS, "qcow2"),
                size=table.convert("size", (str, int), units.parse_size),
                compress=table.get("compress", bool, False))
    if disk.compress and disk.format != "qcow2":
        raise table.error("compress", "only qcow2 images can be compressed")
    table.finish()
    return disk


def parse_output(table: Table | None, name: str, fmt: str, ctx: ArgContext) -> Output:
    """[output]: the pool volume (by default IMAGE.FORMAT) or file, and the further targets."""
    if table is None:
        return Output(volume=f"{name}.{fmt}")
    path = table.get("path", str)
    libvirt_keys = [k for k in ("uri", "pool", "volume") if k in table.data]
    volume = table.convert("volume", str, _check_volume_template, f"{name}.{fmt}")
    targets = tuple(_target(item, volume) for item in table.tables("targets"))
    versioned = versions.is_template(volume)
    elsewhere = parse_publish(table, name, ctx)  # registries, virt-builder repositories, other formats
    output = Output(
        libvirt=bool(libvirt_keys) or (path is None and not any(elsewhere.values())),
        uri=table.convert("uri", str, _check_uri, "qemu:///system"),
        pool=table.convert("pool", str, check_name, "default"),
        volume=volume,
        path=table.convert("path", str, lambda raw: _check_path(raw, ctx)),
        targets=targets,
        alias=_alias(table, volume, f"{name}.{fmt}") if versioned else None,
        keep=table.get("keep", int),
        **elsewhere,
    )
    for key in ("alias", "keep"):
        if key in table.data and not versioned:
            raise table.error(key, f"'{key}' is for versioned volume names: put a placeholder such as "
                                   "{n} or {date} in output.volume")
    if output.keep is not None and output.keep < 1:
        raise table.error("keep", f"keep = {output.keep} would delete the version just built; give 1 or more")
    seen = {(output.uri, output.pool, output.volume)} if output.libvirt else set()
    for index, target in enumerate(targets):
        where = (target.uri, target.pool, target.volume)
        if where in seen:
            raise table.loader.error(table.path + ("targets", index),
                                     f"volume {target.volume} in pool {target.pool} at {target.uri} "
                                     "is already an output")
        if target.domain and versions.is_template(target.volume):
            raise table.loader.error(table.path + ("targets", index, "domain"),
                                     f"a domain there needs a stable volume name, and '{target.volume}' names a new "
                                     "version each build (only the [output] host gets an alias); give this target "
                                     "a volume without placeholders")
        seen.add(where)
    table.finish()
    return output


def _alias(table: Table, template: str, default: str) -> str:
    """The stable name of a versioned output: output.alias, by default IMAGE.FORMAT."""
    alias = table.convert("alias", str, check_volume, default)
    if versions.is_template(alias):
        raise table.error("alias", f"the alias '{alias}' must be one fixed name, without placeholders")
    if versions.matches(template, alias):
        raise table.error("alias", f"the alias '{alias}' could also be the name of a version of '{template}'")
    return alias


def _check_path(value: str, ctx: ArgContext) -> Path:
    """The output file: a fixed name (versions are made for volumes), inside the recipe's directory
    when paths are strict."""
    if versions.is_template(value):
        raise ValueError(f"'{value}': versioned names (placeholders such as {{n}}) are made for output.volume "
                         "only; give the file a fixed name")
    return ctx.inside(value, (ctx.base_dir / value).resolve())


def _check_volume_template(value: str) -> str:
    """A volume name, or a template of one whose names are all valid volume names."""
    check_volume(value)
    if versions.is_template(value):
        check_volume(versions.sample(value))
    return value


def _target(table: Table, volume: str) -> Target:
    uri = table.convert("uri", str, _check_uri)
    if uri is None:
        raise table.error(None, "missing required key 'uri'")
    target = Target(uri=uri, pool=table.convert("pool", str, check_name, "default"),
                    volume=table.convert("volume", str, _check_volume_template, volume),
                    domain=table.get("domain", bool, False))
    table.finish()
    return target


def _check_uri(value: str) -> str:
    if not _URI.match(value):
        raise ValueError(f"'{value}' is not a libvirt URI; write it like \"qemu:///system\" or "
                         "\"qemu+ssh://user@host/system\"")
    return value
