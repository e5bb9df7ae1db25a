"""The [[steps]], [customize] and [sysprep] parts of a recipe, and what the manifest records of steps."""

from __future__ import annotations

import hashlib

import pytest

from imagebuilder.errors import RecipeError
from tests.unit.recipes import error_of, load, write


def test_steps_record_host_file_digests_but_not_secrets(tmp_path):
    (tmp_path / "motd").write_text("hello\n")
    (tmp_path / "root.pw").write_text("hunter2\n")
    loaded = load(tmp_path, '[[steps]]\nupload = "motd:/etc/motd"\n[[steps]]\nroot_password = "file:root.pw"\n')
    upload, password = (step.record() for step in loaded.steps)
    assert upload == {"op": "upload", "describe": f"upload: {tmp_path / 'motd'} -> /etc/motd", "line": 5,
                      "host_files": [{"path": str(tmp_path / "motd"),
                                      "sha256": "sha256:" + hashlib.sha256(b"hello\n").hexdigest()}]}
    assert password["host_files"] == [{"path": str(tmp_path / "root.pw"), "secret": True}]
    assert "hunter2" not in str(password)


def test_network_only_when_a_step_needs_it_unless_the_recipe_says(tmp_path):
    assert load(tmp_path, '[[steps]]\nhostname = "a"\n').network is False
    assert load(tmp_path, '[[steps]]\nupdate = true\n').network is True
    assert load(tmp_path, '[[steps]]\nhostname = "a"\n[customize]\nnetwork = true\n').network is True
    assert load(tmp_path, '[[steps]]\nrun_command = "true"\n[customize]\nnetwork = false\n').network is False


def test_one_password_per_user(tmp_path):
    error = error_of(tmp_path, '[[steps]]\nroot_password = "password:a"\n[[steps]]\nhostname = "x"\n'
                               '[[steps]]\npassword = { user = "root", password = "b" }\n')
    assert error.line == 9 and "already set by the step at" in error.problem
    assert f"{tmp_path / 'recipe.toml'}:5" in error.problem


def test_password_tables(tmp_path):
    loaded = load(tmp_path, '[[steps]]\npassword = { user = "alice", random = "out/alice.pw", locked = true }\n')
    user, spec = loaded.steps[0].arg
    assert user == "alice" and spec.kind == "random" and spec.locked and spec.save_to == tmp_path / "out" / "alice.pw"


def test_sysprep_selection(tmp_path):
    loaded = load(tmp_path, '[sysprep]\noperations = ["user-account", "-logfiles", "-tmp-files"]\n')
    assert "user-account" in loaded.sysprep and "logfiles" not in loaded.sysprep and "tmp-files" not in loaded.sysprep
    assert loaded.sysprep[-1] == "user-account"
    assert load(tmp_path, '[sysprep]\nenabled = false\n').sysprep == ()
    with pytest.raises(RecipeError, match="did you mean 'logfiles'"):
        load(tmp_path, '[sysprep]\noperations = ["logfile"]\n')


def test_a_missing_host_file_stops_the_build_before_any_download(tmp_path):
    from typer.testing import CliRunner

    from imagebuilder.cli import app

    path = write(tmp_path, '[image]\nname = "web"\n[base]\nurl = "http://127.0.0.1:9/never-fetched.qcow2"\n'
                           'checksum = "none"\n[[steps]]\nhostname = "a"\n'
                           '[[steps]]\nupload = "files/missing.conf:/etc/app.conf"\n')
    result = CliRunner().invoke(app, ["build", str(path), "-o", str(tmp_path / "out.qcow2")])
    assert result.exit_code == 2
    assert f"{path}:9: key 'steps[1].upload': host file 'files/missing.conf' does not exist" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]
