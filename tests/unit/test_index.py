"""virt-builder's native index format: every field, multi-line notes, and one bad entry at a time.

The expected results are virt-builder's (virt-builder(1), "Creating and signing the index file";
builder/index-scan.l, index_parser.ml of guestfs-tools), or, where imagebuilder is stricter, the
entry alone is skipped with a warning naming the file, line and field.
"""

from __future__ import annotations

import pytest

from imagebuilder.sources import index, ini

SHA = "ab" * 64

FULL = f"""# a comment before anything
[fedora-39]
name=Fedora® 39
osinfo=fedora39
arch=x86_64
file=fedora-39.xz
checksum[sha512]={SHA.upper()}
format=raw
size=6442450944
compressed_size=148947524
expand=/dev/sda3
lvexpand=/dev/fedora/root
revision=3
aliases=fedora fedora-latest
hidden=false
notes=Fedora 39.
 
 This image was made with:
   kickstart
# a comment inside a field's continuation
 and a last line
notes[ja]=フェドラ
x_custom[a.b,c]=kept

[fedora-39]
arch=aarch64
file=fedora-39-aarch64.xz
size=6442450944
checksum={SHA}
aliases=fedora

[test-image]
arch=x86_64
file=sub/test.qcow2
size=1
hidden=true
"""


def entry(*fields: str, name: str = "a") -> str:
    return "\n".join([f"[{name}]", *fields]) + "\n"


GOOD = ("arch=x86_64", "file=f", "size=1")


def test_every_field_is_parsed():
    parsed = index.parse(FULL, "repo")
    first, second, hidden = parsed.templates
    assert first == index.Template(
        name="fedora-39", arch="x86_64", file="fedora-39.xz", size=6442450944, line=2,
        printable_name="Fedora® 39", osinfo="fedora39", checksum=f"sha512:{SHA}", format="raw",
        compressed_size=148947524, expand="/dev/sda3", lvexpand="/dev/fedora/root", revision=3,
        aliases=("fedora", "fedora-latest"), hidden=False,
        notes="Fedora 39.\n\nThis image was made with:\n  kickstart\nand a last line",
        extra=(("x_custom[a.b,c]", "kept"),), localized_notes=(("ja", "フェドラ"),))
    assert (second.arch, second.checksum, second.revision, second.line) == ("aarch64", f"sha512:{SHA}", 1, 25)
    assert second.notes is None and second.format is None and second.expand is None
    assert hidden.hidden and hidden.file == "sub/test.qcow2"
    assert parsed.skipped == () and parsed.warnings == ()


# --- item 2: blank lines, the old form and the new ----------------------------------------------

def test_blank_lines_inside_a_section_as_current_libguestfs_reads_them():
    # guestfs-tools' own builder/test-index today: blank lines between a section's fields. libguestfs
    # 1.48 stopped with "syntax error"; current libguestfs ignores blank lines anywhere.
    text = "[phony]\nname=Phony\n\narch=x86_64\nfile=phony.xz\n\nformat=raw\nsize=100\n\n\nexpand=/dev/sda2\n" \
           "# a comment\nnotes=Some notes.\n[next]\narch=x86_64\nfile=n\nsize=1\n"
    phony, following = index.parse(text, "r").templates
    assert (phony.arch, phony.file, phony.size, phony.expand, phony.notes) == ("x86_64", "phony.xz", 100, "/dev/sda2",
                                                                               "Some notes.")
    assert following.name == "next"


def test_the_old_form_reads_the_same():
    # libguestfs <= 1.48: a blank line ends a section, the next line is a header.
    old = "[a]\narch=x86_64\nfile=f\nsize=1\n\n[b]\narch=x86_64\nfile=g\nsize=2\n"
    new = old.replace("\n\n", "\n")
    assert [(t.name, t.size) for t in index.parse(old, "r").templates] == \
        [(t.name, t.size) for t in index.parse(new, "r").templates] == [("a", 1), ("b", 2)]


