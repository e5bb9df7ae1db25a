"""`clone`: ad hoc thin clones of any golden volume, personalized offline in one appliance launch."""

from __future__ import annotations

from pathlib import Path

from imagebuilder import accel as accelerator
from imagebuilder import files, values
from imagebuilder.errors import BuildError, InputError
from imagebuilder.fleet.common import undoing
from imagebuilder.guest import clones, commands_file
from imagebuilder.guest.ops import REGISTRY
from imagebuilder.progress import Reporter
from imagebuilder.recipe import Step
from imagebuilder.virt import clone as virt_clone, connection, storage


def clone_names(name: str, count: int) -> list[str]:
    """NAME for one clone; NAME with {n} replaced, or NAME-1 … NAME-N, for several."""
    if count < 1:
        raise InputError("--count must be 1 or more")
    if "{n}" in name:
        return [name.replace("{n}", str(n)) for n in range(1, count + 1)]
    return [name] if count == 1 else [f"{name}-{n}" for n in range(1, count + 1)]


def parse_steps(texts: list[str], name: str, base_dir: Path) -> tuple[Step, ...]:
    """`--customize` values, one virt-customize command each (`OP ARG`, as in a commands file), with
    {name} replaced by the clone's name."""
    steps = []
    for text in texts:
        line = text.replace("{name}", name)
        items = [c for c in commands_file.parse_text(line) if isinstance(c, commands_file.Command)]
        if len(items) != 1:
            raise InputError(f"--customize {text!r}: write one command such as 'write /etc/motd:hello'")
        command = items[0]
        try:
            commands_file.check_name(command, "--customize")
            op = REGISTRY[command.op]
            arg = op.parse(True if op.flag else command.arg, values.ArgContext(base_dir))
        except ValueError as exc:
            raise InputError(f"--customize {text!r}: {exc}") from None
        except InputError as exc:
            raise InputError(f"--customize {text!r}: {exc.message.split(': ', 1)[-1]}") from None
        steps.append(Step(command.op, arg, None))
    return tuple(steps)


def clone(uri: str | None, pool_name: str, volume: str, name: str, count: int, customize: list[str],
          accel: str | None, reporter: Reporter, base_dir: Path | None = None) -> list[str]:
    """Ad hoc clones of a golden volume: overlays NAME.qcow2 in its pool, each with its identity reset,
    its host name (the clone's name) and the --customize steps, all in one appliance launch. The golden
    volume is only read; its digest is checked before and after. Returns the new volumes' names."""
    names = clone_names(name, count)
    plans = [(n, parse_steps(customize, n, base_dir or Path.cwd())) for n in names]
    accel = accelerator.choose(accel)
    with connection.connect(uri) as conn, undoing(reporter) as undo:
        pool = storage.find_pool(conn, pool_name)
        if pool is None:
            raise InputError(f"no storage pool {pool_name} at {conn.getURI()}")
        golden = storage.find_volume(pool, volume)
        if golden is None:
            raise InputError(f"no volume {volume} in pool {pool_name} at {conn.getURI()}")
        if not connection.is_local(conn):
            raise BuildError(f"clones are personalized offline, which needs the pool on this host "
                             f"({conn.getURI()} is not)")
        for clone_name in names:
            storage.check_volume_name(f"{clone_name}.qcow2")
            if storage.find_volume(pool, f"{clone_name}.qcow2") is not None:
                raise BuildError(f"volume {clone_name}.qcow2 already exists in pool {pool_name}; it is left alone")
        golden_path = Path(golden.path())
        before = files.file_digest(golden_path)
        disks = []
        for clone_name, steps in plans:
            vol = virt_clone.create_overlay(pool, f"{clone_name}.qcow2", golden)
            undo.created(f"volume {pool_name}/{clone_name}.qcow2",
                         lambda n=f"{clone_name}.qcow2": storage.delete_volume(pool, n))
            hostname = _hostname_or_none(clone_name)
            if hostname is None:
                reporter.info(f"{clone_name} is not a valid host name; the clone keeps the golden image's")
            disks.append(clones.CloneDisk(Path(vol.path()), clone_name, hostname, steps))
            reporter.info(f"{clone_name}: overlay {pool_name}/{clone_name}.qcow2 on {volume}")
        needs_network = any(REGISTRY[s.op].needs_network for _, steps in plans for s in steps)
        clones.personalize(disks, accel, reporter, network=needs_network)
        after = files.file_digest(golden_path)
        if after != before:
            raise BuildError(f"the golden volume {pool_name}/{volume} changed while cloning ({before} -> {after})")
        reporter.info(f"golden volume {pool_name}/{volume} unchanged: {before}")
    return [f"{n}.qcow2" for n in names]


def _hostname_or_none(name: str) -> str | None:
    try:
        return values.hostname(name)
    except ValueError:
        return None
