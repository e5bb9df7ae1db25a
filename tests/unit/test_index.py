"""virt-builder's native index format: every field, multi-line notes, and errors with line numbers."""

from __future__ import annotations

import pytest

from imagebuilder.errors import SourceError
from imagebuilder.sources import index
from imagebuilder.sources.index import IndexFormatError

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


def test_every_field_is_parsed():
    parsed = index.parse(FULL, "repo")
    first, second, hidden = parsed.templates
    assert first == index.Template(
        name="fedora-39", arch="x86_64", file="fedora-39.xz", size=6442450944, line=2,
        printable_name="Fedora® 39", osinfo="fedora39", checksum_sha512=SHA, format="raw",
        compressed_size=148947524, expand="/dev/sda3", lvexpand="/dev/fedora/root", revision=3,
        aliases=("fedora", "fedora-latest"), hidden=False,
        notes="Fedora 39.\n\nThis image was made with:\n  kickstart\nand a last line",
        extra=(("x_custom[a.b,c]", "kept"),), localized_notes=(("ja", "フェドラ"),))
    assert (second.arch, second.checksum_sha512, second.revision, second.line) == ("aarch64", SHA, 1, 25)
    assert second.notes is None and second.format is None and second.expand is None
    assert hidden.hidden and hidden.file == "sub/test.qcow2"


def test_lookup_by_name_alias_and_arch():
    parsed = index.parse(FULL, "repo")
    assert parsed.lookup("fedora-39", "x86_64").line == 2
    assert parsed.lookup("fedora", "aarch64").arch == "aarch64"
    assert parsed.lookup("fedora-latest", "aarch64") is None
    assert parsed.lookup("test-image", "x86_64").hidden
    assert parsed.arches("fedora") == ["aarch64", "x86_64"]
    assert parsed.lookup("nothing", "x86_64") is None


def test_description_and_localized_notes():
    first = index.parse(FULL, "repo").templates[0]
    assert first.description == "Fedora® 39"
    assert first.notes_for("ja_JP.UTF-8") == "フェドラ"
    assert first.notes_for("fr_FR.UTF-8") == first.notes
    only_notes = index.parse("[x]\narch=x86_64\nfile=f\nsize=1\nnotes=\n First line\n second\n", "r")
    assert only_notes.templates[0].description == "First line"
    assert only_notes.templates[0].notes == "\nFirst line\nsecond"


def test_gpg_stripped_blank_notes_lines_are_kept():
    # gpg drops trailing blanks from signed text: " " (a blank notes line) arrives as "".
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


def test_first_line_offsets_line_numbers():
    with pytest.raises(IndexFormatError) as info:
        index.parse("[a]\narch=x86_64\nsize=1\n", "http://h/index.asc", first_line=4)
    assert info.value.line == 4
    assert str(info.value) == "http://h/index.asc:4: [a]: the required field 'file' is missing"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("arch=x86_64\n", 1, "outside any section"),
    ("[a]\narch=x86_64\n\nfile=f\n", 4, "outside any section"),
    (" continuation\n", 1, "no field precedes it"),
    ("[a b]\narch=x\n", 1, "invalid section header"),
    ("[a+b]\narch=x\n", 1, "invalid section header"),
    ("[a]\nfile\n", 2, "expected 'key=value'"),
    ("[a]\nname = x\n", 2, "no space is allowed before '='"),
    ("[a]\nk-e=1\n", 2, "invalid key 'k-e'"),
    ("[a]\n=x\n", 2, "needs a key"),
    ("[a]\nfile=f\nsize=1\n", 1, "'arch' is missing"),
    ("[a]\narch=\nfile=f\nsize=1\n", 2, "'arch' is empty"),
    ("[a]\narch=x86_64\nsize=1\n", 1, "'file' is missing"),
    ("[a]\narch=x86_64\nfile=f\n", 1, "'size' is missing"),
    ("[a]\narch=x86_64\nfile=f\nsize=6G\n", 4, "'size' must be a whole number"),
    ("[a]\narch=x86_64\nfile=f\nsize=0\n", 4, "at least 1"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\ncompressed_size=-1\n", 5, "'compressed_size' must be a whole number"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\nrevision=0\n", 5, "'revision' must be a whole number of at least 1"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\nhidden=yes\n", 5, "'hidden' must be true or false"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\nchecksum[sha512]=abc\n", 5, "128 hex digits"),
    ("[a]\narch=x86_64\nfile=http://elsewhere/f.xz\nsize=1\n", 3, "relative to the index"),
    ("[a]\narch=x86_64\nfile=/abs/f.xz\nsize=1\n", 3, "relative to the index"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\nexpand=sda3\n", 5, "device name"),
    ("[a]\narch=x86 64\nfile=f\nsize=1\n", 2, "one word"),
    ("[a]\narch=x86_64\narch=aarch64\nfile=f\nsize=1\n", 3, "'arch' is given twice (first at line 2)"),
    (f"[a]\narch=x86_64\nfile=f\nsize=1\nchecksum={SHA}\nchecksum[sha512]={SHA}\n", 6, "given twice"),
    ("[a]\narch=x86_64\nfile=f\n more\nsize=1\n", 4, "'file' is one line"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\n\n[a]\narch=x86_64\nfile=g\nsize=1\n", 6,
     "[a] for arch x86_64 is defined twice (first at line 1)"),
    ("[a]\narch=x86_64\nfile=f\nsize=1\n\n[b]\narch=x86_64\nfile=g\nsize=1\naliases=a\n", 6,
     "alias 'a' of [b] also names [a] (line 1)"),
])
def test_errors_name_the_line(text, line, words):
    with pytest.raises(IndexFormatError) as info:
        index.parse(text, "the-index")
    assert info.value.line == line, str(info.value)
    assert words in info.value.problem
    assert str(info.value).startswith(f"the-index:{line}: ")
    assert isinstance(info.value, SourceError) and info.value.exit_code == 1


def test_same_alias_on_different_arches_is_fine():
    text = "[a]\narch=x86_64\nfile=f\nsize=1\naliases=x\n\n[b]\narch=aarch64\nfile=g\nsize=1\naliases=x\n"
    parsed = index.parse(text, "r")
    assert parsed.lookup("x", "x86_64").name == "a" and parsed.lookup("x", "aarch64").name == "b"


def test_unknown_multiline_fields_are_kept_not_refused():
    parsed = index.parse("[a]\narch=x86_64\nfile=f\nsize=1\nsig=f.sig\nfuture=1\n 2\n", "r")
    assert parsed.templates[0].sig == "f.sig"
    assert parsed.templates[0].extra == (("future", "1\n2"),)


def test_sections_reports_with_a_given_error_type():
    class Custom(Exception):
        def __init__(self, origin, line, problem):
            super().__init__(origin, line, problem)

    with pytest.raises(Custom) as info:
        index.sections("[ok]\nbad line\n", "conf", error=Custom)
    assert info.value.args == ("conf", 2, "expected 'key=value', '[NAME]', a '#' comment or an empty line, "
                                          "got 'bad line'")