def test_gpg_stripped_blank_notes_lines_are_kept():
    # gpg drops trailing blanks from the text it verifies: " " (a blank notes line) arrives as "".
    text = "[x]\narch=x86_64\nfile=f\nsize=1\nnotes=one\n\n two\n\n\n three\n\n[y]\narch=x86_64\nfile=g\nsize=2\n"
    x, y = index.parse(text, "r").templates
    assert x.notes == "one\n\ntwo\n\n\nthree"
    assert y.line == 12


def test_lenient_where_unambiguous():
    text = "[a]\r\narch=x86_64\r\nfile=f\r\nsize=1\r\n[b] \narch=x86_64\nfile=g\nsize=2"
    a, b = index.parse(text, "r").templates
    assert (a.name, a.size, b.name, b.size, b.line) == ("a", 1, "b", 2, 5)


def test_empty_and_comment_only_index():
    assert index.parse("", "r").templates == ()
    assert index.parse("# nothing\n\n\n", "r").templates == ()


def test_blanks_at_the_end_of_one_line_values_are_ignored():
    # a clearsignature does not cover them, so they must not change what a field means
    template = index.parse(entry("arch=x86_64 \t", "file=f.img  ", "size=1 ", "name=N  ", "notes=kept  "), "r")
    assert template.templates[0].file == "f.img" and template.templates[0].arch == "x86_64"
    assert template.templates[0].printable_name == "N" and template.templates[0].notes == "kept  "


# --- item 1: one bad entry never hides the others --------------------------------------------------

@pytest.mark.parametrize(("fields", "line", "words"), [
    # virt-builder's index_parser.ml refuses the whole index ("index is corrupt") for these; imagebuilder
    # skips the entry. Lines count from the [a] header, which is line 1.
    ((*GOOD, "checksum[sha512]=abc"), 5, "field 'checksum[sha512]' must be 128 hex digits (SHA-512), got 3"),
    ((*GOOD, "checksum=" + "a" * 64), 5, "field 'checksum' must be 128 hex digits"),
    ((*GOOD, f"checksum={SHA}", "checksum[sha512]=" + "cd" * 64), 5, "give different checksums"),
    (("arch=x86 64", "file=f", "size=1"), 2, "field 'arch' must be one word such as x86_64, not 'x86 64'"),
    (("arch=x86_64", "file=f", "size=6G"), 4, "field 'size' must be a whole number, not '6G'"),
    ((*GOOD, "revision=two"), 5, "field 'revision' must be a whole number"),
    ((*GOOD, "compressed_size=-1"), 5, "field 'compressed_size' must be a whole number"),
    ((*GOOD, "hidden=yes"), 5, "field 'hidden' must be true or false"),
    ((*GOOD, "expand=/dev/sda2 x"), 5, "field 'expand' must be a device name"),
    ((*GOOD, "lvexpand=vg/root"), 5, "field 'lvexpand' must be a device name"),
    (("arch=x86_64", "file=http://elsewhere/f.xz", "size=1"), 3, "relative to the index"),
    (("arch=x86_64", "file=/abs/f.xz", "size=1"), 3, "relative to the index"),
    (("arch=x86_64", "arch=aarch64", "file=f", "size=1"), 3, "field 'arch' is given twice (first at line"),
    (("arch=x86_64", "file=f", " more", "size=1"), 4, "field 'file' is one line"),
    (("file=f", "size=1"), 1, "the required field 'arch' is missing"),
    (("arch=", "file=f", "size=1"), 2, "the required field 'arch' is empty"),
    (("arch=x86_64", "size=1"), 1, "the required field 'file' is missing"),
    (("arch=x86_64", "file=f"), 1, "the required field 'size' is missing"),
    ((*GOOD, "name = spaced"), 5, "no space is allowed before '='"),
    ((*GOOD, "k-e=1"), 5, "invalid key 'k-e'"),
    ((*GOOD, "just words"), 5, "expected 'key=value'"),
])
def test_a_bad_entry_is_skipped_and_the_others_stay(fields, line, words):
    text = entry("arch=x86_64", "file=before", "size=1", name="before") + entry(*fields) + \
        entry("arch=x86_64", "file=after", "size=1", name="after")
    parsed = index.parse(text, "http://h/index.asc")
    assert [t.name for t in parsed.templates] == ["before", "after"]
    (skipped,) = parsed.skipped
    offset = 4  # the lines of [before]
    assert skipped.name == "a" and skipped.line == line + offset and words in skipped.problem, skipped
    (warning,) = parsed.warnings
    assert warning.startswith(f"http://h/index.asc:{line + offset}: [a] ") and words in warning
    assert warning.endswith("; this template is skipped")


