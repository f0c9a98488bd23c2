#!/usr/bin/env bash
# The whole test suite: unit and property tests of the wire formats, virtual-time tests
# of the machines, and end-to-end tests in network namespaces (root needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the end-to-end tests build network namespaces: run as root" >&2
  exit 1
fi
# The tests' build reuses what scripts/lab.sh built (same features for every crate).
bash scripts/check-features.sh
cargo test --workspace --release
# Fuzzing smoke: every cargo-fuzz target for 5 s from the committed seeds (a longer run is
# `bash scripts/fuzz.sh SECONDS`).
bash scripts/fuzz.sh 5
