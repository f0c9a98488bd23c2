#!/usr/bin/env bash
# The fault soak of issue 14 (root needed): builds m6t and m6t-lab in release and runs
# `m6t-lab soak` for MINUTES (default 30) in the lab's namespaces: m6t client and gateway,
# the DSMIPv6 mobile node registered from its m6t tunnel address, NAT rebindings every 60 s
# and between them a NAT reboot, 1 % and 10 % loss, gateway and home agent restarts, an
# IPv4 address change and a move to IPv6 and back, with a TCP transfer on the home address
# and probes on both addresses throughout. Prints a table per fault, writes
# soak-results.json and keeps the daemons' logs in soak-results.logs/. Fails only if the
# transfer's bytes differ, a daemon dies, or the probes are not answered at the end.
#
#   bash scripts/soak.sh          # 30 minutes, a fault every 30 s
#   bash scripts/soak.sh 10       # 10 minutes
#   SLOT=20 bash scripts/soak.sh 5   # 5 minutes, a fault every 20 s (each fault once)
# The CI smoke (each fault once, 12 s apart, about 2.5 minutes) is the test
# crates/m6t/tests/soak_e2e.rs, or `m6t-lab soak --smoke`.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
bash scripts/install-deps.sh
cargo build --release -p m6t -p m6t-lab
exec ./target/release/m6t-lab soak --minutes "$minutes" --slot "${SLOT:-30}" --out soak-results.json
