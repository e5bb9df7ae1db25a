"""virt-customize's `--commands-from-file` format: read it, turn it into steps, or into a recipe.

The syntax, as virt-customize reads it:

* a line ending in a backslash continues on the next line: the backslash becomes a newline and the
  next line is appended as it is. This comes first: a comment line ending in a backslash swallows the
  next line too, and a backslash on the last line leaves a newline at the end of the argument;
* one command a (joined) line: the operation's name (virt-customize's, with dashes), one space, the
  argument (everything after that first space, kept as written, trailing spaces too); operations
  without an argument stand alone (`update`);
* lines holding only white space are ignored, and so are lines whose first non-blank character is `#`;
* leading white space before the operation name is ignored;
* `commands-from-file` itself cannot be used inside a commands file.

Every problem is reported as `FILE:LINE: …` (a RecipeError, exit code 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder.errors import RecipeError
from imagebuilder.suggest import did_you_mean
from imagebuilder.values import ArgContext, HostFile

# virt-customize options that exist but that imagebuilder does not offer, with the reason.
UNSUPPORTED = {
    "sm-attach": "subscription-manager is not supported",
    "sm-credentials": "subscription-manager is not supported",
    "sm-register": "subscription-manager is not supported",
    "sm-remove": "subscription-manager is not supported",
    "sm-unregister": "subscription-manager is not supported",
    "inject-blnsvr": "Windows guests are not supported",
    "inject-qemu-ga": "Windows guests are not supported",
    "inject-virtio-win": "Windows guests are not supported",
}


@dataclass(frozen=True)
class Command:
    """One command: where it starts, the operation's virt-customize name, and its raw argument."""

    line: int
    name: str
    arg: str

    @property
    def op(self) -> str:
        """The registry (and recipe) name: dashes as underscores."""
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class ParsedCommand:
    """A command whose argument the registry has checked."""

    command: Command
    arg: Any
    host_files: tuple[HostFile, ...]


@dataclass(frozen=True)
class Comment:
    """A comment line, kept so that `convert` can carry it into the recipe."""

    line: int
    text: str


def read(path: Path) -> list[Command | Comment]:
    """Read a commands file; RecipeError if it cannot be read or a line is malformed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(str(path), None, None, f"cannot read commands file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(str(path), None, None, "the commands file is not UTF-8 text") from None
    return parse_text(text)


_BLANKS = " \t\n\v\f\r"  # what virt-customize strips before a command (OCaml's Char.isspace)


def parse_text(text: str) -> list[Command | Comment]:
    """Split commands-file text into commands (and comments), following virt-customize's rules: join
    continued lines first, then drop blank lines and comments."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    items: list[Command | Comment] = []
    index = 0
    while index < len(lines):
        first = index + 1
        logical = lines[index]
        index += 1
        while logical.endswith("\\"):
            logical = logical[:-1] + "\n"
            if index == len(lines):
                break  # a backslash on the last line: the argument ends with a newline, as in virt-customize
            logical += lines[index]
            index += 1
        stripped = logical.lstrip(_BLANKS)
        if not stripped:
            continue
        if stripped.startswith("#"):
            items.append(Comment(first, stripped[1:].strip()))
            continue
        name, _, arg = stripped.partition(" ")
        items.append(Command(first, name, arg))
    return items


def check_name(command: Command, file: str) -> None:
    """RecipeError unless the command names an operation a commands file may hold."""
    from imagebuilder.guest.ops import REGISTRY

    name = command.name
    space = re.search(r"\s", name)
    if space:  # never echo what follows: `root-password<TAB>password:…` holds a password
        what = "a tab" if space.group() == "\t" else repr(space.group())
        raise RecipeError(file, command.line, None,
                          f"{name[:space.start()]!r} is followed by {what}; separate a command from its "
                          "argument with one space (as virt-customize does)")
    if name == "commands-from-file":
        raise RecipeError(file, command.line, None,
                          "'commands-from-file' cannot be used inside a commands file (as in virt-customize)")
    if name in UNSUPPORTED:
        raise RecipeError(file, command.line, None, f"'{name}': {UNSUPPORTED[name]} by imagebuilder")
    if "_" in name and name.replace("_", "-") in _dashed_names():
        raise RecipeError(file, command.line, None,
                          f"unknown command '{name}' (commands files use dashes: '{name.replace('_', '-')}')")
    if not re.fullmatch(r"[a-z][a-z-]*", name) or command.op not in REGISTRY:
        hint = did_you_mean(name, _dashed_names(), " (see `imagebuilder ops`)")
        raise RecipeError(file, command.line, None, f"unknown command {name!r}{hint}")


