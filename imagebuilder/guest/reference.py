"""What `imagebuilder ops` prints and docs/operations.md says, both made from the registries."""

from __future__ import annotations

from typing import Any

from imagebuilder.guest import firstboot, sysprep
from imagebuilder.guest.ops import REGISTRY, Op

DOC_PATH = "docs/operations.md"

_INTRO = """\
# Operations

<!-- Generated from imagebuilder/guest/ops/ and sysprep.py by `imagebuilder ops --markdown`;
     do not edit by hand (a unit test checks that this page matches the code). -->

A recipe's `[[steps]]` run in order, in one libguestfs appliance, after the guest has been
inspected and mounted; then the `[sysprep]` operations run. Each step holds one operation, named
as virt-customize's option with `-` turned into `_`, with the same meaning:

```toml
[[steps]]
append_line = "/etc/hosts:10.0.0.1 db"             # virt-customize's argument, as a string
[[steps]]
append_line = { path = "/etc/hosts", line = "10.0.0.1 db" }   # or a table naming the parts
[[steps]]
update = true                                      # operations without an argument
```

Host paths (uploads, scripts, keys, password files) are relative to the recipe; they must exist
when the recipe is validated, and their sha256 digests are recorded in the manifest (a password
file only by its path). Guest paths are absolute. Operations marked *network* turn the
appliance network on; otherwise it stays off unless `[customize] network = true` (for a
`run_command` that downloads, for example). `[customize] network = false` refuses steps that
need it.

## Commands files

`commands_from_file = "FILE"` and `imagebuilder convert FILE > recipe.toml` read
virt-customize's `--commands-from-file` format:

```
# comments and blank lines are ignored
hostname web01.example.org
install nginx,curl
edit /etc/default/grub:\\
  s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/
```

One command a line: the name (with dashes), one space, the argument as written (up to the end
of the line, trailing spaces included). Leading white space is ignored; a line ending in `\\`
continues on the next one, the backslash becoming a newline. `commands-from-file` cannot be used
inside a commands file. Host paths in a commands file are relative to the file itself. Errors
name the file and the line: `legacy.cmds:7: chmod: '755' is ambiguous: …`.

"""

_DIFFERENCES = """\
## Where imagebuilder differs from virt-customize, on purpose

* Passwords are hashed with SHA-512 crypt unless `password_crypto` says otherwise (virt-customize
  1.48 picks yescrypt for Debian 12). A `random` password is saved to a file readable by its
  owner only, never printed. Passwords are set at the step's place in the recipe (virt-customize
  sets them all at the end); setting one user's password twice is refused, as in virt-customize.
* `edit` runs `s///` substitutions itself (see `edit` above); other Perl needs perl in the guest
  (virt-customize runs perl on the host).
* No `/tmp/builder.log` is left in the guest: command output goes to imagebuilder's own log.
* An empty `/etc/machine-id` stays empty (virt-customize fills it); sysprep empties it anyway.
* `timezone` also updates `/etc/timezone` when the guest has one; `hostname` adds a `127.0.1.1`
  line when `/etc/hosts` does not mention the old name.
* `chmod` refuses `755` (three or four octal digits without the leading 0) instead of reading it
  as decimal.
* First-boot scripts live in `{firstboot_dir}` and log to `{log}`; each is moved aside
  *before* it runs, so it runs at most once even if it reboots the machine.
* The subscription-manager (`sm-*`) and Windows (`inject-*`) options are not supported.
"""


def _section(op: Op) -> list[str]:
    lines = [f"### `{op.name}`", "", op.doc, ""]
    facts = [f"commands file: `{op.cli_name}{' ' + op.syntax if op.syntax else ''}`"]
    if op.table:
        facts.append(f"table: `{op.table}`")
    if op.needs_network:
        facts.append("*network*")
    if op.origin != "virt-customize":
        facts.append("imagebuilder's own (not in virt-customize)")
    lines += ["; ".join(facts), "", "```toml", "[[steps]]", op.example, "```", ""]
    if op.details:
        lines += [op.details, ""]
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The whole reference page."""
    lines = [_INTRO.rstrip("\n"), "", "## Summary", "", "| step | argument | what it does |", "|---|---|---|"]
    for op in sorted(REGISTRY.values(), key=lambda o: o.name):
        syntax = f"`{op.syntax}`" if op.syntax else "`true`"
        lines.append(f"| [`{op.name}`](#{op.name}) | {_cell(syntax)} | {_cell(op.doc)} |")
    lines += ["", "## Steps", ""]
    for op in sorted(REGISTRY.values(), key=lambda o: o.name):
        lines += _section(op)
    lines += ["## Sysprep", "",
              "`[sysprep] operations` adds operations to the defaults (marked *) or drops one written as",
              "`\"-name\"`; `enabled = false` turns sysprep off. They run after the steps, in this order.", "",
              "```toml", "[sysprep]", 'operations = ["user-account", "-logfiles"]', "```", "",
              "| operation | default | what it does |", "|---|---|---|"]
    for op in sysprep.OPERATIONS.values():
        lines.append(f"| `{op.name}` | {'*' if op.default else ''} | {_cell(op.doc)} |")
    lines += ["", sysprep.__doc__.split("\n\n", 1)[1].strip().replace("\n", " "), ""]
    lines.append(_DIFFERENCES.format(firstboot_dir=firstboot.FIRSTBOOT_DIR, log=firstboot.LOG_FILE).rstrip("\n"))
    return "\n".join(lines) + "\n"


def as_json() -> dict[str, Any]:
    """What `imagebuilder ops --json` prints."""
    return {"operations": [op.info() for op in sorted(REGISTRY.values(), key=lambda o: o.name)],
            "sysprep": [{"name": op.name, "doc": op.doc, "default": op.default}
                        for op in sysprep.OPERATIONS.values()]}


def as_text() -> str:
    """What `imagebuilder ops` prints: one line per operation."""
    ops = sorted(REGISTRY.values(), key=lambda o: o.name)
    width = max(len(op.name) for op in ops)
    lines = ["Steps (see docs/operations.md; * needs the appliance network):"]
    lines += [f"  {op.name:<{width}}  {'*' if op.needs_network else ' '} {op.doc}" for op in ops]
    width = max(len(name) for name in sysprep.OPERATIONS)
    lines += ["", "Sysprep operations (* on by default):"]
    lines += [f"  {op.name:<{width}}  {'*' if op.default else ' '} {op.doc}" for op in sysprep.OPERATIONS.values()]
    return "\n".join(lines) + "\n"
