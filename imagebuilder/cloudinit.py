"""cloud-init NoCloud seeds: a machine's user-data, meta-data and network-config on an ISO 9660
image labelled `cidata`, made in Python with pycdlib (no genisoimage or xorriso on the host).

A seed is known by a digest of its three texts, and its volume is named by it
(`NAME-cidata-DIGEST.iso`). So a seed is made again when, and only when, what cloud-init would read
changes, and finding out costs one volume lookup: the ISO bytes themselves are no good for comparing
(pycdlib stamps the creation time into them), and reading a volume back would cost a download per
machine.

The meta-data holds `instance-id` and `local-hostname`. The instance-id carries a short digest of
the seed's content, so a changed seed is a new instance to cloud-init, which then applies it at the
next boot (cloud-init runs its per-instance modules once per instance-id: a changed seed with the
old id would be ignored, the "stale seed" trouble). `meta_data = { instance-id = "…" }` pins it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebuilder.recipe import CloudInit

LABEL = "cidata"
EMPTY_USER_DATA = "#cloud-config\n{}\n"


@dataclass(frozen=True)
class Seed:
    """The files of one machine's seed."""

    machine: str
    user_data: str
    meta_data: str
    network_config: str | None = None

    @property
    def digest(self) -> str:
        """sha256 (hex) of the files' names and contents."""
        return hashlib.sha256(json.dumps(self.files(), sort_keys=True).encode()).hexdigest()

    @property
    def volume(self) -> str:
        """The seed's volume name: the machine's name and the content digest."""
        return f"{self.machine}-cidata-{self.digest[:12]}.iso"

    def files(self) -> dict[str, str]:
        """File name -> content, as cloud-init's NoCloud data source reads them."""
        found = {"user-data": self.user_data, "meta-data": self.meta_data}
        if self.network_config is not None:
            found["network-config"] = self.network_config
        return found


def seed_for(cloud: CloudInit, machine: str, hostname: str) -> Seed:
    """The seed of one machine: the recipe's user data and network config, and its own meta-data."""
    import yaml

    user_data = cloud.user_data if cloud.user_data is not None else EMPTY_USER_DATA
    extra: dict[str, Any] = {}
    for key, value in cloud.meta_data:
        extra[key] = value.replace("{name}", machine).replace("{hostname}", hostname) \
            if isinstance(value, str) else value
    content = json.dumps([user_data, cloud.network_config, hostname, extra], sort_keys=True, default=str)
    meta: dict[str, Any] = {"instance-id": f"{machine}-{hashlib.sha256(content.encode()).hexdigest()[:8]}",
                            "local-hostname": hostname}
    meta.update(extra)
    meta_data = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return Seed(machine, user_data, meta_data, cloud.network_config)


def write_iso(seed: Seed, path: Path) -> Path:
    """Write the seed as an ISO 9660 image labelled `cidata`, with Rock Ridge and Joliet names
    (`user-data` is not a valid plain ISO 9660 name)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL, sys_ident="LINUX")
    try:
        for name, text in seed.files().items():
            data = text.encode()
            iso.add_fp(io.BytesIO(data), len(data), f"/{name.upper().replace('-', '_')}.;1",
                       rr_name=name, joliet_path=f"/{name}")
        iso.write(str(path))
    finally:
        iso.close()
    return path


def read_iso(path: Path) -> dict[str, str]:
    """The files of a seed ISO by their Rock Ridge names (for tests and `imagebuilder` diagnostics)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        found = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            found[name] = out.getvalue().decode()
        return found
    finally:
        iso.close()
