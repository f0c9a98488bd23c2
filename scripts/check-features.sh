#!/usr/bin/env bash
# Fails when building the tests would turn on dependency features that the daemons' build
# (`cargo build -p m6t -p m6t-lab`, scripts/lab.sh) does not: cargo would then compile those
# crates, and everything above them, twice, and scripts/test.sh would rebuild most of what
# scripts/lab.sh built. The fix is to ask for the same features in crates/workspace-hack.
set -euo pipefail
cd "$(dirname "$0")/.."
# join(1) needs its inputs sorted the way it compares.
export LC_ALL=C
# One line per crate: name@version and its features, as cargo resolves them for each build.
features() { cargo tree "$@" -f '{p}|{f}' --prefix none | sed 's/ (\*)$//; s/ (proc-macro)//' | awk -F'|' '{split($1, a, " "); print a[1] "@" a[2] " " $2}' | sort -u; }
daemons=$(features -p m6t -p m6t-lab -e normal,build)
tests=$(features --workspace -e normal,build,dev)
# Crates in both whose features differ.
drift=$(join <(echo "$daemons") <(echo "$tests") | awk 'NF == 3 && $2 != $3 { print "  " $1 ": daemons [" $2 "], tests [" $3 "]" } NF == 2 { print "  " $0 " (features in one build only)" }')
if [ -n "$drift" ]; then
  echo "check-features: building the tests changes these crates' features; add them to crates/workspace-hack/Cargo.toml:" >&2
  echo "$drift" >&2
  exit 1
fi
echo "check-features: the daemons' build and the tests' build share every crate"
