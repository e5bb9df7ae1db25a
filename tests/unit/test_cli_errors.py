"""The command line turns bad recipes into one-line errors with exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from imagebuilder.cli import app

runner = CliRunner()


def test_wrong_key_names_file_line_and_key(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[image]\nname = "x"\n\n[base.bootstrap]\nsuite = "bookworm"\n\n[disk]\nsise = "8G"\n')
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert f"{recipe}:8: key 'disk.sise': unknown key (did you mean 'size'?)" in result.output


def test_build_stops_at_a_bad_recipe_with_exit_2(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[image]\nname = "x"\n[base]\nurl = "ftp://example.invalid/x.img"\nchecksum = "none"\n')
    result = runner.invoke(app, ["build", str(recipe)])
    assert result.exit_code == 2
    assert f"{recipe}:4: key 'base.url': unsupported URL scheme 'ftp'" in result.output


def test_valid_recipe(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[image]\nname = "x"\n[base.bootstrap]\n[[steps]]\nhostname = "web01"\n')
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
