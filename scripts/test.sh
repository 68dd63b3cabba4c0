#!/usr/bin/env bash
# Runs every check a change must pass: formatting, clippy, unit and
# integration tests, the end-to-end tests on real processes, and the Helm
# chart (rendered, linted and validated against the Kubernetes schemas).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

say "Checking formatting"
cargo fmt --all -- --check

# With the tests, so this and `cargo test` build one set of dependencies
# (binaries alone resolve features without dev-dependencies, a second RocksDB).
say "Building all binaries and tests (the end-to-end tests run the binaries as real processes)"
cargo build --workspace --bins --tests

say "Running clippy"
cargo clippy --workspace --all-targets -- -D warnings

say "Running unit, integration and end-to-end tests"
# A failed end-to-end test prints the servers' log tails, then its error:
# without a captured backtrace under it the error stays the last thing shown
# (panics still print theirs when RUST_BACKTRACE asks).
export RUST_LIB_BACKTRACE=0
cargo test --workspace -- --test-threads=2

say "Checking the Helm chart (Helm lint and render, Kubernetes schemas)"
scripts/check-chart.sh
