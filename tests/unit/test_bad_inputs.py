"""The bad-input corpus (tests/bad_inputs/): every file is a broken recipe or commands file, and the
command line must refuse it with exactly the one-line error its first line announces, exit code 2.

A case's first lines are comments:

    # expect: {file}:7: key 'disk.size': '8 GB' is not a size; write it like "8G", "512M" or "2GiB"
    # options: --strict-paths            (optional: options for validate/build)
    # command: build                     (optional: `build --json -o OUT --accel tcg` instead of `validate`)

The expected line is compared whole (not as a substring), after the placeholders are filled in:
{file} the case file, {dir} the corpus directory, {recipe} the recipe that includes a commands file.
`{dir}` in a case's own text is replaced too (file:// URLs need an absolute path). A `*.cmds` case is
run through a recipe whose line 5 is `commands_from_file = "CASE.cmds"`. The corpus is copied to a
temporary directory first, so `..` paths lead nowhere that matters, and IBTEST_* variables are unset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagebuilder.cli import app

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
README = Path(__file__).resolve().parents[2] / "README.md"
WRAPPER = '[image]\nname = "cmds"\n[base.bootstrap]\n[[steps]]\ncommands_from_file = "{name}"\n'
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_file() and p.suffix in (".toml", ".cmds"))


@dataclass
class Case:
    expect: str
    options: list[str]
    command: str


def read_case(path: Path) -> Case:
    head = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    fields: dict[str, str] = {}
    for line in head:
        match = re.match(r"# (expect|options|command): (.*)$", line)
        if not match:
            break
        fields[match.group(1)] = match.group(2)
    assert "expect" in fields, f"{path.name}: the first line must be '# expect: …'"
    return Case(fields["expect"], fields.get("options", "").split(), fields.get("command", "validate"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("bad_inputs") / "corpus"
    shutil.copytree(CORPUS, copy, symlinks=True)
    return copy.resolve()


def run(args: list[str], monkeypatch) -> object:
    for name in [n for n in os.environ if n.startswith(("IBTEST_", "IMAGEBUILDER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")     # no configured template repositories
    monkeypatch.setenv("VIRT_BUILDER_DIRS", "/nonexistent")
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_refused_with_its_one_line_error(name, corpus, tmp_path, monkeypatch):
    path = corpus / name
    case = read_case(path)
    raw = path.read_bytes()
    if b"{dir}" in raw:
        path.write_bytes(raw.replace(b"{dir}", str(corpus).encode()))
    recipe = path
    if path.suffix == ".cmds":
        recipe = path.with_name(path.stem + ".wrapper.toml")
        recipe.write_text(WRAPPER.format(name=path.name))
    if case.command == "build":  # --json: progress goes to stdout, stderr holds only the error
        args = ["build", "--json", "--output", str(tmp_path / "out.qcow2"), "--accel", "tcg",
                "--cache-dir", str(tmp_path / "cache"), *case.options, str(recipe)]
    else:
        assert case.command == "validate", name
        args = ["validate", *case.options, str(recipe)]

    result = run(args, monkeypatch)

    expected = case.expect.replace("{file}", str(path)).replace("{dir}", str(corpus)).replace("{recipe}", str(recipe))
    assert (result.exit_code, result.stderr) == (2, f"error: {expected}\n"), result.output
    if case.command == "build":
        event = json.loads(result.stdout.splitlines()[-1])
        assert (event["event"], event["message"], event["exit_code"]) == ("error", expected, 2)
    else:
        assert result.stdout == ""
    assert not (tmp_path / "out.qcow2").exists()


def test_every_case_names_the_file_the_line_and_the_key():
    """A line number always, except for a section that is missing altogether (there is no line to
    name); a key in recipes except for TOML syntax errors; the command in commands files."""
    for name in CASES:
        expect = read_case(CORPUS / name).expect
        if name.endswith(".cmds"):
            assert re.match(r"\{file\}:\d+: ", expect) and "(included at {recipe}:5)" in expect, name
        elif re.match(r"\{file\}: key '\w+': missing required section$", expect):
            continue
        else:
            assert re.match(r"\{file\}:\d+: (key '[^']+': |invalid TOML: |recipe is not UTF-8)", expect), name


def test_the_corpus_is_large_and_readme_counts_it():
    recipes = sum(name.endswith(".toml") for name in CASES)
    commands = len(CASES) - recipes
    assert len(CASES) >= 60
    assert f"{len(CASES)} bad inputs ({recipes} recipes, {commands} commands files)" in README.read_text()
