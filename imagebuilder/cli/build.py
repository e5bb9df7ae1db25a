"""The build cycle of a recipe: validate, build, plan and test."""

from __future__ import annotations

import io
import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from imagebuilder import recipe
from imagebuilder.cli.common import (AccelOpt, CacheDirOpt, NoInlineSecretsOpt, RecipeArg, StrictPathsOpt,
                                     check_output_file, exit_on_error, on_sigterm)
from imagebuilder.errors import EXIT_BUILT, InputError
from imagebuilder.progress import Reporter


def validate(path: RecipeArg, strict_paths: StrictPathsOpt = False, no_inline_secrets: NoInlineSecretsOpt = False,
             ) -> None:
    """Check a recipe (syntax, types, keys, host files) without building anything."""
    with exit_on_error():
        loaded = recipe.load(path, strict_paths=strict_paths, inline_secrets=not no_inline_secrets)
    typer.echo(f"{path}: OK ({len(loaded.steps)} steps, base from {loaded.base.kind})")


def build(
    path: RecipeArg,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the image to this file only; libvirt is not touched.")] = None,
    accel: Annotated[Optional[str], typer.Option(
        help="Accelerator: auto (KVM if a probe boots, else TCG), kvm or tcg.",
        envvar="IMAGEBUILDER_ACCEL")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output file, volume or domain.")] = False,
    keep_on_failure: Annotated[bool, typer.Option(
        help="Keep the volume, domain and network this run created when it fails.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Cache directory (default: $XDG_CACHE_HOME/imagebuilder).", envvar="IMAGEBUILDER_CACHE_DIR")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Where to write the manifest.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON lines on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every host command.")] = False,
    run_tests: Annotated[bool, typer.Option("--test", help="Then run the recipe's [[tests]] (like `test`).")] = False,
    strict_paths: StrictPathsOpt = False,
    no_inline_secrets: NoInlineSecretsOpt = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Ignore cached stage results, earlier outputs and the package cache; build everything.")] = False,
    if_changed: Annotated[bool, typer.Option(
        "--if-changed", help="For scheduled runs: exit 0 ('no change') when the outputs are up to date, "
                             "3 after building something new.")] = False,
    sign_key: Annotated[Optional[Path], typer.Option(
        "--sign-key", help="Sign the provenance with this private key (PEM, or an exported OpenPGP secret key) "
                           "instead of the recipe's [sign] key.")] = None,
    sign_passphrase: Annotated[Optional[str], typer.Option(
        "--sign-passphrase", metavar="file:PATH|env:VAR", help="Where the --sign-key passphrase is read.")] = None,
    push: Annotated[Optional[list[str]], typer.Option(
        "--push", help="Also push the image as a KubeVirt containerDisk to this registry/repo:tag (repeatable).",
        show_default=False)] = None,
    cache_from: Annotated[Optional[list[str]], typer.Option(
        "--cache-from", help="A registry repository to take cached stages from (repeatable).",
        show_default=False)] = None,
    cache_to: Annotated[Optional[str], typer.Option(
        "--cache-to", help="A registry repository to store this build's cached stages in.")] = None,
    cache_secret_file: Annotated[Optional[Path], typer.Option(
        "--cache-secret-file", help="The stage-key secret that machines sharing a cache hold in common.",
        envvar="IMAGEBUILDER_CACHE_SECRET_FILE")] = None,
) -> None:
    """Build the image a recipe describes, publish it, and define and boot its domain."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    reporter = Reporter("json" if json_output else None, verbose=verbose)
    signal.signal(signal.SIGTERM, on_sigterm)
    with exit_on_error(json_output):
        check_output_file(output)
        loaded = recipe.load(path, strict_paths=strict_paths, inline_secrets=not no_inline_secrets)
        from imagebuilder.pipeline import BuildOptions, build as run_build
        options = BuildOptions(accel=accel, cache_dir=cache_dir, force=force, output_file=output,
                               keep_on_failure=keep_on_failure, manifest_path=manifest, no_cache=no_cache,
                               sign=_sign_option(sign_key, sign_passphrase, loaded),

                               **registry_options(push or [], cache_from or [], cache_to, cache_secret_file))
        result = run_build(loaded, options, reporter)
    if json_output:
        print(json.dumps({"event": "result", "manifest": str(result.manifest_path), "outputs": result.outputs,
                          "up_to_date": result.up_to_date}))
    elif result.up_to_date:
        typer.echo("no change" if if_changed else f"{loaded.name} is up to date")
    else:
        if verbose:
            from imagebuilder.timings import table
            typer.echo("\n".join(table(result.manifest.timings, result.manifest.phases)), err=True)
        typer.echo(f"built {loaded.name} in {sum(result.manifest.timings.values()):.0f}s")
    if loaded.machines and not json_output:
        typer.echo(f"the golden image of {len(loaded.machines)} machines: `imagebuilder up {path}` makes them")
    if run_tests:
        _test(loaded, output, None, None, accel, json_output)
    if if_changed and not result.up_to_date:
        raise typer.Exit(EXIT_BUILT)


def _sign_option(key: Optional[Path], passphrase: Optional[str], loaded: recipe.Recipe) -> Optional[recipe.Sign]:
    """--sign-key (with --sign-passphrase) as a [sign] section, relative to the working directory."""
    from imagebuilder.errors import InputError
    from imagebuilder.recipe.sign import passphrase as parse_passphrase
    from imagebuilder.values import ArgContext
    if key is None:
        if passphrase is not None:
            raise InputError("--sign-passphrase goes with --sign-key")
        return None
    if not key.is_file():
        raise InputError(f"--sign-key {key}: no such file")
    try:
        spec = parse_passphrase(passphrase, ArgContext(Path.cwd())) if passphrase is not None else None
    except ValueError as exc:
        raise InputError(f"--sign-passphrase: {exc}") from None
    return recipe.Sign(key=key.resolve(), passphrase=spec, builder=loaded.sign.builder if loaded.sign else None)


def registry_options(push: list[str], cache_from: list[str], cache_to: str | None,
                     secret: Path | None) -> dict:
    """The registry options of build, checked: a bad reference exits 2 naming its option."""
    from imagebuilder import registry
    from imagebuilder.recipe.publish import check_oci_ref
    checks = [("--push", ref, check_oci_ref) for ref in push] + \
        [("--cache-from", ref, registry.check_repository) for ref in cache_from] + \
        ([("--cache-to", cache_to, registry.check_repository)] if cache_to else [])
    for option, value, check in checks:
        try:
            check(value)
        except ValueError as exc:
            raise InputError(f"{option} {value}: {exc}") from None
    return {"push": tuple(push), "cache_from": tuple(registry.check_repository(r) for r in cache_from),
            "cache_to": registry.check_repository(cache_to) if cache_to else None, "cache_secret_file": secret}


def _test(loaded: recipe.Recipe, image: Optional[Path], junit: Optional[Path], summary: Optional[Path],
          accel: Optional[str], json_output: bool) -> None:
    """Run the recipe's [[tests]] and write the reports; exit 1 when a check fails."""
    from imagebuilder import accel as accelerator, tester
    reporter = Reporter("json" if json_output else None)
    with exit_on_error(json_output):
        target = tester.built_image(loaded, image)
        report = tester.run_checks(loaded, target, accelerator.choose(accel), reporter, loaded.output.uri)
    stem = target.parent / loaded.name if loaded.output.path else None
    junit = junit or (Path(f"{stem}.junit.xml") if stem else Path(f"{loaded.name}.junit.xml"))
    summary = summary or junit.with_name(junit.name.replace(".junit.xml", "") + ".tests.json")
    report.junit(junit)
    report.write_summary(summary)
    reporter.info(f"reports: {junit} {summary}")
    if json_output:
        print(json.dumps({"event": "result", **report.summary(), "junit": str(junit), "summary": str(summary)}))
    if report.failed:
        typer.echo(f"error: {len(report.failed)} of {len(report.outcomes)} checks failed: "
                   + ", ".join(o.check.name for o in report.failed), err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(report.outcomes)} checks passed")


def plan_command(
    path: RecipeArg,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="As for build.")] = None,
    cache_dir: CacheDirOpt = None,
    manifest: Annotated[Optional[Path], typer.Option(help="The manifest of the earlier build.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """Show what `build` would do now: each stage cached or to run, and why (like a terraform plan)."""
    from imagebuilder.pipeline import BuildOptions, plan
    with exit_on_error(json_output):
        check_output_file(output)
        loaded = recipe.load(path)
        result = plan(loaded, BuildOptions(cache_dir=cache_dir, output_file=output, manifest_path=manifest),
                      Reporter("plain", io.StringIO()))
    if json_output:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{loaded.name}: {'up to date' if result['up_to_date'] else 'will build'} ({result['reason']})")
    for row in result["stages"]:
        why = f"  ({row['why']})" if row["why"] else ""
        typer.echo(f"  {row['name']:28} {row['status']}{why}")
    if "versions" in result:
        typer.echo(f"  {'new version':28} {result['versions']['next']}")
        for old in result["versions"]["delete"]:
            typer.echo(f"  {'retention':28} would delete {old['pool']}/{old['volume']} at {old['uri']} "
                       "(unless something uses it)")


def test_command(
    path: RecipeArg,
    image: Annotated[Optional[Path], typer.Option(help="The image to test (default: the recipe's output).")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="JUnit XML report (default: NAME.junit.xml beside it).")] = None,
    summary: Annotated[Optional[Path], typer.Option(help="JSON summary (default: NAME.tests.json).")] = None,
    accel: AccelOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON lines on stdout.")] = False,
) -> None:
    """Check a built image with the recipe's [[tests]]: offline file and package checks, and commands
    in a throwaway domain booted on an overlay (the image is never changed). Exit 1 if any fails."""
    signal.signal(signal.SIGTERM, on_sigterm)
    with exit_on_error(json_output):
        loaded = recipe.load(path)
    _test(loaded, image, junit, summary, accel, json_output)
