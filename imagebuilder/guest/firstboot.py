"""Scripts that run once, in order, at the guest's first boot (a systemd unit, SysV as fallback)."""

from __future__ import annotations

from typing import Any

FIRSTBOOT_DIR = "/usr/lib/imagebuilder/firstboot"
LOG_FILE = "/var/log/imagebuilder-firstboot.log"
UNIT_NAME = "imagebuilder-firstboot.service"

RUNNER = f"""#!/bin/sh
# Runs each script in {FIRSTBOOT_DIR}/scripts once, in name order, then moves it to done/.
dir={FIRSTBOOT_DIR}
mkdir -p "$dir/done"
for script in "$dir"/scripts/*; do
    [ -f "$script" ] || continue
    name=$(basename "$script")
    echo "=== imagebuilder firstboot: $name $(date -u +%FT%TZ)" >> {LOG_FILE}
    sh "$script" >> {LOG_FILE} 2>&1
    echo "=== $name exited with $?" >> {LOG_FILE}
    mv "$script" "$dir/done/$name"
done
"""

UNIT = f"""[Unit]
Description=imagebuilder firstboot scripts
After=network.target
ConditionDirectoryNotEmpty={FIRSTBOOT_DIR}/scripts

[Service]
Type=oneshot
ExecStart={FIRSTBOOT_DIR}/runner
RemainAfterExit=yes
TimeoutStartSec=0

[Install]
WantedBy=multi-user.target
"""

SYSV = f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          imagebuilder-firstboot
# Required-Start:    $network $remote_fs
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: imagebuilder firstboot scripts
### END INIT INFO
[ "$1" = start ] && exec {FIRSTBOOT_DIR}/runner
exit 0
"""


def add_script(g: Any, name: str, content: str) -> str:
    """Install the runner if needed and add one script after those already queued; return its path."""
    _install_runner(g)
    scripts = f"{FIRSTBOOT_DIR}/scripts"
    index = len(g.ls(scripts)) + 1
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    path = f"{scripts}/{index:04d}-{safe}"
    g.write(path, content if content.endswith("\n") else content + "\n")
    g.chmod(0o755, path)
    return path


def _install_runner(g: Any) -> None:
    if g.is_file(f"{FIRSTBOOT_DIR}/runner"):
        return
    g.mkdir_p(f"{FIRSTBOOT_DIR}/scripts")
    g.write(f"{FIRSTBOOT_DIR}/runner", RUNNER)
    g.chmod(0o755, f"{FIRSTBOOT_DIR}/runner")
    if g.is_dir("/etc/systemd/system"):
        g.write(f"/etc/systemd/system/{UNIT_NAME}", UNIT)
        g.mkdir_p("/etc/systemd/system/multi-user.target.wants")
        g.ln_sf(f"/etc/systemd/system/{UNIT_NAME}",
                f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}")
    elif g.is_dir("/etc/init.d"):
        g.write("/etc/init.d/imagebuilder-firstboot", SYSV)
        g.chmod(0o755, "/etc/init.d/imagebuilder-firstboot")
        for level in "2345":
            g.mkdir_p(f"/etc/rc{level}.d")
            g.ln_sf("../init.d/imagebuilder-firstboot", f"/etc/rc{level}.d/S99imagebuilder-firstboot")
