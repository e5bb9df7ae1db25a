"""examples/kubernetes/: the CronJob and the Tekton Task parse, and their imagebuilder command lines use
commands and options the CLI has, with the registry, cache and --if-changed options they are about."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from tests.unit.test_examples import check_calls

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"


def _load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def _scripts() -> dict[str, str]:
    cronjob, task = _load("cronjob.yaml"), _load("tekton-task.yaml")
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    [step] = task["spec"]["steps"]
    return {"cronjob": "\n".join(container["args"]), "tekton": step["script"]}


def _calls(text: str) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in text.splitlines() if re.match(r"^\s*imagebuilder\s", line)]


def test_the_manifests_are_what_kubernetes_and_tekton_take():
    cronjob, task = _load("cronjob.yaml"), _load("tekton-task.yaml")
    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert (task["apiVersion"], task["kind"]) == ("tekton.dev/v1", "Task")
    for env in (pod["containers"][0]["env"], task["spec"]["steps"][0]["env"]):
        names = {item["name"] for item in env}
        assert {"IMAGEBUILDER_ACCEL", "REGISTRY_AUTH_FILE"} <= names


def test_the_command_lines_exist_in_the_cli_and_do_what_the_examples_say():
    for where, text in _scripts().items():
        builds = [args for args in _calls(text) if args[0] == "build"]
        assert len(builds) == 1, where
        check_calls([(where, args) for args in _calls(text)])
        build = builds[0]
        for option in ("--if-changed", "--cache-from", "--cache-to", "--cache-secret-file", "--push", "-o"):
            assert option in build, f"{where}: the build lacks {option}"
        assert "3" in text, f"{where}: exit code 3 (a new image was built) must count as success"
        assert "password" not in text.lower()
