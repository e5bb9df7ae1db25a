"""The recipe: TOML parsed into a frozen, typed model, validated whole before anything runs.

Every problem is reported as `FILE:LINE: key 'a.b': what is wrong` (RecipeError, exit code 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from imagebuilder import tomlpos, units, versions
from imagebuilder.checks import Check
from imagebuilder.errors import RecipeError
from imagebuilder.guest import commands_file, ops, sysprep
from imagebuilder.guest import args
from imagebuilder.guest.args import ArgContext
from imagebuilder.virt import domainxml, osinfo
from imagebuilder.sources.distros import distribution

FORMATS = ("qcow2", "raw")
GRAPHICS = domainxml.GRAPHICS
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MACHINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BRIDGE = re.compile(r"^[^/\s:]{1,15}$")  # a Linux interface name
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_CHECKSUM = re.compile(r"^(sha256|sha512):([0-9a-fA-F]+)$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
MIRROR_ENV = "IMAGEBUILDER_MIRROR"
BASE_SOURCES = ("url", "path", "bootstrap", "template")
_TEMPLATE = re.compile(r"^[A-Za-z0-9._-]+$")   # a virt-builder os-version (or alias)
_ARCH = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Bootstrap:
    """Build the base from distribution packages with mmdebstrap."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Base:
    """Where the base image comes from: exactly one of url, path, bootstrap, template."""

    url: str | None = None
    checksum: str | None = None
    checksum_url: str | None = None
    signature_url: str | None = None
    keyring: Path | None = None
    path: Path | None = None
    bootstrap: Bootstrap | None = None
    template: str | None = None        # a virt-builder template name or alias
    repo: str | None = None            # the index URL to find it in (default: the repos.d repositories)
    repo_key: Path | None = None       # the key that signs that index
    arch: str = "x86_64"

    @property
    def kind(self) -> str:
        """'url', 'path', 'template' or 'bootstrap'."""
        return "url" if self.url else "path" if self.path else "template" if self.template else "bootstrap"


@dataclass(frozen=True)
class Disk:
    """Output disk format and optional size to grow to (bytes)."""

    format: str = "qcow2"
    size: int | None = None
    compress: bool = False


@dataclass(frozen=True)
class Step:
    """One customization step: a registered operation, its parsed argument, and where it was written."""

    op: str
    arg: Any
    line: int | None
    source: Path | None = None                  # the commands file it came from; None: the recipe
    included_at: int | None = None             # for a commands file's step: the recipe line including it
    host_files: tuple[args.HostFile, ...] = ()  # host files it reads, with their digests
    checkpoint: bool | None = None              # keep the image after this step (None: if it is a long one)

    def describe(self) -> str:
        """Text for logs and the manifest (never contains secrets)."""
        return f"{self.op}: {ops.REGISTRY[self.op].describe(self.arg)}"

    def where(self, recipe_file: Path) -> str:
        """FILE:LINE of the step, for error messages."""
        if self.source is None:
            return f"{recipe_file}:{self.line}" if self.line else str(recipe_file)
        return f"{self.source}:{self.line} (included at {recipe_file}:{self.included_at})"

    def record(self) -> dict[str, Any]:
        """The manifest entry: the description (no secrets), where it was written, the host files' digests."""
        entry: dict[str, Any] = {"op": self.op, "describe": self.describe(), "line": self.line,
                                 "host_files": [f.record() for f in self.host_files]}
        if self.source is not None:
            entry["source"] = str(self.source)
        return entry


@dataclass(frozen=True)
class Target:
    """One more libvirt host (or pool) that gets a copy of the image, and the domain if asked."""

    uri: str
    pool: str = "default"
    volume: str = ""
    domain: bool = False


@dataclass(frozen=True)
class Output:
    """Where the image goes: a libvirt pool volume, a local file, or both; plus further targets."""

    libvirt: bool = True
    uri: str = "qemu:///system"
    pool: str = "default"
    volume: str = ""  # may be a template such as "web-{date}-{n}.qcow2": a new version each build
    path: Path | None = None
    targets: tuple[Target, ...] = ()
    alias: str | None = None  # with a template: the stable name that points at the newest version
    keep: int | None = None  # with a template: how many versions to keep (None: all)

    @property
    def current(self) -> str:
        """The volume that holds the newest image: the alias of versioned names, else the volume."""
        return self.alias or self.volume


