"""The registry's entries: `Op`, the `@operation` decorator that declares one, and the argument parsers and
descriptions that several operations share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder import values
from imagebuilder.guest.context import GuestContext
from imagebuilder.values import ArgContext


@dataclass(frozen=True)
class Op:
    """One operation: `parse` checks a recipe value, `apply` performs it in the guest."""

    name: str
    doc: str
    syntax: str
    parse: Callable[[Any, ArgContext], Any]
    apply: Callable[[GuestContext, Any], None]
    example: str
    table: str = ""
    details: str = ""
    describe: Callable[[Any], str] = str
    needs_network: bool = False
    flag: bool = False
    origin: str = "virt-customize"
    expands: bool = False

    @property
    def cli_name(self) -> str:
        """The name in virt-customize's command line and in commands files."""
        return self.name.replace("_", "-")

    def info(self) -> dict[str, Any]:
        """What `imagebuilder ops --json` prints about this operation."""
        return {"name": self.name, "command": self.cli_name, "doc": self.doc, "syntax": self.syntax,
                "table": self.table, "example": self.example, "needs_network": self.needs_network,
                "flag": self.flag, "origin": self.origin}


REGISTRY: dict[str, Op] = {}


def operation(name: str, doc: str, syntax: str, parse: Callable[[Any, ArgContext], Any], example: str,
              **options: Any) -> Callable[[Callable[[GuestContext, Any], None]], Callable[[GuestContext, Any], None]]:
    """Register the decorated apply function as operation `name`."""
    def register(apply: Callable[[GuestContext, Any], None]) -> Callable[[GuestContext, Any], None]:
        if name in REGISTRY:
            raise RuntimeError(f"operation {name} is declared twice")
        REGISTRY[name] = Op(name, doc, syntax, parse, apply, example, **options)
        return apply
    return register


# argument parsers and descriptions used by several operations

def plain(parser: Callable[[Any], Any]) -> Callable[[Any, ArgContext], Any]:
    """A parser that needs no ArgContext."""
    return lambda value, _ctx: parser(value)


def flag_arg(value: Any, _ctx: ArgContext) -> bool:
    """The value of an operation without an argument (`update = true`)."""
    return values.flag(value)


def guest_pair(first: str, second: str, right: Callable[[Any], Any] = values.string):
    """GUEST_PATH:VALUE, or the table { first, second }."""
    def parse(value: Any, _ctx: ArgContext) -> tuple[str, Any]:
        left, other = values.pair(value, first, second)
        return values.guest_path(left), right(other)
    return parse


def host_to_guest(want_dir: bool | None) -> Callable[[Any, ArgContext], tuple[Path, str]]:
    """HOST_PATH:GUEST_PATH, or the table { from, to }; `want_dir` as values.host_path takes it."""
    def parse(value: Any, ctx: ArgContext) -> tuple[Path, str]:
        local, remote = values.pair(value, "from", "to")
        return values.host_path(local, ctx, want_dir), values.guest_path(remote)
    return parse


def pair_text(arg: tuple[Any, Any]) -> str:
    """How a step with a (from, to) argument is shown."""
    return f"{arg[0]} -> {arg[1]}"


def names_text(arg: tuple[str, ...]) -> str:
    """How a step with a list of names is shown."""
    return ", ".join(arg)
