#!/usr/bin/env bash
# Soak run of the history checker (tests/guarantees.rs) alone: 16 threads on
# one client against a faulty AOF primary and a secondary, every operation
# checked afterwards. Release mode, with the summary printed.
#
#   scripts/soak.sh [SECONDS] [SEED]
#
# SECONDS: workload time of the two fallback variants together (default 300);
# each variant, the automatic pipelining one too, runs half of it.
# SEED: decimal or 0x-hex (default: random; the run prints it, so a failing
# run can be repeated with the same fault schedule and operation mix).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
seed="${2:-0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')}"
echo "== soak: ${seconds} s, GUARANTEES_SEED=${seed}"
GUARANTEES_SECONDS="$seconds" GUARANTEES_SEED="$seed" \
  cargo test --release --test guarantees guarantees_hold -- --nocapture --test-threads 1
