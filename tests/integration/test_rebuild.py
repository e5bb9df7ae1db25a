"""Rebuilds cost only what changed: up to date, --if-changed, plan, checkpoints (real builds)."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import run_cli
from tests.integration.httpserver import FileServer

pytestmark = pytest.mark.integration

RECIPE = """
[image]
name = "rebuild"

[base]
url = "{url}"
checksum = "none"          # verified by conditional requests: a 304 means unchanged

[[steps]]
write = "/etc/stage-one:one"
checkpoint = true
[[steps]]
write = "/etc/stage-two:two"
[[steps]]
hostname = "{hostname}"

[output]
path = "out/rebuild.qcow2"
"""


def test_unchanged_rebuild_then_last_step_changed(tmp_path, echo_tiny, launch_counter):
    """On the tiny guest (a Debian 12 to inspection): what is rebuilt is about stages, not distributions."""
    base = echo_tiny
    env, launches = launch_counter
    cache = tmp_path / "cache"
    recipe = tmp_path / "rebuild.toml"
    image = tmp_path / "out" / "rebuild.qcow2"
    with FileServer(base.parent) as server:
        url = server.url(base.name)
        recipe.write_text(RECIPE.format(url=url, hostname="first"))

        def build(*extra: str):
            return run_cli("build", str(recipe), "--cache-dir", str(cache), *extra, env=env)

        cold = build()
        assert cold.returncode == 0, cold.stderr[-3000:]
        assert launches() == 2, "one launch up to the checkpoint after step 1, one for the rest"
        assert "checkpoint: kept the image after step 1 (write)" in cold.stderr
        stamp = image.stat().st_mtime_ns
        sent = server.sent(base.name)

        again = build()
        assert again.returncode == 0 and "rebuild is up to date" in again.stdout
        unchanged = build("--if-changed")
        assert unchanged.returncode == 0 and unchanged.stdout.strip() == "no change"
        assert launches() == 2 and server.sent(base.name) == sent
        assert image.stat().st_mtime_ns == stamp

        planned = run_cli("plan", str(recipe), "--cache-dir", str(cache), "--json")
        assert json.loads(planned.stdout)["up_to_date"] is True

        recipe.write_text(RECIPE.format(url=url, hostname="second"))
        rows = json.loads(run_cli("plan", str(recipe), "--cache-dir", str(cache), "--json").stdout)["stages"]
        status = {row["name"]: (row["status"], row["why"]) for row in rows}
        assert status["step 1 (write)"] == ("cached", "checkpoint in the cache")
        assert status["step 2 (write)"] == ("will run", "no cached result")
        assert status["step 3 (hostname)"] == ("will run", "its inputs changed")

        asked = len(server.log)
        changed = build("--if-changed", "--json")
        assert changed.returncode == 3, changed.stderr[-3000:]
        assert launches() == 3, "resumed from the checkpoint: one launch"
        assert server.sent(base.name) == sent, "the base was not downloaded again"
        assert [(r.path, r.status) for r in server.log[asked:]] == [(f"/{base.name}", 304)], \
            "the check and the fetch share one conditional request"
        progress = [json.loads(line).get("message", "") for line in changed.stdout.splitlines()]
        assert "resuming from the cached result of step 1 (write)" in progress
        assert not any(message.startswith("[1/3]") for message in progress)
        assert any(message.startswith("[3/3] hostname") for message in progress)

    facts = json.loads(run_cli("inspect", str(image), "--json").stdout)
    assert facts["operating_systems"][0]["hostname"] == "second"
