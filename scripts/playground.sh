#!/usr/bin/env bash
# Builds Shale and runs a local playground cluster (placement + a storage node
# on loopback) until Ctrl-C. Extra arguments go to `shale playground`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

say "Building shale (release; the first build compiles RocksDB and takes a while)"
cargo build --release -p shale-cli --bin shale
say "Starting the playground"
exec "$CARGO_TARGET_DIR/release/shale" playground "$@"
