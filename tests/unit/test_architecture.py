"""The import rules of docs/architecture.md hold: import-linter checks the contracts in
pyproject.toml, a module that breaks one is caught, and the contracts that name "every module but
these" name every module."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import imagebuilder

ROOT = Path(__file__).resolve().parents[2]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
# contract id: the list in it that must name every other top-level module, and the modules it leaves out
EVERY_MODULE_BUT = {
    "virt-adapter": ("forbidden_modules", {"virt", "errors", "files", "hardware", "arches", "run"}),
    "libvirt": ("source_modules", {"virt", "fleet", "tester"}),
    "guestfs": ("source_modules", {"guest"}),
}


def lint(where: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package and pyproject.toml in `where`."""
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo"], cwd=where, capture_output=True,
                          text=True, timeout=300)


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_import_rules_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout


def test_virt_importing_the_recipe_is_caught(tmp_path):
    shutil.copytree(ROOT / "imagebuilder", tmp_path / "imagebuilder", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "imagebuilder" / "virt" / "storage.py", "a") as module:
        module.write("\nfrom imagebuilder.recipe import Recipe  # noqa: E402,F401\n")
    result = lint(tmp_path)
    assert result.returncode == 1
    assert "imagebuilder.virt.storage -> imagebuilder.recipe" in result.stdout
    assert "virt is a thin libvirt adapter" in result.stdout and " broken." in result.stdout


@pytest.mark.parametrize("contract_id", sorted(EVERY_MODULE_BUT))
def test_a_contract_over_every_module_names_each_one(contract_id):
    key, left_out = EVERY_MODULE_BUT[contract_id]
    modules = {info.name for info in pkgutil.iter_modules(imagebuilder.__path__)}
    named = {name.removeprefix("imagebuilder.") for name in contracts()[contract_id][key]}
    assert not named & left_out
    assert named | left_out == modules, f"add {sorted(modules - named - left_out)} to {contract_id}.{key}"
