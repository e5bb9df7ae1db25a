"""The recipe: TOML parsed into a frozen, typed model, validated whole before anything runs.

Every problem is reported as `FILE:LINE: key 'a.b': what is wrong` (RecipeError, exit code 2).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from imagebuilder import tomlpos, units
from imagebuilder.errors import RecipeError
from imagebuilder.guest import ops, sysprep
from imagebuilder.guest import args
from imagebuilder.guest.args import ArgContext

FORMATS = ("qcow2", "raw")
WAITS = ("agent", "none")
GRAPHICS = ("none", "vnc", "spice")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_CHECKSUM = re.compile(r"^(sha256|sha512):([0-9a-fA-F]+)$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "IMAGEBUILDER_MIRROR"
BASE_SOURCES = ("url", "path", "bootstrap")


@dataclass(frozen=True)
class Bootstrap:
    """Build the base from distribution packages with mmdebstrap."""

    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Base:
    """Where the base image comes from: exactly one of url, path, bootstrap."""

    url: str | None = None
    checksum: str | None = None
    checksum_url: str | None = None
    signature_url: str | None = None
    keyring: Path | None = None
    path: Path | None = None
    bootstrap: Bootstrap | None = None

    @property
    def kind(self) -> str:
        """'url', 'path' or 'bootstrap'."""
        return "url" if self.url else "path" if self.path else "bootstrap"


@dataclass(frozen=True)
class Disk:
    """Output disk format and optional size to grow to (bytes)."""

    format: str = "qcow2"
    size: int | None = None


@dataclass(frozen=True)
class Step:
    """One customization step: a registered operation, its parsed argument, and where it was written."""

    op: str
    arg: Any
    line: int | None

    def describe(self) -> str:
        """Text for logs and the manifest (never contains secrets)."""
        return f"{self.op}: {ops.REGISTRY[self.op].describe(self.arg)}"


@dataclass(frozen=True)
class Output:
    """Where the image goes: a libvirt pool volume, a local file, or both."""

    libvirt: bool = True
    uri: str = "qemu:///system"
    pool: str = "default"
    volume: str = ""
    path: Path | None = None


@dataclass(frozen=True)
class Domain:
    """The libvirt domain to define (and start) from the published volume."""

    name: str
    memory: int = 1 << 30
    vcpus: int = 1
    network: str | None = "default"
    graphics: str = "none"
    start: bool = True
    wait: str = "agent"
    timeout: int = 600


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    file: Path
    digest: str
    name: str
    base: Base
    disk: Disk
    steps: tuple[Step, ...]
    sysprep: tuple[str, ...]
    output: Output
    domain: Domain | None
    network: bool = field(default=False)

    @property
    def base_dir(self) -> Path:
        """The directory recipe paths are relative to."""
        return self.file.parent


class _Table:
    """Reads one TOML table, remembering which keys were used so the rest can be rejected."""

    def __init__(self, loader: _Loader, data: dict[str, Any], path: tuple[str | int, ...]):
        self.loader, self.data, self.path = loader, data, path
        self.used: set[str] = set()

    def error(self, key: str | None, problem: str) -> RecipeError:
        return self.loader.error(self.path + ((key,) if key else ()), problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(None, f"missing required key '{key}'") if self.path else \
                    self.loader.error((key,), "missing required section")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(_type_name(k) for k in kinds)
            raise self.error(key, f"expected {names}, got {_type_name(type(value))}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"'{value}' is not one of {', '.join(choices)}")
        return value

    def convert(self, key: str, kind: type | tuple[type, ...], parser: Any, default: Any = None) -> Any:
        value = self.get(key, kind)
        if value is None:
            return default
        try:
            return parser(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def table(self, key: str, required: bool = False) -> _Table | None:
        value = self.get(key, dict, required=required)
        return None if value is None else _Table(self.loader, value, self.path + (key,))

    def finish(self, known: tuple[str, ...] = ()) -> None:
        """Reject keys that were neither read nor listed in `known`, suggesting the closest one."""
        allowed = self.used | set(known)
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.error(key, f"unknown key{hint}")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", dict: "a table",
            list: "an array", float: "a number"}.get(kind, kind.__name__)


class _Loader:
    def __init__(self, file: Path, source: str):
        self.file, self.source = file, source
        self.display = str(file)

    def error(self, path: tuple[str | int, ...], problem: str) -> RecipeError:
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        return RecipeError(self.display, tomlpos.key_line(self.source, path), key or None, problem)


def load(file: str | Path) -> Recipe:
    """Read and validate a recipe file; raise RecipeError at the first problem."""
    path = Path(file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(str(path), None, None, f"cannot read recipe: {exc.strerror}") from None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(str(path), None, None, "recipe is not UTF-8 text") from None
    loader = _Loader(path, source)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        message = re.sub(r"\s*\(at .*\)$", "", str(exc))
        raise RecipeError(str(path), tomlpos.parse_error_line(exc), None, f"invalid TOML: {message}") from None
    return _build(loader, data, hashlib.sha256(raw).hexdigest())


def _build(loader: _Loader, data: dict[str, Any], digest: str) -> Recipe:
    top = _Table(loader, data, ())
    top.finish(("image", "base", "disk", "steps", "sysprep", "output", "domain"))
    ctx = ArgContext(loader.file.resolve().parent)
    image = top.table("image", required=True)
    name = image.convert("name", str, _check_name)
    if name is None:
        raise image.error(None, "missing required key 'name'")
    image.finish()
    base = _base(top.table("base", required=True), ctx)
    disk = _disk(top.table("disk"))
    steps = _steps(loader, top.get("steps", list, []), ctx)
    sysprep_table = top.table("sysprep")
    sysprep_ops = _sysprep(sysprep_table)
    output = _output(top.table("output"), name, disk.format, ctx)
    domain = _domain(top.table("domain"), name)
    if domain and not output.libvirt:
        raise loader.error(("domain",), "a domain needs the image in a libvirt pool, but [output] names only a file")
    needs_network = any(ops.REGISTRY[s.op].needs_network for s in steps)
    return Recipe(loader.file, digest, name, base, disk, tuple(steps), sysprep_ops, output, domain, needs_network)


def _check_name(value: str) -> str:
    if not _NAME.match(value) or len(value) > 200:
        raise ValueError(f"'{value}' is not a valid name (letters, digits, '_', '.', '+', '-')")
    return value


def _base(table: _Table, ctx: ArgContext) -> Base:
    sources = [key for key in BASE_SOURCES if key in table.data]
    if len(sources) != 1:
        problem = f"choose one of {', '.join(repr(k) for k in BASE_SOURCES)}" if not sources else \
            f"'{sources[0]}' and '{sources[1]}' exclude each other; keep one"
        raise table.error(sources[1] if len(sources) > 1 else None, problem)
    base = {"url": _url_base, "path": _path_base, "bootstrap": _bootstrap_base}[sources[0]](table, ctx)
    table.finish()
    return base


def _url_base(table: _Table, ctx: ArgContext) -> Base:
    url = table.get("url", str)
    _check_url(table, "url", url)
    checksum = table.get("checksum", str)
    checksum_url = table.get("checksum_url", str)
    signature_url = table.get("signature_url", str)
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
        keyring_path = (ctx.base_dir / keyring).resolve()
        if not keyring_path.is_file():
            raise table.error("keyring", f"keyring '{keyring}' does not exist (looked for {keyring_path})")
    return Base(url=url, checksum=None if checksum in (None, "none") else checksum.lower(),
                checksum_url=checksum_url, signature_url=signature_url, keyring=keyring_path)


def _check_url(table: _Table, key: str, url: str) -> None:
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise table.error(key, f"unsupported URL scheme '{scheme}' (use http, https or file)")


def _path_base(table: _Table, ctx: ArgContext) -> Base:
    path = table.get("path", str)
    resolved = (ctx.base_dir / path).resolve()
    if not resolved.is_file():
        raise table.error("path", f"base image '{path}' does not exist (looked for {resolved})")
    return Base(path=resolved)


def _bootstrap_base(table: _Table, _ctx: ArgContext) -> Base:
    boot = table.table("bootstrap")
    suite = boot.get("suite", str, "bookworm")
    mirror = boot.get("mirror", str, os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR)
    _check_url(boot, "mirror", mirror)
    packages = boot.convert("packages", list, args.packages, ())
    boot.finish()
    return Base(bootstrap=Bootstrap(suite, mirror, tuple(packages)))


def _check_checksum(table: _Table, checksum: str) -> None:
    match = _CHECKSUM.match(checksum)
    if not match:
        raise table.error("checksum", "write it as \"sha256:HEX\" or \"sha512:HEX\"")
    algo, hexdigest = match.groups()
    if len(hexdigest) != _DIGEST_LENGTHS[algo]:
        raise table.error("checksum", f"a {algo} digest has {_DIGEST_LENGTHS[algo]} hex digits, this one has {len(hexdigest)}")


def _disk(table: _Table | None) -> Disk:
    if table is None:
        return Disk()
    disk = Disk(format=table.choice("format", FORMATS, "qcow2"),
                size=table.convert("size", (str, int), units.parse_size))
    table.finish()
    return disk


def _steps(loader: _Loader, items: list[Any], ctx: ArgContext) -> list[Step]:
    steps = []
    for index, item in enumerate(items):
        where = ("steps", index)
        if not isinstance(item, dict):
            raise loader.error(where, "each step is a table: write [[steps]] with one operation in it")
        names = list(item)
        if len(names) != 1:
            problem = "empty step; name one operation" if not names else \
                f"one operation per step, found {', '.join(names)}"
            raise loader.error(where, problem)
        op_name = names[0]
        op = ops.REGISTRY.get(op_name)
        if op is None:
            close = difflib.get_close_matches(op_name.replace("-", "_"), list(ops.REGISTRY), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (see `imagebuilder ops`)"
            raise loader.error(where + (op_name,), f"unknown operation{hint}")
        try:
            arg = op.parse(item[op_name], ctx)
        except ValueError as exc:
            raise loader.error(where + (op_name,), str(exc)) from None
        steps.append(Step(op_name, arg, tomlpos.key_line(loader.source, where + (op_name,))))
    return steps


def _sysprep(table: _Table | None) -> tuple[str, ...]:
    if table is None:
        return tuple(sysprep.select([]))
    requested = table.get("operations", list, [])
    if not all(isinstance(x, str) for x in requested):
        raise table.error("operations", "expected an array of operation names")
    try:
        chosen = sysprep.select(requested)
    except ValueError as exc:
        raise table.error("operations", str(exc)) from None
    enabled = table.get("enabled", bool, True)
    table.finish()
    return tuple(chosen) if enabled else ()


def _output(table: _Table | None, name: str, fmt: str, ctx: ArgContext) -> Output:
    if table is None:
        return Output(volume=f"{name}.{fmt}")
    path = table.get("path", str)
    libvirt_keys = [k for k in ("uri", "pool", "volume") if k in table.data]
    output = Output(
        libvirt=bool(libvirt_keys) or path is None,
        uri=table.get("uri", str, "qemu:///system"),
        pool=table.convert("pool", str, _check_name, "default"),
        volume=table.convert("volume", str, _check_volume, f"{name}.{fmt}"),
        path=(ctx.base_dir / path).resolve() if path else None,
    )
    table.finish()
    return output


def _check_volume(value: str) -> str:
    if "/" in value or value.startswith(".") or not value or len(value) > 255 or "\0" in value:
        raise ValueError(f"'{value}' is not a valid volume name")
    return value


def _domain(table: _Table | None, name: str) -> Domain | None:
    if table is None:
        return None
    network = table.get("network", str, "default")
    domain = Domain(
        name=table.convert("name", str, _check_name, name),
        memory=table.convert("memory", (str, int), units.parse_size, 1 << 30),
        vcpus=table.get("vcpus", int, 1),
        network=None if network == "none" else network,
        graphics=table.choice("graphics", GRAPHICS, "none"),
        start=table.get("start", bool, True),
        wait=table.choice("wait", WAITS, "agent"),
        timeout=table.convert("timeout", (str, int), units.parse_duration, 600),
    )
    if not 1 <= domain.vcpus <= 512:
        raise table.error("vcpus", "must be between 1 and 512")
    if domain.memory < 64 << 20:
        raise table.error("memory", "must be at least 64M")
    table.finish()
    return domain
