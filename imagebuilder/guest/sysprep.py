"""virt-sysprep's operations, by name: reset what must differ between machines made from one image.

`[sysprep] operations` lists names to add to the defaults, or `-name` to drop one; `enabled = false`
turns sysprep off. The defaults are virt-sysprep's, except `ssh-userdir`, which would delete the
keys that `ssh_inject` and `user` steps just put in place (steps run before sysprep); name it to
get it. `customize` is accepted for compatibility and does nothing: the recipe's steps are the
customization. `script` is not offered (it runs host scripts on a FUSE mount; use `run` steps).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from imagebuilder.errors import GuestError
from imagebuilder.guest import accounts
from imagebuilder.guest.context import GuestContext


@dataclass(frozen=True)
class SysprepOp:
    """One sysprep operation, named as in virt-sysprep."""

    name: str
    doc: str
    apply: Callable[[GuestContext], None]
    default: bool = True


def expand(g, patterns: tuple[str, ...]) -> list[str]:
    """Guest paths matching shell patterns; one directory listing per directory, not one call per pattern."""
    found: list[str] = []
    by_dir: dict[str, list[str]] = {}
    for pattern in patterns:
        directory, base = posixpath.split(pattern)
        if any(c in directory for c in "*?["):
            found += g.glob_expand(pattern, directoryslash=False) or []
        else:
            by_dir.setdefault(directory, []).append(base)
    for directory, bases in by_dir.items():
        if not g.is_dir(directory):
            continue
        names = g.ls(directory)
        for base in bases:
            hidden_ok = base.startswith(".")
            found += [posixpath.join(directory, n) for n in names
                      if fnmatch.fnmatchcase(n, base) and (hidden_ok or not n.startswith("."))]
    return list(dict.fromkeys(found))


def _remove(*patterns: str, files_only: bool = False) -> Callable[[GuestContext], None]:
    def apply(ctx: GuestContext) -> None:
        g = ctx.g
        for path in expand(g, patterns):
            if files_only:
                if g.is_file(path):
                    g.rm_f(path)
            else:
                g.rm_rf(path)
    return apply


def _truncate(*patterns: str) -> Callable[[GuestContext], None]:
    def apply(ctx: GuestContext) -> None:
        for path in expand(ctx.g, patterns):
            if ctx.g.is_file(path):
                ctx.g.truncate(path)
    return apply


def _drop_lines(files: tuple[str, ...], keys: tuple[str, ...]) -> Callable[[GuestContext], None]:
    """Remove KEY=… lines (shell-style config such as ifcfg-*) from the matching files."""
    pattern = re.compile(r"^\s*(" + "|".join(keys) + r")=")

    def apply(ctx: GuestContext) -> None:
        g = ctx.g
        for path in expand(g, files):
            if not g.is_file(path):
                continue
            text = g.read_file(path).decode(errors="surrogateescape")
            kept = [ln for ln in text.splitlines(keepends=True) if not pattern.match(ln)]
            if len(kept) != len(text.splitlines(keepends=True)):
                g.write(path, "".join(kept).encode(errors="surrogateescape"))
    return apply


def _machine_id(ctx: GuestContext) -> None:
    g = ctx.g
    if g.is_file("/etc/machine-id"):
        g.truncate("/etc/machine-id")
    g.rm_f("/var/lib/dbus/machine-id")


_KEYGEN_UNIT = "imagebuilder-ssh-keygen.service"
_KEYGEN = """[Unit]
Description=Make the SSH host keys that sysprep removed (imagebuilder)
Before=ssh.service sshd.service
ConditionPathExists=/usr/bin/ssh-keygen

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""


def _ssh_hostkeys(ctx: GuestContext) -> None:
    g = ctx.g
    for path in expand(g, ("/etc/ssh/*_host_*",)):
        g.rm_f(path)
    # Red Hat's sshd makes missing keys by itself; Debian's does not: add a unit that does, before sshd.
    if g.is_file("/usr/sbin/sshd") and g.is_dir("/etc/systemd/system"):
        g.write(f"/etc/systemd/system/{_KEYGEN_UNIT}", _KEYGEN)
        g.mkdir_p("/etc/systemd/system/multi-user.target.wants")
        g.ln_sf(f"/etc/systemd/system/{_KEYGEN_UNIT}", f"/etc/systemd/system/multi-user.target.wants/{_KEYGEN_UNIT}")


