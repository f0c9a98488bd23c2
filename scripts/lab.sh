#!/usr/bin/env bash
# Installs what the lab needs, builds m6t and runs `m6t lab` (root needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
exec ./target/release/m6t lab
