"""The command line: thin; parses options, calls the pipeline, renders results and exit codes.

A module per group of commands; this one makes the app and registers them in the order `--help` lists them.
"""

from __future__ import annotations

import typer

from imagebuilder.cli import build, cache, doctor, fleet, info, mount, schedule, templates, trust, vm

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Build customized VM images from TOML recipes and boot them under libvirt.")

app.command()(build.validate)
app.command()(build.build)
app.command("plan")(build.plan_command)
app.command("test")(build.test_command)
app.command()(info.inspect)
app.command("mount")(mount.mount_command)
app.command("umount")(mount.umount_command)
app.command("xml")(info.xml_command)
app.command("versions")(info.versions_command)
app.command()(trust.verify)
app.command()(trust.sbom)
app.command()(trust.diff)
app.command()(fleet.up)
app.command()(fleet.down)
app.command()(fleet.destroy)
app.command("clone")(fleet.clone_command)
app.command()(info.ops)
app.command()(info.convert)
app.command()(info.version)
app.command()(doctor.doctor)
app.add_typer(cache.app, name="cache")
app.add_typer(templates.app, name="templates")
app.add_typer(schedule.app, name="schedule")
app.add_typer(vm.app, name="vm")


def main() -> None:
    """Console script entry point."""
    app(prog_name="imagebuilder")
