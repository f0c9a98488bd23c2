#!/usr/bin/env bash
# Installs what the lab needs, builds m6t and m6t-lab (`m6t lab` execs it) and runs
# `m6t lab` (root needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Cargo's progress shows: a first build takes a few minutes.
cargo build --release -p m6t -p m6t-lab
exec ./target/release/m6t lab
