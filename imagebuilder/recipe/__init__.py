"""The recipe: TOML parsed into a frozen, typed model, validated whole before anything runs.

Every problem is reported as `FILE:LINE: key 'a.b': what is wrong` (RecipeError, exit code 2).
The model is in model.py, the reading of tables with positions in tables.py, and each section has a
module of its own; reader.py reads the file and runs them in order.
"""

from imagebuilder.recipe.domain import parse_wait
from imagebuilder.recipe.model import (Base, Bootstrap, CloudInit, DataDisk, Disk, Domain, Interface, Machine,
                                       Output, Recipe, Sign, Step, Target)
from imagebuilder.recipe.reader import load

__all__ = ["Base", "Bootstrap", "CloudInit", "DataDisk", "Disk", "Domain", "Interface", "Machine", "Output",
           "Recipe", "Sign", "Step", "Target", "load", "parse_wait"]
