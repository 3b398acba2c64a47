#!/usr/bin/env bash
# The release build as shipped: profile-guided (PGO). Builds the broker and
# the benchmarks' bare baselines with LLVM's instrumentation, runs them
# through a training load (the calls the broker exists to serve, on the fake
# Clerk), and builds them again with what the load measured: hot code laid
# out together, branches and inlining as the load took them. The broker's
# hot paths spread over a large program (14 MB of code against the bare
# baseline's 2.5 MB), so where its instructions per call are within 5–15 %
# of the baseline's, its time per call was 1.3–1.5× for want of instruction
# cache; the profile-guided layout gives most of that back (README,
# Performance).
#
#   scripts/build-pgo.sh      -> target/pgo/release/{clerk-broker,bench-bare-grpc,bench-bare-http}
#
# Does nothing when those are newer than every source (PGO_FORCE=1: build
# anyway).
#
# Training (about a minute): `AcquirePermit` (budget in memory, and in
# Redis), cached `GetUser` and `BatchGetUsers` of 100 ids (after their
# misses) on the broker and on bench-bare-grpc answering the same bytes; the
# front's cached
# `GET /v1/users/{id}` on the broker and on bench-bare-http. Code the load
# does not run (upstream errors, webhooks, exports) is built for size, as
# cold. Two release builds on top of the training: about 10 minutes on two
# cores, each in its own target directory (target/pgo-train, target/pgo),
# rebuilt incrementally afterwards.
#
# Needs llvm-profdata of the compiler's LLVM version: takes rustup's
# llvm-tools or Debian's llvm-N if present, else installs llvm-N with apt
# (or the llvm-tools component with rustup). Installs h2load like the
# benchmarks, and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

bins=(clerk-broker bench-bare-grpc bench-bare-http)
# up_to_date: every binary is newer than every source it is built from.
up_to_date() {
  local name
  for name in "${bins[@]}"; do
    [ -x "target/pgo/release/$name" ] || return 1
    [ -z "$(find server proto client build.rs Cargo.toml Cargo.lock .cargo scripts/build-pgo.sh \
      scripts/bench-common.sh -newer "target/pgo/release/$name" -print -quit)" ] || return 1
  done
}
if [ "${PGO_FORCE:-0}" != 1 ] && up_to_date; then
  echo "profile-guided binaries up to date: target/pgo/release (PGO_FORCE=1 rebuilds)"
  exit 0
fi

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
# find_profdata: prints an llvm-profdata of LLVM $llvm, if one is installed.
find_profdata() {
  local candidate
  for candidate in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
    "$(command -v "llvm-profdata-$llvm" || true)" "$(command -v llvm-profdata || true)"; do
    if [ -x "$candidate" ] && "$candidate" --version | grep -q "LLVM version $llvm\."; then
      echo "$candidate"
      return
    fi
  done
}
profdata=$(find_profdata)
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt redis-server), for the shared budget's training"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if [ -z "$profdata" ]; then
  echo "installing llvm-profdata for LLVM $llvm (apt llvm-$llvm, else rustup llvm-tools)"
  if ! { command -v apt-get >/dev/null && $SUDO apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "llvm-$llvm" >/dev/null; }; then
    rustup component add llvm-tools
  fi
  profdata=$(find_profdata)
  [ -n "$profdata" ] || { echo "no llvm-profdata for LLVM $llvm" >&2; exit 1; }
fi

bin_flags=()
for name in "${bins[@]}"; do bin_flags+=(--bin "$name"); done
# A RUSTFLAGS variable replaces .cargo/config.toml's flags: repeat them.
config_flags="--cfg tokio_unstable"
raw=$PWD/target/pgo-train/profiles
rm -rf "$raw"
mkdir -p "$raw" target/pgo
echo "building instrumented binaries (target/pgo-train)"
CARGO_TARGET_DIR=target/pgo-train RUSTFLAGS="$config_flags -Cprofile-generate=$raw ${RUSTFLAGS:-}" \
  cargo build --release --locked --quiet "${bin_flags[@]}"

echo "training"
(
  bin=target/pgo-train/release
  BENCH_BINS="${bins[*]}"
  # shellcheck source=scripts/bench-common.sh
  source scripts/bench-common.sh
  grpc_requests
  start_broker training
  start_baselines "$broker_training" permit get batch
  # drive ADDRESS CALL N: N calls, as the benchmark makes them.
  drive() {
    taskset -c "$load_core" h2load -t 1 -c 4 -m 32 -n "$3" -d "$work/$2.frame" \
      -H 'content-type: application/grpc' -H 'te: trailers' \
      -H "authorization: Bearer $token" "http://$1${paths[$2]}" | grep -E '^requests:'
  }
  # The budget shared through Redis, as replicas keep it.
  start_redis
  start_broker redis --redis-url "redis://127.0.0.1:$redis_port"
  drive "$broker_redis" permit 50000
  for call in permit get batch; do
    n=100000
    [ "$call" = batch ] && n=10000
    drive "$broker_training" "$call" "$n"
    drive "${bare[$call]}" "$call" "$n"
    drive "${bare_rt[$call]}" "$call" "$((n / 2))"
  done
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$work/users.json")
  curl -sf -H "Authorization: Bearer $token" "$front_training/v1/users/$id" >"$work/body.json"
  port=$(free_port)
  exec {http}< <(exec taskset -c 0 "$bin/bench-bare-http" "127.0.0.1:$port" "$work/body.json")
  pids+=($!)
  read -r _ <&"$http"
  for base in "$front_training" "http://127.0.0.1:$port"; do
    taskset -c "$load_core" h2load --h1 -t 1 -c 16 -n 30000 -H "Authorization: Bearer $token" \
      "$base/v1/users/$id" | grep -E '^requests:'
  done
  # Each server writes its profile as it exits: stop them and wait.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
)

"$profdata" merge -o target/pgo/merged.profdata "$raw"/*.profraw
echo "building with the profile (target/pgo)"
CARGO_TARGET_DIR=target/pgo \
  RUSTFLAGS="$config_flags -Cprofile-use=$PWD/target/pgo/merged.profdata ${RUSTFLAGS:-}" \
  cargo build --release --locked --quiet "${bin_flags[@]}"
echo "profile-guided binaries: target/pgo/release/{$(IFS=,; echo "${bins[*]}")}"
