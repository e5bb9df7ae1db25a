"""virt-builder's native index format, parsed into frozen dataclasses, one entry at a time.

The line grammar is in ini.py. The fields of a template are virt-builder's (virt-builder(1),
"Creating and signing the index file"): `name`, `osinfo`, `arch`, `file`, `sig`, `checksum[sha512]`
(or `checksum`), `revision`, `format`, `size`, `compressed_size`, `expand`, `lvexpand`, `notes`
and `notes[LANG]`, `aliases`, `hidden`; unknown fields are kept.

One bad entry never hides the others: an entry that cannot be used (a required field missing, a
checksum of the wrong length, a field given twice, a line that cannot be read …) is kept as a
Skipped entry with the line and field at fault, which listings warn about and a build that names
it refuses with. Where virt-builder is lenient and nothing is ambiguous, this parser is too, with
a warning: `expand=sda2` means /dev/sda2 (as virt-resize reads it), a `name` continued on the next
line is joined, `size=0` and `revision=0` are taken. Where it is stricter for safety, the entry
is skipped: `file` must be relative to the index, the same os-version and arch may appear only once,
and an alias may not be another template's name (that alias is dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urlparse

from imagebuilder.sources import ini

_HEX = re.compile(r"[0-9a-fA-F]+")
_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_DEVICE = re.compile(r"/dev/\S+")
_LOCALE = re.compile(r"([a-z]+)(?:_([a-z]+))?(?:\.[a-z0-9-]+)?(?:@[a-z]+)?", re.IGNORECASE)

# Fields whose value is one line; only `notes` (and fields this parser does not know) may span lines.
_ONE_LINE = ("name", "osinfo", "arch", "file", "sig", "checksum", "revision", "format", "size",
             "compressed_size", "expand", "lvexpand", "aliases", "hidden")
# The architecture names virt-builder treats as the same (libguestfs-common's normalize_arch).
_ARCH_ALIASES = {"i486": "i386", "i586": "i386", "i686": "i386", "amd64": "x86_64", "powerpc": "ppc",
                 "powerpc64": "ppc64", "powerpc64le": "ppc64le"}


def normalize_arch(arch: str) -> str:
    """The name virt-builder compares architectures by: i686 is i386, amd64 is x86_64."""
    return _ARCH_ALIASES.get(arch, arch)


def languages(locale: str | None) -> list[str]:
    """The notes languages to try for a locale, as virt-builder does: `ja_JP.UTF-8` → ja_JP, ja, ""."""
    match = _LOCALE.fullmatch(locale or "")
    if not match:
        return [""]
    lang, territory = match.group(1), match.group(2)
    return ([f"{lang}_{territory}"] if territory else []) + [lang, ""]


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
    checksum: str | None = None  # "sha512:HEX" (or "sha256:HEX" from a simplestreams repository)
    format: str | None = None
    compressed_size: int | None = None
    expand: str | None = None
    lvexpand: str | None = None
    revision: int | str = 1
    aliases: tuple[str, ...] = ()
    hidden: bool = False
    notes: str | None = None
    sig: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    localized_notes: tuple[tuple[str, str], ...] = ()

    def notes_for(self, locale: str | None) -> str | None:
        """The notes for a locale such as `ja_JP.UTF-8` (`notes[ja_JP]`, `notes[ja]`, then `notes`)."""
        by_lang = {"": self.notes, **{("" if lang == "C" else lang): text for lang, text in self.localized_notes}}
        return next((by_lang[lang] for lang in languages(locale) if by_lang.get(lang) is not None), None)

    def matches_arch(self, arch: str) -> bool:
        """True if arch names this template's architecture (i686 = i386, amd64 = x86_64)."""
        return normalize_arch(self.arch) == normalize_arch(arch)

    def as_json(self) -> dict[str, object]:
        """virt-builder's `--list --list-format json` entry (same keys, types and absent fields)."""
        item: dict[str, object] = {"os-version": self.name}
        if self.printable_name is not None:
            item["full-name"] = self.printable_name
        item |= {"arch": self.arch, "size": self.size}
        if self.compressed_size is not None:
            item["compressed-size"] = str(self.compressed_size)  # a string in virt-builder's output
        notes = sorted(([("", self.notes)] if self.notes is not None else []) + list(self.localized_notes))
        if notes:
            item["notes"] = {lang or "C": text for lang, text in notes}
        if self.aliases:
            item["aliases"] = list(self.aliases)
        if self.osinfo is not None:
            item["osinfo"] = self.osinfo
        item["hidden"] = self.hidden
        return item

    def details(self) -> dict[str, object]:
        """What imagebuilder adds to a JSON entry: the fields virt-builder does not list, when set."""
        values = {"file": self.file, "revision": self.revision, "format": self.format, "expand": self.expand,
                  "lvexpand": self.lvexpand, "checksum": dict([self.checksum.split(":", 1)]) if self.checksum else None,
                  "extra": dict(self.extra) or None}
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Skipped:
    """An entry that cannot be used: its names as written, the line at fault and why."""

    name: str | None
    arch: str | None
    aliases: tuple[str, ...]
    line: int
    problem: str

    def matches(self, name: str, arch: str) -> bool:
        """True if a build asking for name (for arch) may have meant this entry."""
        return (name == self.name or name in self.aliases) and \
            (self.arch is None or not _WORD.fullmatch(self.arch) or normalize_arch(self.arch) == normalize_arch(arch))