def _lvm_uuids(ctx: GuestContext) -> None:
    """LVM refuses new UUIDs while its volumes are active: unmount, deactivate, change, then
    reactivate and mount the guest's filesystems again (virt-sysprep does this unmounted)."""
    g = ctx.g
    if not g.pvs():
        return
    mounts = g.inspect_get_mountpoints(ctx.os["root"]) if ctx.os.get("root") else {}
    g.umount_all()
    g.vg_activate_all(False)
    try:
        g.pvchange_uuid_all()
        if g.vgs():
            g.vgchange_uuid_all()
    finally:
        g.vg_activate_all(True)
        for mountpoint in sorted(mounts, key=len):
            g.mount(mounts[mountpoint], mountpoint)


def _fs_uuids(ctx: GuestContext) -> None:
    g = ctx.g
    for device, fstype in g.list_filesystems().items():
        if fstype in ("ext2", "ext3", "ext4", "xfs", "btrfs", "swap"):
            try:
                g.set_uuid_random(device)
            except GuestError as exc:
                ctx.reporter.info(f"    could not change the UUID of {device}: {exc.message}")


def _backup_files(ctx: GuestContext) -> None:
    g = ctx.g
    for top in ("/etc", "/root", "/srv", "/tmp", "/var"):
        if not g.is_dir(top):
            continue
        for relative in g.find(top):
            name = posixpath.basename(relative)
            if name.endswith((".bak", "~")):
                path = posixpath.join(top, relative.lstrip("/"))
                if g.is_file(path):
                    g.rm_f(path)


def _user_account(ctx: GuestContext) -> None:
    minimum = 1000
    if ctx.g.is_file("/etc/login.defs"):
        match = re.search(r"^\s*UID_MIN\s+(\d+)", ctx.g.read_file("/etc/login.defs").decode(errors="replace"), re.M)
        if match:
            minimum = int(match.group(1))
    removed = accounts.remove_users(ctx.g, minimum)
    if removed:
        ctx.reporter.info(f"    removed user accounts: {', '.join(removed)}")


def _ca_certificates(ctx: GuestContext) -> None:
    g = ctx.g
    removed = [p for p in expand(g, ("/etc/pki/ca-trust/source/anchors/*", "/usr/local/share/ca-certificates/*"))
               if g.is_file(p)]
    for path in removed:
        g.rm_f(path)
    if removed:
        for tool in (["update-ca-trust", "extract"], ["update-ca-certificates", "--fresh"]):
            if g.exists(f"/usr/bin/{tool[0]}") or g.exists(f"/usr/sbin/{tool[0]}"):
                ctx.command(tool)
                break


def _flag_reconfiguration(ctx: GuestContext) -> None:
    ctx.g.touch("/.unconfigured")


def _nothing(_ctx: GuestContext) -> None:
    return None


_LOG_PATTERNS = (
    "/etc/Pegasus/*.cnf", "/etc/Pegasus/*.crt", "/etc/Pegasus/*.csr", "/etc/Pegasus/*.pem", "/etc/Pegasus/*.srl",
    "/root/anaconda-ks.cfg", "/root/anaconda-post.log", "/root/initial-setup-ks.cfg", "/root/install.log",
    "/root/install.log.syslog", "/root/original-ks.cfg",
    "/var/cache/fontconfig/*", "/var/cache/gdm/*", "/var/cache/man/*", "/var/lib/AccountService/users/*",
    "/var/lib/fprint/*", "/var/lib/logrotate.status",
    "/var/log/*.log*", "/var/log/BackupPC/LOG", "/var/log/ConsoleKit/*", "/var/log/anaconda.syslog",
    "/var/log/anaconda/*", "/var/log/apache2/*_log", "/var/log/apache2/*_log-*", "/var/log/apt/*",
    "/var/log/aptitude*", "/var/log/audit/*", "/var/log/btmp*", "/var/log/ceph/*.log", "/var/log/chrony/*.log",
    "/var/log/cron*", "/var/log/cups/*_log*", "/var/log/debug*", "/var/log/dmesg*", "/var/log/exim4/*",
    "/var/log/faillog*", "/var/log/firewalld*", "/var/log/gdm/*", "/var/log/glusterfs/*glusterd.vol.log",
    "/var/log/glusterfs/glusterfs.log", "/var/log/grubby*", "/var/log/httpd/*log", "/var/log/installer/*",
    "/var/log/jetty/jetty-console.log", "/var/log/journal/*", "/var/log/lastlog*",
    "/var/log/libvirt/libvirtd.log", "/var/log/libvirt/libxl/*.log", "/var/log/libvirt/lxc/*.log",
    "/var/log/libvirt/qemu/*.log", "/var/log/libvirt/uml/*.log", "/var/log/lightdm/*", "/var/log/mail/*",
    "/var/log/maillog*", "/var/log/messages*", "/var/log/ntp", "/var/log/ntpstats/*",
    "/var/log/ppp/connect-errors", "/var/log/rhsm/*", "/var/log/sa/*", "/var/log/secure*",
    "/var/log/setroubleshoot/*.log", "/var/log/spooler*", "/var/log/squid/*.log", "/var/log/syslog*",
    "/var/log/tallylog*", "/var/log/tuned/tuned.log", "/var/log/wtmp*", "/var/log/xferlog*",
    "/var/named/data/named.run",
)

