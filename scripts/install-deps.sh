#!/usr/bin/env bash
# Installs the Debian packages m6t's lab and tests need (only those missing), and checks
# that the Rust toolchain is there. Safe to run again.
set -euo pipefail
# The toolchain first: nothing is worth installing without it.
command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo not found (install Rust stable with rustup)" >&2; exit 1; }
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
have ethtool   || need+=(ethtool)
have miredo    || need+=(miredo)
have miredo-server || need+=(miredo-server)
have tshark    || need+=(tshark)
# WireGuard, the userspace tunnel the bench compares with (wg-quick.target starts nothing).
have wireguard-go || need+=(wireguard-go)
have wg        || need+=(wireguard-tools)
# IKEv2 interop (crates/ike/tests/strongswan*.rs): a real charon, run only by the tests in
# their own namespaces with their own configuration; the policy-rc.d guard below keeps any
# packaged service from starting. kernel-libipsec (libcharon-extra-plugins) gives it ESP in
# userspace, as this kernel has none.
[ -x /usr/lib/ipsec/charon ] || need+=(strongswan-charon)
have swanctl   || need+=(strongswan-swanctl)
[ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || need+=(libcharon-extra-plugins)
# The certification authority and certificates of the IKEv2 certificate tests.
have openssl   || need+=(openssl)
# Operator documents and packaging (crates/m6t/tests/docs.rs, package.rs): man page
# checkers, the shells of the completions, systemd-analyze for the units, dpkg-deb and
# dpkg-shlibdeps for the package.
have mandoc    || need+=(mandoc)
have groff     || need+=(groff-base)
have man       || need+=(man-db)
have zsh       || need+=(zsh)
have systemd-analyze || need+=(systemd)
have dpkg-shlibdeps  || need+=(dpkg-dev)
have strip     || need+=(binutils)
# Metrics (crates/m6t/tests/metrics_e2e.rs): a real Prometheus server scrapes a gateway,
# promtool checks the exposition, curl asks both.
have prometheus || need+=(prometheus)
have promtool  || need+=(prometheus)
have curl      || need+=(curl)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import scapy' >/dev/null 2>&1 || need+=(python3-scapy)
# scapy's IPsec (the peer that builds ESP for the tests) needs it.
/usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${need[*]}; run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  # Nothing we install may start a daemon (miredo's packaged service would contact a
  # public Teredo server): refuse every service start during the install.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
  [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
fi
# Teredo: the bench runs miredo with its own lab-only configuration. When this script
# installed it, make sure the packaged service never starts and the packaged configuration
# names no public server (an existing installation of the user's is left alone).
if [[ " ${need[*]} " == *" miredo "* ]]; then
  if [ -f /etc/miredo/miredo.conf ]; then
    sed -i 's/^ServerAddress/#ServerAddress/' /etc/miredo/miredo.conf
  fi
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now miredo >/dev/null 2>&1 || true
  fi
fi
# Prometheus: the metrics test runs its own server in a namespace with a lab-only
# configuration; the packaged service (scraping this host) stays off when we installed it.
if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
true
# cargo-deb builds the Debian package (packaging/build-deb.sh); pinned, from crates.io.
CARGO_DEB_VERSION=3.6.2
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "install-deps: installing cargo-deb $CARGO_DEB_VERSION (about 2 minutes)" >&2
  env -u CARGO_TARGET_DIR cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
