"""virt-builder's native index format, parsed completely into frozen dataclasses.

The format (virt-builder(1), "Creating and signing the index file"; edge cases checked against
virt-index-validate):

- `[os-version]` starts a section; the name is letters, digits, `.`, `_` and `-`.
- `key=value` or `key[subkey]=value` at the start of a line is a field; keys are letters, digits,
  `_` and `.`, subkeys may also hold `,`; there is no space around `=`; the value is the rest of the line.
- A line starting with a space or a tab continues the previous field's value on a new line, minus
  that first blank (this is how multi-line `notes` are written, blank lines included as " ").
  Signed text loses trailing blanks (gpg), so an empty line followed by a continuation line is
  read as a blank line of the value rather than the end of the section (which would be an error).
- `#` at the start of a line is a comment; an empty line ends a section.
- The text is UTF-8. A section name may repeat with a different `arch`.

Where virt-index-validate is stricter and nothing is ambiguous, this parser accepts: CRLF line ends,
a missing final newline, and a section header right after a field with no empty line between.

The same line grammar is used by virt-builder's `repos.d/*.conf` files (see repos.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from imagebuilder.errors import SourceError

_HEADER = re.compile(r"\[([A-Za-z0-9._-]+)\][ \t]*")
_FIELD = re.compile(r"([A-Za-z0-9_.]+)(?:\[([A-Za-z0-9_.,]+)\])?=(.*)")
_HEX = re.compile(r"[0-9a-fA-F]+")
_ARCH = re.compile(r"[A-Za-z0-9_.-]+")
_DEVICE = re.compile(r"/dev/\S+")

# Fields whose value is one line; only `notes` (and fields this parser does not know) may span lines.
_ONE_LINE = ("name", "osinfo", "arch", "file", "sig", "checksum", "revision", "format", "size",
             "compressed_size", "expand", "lvexpand", "aliases", "hidden")


class IndexFormatError(SourceError):
    """A repository's index does not follow the format: `ORIGIN:LINE: problem`."""

    def __init__(self, origin: str, line: int | None, problem: str):
        self.origin, self.line, self.problem = origin, line, problem
        super().__init__(f"{origin}:{line}: {problem}" if line else f"{origin}: {problem}")


@dataclass(frozen=True)
class Field:
    """One `key[subkey]=value` line (with its continuation lines) and the line it starts on."""

    key: str
    subkey: str | None
    value: str
    line: int

    @property
    def label(self) -> str:
        """The key as written: `key` or `key[subkey]`."""
        return f"{self.key}[{self.subkey}]" if self.subkey is not None else self.key


@dataclass(frozen=True)
class Section:
    """A `[name]` header and its fields, in file order."""

    name: str
    line: int
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Template:
    """One template of an index: a section with its fields parsed and checked."""

    name: str
    arch: str
    file: str
    size: int
    line: int
    printable_name: str | None = None
    osinfo: str | None = None
    checksum_sha512: str | None = None
    format: str | None = None
    compressed_size: int | None = None
    expand: str | None = None
    lvexpand: str | None = None
    revision: int = 1
    aliases: tuple[str, ...] = ()
    hidden: bool = False
    notes: str | None = None
    sig: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    localized_notes: tuple[tuple[str, str], ...] = ()

    def notes_for(self, lang: str | None) -> str | None:
        """The notes in lang (`notes[ja]=`, matched like `ja_JP.UTF-8`), else the plain `notes=`."""
        localized = dict(self.localized_notes)
        if lang:
            base = lang.split(".")[0].split("@")[0]
            for candidate in (base, base.split("_")[0]):
                if candidate in localized:
                    return localized[candidate]
        return self.notes

    def matches(self, name: str) -> bool:
        """True if name is this template's os-version or one of its aliases."""
        return name == self.name or name in self.aliases

    @property
    def description(self) -> str:
        """One line for a listing: the printable name, else the first line of the notes."""
        if self.printable_name:
            return self.printable_name
        return self.notes.strip().splitlines()[0] if self.notes and self.notes.strip() else ""

    def as_json(self) -> dict[str, object]:
        """Every field, for `templates list --json` (virt-builder's --list-format json names, and more)."""
        notes = ({"C": self.notes} if self.notes is not None else {}) | dict(self.localized_notes)
        return {"os-version": self.name, "full-name": self.printable_name, "arch": self.arch,
                "size": self.size, "compressed-size": self.compressed_size, "notes": notes,
                "aliases": list(self.aliases), "osinfo": self.osinfo, "hidden": self.hidden,
                "file": self.file, "checksum": {"sha512": self.checksum_sha512} if self.checksum_sha512 else {},
                "format": self.format, "expand": self.expand, "lvexpand": self.lvexpand,
                "revision": self.revision, "extra": dict(self.extra)}


