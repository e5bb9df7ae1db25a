#!/usr/bin/env bash
# Prepare this Debian 12 machine for imagebuilder, as root; safe to run again.
# Installs the Debian packages, makes .venv (with Debian's guestfs and libvirt bindings),
# installs imagebuilder into it, and starts virtlogd and libvirtd when they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86 qemu-utils libguestfs-tools python3-guestfs supermin linux-image-amd64
  libvirt-daemon-system libvirt-clients python3-libvirt libxml2-utils dnsmasq-base iptables
  mmdebstrap squashfs-tools python3-venv ca-certificates ovmf gpg gpg-agent gpgconf xz-utils zstd e2fsprogs fdisk util-linux
  systemd osinfo-db skopeo
  qemu-user-static arch-test grub-common qemu-system-arm qemu-efi-aarch64  # aarch64 images
  openssh-server openssh-client docker-registry  # the tests' stand-ins: a qemu+ssh:// host, a registry
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run me as root (for example: sudo $0)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import guestfs, libvirt' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
# Reinstall when pyproject.toml changed (new dependencies), not on every run.
stamp=.venv/.pyproject.sha256
if [ "$(sha256sum pyproject.toml)" != "$(cat "$stamp" 2>/dev/null)" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  sha256sum pyproject.toml > "$stamp"
fi

# aarch64 images are bootstrapped through qemu-user: mmdebstrap needs the kernel to hand arm64 programs
# to it (binfmt_misc). systemd-binfmt or binfmt-support register it at boot; where neither runs (a
# container), register it here from the rule qemu-user-static ships.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || echo "setup: cannot mount binfmt_misc; aarch64 bootstraps will not work" >&2
fi
if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-aarch64" ]; then
  echo "setup: registering qemu-user for aarch64 programs with binfmt_misc"
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register"
fi

start_daemon() {  # name, then the command that starts it
  local name=$1; shift
  if ! pgrep -x "$name" >/dev/null; then
    echo "setup: starting $name"
    "$@"
  fi
}
start_daemon virtlogd virtlogd --daemon
start_daemon libvirtd libvirtd --daemon
for _ in $(seq 1 30); do
  virsh -q -c qemu:///system uri >/dev/null 2>&1 && break
  sleep 1
done
virsh -q -c qemu:///system uri >/dev/null || { echo "setup: libvirtd does not answer" >&2; exit 1; }
echo "setup: ready (.venv/bin/imagebuilder)"
