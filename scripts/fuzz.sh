#!/usr/bin/env bash
# Runs the cargo-fuzz targets for SECONDS each (default 60), or only the TARGETs named:
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
# Each starts from the committed seeds (fuzz/seeds/<target>, written by
# `cargo run -p m6t-proto --example fuzz_seeds -- fuzz/seeds`) and keeps what it finds in
# fuzz/corpus/<target> (not committed). Prints executions and coverage per target; stops
# with the failing input in fuzz/artifacts/<target> at the first crash or broken invariant.
# These machines have only the stable toolchain: cargo-fuzz's -Z flags need RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ipv4 ipv6 mh tlv dsmip esp ike ike_responder gateway client)
fi
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  env -u CARGO_TARGET_DIR cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
build=$(mktemp)
if ! cargo fuzz build -O >"$build" 2>&1; then
  cat "$build"
  exit 1
fi
rm -f "$build"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if ! cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" >"$log" 2>&1; then
    tail -40 "$log"
    rm -f "$log"
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  rm -f "$log"
  echo "fuzz: $t: ${runs:-?} executions in ${secs} s, ${cov:-?} edges, no finding"
done