def test_a_malformed_header_skips_its_lines_only():
    parsed = index.parse("[a b]\narch=x86_64\nfile=f\nsize=1\n[c]\narch=x86_64\nfile=g\nsize=1\n", "r")
    assert [t.name for t in parsed.templates] == ["c"]
    assert parsed.skipped[0].name is None and "invalid section header '[a b]'" in parsed.skipped[0].problem


def test_lines_before_the_first_section_are_ignored_with_a_warning():
    parsed = index.parse("arch=x86_64\n continued\n[a]\narch=x86_64\nfile=f\nsize=1\n", "r")
    assert [t.name for t in parsed.templates] == ["a"]
    assert parsed.warnings == ("r:1: field 'arch' is outside any section (before the first [NAME]); "
                               "the line is ignored",)


def test_the_same_name_and_arch_twice_skips_both():
    # virt-builder: "os-version 'a' with architecture 'x86_64' appears two or more times" (whole index)
    text = entry(*GOOD) + entry("arch=x86_64", "file=g", "size=2") + entry("arch=aarch64", "file=h", "size=1") + \
        entry(*GOOD, name="b")
    parsed = index.parse(text, "r")
    assert [(t.name, t.arch) for t in parsed.templates] == [("a", "aarch64"), ("b", "x86_64")]
    assert [(s.name, s.line) for s in parsed.skipped] == [("a", 1), ("a", 5)]
    assert "is defined 2 times for arch x86_64 (lines 1, 5)" in parsed.skipped[0].problem


def test_lenient_as_virt_builder_with_a_warning():
    # virt-builder takes revision=0, size=0, a name continued on the next line and expand=sda2
    # (virt-resize reads a partition name without /dev/).
    text = entry("arch=x86_64", "file=f", "size=0", "revision=0", "name=Two", " lines", "expand=sda2")
    parsed = index.parse(text, "r")
    (template,) = parsed.templates
    assert (template.size, template.revision, template.printable_name, template.expand) == \
        (0, 0, "Two lines", "/dev/sda2")
    assert [w.split(": ", 1)[0] for w in parsed.warnings] == ["r:4", "r:6", "r:8"]
    assert "'size' is 0" in parsed.warnings[0] and "read as /dev/sda2, as virt-resize does" in parsed.warnings[2]


def test_checksum_and_checksum_sha512_that_agree():
    # virt-builder reads checksum[sha512]= first, then checksum=; two equal values mean one checksum
    parsed = index.parse(entry(*GOOD, f"checksum={SHA}", f"checksum[sha512]={SHA.upper()}"), "r")
    assert parsed.templates[0].checksum == f"sha512:{SHA}" and parsed.warnings == ()


def test_an_alias_that_is_another_templates_name_is_dropped():
    # virt-builder would resolve `a` to [b] (aliases first); an alias never hides a name here
    text = entry(*GOOD) + entry("arch=x86_64", "file=g", "size=1", "aliases=a b-latest", name="b")
    parsed = index.parse(text, "r")
    assert [(t.name, t.aliases) for t in parsed.templates] == [("a", ()), ("b", ("b-latest",))]
    assert parsed.warnings == ("r:5: [b] field 'aliases': 'a' is the name of [a] (line 1); the alias is ignored, "
                               "the name means [a]",)


