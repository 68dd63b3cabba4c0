#!/usr/bin/env bash
# Installs what building Shale needs on Debian/Ubuntu: a C/C++ toolchain and
# libclang (RocksDB is C++ and its Rust bindings are generated with bindgen),
# python3-venv (the Helm chart check), nftables (network partitions in the
# chaos test), and a Rust toolchain if none is present. Safe to run
# repeatedly.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_pkgs=()
for pkg in build-essential clang libclang-dev pkg-config python3-venv nftables; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "Installing system packages: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
else
  say "System packages already installed (build-essential, clang, libclang-dev, pkg-config, python3-venv, nftables)"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  say "Installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  . "$HOME/.cargo/env"
fi
say "Using $(cargo --version)"

# Builds are large (RocksDB alone takes minutes): keep them outside the work tree
# so every checkout and CI run reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shale-target}"
say "Cargo target directory: $CARGO_TARGET_DIR"

# Cargo never removes stale artifacts, and every checkout path, profile or
# dependency change adds a full set: a target directory on a nearly full disk
# is emptied (the next build starts cold) rather than failing halfway.
min_free_gib="${SHALE_MIN_FREE_GIB:-25}"
mkdir -p "$CARGO_TARGET_DIR"
free_gib=$(( $(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
if [ "$free_gib" -lt "$min_free_gib" ]; then
  say "Only ${free_gib} GiB free on the disk of $CARGO_TARGET_DIR (want ${min_free_gib}): emptying it, the build starts cold"
  rm -rf "${CARGO_TARGET_DIR:?}"/debug "${CARGO_TARGET_DIR:?}"/release
fi
