"""Helpers for the libvirt integration tests: builds with the customize stage stubbed, a tiny bootable
guest, and checks that nothing was left behind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from imagebuilder import pipeline, recipe
from imagebuilder.pipeline import BuildOptions, BuildResult
from imagebuilder.progress import Reporter
from imagebuilder.deploy.spec import SERIAL_LOG_DIR

# A boot sector that prints "OK" on COM1, then echoes every byte it receives there: a guest that
# boots in a second under TCG, talks on the serial console and ignores ACPI. Assembled from
#     cli; mov $0x3f8,%dx; mov $'O',%al; out %al,%dx; (same for 'K', '\r', '\n')
#  1: mov $0x3fd,%dx; in %dx,%al; test $1,%al; jz 1b; mov $0x3f8,%dx; in %dx,%al; out %al,%dx; jmp 1b
ECHO_SECTOR = bytes.fromhex(
    "faba f803 b04f eeb0 4bee b00d eeb0 0aee bafd 03ec a801 74f8 baf8 03ec eeeb f1".replace(" ", "")
).ljust(510, b"\0") + b"\x55\xaa"


def echo_image(path: Path) -> Path:
    """A 1 MiB raw disk that boots the echo sector."""
    with open(path, "wb") as file:
        file.write(ECHO_SECTOR)
        file.truncate(1 << 20)
    return path


def echo_recipe_text(name: str, image: Path, pool: str, domain: str = "", output: str = "") -> str:
    """A recipe whose raw image is the echo guest, published to pool, with a small [domain] (no agent);
    `output` and `domain` are more lines for those sections."""
    return (f'[image]\nname = "{name}"\n[base]\npath = "{image}"\n[disk]\nformat = "raw"\n'
            f'[output]\npool = "{pool}"\n{output}\n[domain]\nmemory = "64M"\nagent = false\n{domain}\n')


def build_customize_stubbed(monkeypatch, recipe_file: Path, facts: dict[str, str] | None = None,
                            on_customize=None, **options: Any) -> tuple[BuildResult, str]:  # noqa: ANN001
    """Run the real pipeline in this process with the customize stage replaced by a stub.

    For tests about the stages around it (publish, deploy): everything libvirt sees is real; only the
    appliance launch is skipped. Tests that use it say so in their names (`customize_stubbed`), and
    what they show also has a test with a real build. `on_customize` runs where customization would,
    between preflight and publish. Returns the result and the progress text; raises what the build raises.
    """
    def fake_customize(*_args: Any, **_kwargs: Any) -> dict[str, str]:
        if on_customize is not None:
            on_customize()
        return dict(facts or {})

    monkeypatch.setattr(pipeline, "customize", fake_customize)
    stream = io.StringIO()
    options.setdefault("manifest_path", recipe_file.with_suffix(".manifest.json"))
    try:
        result = pipeline.build(recipe.load(recipe_file), BuildOptions(**options), Reporter("plain", stream))
    except BaseException as exc:
        exc.progress = stream.getvalue()  # type: ignore[attr-defined]
        raise
    return result, stream.getvalue()


def forget_logs(name: str) -> None:
    """Remove the log files libvirt keeps for a domain that was started (qemu log, serial log)."""
    for path in (Path(SERIAL_LOG_DIR) / f"{name}.log", Path(SERIAL_LOG_DIR) / f"{name}-serial.log"):
        path.unlink(missing_ok=True)


def volume_names(pool) -> set[str]:  # noqa: ANN001
    """The volumes a pool holds right now (after a refresh)."""
    pool.refresh(0)
    return {vol.name() for vol in pool.listAllVolumes()}