OPERATIONS: dict[str, SysprepOp] = {op.name: op for op in (
    SysprepOp("abrt-data", "Remove the crash data generated by ABRT.", _remove("/var/spool/abrt/*")),
    SysprepOp("backup-files", "Remove editor backup files (*.bak, *~) under /etc, /root, /srv, /tmp, /var.",
              _backup_files),
    SysprepOp("bash-history", "Remove the bash history of root and the users in /home.",
              _remove("/root/.bash_history", "/home/*/.bash_history")),
    SysprepOp("blkid-tab", "Remove the blkid cache.",
              _remove("/var/run/blkid.tab", "/var/run/blkid.tab.old", "/etc/blkid/blkid.tab",
                      "/etc/blkid/blkid.tab.old", "/etc/blkid.tab", "/etc/blkid.tab.old", "/dev/.blkid.tab",
                      "/dev/.blkid.tab.old")),
    SysprepOp("ca-certificates", "Remove locally added CA certificates and update the system store.",
              _ca_certificates, default=False),
    SysprepOp("crash-data", "Remove kernel crash dumps (kdump).", _remove("/var/crash/*", "/var/log/dump/*")),
    SysprepOp("cron-spool", "Remove users' cron and at jobs.",
              _remove("/var/spool/cron/*", "/var/spool/cron/crontabs/*", "/var/spool/cron/atjobs/*",
                      "/var/spool/cron/atspool/*", "/var/spool/at/*", "/var/spool/atjobs/*",
                      "/var/spool/atspool/*", files_only=True)),
    SysprepOp("customize", "Accepted for compatibility: the recipe's steps are the customization.", _nothing),
    SysprepOp("dhcp-client-state", "Remove DHCP client leases.",
              _remove("/var/lib/dhclient/*", "/var/lib/dhcp/dhclient*", "/var/lib/dhcpcd/*.lease",
                      "/var/lib/NetworkManager/*.lease", "/var/lib/NetworkManager/dhclient-*")),
    SysprepOp("dhcp-server-state", "Remove DHCP server leases.",
              _remove("/var/lib/dhcpd/*", "/var/lib/dhcp/dhcpd.leases*")),
    SysprepOp("dovecot-data", "Remove Dovecot (mail server) data.", _remove("/var/lib/dovecot/*")),
    SysprepOp("firewall-rules", "Remove custom firewall rules (iptables and firewalld configuration).",
              _remove("/etc/sysconfig/iptables", "/etc/firewalld/services/*", "/etc/firewalld/zones/*"),
              default=False),
    SysprepOp("flag-reconfiguration", "Touch /.unconfigured so that the first boot asks for settings.",
              _flag_reconfiguration, default=False),
    SysprepOp("fs-uuids", "Give filesystems new random UUIDs (can make the guest unbootable, as in virt-sysprep).",
              _fs_uuids, default=False),
    SysprepOp("ipa-client", "Remove the IPA client enrolment files.",
              _remove("/etc/ipa/*", "/var/lib/ipa-client/sysrestore/*", "/var/lib/ipa-client/pki/*",
                      "/var/log/ipaclient-install.log", "/var/log/ipaclient-uninstall.log")),
    SysprepOp("kerberos-data", "Remove Kerberos KDC data (except its configuration).",
              _remove("/var/kerberos/krb5kdc/principal*", "/var/kerberos/krb5kdc/.k5*",
                      "/var/lib/krb5kdc/principal*", "/var/lib/krb5kdc/.k5*"), default=False),
    SysprepOp("kerberos-hostkeytab", "Remove the Kerberos host keytab.", _remove("/etc/krb5.keytab")),
    SysprepOp("logfiles", "Remove log files, the journal and similar caches.", _remove(*_LOG_PATTERNS)),
    SysprepOp("lvm-uuids", "Give LVM physical volumes and volume groups new UUIDs.", _lvm_uuids),
    SysprepOp("machine-id", "Empty /etc/machine-id so that each machine makes its own at first boot.", _machine_id),
    SysprepOp("mail-spool", "Remove mail from the local spool.", _remove("/var/spool/mail/*", "/var/mail/*")),
    SysprepOp("net-hostname", "Remove HOSTNAME and DHCP_HOSTNAME from network interface configuration.",
              _drop_lines(("/etc/sysconfig/network-scripts/ifcfg-*",), ("HOSTNAME", "DHCP_HOSTNAME"))),
    SysprepOp("net-hwaddr", "Remove HWADDR (fixed MAC address) from network interface configuration.",
              _drop_lines(("/etc/sysconfig/network-scripts/ifcfg-*", "/etc/sysconfig/network/ifcfg-*"),
                          ("HWADDR",))),
    SysprepOp("net-nmconn", "Remove NetworkManager's local connection profiles.",
              _remove("/etc/NetworkManager/system-connections/*.nmconnection")),
    SysprepOp("pacct-log", "Empty the process accounting logs.",
              _truncate("/var/account/pacct*", "/var/log/account/pacct*")),
    SysprepOp("package-manager-cache", "Remove downloaded packages and package manager caches.",
              _remove("/var/cache/apt/archives/*.deb", "/var/cache/apt/*.bin", "/var/cache/dnf/*",
                      "/var/cache/yum/*", "/var/cache/zypp/packages/*", "/var/cache/apk/*",
                      "/var/cache/pacman/pkg/*")),
    SysprepOp("pam-data", "Remove PAM's runtime data (console, faillock).",
              _remove("/var/run/console/*", "/var/run/faillock/*", "/var/run/sepermit/*")),
    SysprepOp("passwd-backups", "Remove /etc/passwd- and the other backups made by the shadow tools.",
              _remove("/etc/group-", "/etc/gshadow-", "/etc/passwd-", "/etc/shadow-", "/etc/subuid-",
                      "/etc/subgid-")),
    SysprepOp("puppet-data-log", "Remove Puppet's data and logs.",
              _remove("/var/log/puppet/*", "/var/lib/puppet/*/*")),
    SysprepOp("rh-subscription-manager", "Remove the Red Hat subscription manager files.",
              _remove("/etc/pki/consumer/*", "/etc/pki/entitlement/*")),
    SysprepOp("rhn-systemid", "Remove the RHN system id.",
              _remove("/etc/sysconfig/rhn/systemid", "/etc/sysconfig/rhn/osad-auth.conf")),
    SysprepOp("rpm-db", "Remove host-specific RPM database files (RPM makes them anew).",
              _remove("/var/lib/rpm/__db.*")),
    SysprepOp("samba-db-log", "Remove Samba's databases and logs.",
              _remove("/var/log/samba/old/*", "/var/log/samba/*", "/var/lib/samba/*/*")),
    SysprepOp("smolt-uuid", "Remove the Smolt hardware UUID.",
              _remove("/etc/sysconfig/hw-uuid", "/etc/smolt/uuid", "/etc/smolt/hw-uuid")),
    SysprepOp("ssh-hostkeys", "Remove the SSH host keys; they are made anew before sshd first starts.", _ssh_hostkeys),
    SysprepOp("ssh-userdir", "Remove the .ssh directories of root and the users in /home (not a default here).",
              _remove("/root/.ssh", "/home/*/.ssh"), default=False),
    SysprepOp("sssd-db-log", "Remove SSSD's databases and logs.", _remove("/var/log/sssd/*", "/var/lib/sss/db/*")),
    SysprepOp("tmp-files", "Remove temporary files in /tmp and /var/tmp.", _remove("/tmp/*", "/var/tmp/*")),
    SysprepOp("udev-persistent-net", "Remove udev's persistent network interface names.",
              _remove("/etc/udev/rules.d/70-persistent-net.rules")),
    SysprepOp("user-account", "Remove user accounts (uid ≥ UID_MIN) and their homes under /home.", _user_account,
              default=False),
    SysprepOp("utmp", "Remove the utmp file.", _remove("/var/run/utmp")),
    SysprepOp("yum-uuid", "Remove the yum UUID.", _remove("/var/lib/yum/uuid")),
)}


def defaults() -> list[str]:
    """The operations that run when the recipe names none."""
    return [name for name, op in OPERATIONS.items() if op.default]


def select(requested: list[str]) -> list[str]:
    """Operation names to run: defaults, plus names given, minus those written as '-name'."""
    chosen = defaults()
    for item in requested:
        name = item[1:] if item.startswith("-") else item
        if name not in OPERATIONS:
            from imagebuilder.suggest import did_you_mean

            hint = did_you_mean(name, OPERATIONS, " (see `imagebuilder ops`)")
            raise ValueError(f"'{name}' is not a sysprep operation{hint}")
        if item.startswith("-"):
            chosen = [n for n in chosen if n != name]
        elif name not in chosen:
            chosen.append(name)
    return chosen


def apply(ctx: GuestContext, names: list[str]) -> None:
    """Run the named operations in order."""
    for name in names:
        try:
            OPERATIONS[name].apply(ctx)
        except GuestError as exc:
            raise GuestError(f"sysprep operation '{name}' failed: {exc.message}") from None