@dataclass(frozen=True)
class Interface:
    """A NIC: on a libvirt network or a host bridge; no MAC means one is generated at deploy."""

    network: str | None = None
    bridge: str | None = None
    mac: str | None = None
    model: str = "virtio"


@dataclass(frozen=True)
class DataDisk:
    """An extra disk: a new empty volume of `size`, or (without size) an existing volume."""

    volume: str
    size: int | None = None
    format: str | None = None
    bus: str = "virtio"
    pool: str | None = None  # None: the image's pool


@dataclass(frozen=True)
class Domain:
    """The libvirt domain to define (and start) from the published volume."""

    name: str
    memory: int = 1 << 30
    vcpus: int = 1
    cpu: str | None = None
    machine: str = "pc"
    firmware: str = "bios"
    interfaces: tuple[Interface, ...] = (Interface(network="default"),)
    disks: tuple[DataDisk, ...] = ()
    graphics: str = "none"
    listen: str = "127.0.0.1"
    video: str = "vga"
    memballoon: bool = True
    rng: bool = True
    agent: bool = True
    osinfo: str | None = None
    start: bool = True
    wait: str = "agent"
    wait_text: str | None = None
    timeout: int = 600

    @property
    def network(self) -> str | None:
        """The libvirt network of the first NIC on one, if any."""
        return next((nic.network for nic in self.interfaces if nic.network), None)

    @property
    def networks(self) -> list[str]:
        """Every libvirt network the NICs use, once each."""
        return list(dict.fromkeys(nic.network for nic in self.interfaces if nic.network))


@dataclass(frozen=True)
class Machine:
    """One clone of the fleet: a domain on a thin overlay of the golden volume (see fleet.py)."""

    name: str            # the domain's name; its overlay is NAME.qcow2
    hostname: str
    domain: Domain       # [domain] with this machine's overrides, named after it
    line: int | None = None

    @property
    def overlay(self) -> str:
        """The overlay volume, in the golden volume's pool."""
        return f"{self.name}.qcow2"


@dataclass(frozen=True)
class CloudInit:
    """[cloud_init]: a NoCloud seed (ISO labelled cidata) per machine, attached as a CD-ROM."""

    user_data: str | None = None        # the text: a file's content, or an inline table as #cloud-config
    meta_data: tuple[tuple[str, Any], ...] = ()  # extra meta-data keys ({name}, {hostname} replaced)
    network_config: str | None = None   # YAML text
    host_files: tuple[args.HostFile, ...] = ()


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
    tests: tuple[Check, ...] = ()
    machines: tuple[Machine, ...] = ()    # a fleet: then `domain` is None ([domain] is their template)
    cloud_init: CloudInit | None = None

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


