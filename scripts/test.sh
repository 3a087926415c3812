#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, all tests (against a real
# redis-server, installed with apt-get when missing) and the docs.
#
# On a fresh Debian/Ubuntu machine run `apt-get update` once first.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-cli (redis-tools) forms and reshards the test clusters (tests/cluster.rs).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "== installing redis-server and redis-tools with apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  # A fresh machine has no package lists yet.
  if ! apt-cache policy redis-server 2>/dev/null | grep -q Candidate; then
    $sudo apt-get update -qq
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools
fi
redis-server --version
redis-cli --version

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings
# The crate must also build, lint clean, without the default `tls` feature.
cargo clippy --all-targets --no-default-features -- -D warnings
echo "== cargo test"
cargo test --all-features
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features
echo "== all checks passed"
