"""The `edit` expressions: Perl substitutions run in Python must do what `perl -pe` does."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from imagebuilder.guest import editing

SAMPLE = ("# comment line\nOPT=old value\nGRUB_TIMEOUT=5\nKEY = 1, key = 2\n#  ja_JP.UTF-8 UTF-8\n"
          "path=/usr/local/bin\nname=café\ntrailing   \nlast line without newline").encode()

CASES = [
    "s/^OPT=.*/OPT=ok/",
    "s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/",
    "s/key/KEY/gi",
    "s/(\\w+) = (\\d)/$2 = $1/g",
    "s/(\\w+) = (\\d)/${2}x$1/",
    "s/^#\\s*ja/ja/",
    "s,/usr/local,/opt,",
    "s|/|\\\\|g",
    "s{^path=(.*)}{PATH=\"$1\"}",
    "s(value)(VALUE)",
    "s/e/E/g; s/^/> /",
    "s/\\s+$//",
    "s/$/;/",
    "s/caf./cafe/",
    "s/é/e/",
    "s/[[:digit:]]+/N/g",
    "s/^(?<k>\\w+)=/$+{k}: /",
    "s/old/$&$&/",
    "s/line/\\tLINE\\n/",
    "s/ x/ y/x",
    "s/^/\\x41/",
    "\n  s/^OPT=.*/OPT=continued/",
    "s/.*without.*/\\1empty/",
    "s/l(i)ne/<\\1>/",
]


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is needed to compare")
@pytest.mark.parametrize("expression", CASES)
def test_same_result_as_perl(expression):
    parsed = editing.parse(expression)
    assert not parsed.needs_perl, expression
    perl = subprocess.run(["perl", "-pe", expression], input=SAMPLE, capture_output=True, check=True).stdout
    assert parsed.apply(SAMPLE) == perl


@pytest.mark.parametrize("expression", [
    "tr/a-z/A-Z/", "$_ = uc", "s/(a)/\\U$1/", "s/x/$ENV{HOME}/", "s/x/user@example.com/", "s/x/y/e",
    "s/x/y/r", "s'a'b'", "s//x/", "s/\\Qa.b\\E/x/", "y/a/b/", "s/a/b/; print",
])
def test_other_perl_is_left_to_the_guest(expression):
    assert editing.parse(expression).needs_perl


@pytest.mark.parametrize("expression, problem", [("s/a/b", "unterminated"), ("s{a}", "no replacement"),
                                                 ("   ", "empty")])
def test_malformed_substitutions_are_refused(expression, problem):
    with pytest.raises(ValueError, match=problem):
        editing.parse(expression)


def test_needs_perl_cannot_be_applied_here():
    with pytest.raises(editing.NeedsPerl):
        editing.parse("$_ = uc").apply(b"x\n")