@dataclass(frozen=True)
class Index:
    """A parsed index: its templates in file order and where it came from."""

    origin: str
    templates: tuple[Template, ...]

    def lookup(self, name: str, arch: str) -> Template | None:
        """The template called name (or aliased so) for arch; an exact name wins over an alias."""
        candidates = [t for t in self.templates if t.arch == arch and t.matches(name)]
        exact = [t for t in candidates if t.name == name]
        return (exact or candidates or [None])[0]

    def arches(self, name: str) -> list[str]:
        """The architectures name (or an alias of that name) exists for."""
        return sorted({t.arch for t in self.templates if t.matches(name)})


class _Problem(Exception):
    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line, self.problem = line, problem


def sections(text: str, origin: str, first_line: int = 1, error: type = IndexFormatError) -> list[Section]:
    """Split text into sections of fields; raise `error(origin, line, problem)` at the first bad line.

    first_line is the number of text's first line in the file the user sees (a signed index
    has a few header lines before the signed text).
    """
    try:
        return _sections(text, first_line)
    except _Problem as exc:
        raise error(origin, exc.line, exc.problem) from None


def _sections(text: str, first_line: int) -> list[Section]:
    found: list[Section] = []
    name: str | None = None
    header_line = 0
    fields: list[list] = []  # [key, subkey, [value lines], line]

    def close() -> None:
        nonlocal name
        if name is not None:
            found.append(Section(name, header_line, tuple(
                Field(key, subkey, "\n".join(parts), line) for key, subkey, parts, line in fields)))
        name = None
        fields.clear()

    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    current: list | None = None
    blanks = 0  # empty lines not yet known to end the section
    for number, raw in enumerate(lines, first_line):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith("#"):
            continue
        if line[:1] in (" ", "\t"):
            if current is None:
                raise _Problem(number, "a line starting with a space continues a field, but no field precedes it")
            # An empty line between continuation lines is a blank line of the value: gpg strips
            # trailing blanks from signed text, so the " " of a blank notes line arrives as "".
            current[2].extend([""] * blanks + [line[1:]])
            blanks = 0
            continue
        if not line:
            blanks += 1
            continue
        if blanks:
            close()
            current = None
            blanks = 0
        if line.startswith("["):
            match = _HEADER.fullmatch(line)
            if not match:
                raise _Problem(number, f"invalid section header {line!r}: write [NAME] with NAME made of "
                                       "letters, digits, '.', '_' and '-'")
            close()
            current = None
            name, header_line = match.group(1), number
            continue
        match = _FIELD.fullmatch(line)
        if not match:
            raise _Problem(number, _explain(line))
        if name is None:
            raise _Problem(number, f"field '{line.split('=', 1)[0]}' is outside any section "
                                   "(a section starts with [NAME] and ends at an empty line)")
        current = [match.group(1), match.group(2), [match.group(3)], number]
        fields.append(current)
    close()
    return found


def _explain(line: str) -> str:
    if "=" not in line:
        return f"expected 'key=value', '[NAME]', a '#' comment or an empty line, got {line!r}"
    key = line.split("=", 1)[0]
    if key != key.rstrip():
        return f"no space is allowed before '=' (in {line!r})"
    if not key:
        return "a field needs a key before '='"
    return (f"invalid key '{key}': keys are letters, digits, '_' and '.', optionally followed by "
            "[SUBKEY]")


def parse(text: str, origin: str, first_line: int = 1) -> Index:
    """Parse an index's text (already checked for a signature, if any) into an Index."""
    templates: list[Template] = []
    seen: dict[tuple[str, str], Template] = {}
    for section in sections(text, origin, first_line):
        template = _template(section, origin)
        key = (template.name, template.arch)
        if key in seen:
            raise IndexFormatError(origin, section.line, f"[{template.name}] for arch {template.arch} is "
                                   f"defined twice (first at line {seen[key].line})")
        seen[key] = template
        templates.append(template)
    _check_aliases(templates, origin)
    return Index(origin, tuple(templates))


