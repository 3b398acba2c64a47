#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time, from a fresh copy
# of its committed seed corpus (fuzz/corpus/<target>/, left unchanged).
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_TARGETS  space-separated targets (default: all, `cargo fuzz list`)
# Installs cargo-fuzz if missing. Builds with the stable toolchain
# (RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz passes), without a
# sanitizer (the crates forbid unsafe code) and with debug assertions and
# overflow checks on. A crash, a failed assertion or an input running over
# 10 s fails the script; the reproducer's path is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --debug-assertions --codegen-units 16)

cd fuzz
cargo fuzz build "${flags[@]}"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
failed=()
for target in $targets; do
  work="work/$target"
  rm -rf "$work" && mkdir -p "$work" "artifacts/$target"
  cp corpus/"$target"/* "$work"/
  echo "== fuzzing $target for ${seconds}s (seeds: $(ls corpus/"$target" | wc -l))"
  before="$(ls "artifacts/$target" | wc -l)"
  if ! cargo fuzz run "${flags[@]}" "$target" "$work" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>"work/$target.log"; then
    tail -n 60 "work/$target.log"
    failed+=("$target")
  else
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "work/$target.log" || true
    echo "   corpus grew to $(ls "$work" | wc -l) inputs"
  fi
  [ "$(ls "artifacts/$target" | wc -l)" = "$before" ] || failed+=("$target")
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "FUZZING FAILED: ${failed[*]}"
  for target in $(printf '%s\n' "${failed[@]}" | sort -u); do
    for artifact in "artifacts/$target"/*; do
      echo "  reproducer: fuzz/$artifact  (RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target $artifact)"
    done
  done
  exit 1
fi
echo "fuzzing: no failure in ${seconds}s per target"
