"""The guest's customization: [[steps]], [customize] (the appliance network) and [sysprep]."""

from __future__ import annotations

from typing import Any

from imagebuilder.errors import RecipeError
from imagebuilder.guest import commands_file, ops, sysprep
from imagebuilder.recipe.model import Step
from imagebuilder.recipe.tables import Loader, Table
from imagebuilder.suggest import did_you_mean
from imagebuilder.values import ArgContext


def parse_steps(loader: Loader, items: list[Any], ctx: ArgContext) -> list[Step]:
    """Each [[steps]] table checked by its operation's parser; commands files expand into their steps."""
    steps: list[Step] = []
    for index, item in enumerate(items):
        where = ("steps", index)
        if not isinstance(item, dict):
            raise loader.error(where, "each step is a table: write [[steps]] with one operation in it")
        checkpoint = item.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, bool):
            raise loader.error(where + ("checkpoint",), "expected true or false")
        names = [name for name in item if name != "checkpoint"]
        if len(names) != 1:
            problem = "empty step; name one operation" if not names else \
                f"one operation per step, found {', '.join(names)}"
            raise loader.error(where, problem)
        op_name = names[0]
        op = ops.REGISTRY.get(op_name)
        if op is None:
            hint = did_you_mean(op_name.replace("-", "_"), ops.REGISTRY, " (see `imagebuilder ops`)")
            raise loader.error(where + (op_name,), f"unknown operation{hint}")
        line = loader.line(where + (op_name,))
        step_ctx = ctx.fresh()
        try:
            arg = op.parse(item[op_name], step_ctx)
        except ValueError as exc:
            raise loader.error(where + (op_name,), str(exc)) from None
        except RecipeError as exc:  # a commands file's own FILE:LINE error
            raise RecipeError(exc.file, exc.line, exc.key,
                              f"{exc.problem} (included at {loader.display}:{line})") from None
        if op.expands:
            source = step_ctx.host_files[0].path
            steps.append(Step(op_name, str(source), line, None, None, tuple(step_ctx.host_files[:1])))
            steps += [Step(c.command.op, c.arg, c.command.line, source, line, c.host_files) for c in arg]
        else:
            steps.append(Step(op_name, arg, line, host_files=tuple(step_ctx.host_files), checkpoint=checkpoint))
    _check_passwords(loader, steps)
    return steps


def _check_passwords(loader: Loader, steps: list[Step]) -> None:
    """Like virt-customize, refuse two steps that set the same user's password."""
    seen: dict[str, Step] = {}
    index = -1
    for step in steps:
        index += step.source is None  # the recipe's own [[steps]] entries, in order
        user = commands_file.password_user(step.op, step.arg)
        if user is None:
            continue
        if user in seen:
            raise RecipeError(str(step.source or loader.display), step.line,
                              f"steps[{index}].{step.op}" if step.source is None else None,
                              f"the password of '{user}' is already set by the step at "
                              f"{seen[user].where(loader.file)}")
        seen[user] = step


def parse_network(table: Table | None, steps: list[Step]) -> bool:
    """Whether the appliance gets a network: [customize] network, else only if a step needs one."""
    needed = [s for s in steps if ops.REGISTRY[s.op].needs_network]
    if table is None:
        return bool(needed)
    network = table.get("network", bool)
    table.finish()
    if network is False and needed:
        raise table.error("network", f"'{needed[0].op}' (line {needed[0].line}) needs the appliance network; "
                                     "remove the step or this setting")
    return bool(needed) if network is None else network


def parse_sysprep(table: Table | None) -> tuple[str, ...]:
    """The virt-sysprep operations to run: the defaults with `operations` added or removed; none if not enabled."""
    if table is None:
        return tuple(sysprep.select([]))
    requested = table.get("operations", list, [])
    if not all(isinstance(x, str) for x in requested):
        raise table.error("operations", "expected an array of operation names")
    try:
        chosen = sysprep.select(requested)
    except ValueError as exc:
        raise table.error("operations", str(exc)) from None
    enabled = table.get("enabled", bool, True)
    table.finish()
    return tuple(chosen) if enabled else ()