@dataclass(frozen=True)
class Index:
    """A parsed index: its usable templates in file order, the skipped entries, and the warnings
    (`ORIGIN:LINE: …`) about what was read leniently. `base` is the URL `file=` is relative to."""

    origin: str
    templates: tuple[Template, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    base: str = ""

    def describe_skipped(self, entry: Skipped) -> str:
        """`ORIGIN:LINE: [NAME] problem` for an entry that cannot be used (no LINE for JSON repositories)."""
        where = f"{self.origin}:{entry.line}" if entry.line else self.origin
        return f"{where}: [{entry.name or '?'}] {entry.problem}"


def parse(text: str, origin: str, first_line: int = 1) -> Index:
    """Parse an index's text (already checked for a signature, if any) into an Index."""
    parsed = ini.read(text, first_line)
    warnings = [f"{origin}:{p.line}: {p.text}; the line is ignored" for p in parsed.problems]
    found: list[Template | Skipped] = []
    for section in parsed.sections:
        notes: list[str] = []
        try:
            found.append(_template(section, notes))
        except ini.Unusable as bad:
            found.append(_skipped(section, bad.line, bad.problem))
        warnings += [f"{origin}:{note}" for note in sorted(notes, key=lambda n: int(n.split(":", 1)[0]))]
    found = _drop_duplicates(found)
    templates = _drop_name_aliases(found, origin, warnings)
    skipped = tuple(s for s in found if isinstance(s, Skipped))
    result = Index(origin, tuple(templates), skipped, base=origin)
    return replace(result, warnings=tuple(warnings + [f"{result.describe_skipped(s)}; this template is skipped"
                                                      for s in skipped]))


def _skipped(section: ini.Section, line: int, problem: str) -> Skipped:
    values = {f.label: f.value for f in reversed(section.fields)}
    return Skipped(section.name, values.get("arch", "").strip() or None,
                   tuple(values.get("aliases", "").split()), line, problem)


def _drop_duplicates(found: list[Template | Skipped]) -> list[Template | Skipped]:
    """The same os-version and arch twice in one index is ambiguous (virt-builder refuses the whole
    index): every copy is skipped, the other entries stay."""
    lines: dict[tuple[str, str], list[int]] = {}
    for entry in found:
        if isinstance(entry, Template):
            lines.setdefault((entry.name, entry.arch), []).append(entry.line)
    out: list[Template | Skipped] = []
    for entry in found:
        where = lines.get((entry.name, entry.arch), []) if isinstance(entry, Template) else []
        if len(where) > 1:
            entry = Skipped(entry.name, entry.arch, entry.aliases, entry.line,
                            f"is defined {len(where)} times for arch {entry.arch} (lines "
                            f"{', '.join(map(str, where))}); it is ambiguous")
        out.append(entry)
    return out


def _drop_name_aliases(found: list[Template | Skipped], origin: str, warnings: list[str]) -> list[Template]:
    """An alias that is another entry's name (a skipped one's too) would make that name mean two
    templates: drop it. Returns the usable templates."""
    names = {entry.name: entry for entry in reversed(found) if entry.name}
    out = []
    for template in (t for t in found if isinstance(t, Template)):
        clash = [a for a in template.aliases if a in names and a != template.name]
        for alias in clash:
            warnings.append(f"{origin}:{template.line}: [{template.name}] field 'aliases': '{alias}' is the name of "
                            f"[{alias}] (line {names[alias].line}); the alias is ignored, the name means [{alias}]")
        if clash:
            template = replace(template, aliases=tuple(a for a in template.aliases if a not in clash))
        out.append(template)
    return out


class _Fields:
    """A section's fields by label, read as one-line values."""

    def __init__(self, section: ini.Section, notes: list[str]):
        self.section, self.values, self.extra = section, {}, []
        for item in section.fields:
            if item.label in self.values:
                raise ini.Unusable(item.line, f"field '{item.label}' is given twice (first at line "
                                      f"{self.values[item.label].line})")
            self.values[item.label] = item
            known = item.key in _ONE_LINE and (item.subkey is None or item.label == "checksum[sha512]")
            if known and "\n" in item.value:
                if item.key != "name":
                    raise ini.Unusable(item.line + 1, f"field '{item.label}' is one line; only notes continue on lines "
                                              "starting with a space")
                notes.append(f"{item.line}: [{section.name}] field 'name' continues on the next line; its lines "
                             "are joined")
            elif not known and item.key != "notes":
                self.extra.append((item.label, item.value))

    def line(self, key: str) -> int:
        """The line of a field (of the section header if the field is missing)."""
        return self.values[key].line if key in self.values else self.section.line

    def text(self, key: str, required: bool = False) -> str | None:
        """A one-line value, None if missing or empty. Blanks at its end are not covered by an index's
        signature, so they are ignored."""
        item = self.values.get(key)
        value = " ".join(item.value.split("\n")).rstrip(" \t") if item else ""
        if not value:
            if required:
                raise ini.Unusable(self.line(key), f"the required field '{key}' is {'empty' if item else 'missing'}")
            return None
        return value

    def number(self, key: str, required: bool = False) -> int | None:
        """A whole number."""
        value = self.text(key, required)
        if value is not None and not (value.isascii() and value.isdigit()):
            raise ini.Unusable(self.line(key), f"field '{key}' must be a whole number, not {value!r}")
        return None if value is None else int(value)

    def word(self, key: str, what: str, required: bool = False) -> str | None:
        """One word (an architecture, a format)."""
        value = self.text(key, required)
        if value is not None and not _WORD.fullmatch(value):
            raise ini.Unusable(self.line(key), f"field '{key}' must be one word such as {what}, not {value!r}")
        return value

    def device(self, key: str) -> str | None:
        """A device name such as /dev/sda3."""
        value = self.text(key)
        if value is not None and not _DEVICE.fullmatch(value):
            raise ini.Unusable(self.line(key), f"field '{key}' must be a device name such as /dev/sda3, not {value!r}")
        return value


def _template(section: ini.Section, notes: list[str]) -> Template:
    """A section as a Template; ini.Unusable(line, problem) if it cannot be used; notes gets `LINE: …` warnings."""
    if section.problems:
        raise ini.Unusable(section.problems[0].line, section.problems[0].text)
    fields = _Fields(section, notes)
    arch = fields.word("arch", "x86_64", required=True)
    file = _relative(fields.text("file", required=True), fields.line("file"))
    size = fields.number("size", required=True)
    if size == 0:
        notes.append(f"{fields.line('size')}: [{section.name}] field 'size' is 0; the image's own size is used")
    hidden = fields.text("hidden") or "false"
    if hidden not in ("true", "false"):
        raise ini.Unusable(fields.line("hidden"), f"field 'hidden' must be true or false, not {hidden!r}")
    revision = fields.number("revision")
    notes_field = fields.values.get("notes")
    return Template(
        name=section.name, arch=arch, file=file, size=size, line=section.line, printable_name=fields.text("name"),
        osinfo=fields.text("osinfo"), checksum=_checksum(fields), format=fields.word("format", "raw or qcow2"),
        compressed_size=fields.number("compressed_size"), expand=_expand(fields, notes),
        lvexpand=fields.device("lvexpand"), revision=1 if revision is None else revision,
        aliases=tuple(dict.fromkeys((fields.text("aliases") or "").split())), hidden=hidden == "true",
        notes=notes_field.value if notes_field and notes_field.value else None, sig=fields.text("sig"),
        extra=tuple(fields.extra),
        localized_notes=tuple((f.subkey, f.value) for f in section.fields if f.key == "notes" and f.subkey))


def _relative(file: str, line: int) -> str:
    parsed = urlparse(file)
    if parsed.scheme or parsed.netloc or "://" in file or file.startswith("/"):
        raise ini.Unusable(line, f"field 'file' must be a path relative to the index, not {file!r} "
                         "(templates come from the index's own server)")
    return file


def _checksum(fields: _Fields) -> str | None:
    """checksum[sha512]= or checksum= (virt-builder reads either); when both are given they must agree."""
    labelled, plain = fields.text("checksum[sha512]"), fields.text("checksum")
    if labelled and plain and labelled.lower() != plain.lower():
        raise ini.Unusable(fields.line("checksum"), "fields 'checksum' and 'checksum[sha512]' give different checksums")
    value, key = (labelled, "checksum[sha512]") if labelled else (plain, "checksum")
    if value is None:
        return None
    if not _HEX.fullmatch(value) or len(value) != 128:
        raise ini.Unusable(fields.line(key), f"field '{key}' must be 128 hex digits (SHA-512), got {len(value)} "
                                             "characters")
    return f"sha512:{value.lower()}"


def _expand(fields: _Fields, notes: list[str]) -> str | None:
    """expand=/dev/sda3; a bare `sda3` is read as virt-resize reads it."""
    value = fields.text("expand")
    if value is not None and _WORD.fullmatch(value):
        notes.append(f"{fields.line('expand')}: [{fields.section.name}] field 'expand': '{value}' is read as "
                     f"/dev/{value}, as virt-resize does")
        return f"/dev/{value}"
    return fields.device("expand")