def load(file: str | Path, *, strict_paths: bool = False, inline_secrets: bool = True) -> Recipe:
    """Read and validate a recipe file; raise RecipeError at the first problem.

    strict_paths: every host path (base image, keys, files steps read, commands files, outputs,
    file:// URLs) must resolve, symlinks followed, inside the recipe's directory.
    inline_secrets=False: passwords written in the recipe (password:TEXT) are refused.
    """
    path = Path(file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(str(path), None, None, f"cannot read recipe: {exc.strerror}") from None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecipeError(str(path), line, None, f"recipe is not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    loader = _Loader(path, source)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        message = re.sub(r"\s*\(at .*\)$", "", str(exc))
        raise RecipeError(str(path), tomlpos.parse_error_line(exc), None, f"invalid TOML: {message}") from None
    return _build(loader, data, hashlib.sha256(raw).hexdigest(), strict_paths, inline_secrets)


def _build(loader: _Loader, data: dict[str, Any], digest: str, strict_paths: bool = False,
           inline_secrets: bool = True) -> Recipe:
    top = _Table(loader, data, ())
    top.finish(("image", "base", "disk", "steps", "customize", "sysprep", "output", "domain", "tests",
                "machines", "fleet", "cloud_init"))
    base_dir = loader.file.resolve().parent
    ctx = ArgContext(base_dir, loader.file, root=base_dir if strict_paths else None, inline_secrets=inline_secrets)
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
    machines = _fleet(top, loader, domain, name, output)
    if machines:
        domain = None  # [domain] is the machines' template; the golden image itself is never booted
    if domain and not output.libvirt and not any(t.domain for t in output.targets):
        raise loader.error(("domain",), "a domain needs the image in a libvirt pool, but [output] names only a file")
    for index, target in enumerate(output.targets):
        if target.domain and not domain:
            raise loader.error(("output", "targets", index, "domain"), "there is no [domain] section to define")
    needs_network = _network(top.table("customize"), steps)
    tests = _tests(loader, top.get("tests", list, []))
    cloud_init = _cloud_init(top.table("cloud_init"), ctx)
    if cloud_init and not machines:
        raise loader.error(("cloud_init",), "a cloud-init seed is made per machine: add [[machines]] or [fleet] "
                                            "(one [[machines]] entry for a single machine)")
    return Recipe(loader.file, digest, name, base, disk, tuple(steps), sysprep_ops, output, domain, needs_network,
                  tests, machines=machines, cloud_init=cloud_init)


def _tests(loader: _Loader, items: list[Any]) -> tuple[Check, ...]:
    checks = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise loader.error(("tests", index), "each test is a table: write [[tests]] with command, file or package")
        table = _Table(loader, item, ("tests", index))
        kinds = [k for k in ("command", "file", "package") if k in item]
        if len(kinds) != 1:
            raise table.error(kinds[1] if len(kinds) > 1 else None,
                              "a test checks exactly one of 'command', 'file' or 'package'")
        kind = kinds[0]
        subject = table.get(kind, str)
        line = tomlpos.key_line(loader.source, ("tests", index, kind))
        if kind == "command":
            stdout = table.convert("stdout", str, _check_regex)
            check = Check(name=table.get("name", str, subject), line=line, command=subject,
                          exit_code=table.get("exit_code", int, 0), stdout=stdout,
                          timeout=table.convert("timeout", (str, int), units.parse_duration, 60))
        elif kind == "file":
            check = Check(name=table.get("name", str, f"file {subject}"), line=line,
                          file=table.convert("file", str, args.guest_path),
                          contains=table.convert("contains", str, _check_regex))
        else:
            check = Check(name=table.get("name", str, f"package {subject}"), line=line,
                          package=table.convert("package", str, lambda p: args.packages([p])[0]))
        table.finish()
        checks.append(check)
    names = [c.name for c in checks]
    for index, check in enumerate(checks):
        if names.index(check.name) != index:
            raise loader.error(("tests", index, "name"), f"another test is already named '{check.name}'")
    return tuple(checks)


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


def _check_name(value: str) -> str:
    if len(value) > 200:
        raise ValueError(f"'{_clip(value)}' is too long (at most 200 characters)")
    if not _NAME.match(value):
        raise ValueError(f"'{value}' is not a valid name (letters, digits, '_', '.', '+', '-')")
    return value


def _clip(value: str, length: int = 40) -> str:
    """A long value shortened for a one-line message."""
    return value if len(value) <= length else value[:length] + "…"


def _base(table: _Table, ctx: ArgContext) -> Base:
    sources = [key for key in BASE_SOURCES if key in table.data]
    if len(sources) != 1:
        problem = f"choose one of {', '.join(repr(k) for k in BASE_SOURCES)}" if not sources else \
            f"'{sources[0]}' and '{sources[1]}' exclude each other; keep one"
        raise table.error(sources[1] if len(sources) > 1 else None, problem)
    table.finish(_BASE_KEYS[sources[0]])  # an unknown (mistyped) key first: it explains what follows
    base = {"url": _url_base, "path": _path_base, "bootstrap": _bootstrap_base,
            "template": _template_base}[sources[0]](table, ctx)
    table.finish()
    return base


_BASE_KEYS = {"url": ("url", "checksum", "checksum_url", "signature_url", "keyring"), "path": ("path",),
              "bootstrap": ("bootstrap",), "template": ("template", "arch", "repo", "repo_key")}


def _url_base(table: _Table, ctx: ArgContext) -> Base:
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


def _check_url(table: _Table, key: str, url: str, ctx: ArgContext | None = None) -> None:
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


def _check_relative_url(table: _Table, key: str, url: str | None, ctx: ArgContext) -> None:
    """A URL that may be relative to the image's URL (checksum_url, signature_url)."""
    if url is not None and "://" in url:
        _check_url(table, key, url, ctx)


def _path_base(table: _Table, ctx: ArgContext) -> Base:
    path = table.get("path", str)
    resolved = table.convert("path", str, lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve()))
    if not resolved.is_file():
        raise table.error("path", f"base image '{path}' does not exist (looked for {resolved})")
    return Base(path=resolved)


def _bootstrap_base(table: _Table, _ctx: ArgContext) -> Base:
    boot = table.table("bootstrap")
    suite = boot.convert("suite", str, _check_suite, "bookworm")
    mirror = boot.get("mirror", str, os.environ.get(MIRROR_ENV) or distribution(suite).mirror)
    _check_url(boot, "mirror", mirror)
    packages = boot.convert("packages", list, args.packages, ())
    boot.finish()
    return Base(bootstrap=Bootstrap(suite, mirror, tuple(packages)))


def _check_suite(suite: str) -> str:
    distribution(suite)
    return suite


def _template_base(table: _Table, ctx: ArgContext) -> Base:
    """A virt-builder template; whether it exists is known only once its repository's index is read."""
    template = table.get("template", str)
    if not _TEMPLATE.match(template):
        raise table.error("template", f"'{template}' is not a template name (letters, digits, '.', '_', '-'; "
                                      "see `imagebuilder templates list`)")
    arch = table.get("arch", str, "x86_64")
    if not _ARCH.match(arch):
        raise table.error("arch", f"'{arch}' is not an architecture name such as x86_64 or aarch64")
    repo = table.get("repo", str)
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
    return Base(template=template, arch=arch, repo=repo, repo_key=key_path)


def _check_checksum(table: _Table, checksum: str) -> None:
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


def _disk(table: _Table | None) -> Disk:
    if table is None:
        return Disk()
    disk = Disk(format=table.choice("format", FORMATS, "qcow2"),
                size=table.convert("size", (str, int), units.parse_size),
                compress=table.get("compress", bool, False))
    if disk.compress and disk.format != "qcow2":
        raise table.error("compress", "only qcow2 images can be compressed")
    table.finish()
    return disk


def _steps(loader: _Loader, items: list[Any], ctx: ArgContext) -> list[Step]:
    """Each [[steps]] table checked by its operation's parser; commands files expand into their steps."""
    steps: list[Step] = []
    for index, item in enumerate(items):
        where = ("steps", index)
        if not isinstance(item, dict):
            raise loader.error(where, "each step is a table: write [[steps]] with one operation in it")
        checkpoint = item.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, bool):
            raise loader.error(where + ("checkpoint",), "expected true or false")
        names = [name for name in item if name != "checkpoint"]
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
        line = tomlpos.key_line(loader.source, where + (op_name,))
        step_ctx = ctx.fresh()
        try:
            arg = op.parse(item[op_name], step_ctx)
        except ValueError as exc:
            raise loader.error(where + (op_name,), str(exc)) from None
        except RecipeError as exc:  # a commands file's own FILE:LINE error
            raise RecipeError(exc.file, exc.line, exc.key,
                              f"{exc.problem} (included at {loader.display}:{line})") from None
        if op.expands:
            source = step_ctx.host_files[0].path
            steps.append(Step(op_name, str(source), line, None, None, tuple(step_ctx.host_files[:1])))
            steps += [Step(c.command.op, c.arg, c.command.line, source, line, c.host_files) for c in arg]
        else:
            steps.append(Step(op_name, arg, line, host_files=tuple(step_ctx.host_files), checkpoint=checkpoint))
    _check_passwords(loader, steps)
    return steps


