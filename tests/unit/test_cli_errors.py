"""The command line turns bad recipes into one-line errors with exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imagebuilder.cli import app
from tests.unit.recipes import MINIMAL, write

runner = CliRunner()


@pytest.mark.parametrize("command, text, error", [
    ("validate", '[image]\nname = "x"\n\n[base.bootstrap]\nsuite = "bookworm"\n\n[disk]\nsise = "8G"\n',
     ":8: key 'disk.sise': unknown key (did you mean 'size'?)"),
    ("build", '[image]\nname = "x"\n[base]\nurl = "ftp://example.invalid/x.img"\nchecksum = "none"\n',
     ":4: key 'base.url': unsupported URL scheme 'ftp'"),
], ids=["validate-names-file-line-and-key", "build-stops-before-anything"])
def test_a_bad_recipe_exits_2_with_file_line_and_key(tmp_path, command, text, error):
    path = write(tmp_path, text)
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2
    assert f"{path}{error}" in result.output


def test_valid_recipe(tmp_path):
    result = runner.invoke(app, ["validate", str(write(tmp_path, MINIMAL + '[[steps]]\nhostname = "web01"\n'))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["xml"], ["build"]])
def test_ctrl_c_is_the_same_one_line_error_and_exit_130_for_every_command(tmp_path, monkeypatch, command):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("imagebuilder.recipe.load", interrupted)
    result = runner.invoke(app, [*command, str(write(tmp_path, MINIMAL))])
    assert (result.exit_code, result.output.strip()) == (130, "error: interrupted")


@pytest.mark.parametrize("command", ["build", "plan"])
def test_a_versioned_output_file_is_refused_before_any_work(tmp_path, command):
    result = runner.invoke(app, [command, str(write(tmp_path, MINIMAL)), "-o", str(tmp_path / "web-{n}.qcow2")])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: --output {tmp_path}/web-{{n}}.qcow2: versioned names (placeholders such "
                                     "as {n}) are made for output.volume only; give the file a fixed name")
    assert list(tmp_path.iterdir()) == [tmp_path / "recipe.toml"]
