"""Reading a recipe file: its bytes, UTF-8, TOML, then every section in order into a Recipe."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from imagebuilder import arches, tomlpos
from imagebuilder.errors import RecipeError
from imagebuilder.recipe.base import parse_base
from imagebuilder.recipe.cloud_init import parse_cloud_init
from imagebuilder.recipe.domain import parse_domain
from imagebuilder.recipe.fleet import parse_fleet
from imagebuilder.recipe.model import Recipe
from imagebuilder.recipe.output import parse_disk, parse_output
from imagebuilder.recipe.publish import parse_cache
from imagebuilder.recipe.reproducible import parse_reproducible
from imagebuilder.recipe.sign import parse_sign
from imagebuilder.recipe.steps import parse_network, parse_steps, parse_sysprep
from imagebuilder.recipe.tables import Loader, Table, check_name
from imagebuilder.recipe.tests import parse_tests
from imagebuilder.values import ArgContext


def load(file: str | Path, *, strict_paths: bool = False, inline_secrets: bool = True) -> Recipe:
    """Read and validate a recipe file; raise RecipeError at the first problem.

    strict_paths: every host path (base image, keys, files steps read, commands files, outputs,
    file:// URLs) must resolve, symlinks followed, inside the recipe's directory.
    inline_secrets=False: passwords written in the recipe (password:TEXT) are refused.
    """
    path = Path(file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(str(path), None, None, f"cannot read recipe: {exc.strerror}") from None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecipeError(str(path), line, None, f"recipe is not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    loader = Loader(path, source)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        message = re.sub(r"\s*\(at .*\)$", "", str(exc))
        raise RecipeError(str(path), tomlpos.parse_error_line(exc), None, f"invalid TOML: {message}") from None
    return _build(loader, data, hashlib.sha256(raw).hexdigest(), strict_paths, inline_secrets)


def _build(loader: Loader, data: dict[str, Any], digest: str, strict_paths: bool, inline_secrets: bool) -> Recipe:
    top = Table(loader, data, ())
    top.finish(("image", "base", "disk", "steps", "customize", "sysprep", "output", "domain", "tests",
                "machines", "fleet", "cloud_init", "sign", "reproducible", "cache"))
    base_dir = loader.file.resolve().parent
    ctx = ArgContext(base_dir, loader.file, root=base_dir if strict_paths else None, inline_secrets=inline_secrets)
    image = top.table("image", required=True)
    name = image.convert("name", str, check_name)
    if name is None:
        raise image.error(None, "missing required key 'name'")
    arch = image.convert("arch", str, lambda value: arches.lookup(value).name)
    image.finish()
    base = parse_base(top.table("base", required=True), ctx, arch)
    disk = parse_disk(top.table("disk"))
    steps = parse_steps(loader, top.get("steps", list, []), ctx)
    sysprep_ops = parse_sysprep(top.table("sysprep"))
    output = parse_output(top.table("output"), name, disk.format, ctx)
    domain = parse_domain(top.table("domain"), name, arches.lookup(base.arch))
    machines = parse_fleet(top, loader, domain, name, output)
    if machines:
        domain = None  # [domain] is the machines' template; the golden image itself is never booted
    ova = any(item.format == "ova" for item in output.files)  # an OVA describes the machine from [domain]
    if domain and not output.libvirt and not ova and not any(t.domain for t in output.targets):
        raise loader.error(("domain",), "a domain needs the image in a libvirt pool, but [output] names only a file")
    for index, target in enumerate(output.targets):
        if target.domain and not domain:
            raise loader.error(("output", "targets", index, "domain"), "there is no [domain] section to define")
    needs_network = parse_network(top.table("customize"), steps)
    tests = parse_tests(loader, top.get("tests", list, []))
    cloud_init = parse_cloud_init(top.table("cloud_init"), ctx)
    if cloud_init and not machines:
        raise loader.error(("cloud_init",), "a cloud-init seed is made per machine: add [[machines]] or [fleet] "
                                            "(one [[machines]] entry for a single machine)")
    sign = parse_sign(top.table("sign"), ctx)
    return Recipe(loader.file, digest, name, base, disk, tuple(steps), sysprep_ops, output, domain, needs_network,
                  tests, machines=machines, cloud_init=cloud_init, sign=sign,
                  tree_digest=parse_reproducible(top.table("reproducible")), cache=parse_cache(top.table("cache"), ctx))
