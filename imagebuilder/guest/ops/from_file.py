"""`commands_from_file`: a virt-customize commands file, whose commands become steps of their own."""

from __future__ import annotations

from typing import Any

from imagebuilder import values
from imagebuilder.guest.context import GuestContext
from imagebuilder.guest.ops.registry import operation
from imagebuilder.values import ArgContext


def _parse_commands_file(value: Any, ctx: ArgContext) -> Any:
    from imagebuilder.guest import commands_file

    path = values.host_path(value, ctx)
    return commands_file.parse_commands(path, ctx)


def _expanded(_ctx: GuestContext, _arg: Any) -> None:
    return None  # its commands follow it as steps of their own (see recipe/steps.py)


operation("commands_from_file", "Run the operations of a virt-customize commands file, in order.", "FILENAME",
          _parse_commands_file, 'commands_from_file = "legacy.cmds"', expands=True,
          details="The file uses virt-customize's --commands-from-file syntax (one `command argument` a "
                  "line, `#` comments, `\\` continuation); its path is relative to the recipe, and host "
                  "paths inside it are relative to the file itself. Its commands become steps when the recipe "
                  "is read, so every error names the commands file and line.")(_expanded)
