#!/usr/bin/env bash
# Installs what vmdeck needs on a Debian 12 / Ubuntu machine.
#   scripts/setup.sh          build + run dependencies (libvirt headers, pkg-config)
#   scripts/setup.sh --test   also what the test suite and benchmark use: a libvirt daemon,
#                             QEMU, headless Chromium + ChromeDriver, prometheus-libvirt-exporter,
#                             Prometheus (tests/api/metrics.rs scrapes vmdeck with it),
#                             Alertmanager and aiosmtpd (tests/api/alert_notify.rs),
#                             and cargo-deb with adduser and systemd-analyze (package systemd)
#                             for the package test (tests/package.sh).
# Idempotent: packages already present are not reinstalled. Runs apt through sudo when not root.
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pkgs=(pkg-config libvirt-dev gcc libc6-dev)
if [ "$want_test" = 1 ]; then
  pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
         chromium chromium-driver prometheus-libvirt-exporter curl procps adduser
         systemd
         # The /metrics test starts /usr/bin/prometheus itself (own config, port and data
         # directory), so whether the package's prometheus.service runs does not matter.
         prometheus
         # The notification tests (tests/api/alert_notify.rs) start their own Alertmanager
         # (own config, port, storage; no cluster) and SMTP server (aiosmtpd into a maildir).
         prometheus-alertmanager python3-aiosmtpd)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  extra=()
  # Trap seen on some images: qemu-utils from a newer release breaks qemu-system-x86 from the
  # distribution's own release. Pin qemu-utils to the release qemu-system-x86 comes from.
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]] && dpkg-query -W qemu-utils >/dev/null 2>&1; then
    sys_ver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    utils_ver=$(dpkg-query -W -f='${Version}' qemu-utils)
    if [ -n "$sys_ver" ] && [ "$sys_ver" != "$utils_ver" ] && apt-cache madison qemu-utils | grep -q " $sys_ver "; then
      extra+=(--allow-downgrades "qemu-utils=$sys_ver")
    fi
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${extra[@]}" "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup: installing the Rust toolchain with rustup (into ~/.cargo)"
  command -v curl >/dev/null 2>&1 || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq curl ca-certificates; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
fi
# cargo-deb builds the Debian package (README "Install on a server"); pinned, like Cargo.lock.
CARGO_DEB_VERSION=3.8.0
if [ "$want_test" = 1 ]; then
  # shellcheck disable=SC1091
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "setup: installing cargo-deb $CARGO_DEB_VERSION (cargo install)"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
  fi
fi
echo "setup: ok"