def _check_passwords(loader: _Loader, steps: list[Step]) -> None:
    """Like virt-customize, refuse two steps that set the same user's password."""
    seen: dict[str, Step] = {}
    index = -1
    for step in steps:
        index += step.source is None  # the recipe's own [[steps]] entries, in order
        user = commands_file.password_user(step.op, step.arg)
        if user is None:
            continue
        if user in seen:
            raise RecipeError(str(step.source or loader.display), step.line,
                              f"steps[{index}].{step.op}" if step.source is None else None,
                              f"the password of '{user}' is already set by the step at "
                              f"{seen[user].where(loader.file)}")
        seen[user] = step


def _network(table: _Table | None, steps: list[Step]) -> bool:
    """Whether the appliance gets a network: [customize] network, else only if a step needs one."""
    needed = [s for s in steps if ops.REGISTRY[s.op].needs_network]
    if table is None:
        return bool(needed)
    network = table.get("network", bool)
    table.finish()
    if network is False and needed:
        raise table.error("network", f"'{needed[0].op}' (line {needed[0].line}) needs the appliance network; "
                                     "remove the step or this setting")
    return bool(needed) if network is None else network


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
    volume = table.convert("volume", str, _check_volume_template, f"{name}.{fmt}")
    targets = tuple(_target(item, volume) for item in _tables(table, "targets"))
    versioned = versions.is_template(volume)
    output = Output(
        libvirt=bool(libvirt_keys) or path is None,
        uri=table.convert("uri", str, _check_uri, "qemu:///system"),
        pool=table.convert("pool", str, _check_name, "default"),
        volume=volume,
        path=table.convert("path", str, lambda raw: ctx.inside(raw, (ctx.base_dir / raw).resolve())),
        targets=targets,
        alias=_alias(table, volume, f"{name}.{fmt}") if versioned else None,
        keep=table.get("keep", int),
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


def _alias(table: _Table, template: str, default: str) -> str:
    """The stable name of a versioned output: output.alias, by default IMAGE.FORMAT."""
    alias = table.convert("alias", str, _check_volume, default)
    if versions.is_template(alias):
        raise table.error("alias", f"the alias '{alias}' must be one fixed name, without placeholders")
    if versions.matches(template, alias):
        raise table.error("alias", f"the alias '{alias}' could also be the name of a version of '{template}'")
    return alias


def _check_volume_template(value: str) -> str:
    """A volume name, or a template of one whose names are all valid volume names."""
    _check_volume(value)
    if versions.is_template(value):
        _check_volume(versions.sample(value))
    return value


def _tables(table: _Table, key: str) -> list[_Table]:
    """The tables of an array of tables such as [[output.targets]]."""
    items = table.get(key, list, [])
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise table.error(key, f"each entry is a table: write [[{'.'.join(map(str, table.path + (key,)))}]]")
    return [_Table(table.loader, item, table.path + (key, index)) for index, item in enumerate(items)]


def _target(table: _Table, volume: str) -> Target:
    uri = table.convert("uri", str, _check_uri)
    if uri is None:
        raise table.error(None, "missing required key 'uri'")
    target = Target(uri=uri, pool=table.convert("pool", str, _check_name, "default"),
                    volume=table.convert("volume", str, _check_volume_template, volume),
                    domain=table.get("domain", bool, False))
    table.finish()
    return target


def _check_uri(value: str) -> str:
    if not _URI.match(value):
        raise ValueError(f"'{value}' is not a libvirt URI; write it like \"qemu:///system\" or "
                         "\"qemu+ssh://user@host/system\"")
    return value


def _check_volume(value: str) -> str:
    """A name libvirt takes for a volume (a file in a dir pool): what storage.check_volume_name checks."""
    problem = None
    if not value:
        problem = "a volume name must not be empty"
    elif "/" in value or "\0" in value or "\n" in value:
        problem = f"'{_clip(value)}' is not a valid volume name: it must not contain '/', a newline or NUL"
    elif value.startswith("."):
        problem = f"'{_clip(value)}' is not a valid volume name: it must not start with '.'"
    elif len(value.encode()) > 255:
        problem = f"'{_clip(value)}' is not a valid volume name: it is longer than 255 bytes"
    if problem:
        raise ValueError(problem)
    return value


def parse_wait(value: str) -> tuple[str, str | None]:
    """'agent', 'ssh', 'none' or 'serial:TEXT' as (kind, text); ValueError otherwise."""
    if value in ("agent", "ssh", "none"):
        return value, None
    if value.startswith("serial:") and value[len("serial:"):]:
        return "serial", value[len("serial:"):]
    raise ValueError(f"'{value}' is not one of agent, ssh, none or serial:TEXT (text the console shows when ready)")


def _check_machine(value: str) -> str:
    if not _MACHINE.match(value):
        raise ValueError(f"'{value}' is not a machine type such as \"pc\", \"q35\" or \"pc-q35-7.2\"")
    return value


def _check_bridge(value: str) -> str:
    if not _BRIDGE.match(value):
        raise ValueError(f"'{value}' is not a host interface name (at most 15 characters, no '/', ':' or spaces)")
    return value


def _check_listen(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address (127.0.0.1 keeps the display on this host)") from None


def _check_osinfo(value: str) -> str:
    resolved = osinfo.resolve(value)
    if resolved is None:
        raise ValueError(f"'{value}' is not a libosinfo id known here; write a short id such as \"debian12\" "
                         "or a full one such as \"http://debian.org/debian/12\" (`osinfo-query os` lists them)")
    return resolved


def _domain(table: _Table | None, name: str) -> Domain | None:
    if table is None:
        return None
    domain_name = table.convert("name", str, _check_name, name)
    wait, wait_text = table.convert("wait", str, parse_wait, ("agent", None))
    graphics = table.choice("graphics", GRAPHICS, "none")
    if "listen" in table.data and graphics == "none":
        raise table.error("listen", "a listen address needs graphics = \"vnc\" or \"spice\"")
    domain = Domain(
        name=domain_name,
        memory=table.convert("memory", (str, int), units.parse_size, 1 << 30),
        vcpus=table.get("vcpus", int, 1),
        cpu=table.convert("cpu", str, lambda v: _choose(v, domainxml.CPU_MODES)),
        machine=table.convert("machine", str, _check_machine, "pc"),
        firmware=table.choice("firmware", domainxml.FIRMWARES, "bios"),
        interfaces=_interfaces(table),
        disks=_data_disks(table, domain_name),
        graphics=graphics,
        listen=table.convert("listen", str, _check_listen, "127.0.0.1"),
        video=table.choice("video", domainxml.VIDEOS, "vga"),
        memballoon=table.get("memballoon", bool, True),
        rng=table.get("rng", bool, True),
        agent=table.get("agent", bool, True),
        osinfo=table.convert("osinfo", str, _check_osinfo),
        start=table.get("start", bool, True),
        wait=wait,
        wait_text=wait_text,
        timeout=table.convert("timeout", (str, int), units.parse_duration, 600),
    )
    if not 1 <= domain.vcpus <= 512:
        raise table.error("vcpus", "must be between 1 and 512")
    if domain.memory < 64 << 20:
        raise table.error("memory", "must be at least 64M")
    if domain.wait == "agent" and not domain.agent and "wait" in table.data:
        raise table.error("wait", "waiting for the guest agent needs agent = true")
    if domain.wait == "agent" and not domain.agent:
        domain = dataclasses.replace(domain, wait="none")
    if domain.wait == "ssh" and not domain.interfaces:
        raise table.error("wait", "waiting for SSH needs a network interface")
    table.finish()
    return domain


def _choose(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
    return value


def _interfaces(table: _Table) -> tuple[Interface, ...]:
    """NICs from network/bridge/mac/model, or from [[domain.interfaces]] (one way per recipe)."""
    simple = [key for key in ("network", "bridge", "mac", "model") if key in table.data]
    if "interfaces" in table.data:
        if simple:
            raise table.error(simple[0], "write every NIC as [[domain.interfaces]], or use "
                                         "network/bridge/mac/model for a single one; not both")
        nics = tuple(_interface(item) for item in _tables(table, "interfaces"))
    else:
        network = table.get("network", str)
        if network == "none" and len(simple) > 1:
            raise table.error(simple[1], "network = \"none\" means no NIC; remove this key")
        if network == "none":
            return ()
        nics = (_interface(table, default_network="default"),)
    macs = [nic.mac for nic in nics if nic.mac]
    for mac in macs:
        if macs.count(mac) > 1:
            raise table.error("interfaces", f"MAC address {mac} is used twice")
    return nics


def _interface(table: _Table, default_network: str | None = None) -> Interface:
    network = table.convert("network", str, _check_name)
    bridge = table.convert("bridge", str, _check_bridge)
    if network is not None and bridge is not None:
        raise table.error("bridge", "'network' and 'bridge' exclude each other; keep one")
    if network is None and bridge is None:
        if default_network is None:
            raise table.error(None, "name a libvirt network (network = \"default\") or a host bridge (bridge = \"br0\")")
        network = default_network
    nic = Interface(network=network, bridge=bridge,
                    mac=table.convert("mac", str, domainxml.check_mac),
                    model=table.convert("model", str, lambda v: _choose(v, domainxml.NIC_MODELS), "virtio"))
    if default_network is None:
        table.finish()
    return nic


def _data_disks(table: _Table, domain_name: str) -> tuple[DataDisk, ...]:
    disks = []
    for index, item in enumerate(_tables(table, "disks")):
        size = item.convert("size", (str, int), units.parse_size)
        volume = item.convert("volume", str, _check_volume)
        fmt = item.get("format", str)
        if fmt is not None and fmt not in FORMATS:
            raise item.error("format", f"'{fmt}' is not one of {', '.join(FORMATS)}")
        if size is None and volume is None:
            raise item.error(None, "give a size for a new empty disk, or the volume of an existing one")
        if size is not None and volume is None:
            volume = f"{domain_name}-disk{index + 1}.{fmt or 'qcow2'}"
        disks.append(DataDisk(volume=volume, size=size, format=fmt or ("qcow2" if size else None),
                              bus=item.choice("bus", domainxml.DISK_BUSES, "virtio"),
                              pool=item.convert("pool", str, _check_name)))
        item.finish()
    names = [(disk.pool, disk.volume) for disk in disks]
    for pool, volume in names:
        if names.count((pool, volume)) > 1:
            raise table.error("disks", f"volume {volume} is attached twice")
    return tuple(disks)


# --- a fleet: [[machines]] or [fleet]; [cloud_init] ------------------------------------------------

_FLEET_PATTERN = re.compile(r"^[^{}]*\{n(?::0[1-9])?\}[^{}]*$")
_USER_DATA_HEADERS = ("#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "Content-Type:",
                      "## template: jinja")


def _fleet(top: _Table, loader: _Loader, domain: Domain | None, image: str, output: Output) -> tuple[Machine, ...]:
    """The machines of [[machines]] or [fleet]: [domain] (or its defaults) with each one's overrides."""
    listed = top.get("machines", list)
    fleet = top.table("fleet")
    if listed is None and fleet is None:
        return ()
    if listed is not None and fleet is not None:
        raise loader.error(("fleet",), "[fleet] and [[machines]] exclude each other; keep one")
    where: tuple[str | int, ...] = ("machines",) if listed is not None else ("fleet",)
    if not output.libvirt:
        raise loader.error(where, "the machines of a fleet are overlays of the golden volume: [output] needs a "
                                  "libvirt pool, not only a file")
    if output.alias:
        raise loader.error(("output", "volume"), "the machines of a fleet are overlays of one golden volume: "
                                                 f"give it a fixed name, not the template '{output.volume}'")
    for index, target in enumerate(output.targets):
        if target.domain:
            raise loader.error(("output", "targets", index, "domain"),
                               "the machines of a fleet are made on the [output] host only")
    if "name" in (top.data.get("domain") or {}):
        raise loader.error(("domain", "name"), "with a fleet each machine has its own name; remove domain.name")
    template = domain or Domain(name=image)
    for index, data in enumerate(template.disks):
        if data.size is None:
            raise loader.error(("domain", "disks", index), f"volume {data.volume} cannot be attached to every "
                                                           "machine; attach it in one [[machines]] entry")
    if listed is not None:
        machines = [_machine(table, template) for table in _tables(top, "machines")]
        if not machines:
            raise loader.error(where, "no machines: add at least one [[machines]] entry")
    else:
        machines = _fleet_machines(fleet, template)
    names: dict[str, int] = {}
    macs: dict[str, str] = {}
    for index, machine in enumerate(machines):
        at = where + ((index, "name") if listed is not None else ("name",))
        if machine.name in names:
            raise loader.error(at, f"machine name '{machine.name}' is used twice")
        names[machine.name] = index
        if machine.overlay == output.volume:
            raise loader.error(at, f"the overlay of machine '{machine.name}' would be {machine.overlay}, the golden "
                                   "volume itself; rename the machine or [output] volume")
        for nic in machine.domain.interfaces:
            if nic.mac and nic.mac in macs:
                raise loader.error(where + ((index, "mac") if listed is not None else ()),
                                   f"MAC address {nic.mac} is used by {macs[nic.mac]} as well; "
                                   "each machine needs its own (leave it out to have one generated)")
            if nic.mac:
                macs[nic.mac] = machine.name
    return tuple(machines)


def _machine(table: _Table, template: Domain) -> Machine:
    """One [[machines]] entry: name, hostname and overrides of [domain]."""
    name = table.convert("name", str, _check_name)
    if name is None:
        raise table.error(None, "missing required key 'name'")
    hostname = table.convert("hostname", str, args.hostname)
    if hostname is None:
        try:
            hostname = args.hostname(name)
        except ValueError:
            raise table.error("name", f"'{name}' is not a valid host name; add hostname = \"…\"") from None
    domain = _machine_domain(table, template, name)
    line = tomlpos.key_line(table.loader.source, table.path + ("name",))
    table.finish()
    return Machine(name, hostname, domain, line)


def _machine_domain(table: _Table | None, template: Domain, name: str) -> Domain:
    """[domain] for one machine: its name, its own new data disks, and the entry's overrides."""
    disks = tuple(dataclasses.replace(disk, volume=f"{name}-disk{number}.{disk.format or 'qcow2'}")
                  for number, disk in enumerate(template.disks, 1))
    if table is None:
        return dataclasses.replace(template, name=name, disks=disks)
    memory = table.convert("memory", (str, int), units.parse_size, template.memory)
    if memory < 64 << 20:
        raise table.error("memory", "must be at least 64M")
    vcpus = table.get("vcpus", int, template.vcpus)
    if not 1 <= vcpus <= 512:
        raise table.error("vcpus", "must be between 1 and 512")
    interfaces = template.interfaces
    network = table.get("network", str)
    if network == "none":
        interfaces = ()
    elif network is not None:
        network = table.convert("network", str, _check_name)
        interfaces = (Interface(network=network, model=interfaces[0].model if interfaces else "virtio"),)
    mac = table.convert("mac", str, domainxml.check_mac)
    if mac is not None:
        if not interfaces:
            raise table.error("mac", "the machine has no network interface (network = \"none\")")
        interfaces = (dataclasses.replace(interfaces[0], mac=mac),) + interfaces[1:]
    if template.wait == "ssh" and not interfaces:
        raise table.error("network", "[domain] waits for SSH, which needs a network interface")
    if "disks" in table.data:
        disks = _data_disks(table, name)
    return dataclasses.replace(template, name=name, memory=memory, vcpus=vcpus, interfaces=interfaces, disks=disks)


def _fleet_machines(fleet: _Table, template: Domain) -> list[Machine]:
    """[fleet] count = N, name = "web-{n}": N machines numbered from `first` (default 1)."""
    count = fleet.get("count", int, required=True)
    if not 1 <= count <= 1000:
        raise fleet.error("count", "must be between 1 and 1000")
    pattern = fleet.get("name", str, f"{template.name}-{{n}}")
    if not _FLEET_PATTERN.match(pattern):
        raise fleet.error("name", f"'{pattern}' needs one {{n}} (or {{n:02}} for 01, 02 …), as in \"web-{{n}}\"")
    first = fleet.get("first", int, 1)
    if first < 0:
        raise fleet.error("first", "must be 0 or more")
    fleet.finish()
    line = tomlpos.key_line(fleet.loader.source, ("fleet", "count"))
    machines = []
    for number in range(first, first + count):
        name = pattern.format(n=number)
        try:
            _check_name(name)
            hostname = args.hostname(name)
        except ValueError as exc:
            raise fleet.error("name", f"machine {number}: {exc}") from None
        machines.append(Machine(name, hostname, _machine_domain(None, template, name), line))
    return machines


def _cloud_init(table: _Table | None, ctx: ArgContext) -> CloudInit | None:
    """[cloud_init]: user_data and network_config (a file, or an inline table), meta_data (a table)."""
    if table is None:
        return None
    files: list[args.HostFile] = []
    user_data = _cloud_document(table, "user_data", ctx, files, user_data=True)
    network_config = _cloud_document(table, "network_config", ctx, files, user_data=False)
    meta = table.get("meta_data", dict, {})
    for key, value in meta.items():
        if isinstance(value, (dict, list)):
            raise table.error("meta_data", f"'{key}': expected a string, a number or true/false")
    table.finish()
    return CloudInit(user_data, tuple(meta.items()), network_config, tuple(files))


def _cloud_document(table: _Table, key: str, ctx: ArgContext, files: list[args.HostFile],
                    user_data: bool) -> str | None:
    import yaml

    value = table.get(key, (str, dict))
    if value is None:
        return None
    if isinstance(value, dict):
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)
        return "#cloud-config\n" + text if user_data else text
    step_ctx = ctx.fresh()
    try:
        path = args.host_path(value, step_ctx)
        text = path.read_text(encoding="utf-8")
    except ValueError as exc:
        raise table.error(key, str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise table.error(key, f"cannot read '{value}' as UTF-8 text: {exc}") from None
    files += step_ctx.host_files
    first = text.split("\n", 1)[0].strip()
    if user_data and not first.startswith(_USER_DATA_HEADERS):
        raise table.error(key, f"'{value}' starts with {first[:40]!r}; cloud-init knows user data by its first "
                               "line: #cloud-config, #!, #include, Content-Type: …")
    if not user_data or first.startswith("#cloud-config"):
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise table.error(key, f"'{value}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(loaded, dict):
            raise table.error(key, f"'{value}' must hold a YAML mapping (key: value lines)")
    return text
