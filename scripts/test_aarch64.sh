#!/usr/bin/env bash
# Cross-builds the ISP library's tests for aarch64 and runs them under qemu-user, so the
# NEON paths that `pulp` dispatches to on ARM are compiled and checked against the same
# golden digests and oracles as on x86-64 (bit for bit where the tests demand it).
# Installs what it needs: the Rust aarch64 standard library (rustup), Debian's
# aarch64 cross linker and qemu-user.
# Usage: scripts/test_aarch64.sh [extra cargo test args, e.g. --tests]
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
need=""
command -v aarch64-linux-gnu-gcc >/dev/null || need="$need gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
command -v qemu-aarch64 >/dev/null || need="$need qemu-user"
if [ -n "$need" ]; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq $need >/dev/null
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# A target directory of its own, so the host build is not invalidated.
cargo test --release -p rawlink-isp --lib --target "$TARGET" --target-dir target/aarch64 "$@"