def _dashed_names() -> set[str]:
    from imagebuilder.guest.ops import REGISTRY

    return {op.cli_name for op in REGISTRY.values() if op.name != "commands_from_file"}


def parse_commands(path: Path, ctx: ArgContext) -> list[ParsedCommand]:
    """Read a commands file and check each argument with the registry.

    Host paths in it are relative to the commands file's directory.
    """
    from imagebuilder.guest.ops import REGISTRY

    parsed = []
    passwords_set: dict[str, int] = {}
    file = str(path)
    for item in read(path):
        if isinstance(item, Comment):
            continue
        check_name(item, file)
        op = REGISTRY[item.op]
        step_ctx = ctx.fresh(path.parent)
        value: Any = True if op.flag else item.arg
        try:
            arg = op.parse(value, step_ctx)
        except ValueError as exc:
            raise RecipeError(file, item.line, None, f"{item.name}: {exc}") from None
        user = password_user(item.op, arg)
        if user is not None:
            if user in passwords_set:
                raise RecipeError(file, item.line, None, f"the password of '{user}' is already set "
                                                         f"at line {passwords_set[user]} (as virt-customize, "
                                                         "imagebuilder refuses to set it twice)")
            passwords_set[user] = item.line
        parsed.append(ParsedCommand(item, arg, tuple(step_ctx.host_files)))
    return parsed


def password_user(op: str, arg: Any) -> str | None:
    """The user whose password a parsed step sets, if it sets one."""
    if op == "root_password":
        return "root"
    if op == "password":
        return arg[0]
    if op == "user" and arg.password is not None:
        return arg.name
    return None


def to_recipe(path: Path, name: str, base_lines: list[str]) -> str:
    """A recipe (TOML text) doing what the commands file does; its arguments are checked first.

    `base_lines` is the [base] section to write. Host paths are written as they are in the commands
    file, so the recipe belongs in the commands file's directory (they are relative to it).
    """
    ctx = ArgContext(path.parent.resolve(), None)
    parsed = parse_commands(path, ctx)  # validate everything, with line-precise errors, before writing anything
    out = [f"# Converted from the virt-customize commands file {path.name} by `imagebuilder convert`.",
           "# Host paths are relative to this recipe's directory: keep it beside the commands file."]
    if any(password_user(p.command.op, p.arg) for p in parsed):
        out.append("# As in virt-customize, the passwords are set after all the other steps, wherever they are.")
    out += ["", "[image]", f"name = {toml_string(name)}", ""]
    out += base_lines + [""]
    from imagebuilder.guest.ops import REGISTRY

    for item in read(path):
        if isinstance(item, Comment):
            # TOML comments may not hold control characters (a stray CR of a CRLF file, for one)
            for line in item.text.split("\n"):
                text = "".join(c if c == "\t" or " " <= c != "\x7f" else repr(c)[1:-1] for c in line)
                out.append(f"# {text}".rstrip())
            continue
        op = REGISTRY[item.op]
        value = "true" if op.flag else toml_string(item.arg)
        out += ["[[steps]]", f"{item.op} = {value}"]
    out += ["", "# virt-customize does not sysprep; drop this section to reset the machine id, SSH host keys,",
            "# logs and the rest of imagebuilder's default sysprep operations.", "[sysprep]", "enabled = false", ""]
    return "\n".join(out)


def toml_string(value: str) -> str:
    """A TOML basic string for value."""
    out = ['"']
    for char in value:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
