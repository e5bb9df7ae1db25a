"""Scripts that run once, in order, at the guest's first boot: a systemd unit, and a SysV script too.

Like virt-customize's firstboot: scripts are queued in FIRSTBOOT_DIR/scripts with a numbered
name; at boot the runner takes them in name order, moves each to done/ *before* running it (so a
script that reboots the machine never runs twice), runs it as root, and logs its output and exit
status to LOG_FILE. The systemd unit and the SysV script share one name, so systemd's SysV
generator ignores the script on systemd guests and the runner starts exactly once; it also takes
a lock in /run, in case both ever start.
"""

from __future__ import annotations

import re
from typing import Any

FIRSTBOOT_DIR = "/usr/lib/imagebuilder/firstboot"
SCRIPTS_DIR = f"{FIRSTBOOT_DIR}/scripts"
DONE_DIR = f"{FIRSTBOOT_DIR}/done"
RUNNER = f"{FIRSTBOOT_DIR}/runner"
LOG_FILE = "/var/log/imagebuilder-firstboot.log"
SERVICE = "imagebuilder-firstboot"
UNIT_PATH = f"/etc/systemd/system/{SERVICE}.service"
SYSV_PATH = f"/etc/init.d/{SERVICE}"

RUNNER_SCRIPT = f"""#!/bin/sh
# imagebuilder firstboot runner: runs each queued script once, in name order, and logs it.
dir={FIRSTBOOT_DIR}
log={LOG_FILE}
lock=/run/imagebuilder-firstboot.lock
[ -d /run ] || lock=/tmp/imagebuilder-firstboot.lock
mkdir -p "$dir/done"
mkdir "$lock" 2>/dev/null || exit 0
trap 'rmdir "$lock"' EXIT
for script in "$dir"/scripts/*; do
    [ -f "$script" ] || continue
    name=$(basename "$script")
    mv "$script" "$dir/done/$name" || continue
    echo "=== imagebuilder firstboot: $name: start $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"
    chmod +x "$dir/done/$name"
    "$dir/done/$name" >> "$log" 2>&1 < /dev/null
    echo "=== imagebuilder firstboot: $name: exit $?" >> "$log"
done
"""

UNIT = f"""[Unit]
Description=imagebuilder firstboot scripts
Wants=network-online.target
After=network-online.target
ConditionDirectoryNotEmpty={SCRIPTS_DIR}

[Service]
Type=oneshot
ExecStart={RUNNER}
RemainAfterExit=yes
TimeoutStartSec=0
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

SYSV = f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {SERVICE}
# Required-Start:    $network $remote_fs $syslog
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: imagebuilder firstboot scripts
### END INIT INFO
case "$1" in
    start) exec {RUNNER} ;;
esac
exit 0
"""


def add_script(g: Any, name: str, content: str | bytes) -> str:
    """Install the runner if needed and queue one script after those already queued; return its path."""
    install_runner(g)
    index = next_index(g)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "script"
    path = f"{SCRIPTS_DIR}/{index:04d}-{safe}"
    g.write(path, content)
    g.chmod(0o755, path)
    return path


def command_script(command: str) -> str:
    """A firstboot_command's script: the command line, run by /bin/sh."""
    return f"#!/bin/sh\n{command}\n"


def next_index(g: Any) -> int:
    """One more than the highest number queued or already run."""
    numbers = [0]
    for directory in (SCRIPTS_DIR, DONE_DIR):
        if g.is_dir(directory):
            numbers += [int(n[:4]) for n in g.ls(directory) if n[:4].isdigit()]
    return max(numbers) + 1


def install_runner(g: Any) -> None:
    """The runner, its systemd unit (enabled) and its SysV script; once per guest."""
    if g.is_file(RUNNER):
        return
    g.mkdir_p(SCRIPTS_DIR)
    g.write(RUNNER, RUNNER_SCRIPT)
    g.chmod(0o755, RUNNER)
    if g.is_dir("/etc/systemd/system"):
        g.write(UNIT_PATH, UNIT)
        g.mkdir_p("/etc/systemd/system/multi-user.target.wants")
        g.ln_sf(UNIT_PATH, f"/etc/systemd/system/multi-user.target.wants/{SERVICE}.service")
    if g.is_dir("/etc/init.d"):
        g.write(SYSV_PATH, SYSV)
        g.chmod(0o755, SYSV_PATH)
        for level in "2345":
            g.mkdir_p(f"/etc/rc{level}.d")
            g.ln_sf(f"../init.d/{SERVICE}", f"/etc/rc{level}.d/S99{SERVICE}")
