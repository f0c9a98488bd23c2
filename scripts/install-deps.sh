#!/usr/bin/env bash
# Installs the Debian packages m6t's lab and tests need (only those missing), and checks
# that the Rust toolchain is there. Safe to run again.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have ip        || need+=(iproute2)
have nft       || need+=(nftables)
have conntrack || need+=(conntrack)
have ping      || need+=(iputils-ping)
have iperf3    || need+=(iperf3)
have tcpdump   || need+=(tcpdump)
have setpriv   || need+=(util-linux)
have unshare   || need+=(util-linux)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${need[*]}; run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo not found (install Rust stable with rustup)" >&2; exit 1; }