def test_an_alias_that_is_a_skipped_entrys_name_is_dropped_too():
    # asking for the broken [b] must not quietly give [a]
    parsed = index.parse(entry(*GOOD, "aliases=b") + entry("arch=x86_64", "file=g", "size=x", name="b"), "r")
    assert parsed.templates[0].aliases == () and parsed.skipped[0].name == "b"


def test_unknown_multiline_fields_are_kept_not_refused():
    parsed = index.parse(entry(*GOOD, "sig=f.sig", "future=1", " 2"), "r")
    assert parsed.templates[0].sig == "f.sig"
    assert parsed.templates[0].extra == (("future", "1\n2"),)


def test_first_line_offsets_line_numbers():
    parsed = index.parse("[a]\narch=x86_64\nsize=1\n", "http://h/index.asc", first_line=4)
    assert parsed.warnings == ("http://h/index.asc:4: [a] the required field 'file' is missing; "
                               "this template is skipped",)


# --- item 5: architectures --------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "asked", "same"), [
    ("i686", "i386", True), ("i386", "i686", True), ("i586", "i686", True), ("amd64", "x86_64", True),
    ("x86_64", "amd64", True), ("powerpc64le", "ppc64le", True), ("x86_64", "aarch64", False),
    ("i686", "x86_64", False),
])
def test_architectures_match_as_virt_builder_normalizes_them(written, asked, same):
    (template,) = index.parse(entry(f"arch={written}", "file=f", "size=1"), "r").templates
    assert template.matches_arch(asked) is same


# --- item 7: notes by locale --------------------------------------------------------------------------

@pytest.mark.parametrize(("locale", "expected"), [
    ("ja_JP.UTF-8", "日本"), ("ja", "日本"), ("pt_BR.UTF-8", "Brasil"), ("pt_PT.UTF-8", "Português"),
    ("fr_FR.UTF-8", "plain"), ("C", "plain"), (None, "plain"), ("sr@latin", "plain"), ("garbage!", "plain"),
])
def test_notes_follow_the_language_as_virt_builder_picks_it(locale, expected):
    # virt-builder (languages.ml): for ll_TT.enc@mod it tries notes[ll_TT], notes[ll], then notes
    text = entry(*GOOD, "notes=plain", "notes[ja]=日本", "notes[pt]=Português", "notes[pt_BR]=Brasil")
    assert index.parse(text, "r").templates[0].notes_for(locale) == expected


def test_notes_c_is_the_default_language():
    template = index.parse(entry(*GOOD, "notes[C]=default"), "r").templates[0]
    assert template.notes_for("de_DE.UTF-8") == "default"
    assert template.as_json()["notes"] == {"C": "default"}


# --- item 3: the JSON entry ---------------------------------------------------------------------------

def test_json_entry_has_virt_builder_types_and_absent_fields():
    first, second, _hidden = index.parse(FULL, "r").templates
    assert first.as_json() == {
        "os-version": "fedora-39", "full-name": "Fedora® 39", "arch": "x86_64", "size": 6442450944,
        "compressed-size": "148947524", "notes": {"C": first.notes, "ja": "フェドラ"},
        "aliases": ["fedora", "fedora-latest"], "osinfo": "fedora39", "hidden": False}
    assert list(first.as_json()) == ["os-version", "full-name", "arch", "size", "compressed-size", "notes", "aliases",
                                     "osinfo", "hidden"]
    assert second.as_json() == {"os-version": "fedora-39", "arch": "aarch64", "size": 6442450944,
                                "aliases": ["fedora"], "hidden": False}
    assert second.details() == {"file": "fedora-39-aarch64.xz", "revision": 1, "checksum": {"sha512": SHA}}


# --- the line grammar shared with repos.d ---------------------------------------------------------

def test_ini_reports_problems_per_section():
    parsed = ini.read("[ok]\nk=v\n[bad]\nbad line\nk=v\n")
    ok, bad = parsed.sections
    assert ok.problems == () and ok.fields[0].value == "v"
    assert bad.problems == (ini.Problem(4, "expected 'key=value', '[NAME]', a '#' comment or an empty line, "
                                           "got 'bad line'"),)