def _check_aliases(templates: list[Template], origin: str) -> None:
    owner: dict[tuple[str, str], Template] = {(t.name, t.arch): t for t in templates}
    for template in templates:
        for alias in template.aliases:
            other = owner.get((alias, template.arch))
            if other is not None and other is not template:
                raise IndexFormatError(origin, template.line, f"alias '{alias}' of [{template.name}] also names "
                                       f"[{other.name}] (line {other.line}) for arch {template.arch}")
            owner[(alias, template.arch)] = template


def _template(section: Section, origin: str) -> Template:
    values: dict[str, Field] = {}
    extra: list[tuple[str, str]] = []
    for item in section.fields:
        label = item.label
        if label == "checksum":
            label = "checksum[sha512]"
        if label in values:
            raise IndexFormatError(origin, item.line, f"[{section.name}]: '{item.label}' is given twice "
                                   f"(first at line {values[label].line})")
        values[label] = item
        one_line = item.key in _ONE_LINE and (item.subkey is None or label == "checksum[sha512]")
        if one_line and "\n" in item.value:
            raise IndexFormatError(origin, item.line + 1, f"[{section.name}]: '{item.label}' is one line; "
                                   "only notes continue on lines starting with a space")
        if not one_line and item.key != "notes":
            extra.append((item.label, item.value))

    def problem(item: Field | None, text: str) -> IndexFormatError:
        return IndexFormatError(origin, item.line if item else section.line, f"[{section.name}]: {text}")

    def text(key: str, required: bool = False) -> str | None:
        item = values.get(key)
        if item is None or item.value == "":
            if required:
                raise problem(item, f"the required field '{key}' is {'empty' if item else 'missing'}")
            return None
        return item.value

    def number(key: str, required: bool = False, minimum: int = 0) -> int | None:
        value = text(key, required)
        if value is None:
            return None
        if not value.isascii() or not value.isdigit() or int(value) < minimum:
            raise problem(values[key], f"'{key}' must be a whole number"
                          + (f" of at least {minimum}" if minimum else "") + f", not {value!r}")
        return int(value)

    arch = text("arch", required=True)
    if not _ARCH.fullmatch(arch):
        raise problem(values["arch"], f"'arch' must be one word, not {arch!r}")
    file = text("file", required=True)
    parsed = urlparse(file)
    if parsed.scheme or parsed.netloc or file.startswith("/"):
        raise problem(values["file"], f"'file' must be a path relative to the index, not {file!r} "
                      "(templates come from the index's own server)")
    checksum = text("checksum[sha512]")
    if checksum is not None and (not _HEX.fullmatch(checksum) or len(checksum) != 128):
        raise problem(values["checksum[sha512]"], "'checksum[sha512]' must be 128 hex digits, "
                      f"got {len(checksum)} characters")
    for key in ("expand", "lvexpand"):
        value = text(key)
        if value is not None and not _DEVICE.fullmatch(value):
            raise problem(values[key], f"'{key}' must be a device name such as /dev/sda3, not {value!r}")
    hidden = text("hidden") or "false"
    if hidden not in ("true", "false"):
        raise problem(values["hidden"], f"'hidden' must be true or false, not {hidden!r}")
    fmt = text("format")
    if fmt is not None and not _ARCH.fullmatch(fmt):
        raise problem(values["format"], f"'format' must be one word such as raw or qcow2, not {fmt!r}")
    return Template(
        name=section.name, arch=arch, file=file, size=number("size", required=True, minimum=1),
        line=section.line, printable_name=text("name"), osinfo=text("osinfo"),
        checksum_sha512=checksum.lower() if checksum else None, format=fmt,
        compressed_size=number("compressed_size"), expand=text("expand"), lvexpand=text("lvexpand"),
        revision=number("revision", minimum=1) or 1, aliases=tuple((text("aliases") or "").split()),
        hidden=hidden == "true", notes=text("notes"), sig=text("sig"), extra=tuple(extra),
        localized_notes=tuple((f.subkey, f.value) for f in section.fields if f.key == "notes" and f.subkey))
