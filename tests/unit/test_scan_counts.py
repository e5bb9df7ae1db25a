"""Validation reads its input in one pass: how often the recipe's TOML text, and a commands file's
text, are scanned does not grow with the number of steps (so neither does the cost per step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebuilder import recipe, tomlpos
from imagebuilder.errors import RecipeError
from imagebuilder.guest import commands_file
from tests.unit.recipes import MINIMAL, write


def calls_of(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """A list that gets one entry per call of owner.name from now on."""
    calls: list[object] = []
    function = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def scans_of_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> int:
    with monkeypatch.context() as patch:
        scans = calls_of(patch, tomlpos._Scanner, "scan")
        try:
            recipe.load(write(tmp_path, text))
        except RecipeError:
            pass
    return len(scans)


@pytest.mark.parametrize("last", ["", '[[steps]]\nmkdir = 7\n'], ids=["valid", "bad last step"])
def test_recipe_text_is_scanned_once_whatever_its_steps(tmp_path, monkeypatch, last):
    counts = {n: scans_of_recipe(tmp_path, monkeypatch, MINIMAL + '[[steps]]\nmkdir = "/srv/d"\n' * n + last)
              for n in (1, 10, 300)}
    assert counts == {1: 1, 10: 1, 300: 1}


def test_a_bad_last_step_still_gets_its_line(tmp_path):
    text = MINIMAL + '[[steps]]\nmkdir = "/srv/d"\n' * 300 + '[[steps]]\nmkdir = 7\n'
    with pytest.raises(RecipeError) as info:
        recipe.load(write(tmp_path, text))
    assert (info.value.line, info.value.key) == (3 + 2 * 300 + 2, "steps[300].mkdir")


def test_commands_file_text_is_scanned_once_whatever_its_commands(tmp_path, monkeypatch):
    write(tmp_path, MINIMAL + '[[steps]]\ncommands_from_file = "steps.cmds"\n')
    counts = {}
    for n in (1, 10, 300):
        (tmp_path / "steps.cmds").write_text("mkdir /srv/d\n" * n)
        with monkeypatch.context() as patch:
            toml_scans = calls_of(patch, tomlpos._Scanner, "scan")
            command_scans = calls_of(patch, commands_file, "parse_text")
            assert len(recipe.load(tmp_path / "recipe.toml").steps) == 1 + n
        counts[n] = (len(toml_scans), len(command_scans))
    assert counts == {1: (1, 1), 10: (1, 1), 300: (1, 1)}
