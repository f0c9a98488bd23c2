#!/usr/bin/env bash
# Builds the Debian package of m6t with cargo-deb and prints its path: the binaries m6t and
# m6t-lab, the systemd units, the man pages and bash/zsh completions (written here by
# `m6t generate-docs`), the commented configurations for /etc/m6t and the README, as listed
# in [package.metadata.deb] of crates/m6t/Cargo.toml.
#
#   bash packaging/build-deb.sh              # cargo build --release, then package
#   bash packaging/build-deb.sh --no-build   # package the release binaries already built
#
# cargo-deb comes from scripts/install-deps.sh (or: cargo install --locked cargo-deb).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" != --no-build ]; then
    cargo build --release -p m6t -p m6t-lab
fi
for b in m6t m6t-lab; do
    if [ ! -x "$target/release/$b" ]; then
        echo "build-deb: $target/release/$b missing (cargo build --release -p m6t -p m6t-lab)" >&2
        exit 1
    fi
done
command -v cargo-deb >/dev/null || { echo "build-deb: cargo-deb missing (bash scripts/install-deps.sh)" >&2; exit 1; }
# The same bytes from the same commit: man page dates and file times from the commit.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
docs="$target/release/m6t-docs"
rm -rf "$docs"
"$target/release/m6t" generate-docs --out "$docs" >/dev/null
# Debian policy wants man pages compressed; cargo-deb leaves files from target/ as they are.
gzip -9n "$docs"/man1/*.1 "$docs"/man5/*.5
mkdir -p "$target/debian"
# Stripped: the release profile keeps line tables for perf, which users need not download.
cargo deb -p m6t --no-build --strip --output "$target/debian/" | tail -n 1
