"""examples/: the CI files parse and use the real command line; the systemd example is what the code writes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer
import yaml

from imagebuilder import recipe
from imagebuilder.schedule.spec import Schedule
from imagebuilder.cli import app

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
SYSTEMD = ROOT / "examples" / "systemd"


def _gitlab() -> dict:
    return yaml.safe_load((CI / ".gitlab-ci.yml").read_text())


def _github() -> dict:
    return yaml.safe_load((CI / "github-actions.yml").read_text())


def _github_on(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))   # YAML 1.1 reads a bare `on` as true


def test_gitlab_pipeline_shape():
    pipeline = _gitlab()
    stages = pipeline["stages"]
    jobs = {name: job for name, job in pipeline.items() if isinstance(job, dict) and "script" in job}
    assert set(jobs) == {"golden", "publish"}
    for job in jobs.values():
        assert job["stage"] in stages
        assert all(isinstance(line, str) for line in job.get("before_script", []) + job["script"])
    assert jobs["golden"]["artifacts"]["reports"]["junit"] == "out/*.xml"
    assert jobs["golden"]["artifacts"]["when"] == "always"
    assert jobs["publish"]["needs"] == ["golden"]


def test_github_workflow_shape():
    workflow = _github()
    assert {"push", "pull_request", "schedule", "workflow_dispatch"} <= set(_github_on(workflow))
    [job] = workflow["jobs"].values()
    assert job["container"]["options"] == "--privileged"
    for step in job["steps"]:
        assert ("uses" in step) != ("run" in step), step
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert "actions/checkout@v4" in uses and "actions/upload-artifact@v4" in uses


def _scripts() -> list[tuple[str, str]]:
    """(where, shell text) of every script in both files."""
    found = []
    for name, job in _gitlab().items():
        if isinstance(job, dict):
            for key in ("before_script", "script"):
                found += [(f".gitlab-ci.yml {name}.{key}", line) for line in job.get(key, [])]
    for name, job in _github()["jobs"].items():
        found += [(f"github-actions.yml {name}: {step.get('name', step['run'])}", step["run"])
                  for step in job["steps"] if "run" in step]
    return found


def _imagebuilder_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for where, text in _scripts():
        for line in text.splitlines():
            if re.match(r"^\s*imagebuilder\s", line):
                calls.append((where, shlex.split(line)[1:]))
    return calls


def test_both_pipelines_check_the_runner_then_validate_build_and_test_the_golden_recipe():
    for name in (".gitlab-ci.yml", "github-actions.yml"):
        commands = [args[0] for where, args in _imagebuilder_calls() if where.startswith(name)]
        assert commands == ["doctor", "validate", "build", "test"], name
    for text in (CI / ".gitlab-ci.yml").read_text(), (CI / "github-actions.yml").read_text():
        assert "scripts/setup.sh" in text and "IMAGEBUILDER_ACCEL" in text and "/dev/kvm" in text
        assert 'RECIPE: "recipes/golden.toml"' in text or "RECIPE: recipes/golden.toml" in text


def check_calls(calls: list[tuple[str, list[str]]]) -> None:
    """Every command and option in the (where, argv after `imagebuilder`) calls exists in the CLI."""
    cli = typer.main.get_command(app)
    for where, args in calls:
        command = cli.commands.get(args[0])
        assert command is not None, f"{where}: no command `imagebuilder {args[0]}`"
        options = {opt for param in command.params for opt in param.opts}
        for arg in args[1:]:
            if arg.startswith("-"):
                assert arg in options, f"{where}: `{args[0]}` has no option {arg}"


def test_the_commands_and_options_they_use_exist():
    check_calls(_imagebuilder_calls())


def test_the_golden_recipe_is_valid():
    loaded = recipe.load(CI / "recipes" / "golden.toml")
    assert loaded.name == "golden"
    assert [step.op for step in loaded.steps] == ["hostname", "timezone", "install", "write"]
    assert [check.kind for check in loaded.tests] and all(check.name for check in loaded.tests)
    assert loaded.output.path.resolve() == ROOT / "examples" / "ci" / "out" / "golden.qcow2"


def test_the_systemd_example_is_what_schedule_install_writes():
    example = Schedule(
        name="imagebuilder-golden", recipe=Path("/srv/images/recipes/golden.toml"), on_calendar="daily",
        command=("/opt/imagebuilder/.venv/bin/imagebuilder",), flock="/usr/bin/flock")
    assert (SYSTEMD / "imagebuilder-golden.service").read_text() == example.service_text()
    assert (SYSTEMD / "imagebuilder-golden.timer").read_text() == example.timer_text()
