"""Two machines' caches and one registry: the second build, with an empty cache, pulls the checkpoint
the first one pushed and launches the appliance only for the steps after it. The image is the tiny
guest (tinyguest.py): the sharing does not need a distribution, and its checkpoints travel fast."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.conftest import run_cli
from tests.integration.tinyguest import make_tiny_guest

pytestmark = pytest.mark.integration

RECIPE = """[image]
name = "ibtest-shared"
[base]
path = "{image}"
[[steps]]
hostname = "shared-cache"
checkpoint = true
[[steps]]
write = "/etc/motd:built from a shared checkpoint"
"""


def test_a_second_runner_resumes_from_the_checkpoint_in_the_registry(tmp_path, local_registry, launch_counter):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(image=make_tiny_guest(tmp_path / "tiny.qcow2")))
    secret = tmp_path / "stage-secret"
    secret.write_text(os.urandom(24).hex())
    cache = f"{local_registry.host}/ibtest/cache"
    env, launches = launch_counter
    env = {**env, **local_registry.env}

    def build(name: str, *options: str):
        out = tmp_path / name / "out.qcow2"
        proc = run_cli("build", str(recipe), "-o", str(out), "--cache-dir", str(tmp_path / name / "cache"),
                       "--cache-secret-file", str(secret), *options, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, json.loads((out.parent / "ibtest-shared.manifest.json").read_text())

    first, document = build("runner1", "--cache-to", cache)
    assert launches() == 2, first.stderr  # one launch up to the checkpoint, one after it
    [pushed] = document["shared_cache"]["pushed"]
    assert pushed["stage"] == "step 1 (hostname)" and pushed["to"] == cache
    uploads = [r for r in local_registry.requests() if r["method"] == "PUT" and "/blobs/uploads/" in r["path"]]
    assert any(pushed_digest(pushed, document) in r["path"] for r in uploads)

    before = len(local_registry.requests())
    second, document2 = build("runner2", "--cache-from", cache)
    assert launches() == 3, second.stderr  # the second runner launched once: only the step after the checkpoint
    [pulled] = document2["shared_cache"]["pulled"]
    assert (pulled["stage"], pulled["key"]) == (pushed["stage"], pushed["key"])
    kept = tmp_path / "runner2" / "cache" / "stages" / f"{pulled['key']}.qcow2"
    assert kept.stat().st_size == pulled["bytes"] == pushed["bytes"]
    served = [r for r in local_registry.requests()[before:] if r["method"] == "GET" and "/blobs/sha256:" in r["path"]]
    assert sum(r["size"] for r in served) >= pulled["bytes"]  # the checkpoint's bytes crossed the wire once
    assert sum(r["size"] for r in served) < pulled["bytes"] + (64 << 10)
    assert "resuming from the cached result of step 1 (hostname)" in second.stderr
    assert local_registry.password not in first.stderr + first.stdout + second.stderr + second.stdout
    print(f"\nshared cache: first build {document['timings']}, second build {document2['timings']}; "
          f"{pulled['bytes'] >> 10} KiB pulled")


def pushed_digest(pushed: dict, document: dict) -> str:
    """The sha256 of the checkpoint blob pushed (the access log names uploads by digest)."""
    from imagebuilder.files import file_digest
    from pathlib import Path
    manifest_dir = Path(document["outputs"][0]["path"]).parent
    return file_digest(manifest_dir / "cache" / "stages" / f"{pushed['key']}.qcow2").split(":")[1]
