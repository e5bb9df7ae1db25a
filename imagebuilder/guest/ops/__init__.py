"""The one registry of customization operations, named after virt-customize's (dashes as underscores).

Each operation is declared once, with `@operation(...)` in the module of its kind (files, system,
software, users, first_boot, from_file): its argument syntax (virt-customize's string form, which
commands files use, and the TOML table form), a one-line doc, an example, the parser that checks
a value at validation time, and the function that applies it in the appliance. This table drives
recipe validation, the commands-file parser, `imagebuilder ops` and docs/operations.md.
Importing this package declares them all.
"""

from imagebuilder.guest.ops import files, first_boot, from_file, software, system, users
from imagebuilder.guest.ops.registry import REGISTRY, Op

KINDS = (files, system, software, users, first_boot, from_file)  # the modules whose import declares the operations

__all__ = ["KINDS", "REGISTRY", "Op"]
