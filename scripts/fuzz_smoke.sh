#!/usr/bin/env bash
# Builds every cargo-fuzz target with libFuzzer's coverage instrumentation on the stable
# toolchain (the flags `cargo fuzz build --sanitizer none` passes; no nightly, no
# cargo-fuzz install) and fuzzes each for a short time from its committed corpus.
# Usage: scripts/fuzz_smoke.sh [SECONDS_PER_TARGET]   (default 15)
# A crash, a panic or a hang (one input past 10 s) fails the script; libFuzzer leaves
# the input in fuzz/artifacts/.
# New inputs go to a temporary folder: the committed corpus is only read.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-15}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target: the flags then apply to the targets only, not to build scripts.
cargo build --quiet --release --target "$TRIPLE" --bins
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for t in fuzz_targets/*.rs; do
  t=$(basename "$t" .rs)
  mkdir -p "$TMP/$t"
  corpus=("$TMP/$t")
  [ -d "corpus/$t" ] && corpus+=("corpus/$t")
  echo "fuzz $t: ${SECS}s"
  status=0
  # -timeout: one input running past 10 s is a hang, and fails like a crash.
  mkdir -p artifacts
  "target/$TRIPLE/release/$t" -max_total_time="$SECS" -timeout=10 -max_len=65536 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t-" \
    "${corpus[@]}" >"$TMP/$t.log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$TMP/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$TMP/$t.log" >&2
    echo "fuzz $t: failed (status $status)" >&2
    exit 1
  fi
done
