"""Stage keys: a stage's identity is a keyed hash of its own inputs chained with its parent's key.

Keys are HMACs under a random secret kept in the cache directory, so a key recorded in a
manifest says nothing about the inputs behind it (password files and inline passwords among them).
Changing any input changes that stage's key and every key after it; `own` tells which stage's
own inputs changed, which is what `plan` reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder import __version__
from imagebuilder.guest import ops
from imagebuilder.guest.passwords import PasswordSpec
from imagebuilder.recipe import Recipe, Step

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Stage:
    """One stage of a build as the cache sees it."""

    name: str
    key: str
    own: str
    checkpoint: bool = False
    cacheable: bool = True


def secret_for(cache_root: Path) -> bytes:
    """The cache's HMAC secret, made on first use (readable by its owner only)."""
    path = cache_root / "stage-secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        cache_root.mkdir(parents=True, exist_ok=True)
        value = secrets.token_bytes(32)
        tmp = path.with_name(f".stage-secret.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(value)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        tmp.unlink()
        return path.read_bytes()


def canonical(value: Any) -> Any:
    """A JSON-ready form of a step argument: dataclasses as dicts, paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__,
                **{f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _mac(secret: bytes, data: Any) -> str:
    text = json.dumps(canonical(data), sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def _step_inputs(step: Step, secret: bytes) -> dict[str, Any]:
    files = []
    for host_file in step.host_files:
        if host_file.digest:
            files.append(host_file.digest)
        else:
            files.append(hmac.new(secret, Path(host_file.path).read_bytes(), hashlib.sha256).hexdigest())
    inputs = {"op": step.op, "arg": step.arg, "files": files}
    variables = _env_passwords(step.arg)
    if variables:  # env:VAR passwords: the value is an input too (keyed, so it cannot be guessed)
        inputs["env"] = [hmac.new(secret, os.environ.get(name, "").encode(), hashlib.sha256).hexdigest()
                         for name in variables]
    return inputs


def _env_passwords(value: Any) -> list[str]:
    """The environment variables that env:VAR password selectors in a step argument read."""
    if isinstance(value, PasswordSpec):
        return [str(value.source)] if value.kind == "env" else []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [n for f in dataclasses.fields(value) for n in _env_passwords(getattr(value, f.name))]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _env_passwords(item)]
    return []


def cacheable(value: Any) -> bool:
    """False for arguments whose result differs on every run (a random password): never from the cache."""
    if isinstance(value, PasswordSpec):
        return value.kind != "random"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(cacheable(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return all(cacheable(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(cacheable(v) for v in value)
    return True


def _checkpoint(step: Step) -> bool:
    """A step's own choice, else yes for long steps: those that use the network (package managers)."""
    return ops.REGISTRY[step.op].needs_network if step.checkpoint is None else step.checkpoint


def plan(recipe: Recipe, base_digest: str, secret: bytes) -> list[Stage]:
    """The chain of stages of a build: base, prepare, one per step, sysprep."""
    stages: list[Stage] = []
    parent = f"imagebuilder {__version__} stages {FORMAT_VERSION}"
    chain_broken = False

    def add(name: str, inputs: Any, checkpoint: bool = False, cacheable: bool = True) -> None:
        nonlocal parent, chain_broken
        own = _mac(secret, inputs)
        chain_broken = chain_broken or not cacheable
        key = secrets.token_hex(32) if chain_broken else _mac(secret, [parent, name.split(" ")[0], own])
        stages.append(Stage(name, key, own, checkpoint and not chain_broken, not chain_broken))
        parent = key

    base = {"kind": recipe.base.kind, "digest": base_digest, "arch": recipe.base.arch}
    if recipe.base.kind == "bootstrap":
        base["hostname"] = recipe.name  # the layout writes it into /etc/hostname and /etc/hosts
    add("base", base)
    add("prepare", {"format": recipe.disk.format, "size": recipe.disk.size})
    for number, step in enumerate(recipe.steps, 1):
        add(f"step {number} ({step.op})", _step_inputs(step, secret), _checkpoint(step), cacheable(step.arg))
    add("sysprep", {"operations": list(recipe.sysprep), "compress": recipe.disk.compress})
    return stages
