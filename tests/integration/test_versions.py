"""Versioned volumes (real builds of the tiny guest into a throwaway pool): each build makes a new version, the alias
names the newest and the domain's disk uses it, and versions beyond `keep` are deleted, except
ones this tool did not make, something still uses, or the alias is held at (a rollback)."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from imagebuilder.errors import VirtError
from imagebuilder.virt import clone
from imagebuilder.virt.domain import remove_domain
from tests.integration.conftest import run_cli
from tests.integration.helpers import unique
from tests.integration.virt_helpers import build_customize_stubbed, echo_image, echo_recipe_text

pytestmark = pytest.mark.integration

RECIPE = """
[image]
name = "{name}"

[base]
path = "{base}"

[[steps]]
write = "/etc/image-version:{version}"

[output]
pool = "{pool}"
volume = "{name}-{{date}}-{{n}}.qcow2"
keep = 1

[[output.targets]]                     # another host: the same versions, uploaded, without an alias
uri = "{remote}"
pool = "{remote_pool}"

[domain]
memory = "256M"
start = false
"""


def test_versions_beyond_keep_are_deleted(tmp_path, echo_tiny, conn, pool, pool_dir, launch_counter, remote_uri,
                                          remote_pool):
    """Five real builds of the tiny guest (a Debian 12 to inspection): versions are about names and
    volumes, not about what a distribution holds."""
    env, launches = launch_counter
    env = {**env, "XDG_STATE_HOME": str(tmp_path / "state")}
    name = unique("ver")
    recipe = tmp_path / "ver.toml"
    manifest = tmp_path / "state" / "imagebuilder" / "manifests" / pool.name() / f"{name}.manifest.json"
    stranger = f"{name}-20000101-99.qcow2"  # fits the template, but no build of this recipe made it
    (pool_dir / stranger).write_bytes(b"someone else's")

    def write(version: str) -> None:
        recipe.write_text(RECIPE.format(name=name, base=echo_tiny, pool=pool.name(), version=version,
                                        remote=remote_uri, remote_pool=remote_pool.name()))

    def build(version: str):
        write(version)
        proc = run_cli("build", str(recipe), "--cache-dir", str(tmp_path / "cache"), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def volumes():
        pool.refresh(0)
        return sorted(v for v in pool.listVolumes() if v.startswith(name))

    def remote_volumes():
        remote_pool.refresh(0)
        return sorted(remote_pool.listVolumes())

    def up_to_date() -> bool:
        proc = run_cli("build", str(recipe), "--cache-dir", str(tmp_path / "cache"), env=env)
        return proc.returncode == 0 and "is up to date" in proc.stdout

    def version_name(n: int) -> str:
        return next(v for v in volumes() if re.fullmatch(rf"{name}-\d{{8}}-{n}\.qcow2", v))

    try:
        build("one")
        first = version_name(1)
        assert os.readlink(pool_dir / f"{name}.qcow2") == first
        disk = ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find("devices/disk/source")
        assert (disk.get("pool"), disk.get("volume")) == (pool.name(), f"{name}.qcow2"), "the domain uses the alias"

        # a clone of version 1 made outside the build: retention must leave version 1 alone
        overlay = clone.create_overlay(pool, f"{name}-clone.qcow2", pool.storageVolLookupByName(first))
        build("two")
        second = version_name(2)
        build("three")
        third = version_name(3)
        assert volumes() == sorted([first, third, stranger, f"{name}.qcow2", f"{name}-clone.qcow2"]), \
            "version 2 is beyond keep = 1 and deleted; 1 is kept for its clone; the stranger is never touched"
        assert second not in volumes()
        assert remote_volumes() == [third], "the target keeps 1 too: nothing uses its copies of 1 and 2"
        assert os.readlink(pool_dir / f"{name}.qcow2") == third
        history = {entry["n"]: entry for entry in json.loads(manifest.read_text())["versions"]}
        assert (history[1]["state"], history[2]["state"], history[3]["state"]) == ("present", "deleted", "present")
        assert f"{first} is used by {pool.name()}/{name}-clone.qcow2" in history[1]["kept_because"]
        listed = json.loads(run_cli("versions", str(recipe), "--json", env=env).stdout)
        assert [(row["n"], row["alias"], row["state"].split(":")[0]) for row in listed] == \
            [(3, True, "present"), (2, False, "deleted"), (1, False, "kept")]

        overlay.delete(0)
        assert up_to_date(), "no version made or deleted"
        assert volumes() == sorted([first, third, stranger, f"{name}.qcow2"])

        # roll back: the alias held at version 1; a build makes version 4 but leaves the alias, and
        # retention spares the held version
        rolled = run_cli("versions", str(recipe), "--use", "1", env=env)
        assert rolled.returncode == 0 and os.readlink(pool_dir / f"{name}.qcow2") == first, rolled.stderr
        assert up_to_date(), "the hold is recorded: the alias naming version 1 is no reason to build"
        write("four")
        planned = json.loads(run_cli("plan", str(recipe), "--cache-dir", str(tmp_path / "cache"), "--json",
                                     env=env).stdout)["versions"]
        assert re.fullmatch(rf"{name}-\d{{8}}-4\.qcow2", planned["next"])
        assert [old["volume"] for old in planned["delete"]] == [third, third], "version 3 here and on the target"
        build("four")
        fourth = version_name(4)
        assert os.readlink(pool_dir / f"{name}.qcow2") == first, "held"
        assert volumes() == sorted([first, fourth, stranger, f"{name}.qcow2"])
        assert remote_volumes() == [fourth]

        released = run_cli("versions", str(recipe), "--use", "newest", env=env)
        assert released.returncode == 0 and os.readlink(pool_dir / f"{name}.qcow2") == fourth, released.stderr
        build("five")
        fifth = version_name(5)
        assert volumes() == sorted([fifth, stranger, f"{name}.qcow2"]), "neither used nor held, version 1 goes"
        assert os.readlink(pool_dir / f"{name}.qcow2") == fifth
        history = json.loads(manifest.read_text())["versions"]
        assert [(e["n"], e["state"]) for e in history] == [(1, "deleted"), (2, "deleted"), (3, "deleted"),
                                                            (4, "deleted"), (5, "present")]
        assert launches() == 5, "one appliance launch per build that made a version"
    finally:
        remove_domain(conn, name)




def echo_recipe(name, image, pool, text, timeout):
    return echo_recipe_text(name, image, pool, output=f'volume = "{name}-{{n}}.raw"',
                            domain=f'network = "none"\nwait = "serial:{text}"\ntimeout = "{timeout}"')


def test_a_build_failing_after_the_alias_moved_puts_it_back_customize_stubbed(monkeypatch, tmp_path, conn, pool, pool_dir):
    """The serial echo guest (no appliance): version 1 boots; version 2's wait fails after the alias
    was moved to it, so the alias names version 1 again and version 2 is gone."""
    name = unique("ver")
    image = echo_image(tmp_path / "echo.img")
    recipe = tmp_path / "echo.toml"
    manifest = recipe.with_suffix(".manifest.json")
    try:
        recipe.write_text(echo_recipe(name, image, pool.name(), "OK", "60s"))
        build_customize_stubbed(monkeypatch, recipe)
        assert os.readlink(pool_dir / f"{name}.raw") == f"{name}-1.raw"

        recipe.write_text(echo_recipe(name, image, pool.name(), "READY", "4s"))
        with pytest.raises(VirtError, match="timed out after 4s waiting for 'READY'") as failed:
            build_customize_stubbed(monkeypatch, recipe)
        assert f"alias: {pool.name()}/{name}.raw -> {name}-2.raw" in failed.value.progress, "it had moved"
        assert os.readlink(pool_dir / f"{name}.raw") == f"{name}-1.raw"
        assert sorted(os.listdir(pool_dir)) == [f"{name}-1.raw", f"{name}.raw"], "no version 2, no temporary file"
        assert [entry["n"] for entry in json.loads(manifest.read_text())["versions"]] == [1]
    finally:
        remove_domain(conn, name)
