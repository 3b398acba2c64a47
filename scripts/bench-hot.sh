#!/usr/bin/env bash
# Benchmark of the broker's hot paths, measuring the server and not the
# client: each call against a bare tonic server (bench-bare-grpc) answering
# the very same message bytes from memory, servers pinned to core 0, h2load
# pinned to core 1, rounds alternated:
#   - AcquirePermit (ample budget, empty request);
#   - GetUser, a cache hit;
#   - BatchGetUsers of 100 cached ids.
# Two baselines per call: the bare server on tokio's default runtime (what
# `#[tokio::main]` builds: the bare tonic server the targets are set
# against), and the same server on the broker's runtime (server/runtime.rs:
# the scheduler's LIFO slot off, which writes answers together), so that the
# broker's own cost shows apart from its runtime's.
# Per call and round: RPC/s, p50/p99 latency at saturation, and the server's
# CPU time per call (user + system, from /proc: unlike RPC/s, barely moved by
# other work on a busy machine); then, at half each baseline's saturation
# rate, p99 of it and of the broker. Prints the medians and ratios. Nothing
# is asserted: figures depend on the machine.
#
#   scripts/bench-hot.sh [ROUNDS [REQUESTS]]     (defaults 3, 100000; a tenth for batches)
#   BENCH_CALLS="permit get batch" (default: all three; pick some)
#   BENCH_REDIS=1: also AcquirePermit with the budget in Redis, against the
#                  in-memory budget (needs redis-server; Redis on core 1), and
#                  Redis's CPU and round trips per permit over one more run
#   BENCH_TRACING=1: also AcquirePermit and GetUser on a broker exporting
#                  traces (OTLP to a sink on core 1, 1 % of calls sampled),
#                  against the broker with tracing off
#   BENCH_INSTRUCTIONS=1: also each call's user-space instructions per call,
#                  broker and baseline each run under callgrind (installs
#                  valgrind if missing): deterministic, so a change's effect
#                  shows even when the machine's noise hides it in RPC/s
#                  (kernel time, cache misses and SHA extensions are not in
#                  it: valgrind hashes tokens in software)
#
# Installs h2load (Debian's nghttp2-client) when missing; builds the release
# binaries as shipped, profile-guided (scripts/build-pgo.sh: broker and
# baselines alike; BENCH_PGO=0 for plain `cargo build --release` ones, both
# sides too). The broker runs as `serve` with production defaults (logs at info,
# metrics on) and a policy with one caller (scopes read_users and
# acquire_permits), in front of `clerk-broker fake-clerk`.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
requests=${2:-100000}
calls=${BENCH_CALLS:-permit get batch}
# h2load: 4 connections, 32 concurrent streams each, one thread.
load=(-t 1 -c 4 -m 32)

BENCH_BINS="clerk-broker bench-bare-grpc"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
grpc_requests
start_broker memory
broker=$broker_memory
# shellcheck disable=SC2086 # one word per call
start_baselines "$broker" $calls

# CPU ticks (user + system) the process $1 has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run TARGET CALL N [RPS_PER_CONNECTION]:
# prints "rps p50_ms p99_ms ok failed cpu_us_per_call".
run() {
  local rate=() before
  [ -n "${4:-}" ] && rate=(--rps "$4")
  before=$(ticks "${pid_of[$1]}")
  taskset -c "$load_core" h2load "${load[@]}" "${rate[@]}" -n "$3" -d "$work/$2.frame" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "authorization: Bearer $token" --log-file "$work/h2load.log" \
    "http://$1${paths[$2]}" >"$work/h2load.out"
  python3 - "$work/h2load.out" "$work/h2load.log" "$(($(ticks "${pid_of[$1]}") - before))" \
    "$(getconf CLK_TCK)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", text).group(1))
ok = re.search(r"(\d+) succeeded, (\d+) failed", text)
latencies = sorted(int(line.split("\t")[2]) for line in open(sys.argv[2]) if line.strip())
def pct(p):
    return latencies[min(len(latencies) - 1, int(len(latencies) * p))] / 1000
cpu_us = int(sys.argv[3]) / int(sys.argv[4]) * 1e6 / max(1, int(ok.group(1)))
print(f"{rps:.0f} {pct(0.50):.3f} {pct(0.99):.3f} {ok.group(1)} {ok.group(2)} {cpu_us:.1f}")
PY
}

# median LIST...
median() { python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }

summary=()
# ratios BASELINE_FIGURES... -- TARGET_FIGURES...: each round's ratio (its
# runs are seconds apart, so a slow change in the machine's load moves both)
# and their median.
ratios() {
  python3 -c 'import statistics, sys
i = sys.argv.index("--")
r = [float(t) / float(b) for b, t in zip(sys.argv[1:i], sys.argv[i + 1:])]
print(" ".join(f"{x:.2f}" for x in r), f"(median {statistics.median(r):.2f}x)")' "$@"
}

# compare LABEL TARGET BASELINE CALL [BASELINE_ON_THE_BROKERS_RUNTIME]:
# rounds alternated, then each server at half its baseline's saturation rate.
compare() {
  local label=$1 target=$2 base=$3 call=$4 base_rt=${5:-} r rps p50 p99 ok failed cpu
  local b_rps=() b_cpu=() t_rps=() t_cpu=() rt_rps=() rt_cpu=()
  # A batch answer is 100 users: a tenth of the calls.
  local n=$requests
  [ "$call" = batch ] && n=$((requests / 10))
  echo "$label (${paths[$call]}, $(wc -c <"$work/$call.answer") answer bytes)"
  for r in $(seq "$rounds"); do
    read -r rps p50 p99 ok failed cpu < <(run "$base" "$call" "$n")
    b_rps+=("$rps"); b_cpu+=("$cpu")
    echo "  round $r baseline: $rps RPC/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/call ($ok ok, $failed failed)"
    read -r rps p50 p99 ok failed cpu < <(run "$target" "$call" "$n")
    t_rps+=("$rps"); t_cpu+=("$cpu")
    echo "  round $r broker  : $rps RPC/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/call ($ok ok, $failed failed)"
    if [ -n "$base_rt" ]; then
      read -r rps p50 p99 ok failed cpu < <(run "$base_rt" "$call" "$n")
      rt_rps+=("$rps"); rt_cpu+=("$cpu")
      echo "  round $r baseline on the broker's runtime: $rps RPC/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/call ($ok ok, $failed failed)"
    fi
  done
  local target_rps target_cpu
  target_rps=$(median "${t_rps[@]}")
  target_cpu=$(median "${t_cpu[@]}")
  report "$label" "$base" "${b_rps[*]}" "${b_cpu[*]}"
  if [ -n "$base_rt" ]; then
    report "$label, against the baseline on the broker's runtime" "$base_rt" \
      "${rt_rps[*]}" "${rt_cpu[*]}"
  fi
}

# report LABEL BASELINE "BASELINE_RPS..." "BASELINE_CPU...": prints and keeps
# one summary line: the broker's medians ($target_rps, $target_cpu, per round
# ${t_rps[@]}, of the calling compare) against the baseline's, and both at
# half the baseline's saturation rate (about 5 s, at least 1,000 calls).
report() {
  local label=$1 base=$2 base_rps base_cpu half n hb99 ht99 line
  # shellcheck disable=SC2086 # one word per round
  base_rps=$(median $3)
  # shellcheck disable=SC2086
  base_cpu=$(median $4)
  half=$(python3 -c "print(max(1, int($base_rps / 2 / 4)))")
  n=$(python3 -c "print(max(1000, int($base_rps / 2 * 5)))")
  read -r _ _ hb99 _ _ _ < <(run "$base" "$call" "$n" "$half")
  read -r _ _ ht99 _ _ _ < <(run "$target" "$call" "$n" "$half")
  # shellcheck disable=SC2086
  line=$(python3 - "$label" "$target_rps" "$base_rps" "$(ratios $3 -- "${t_rps[@]}")" \
    "$target_cpu" "$base_cpu" "$((half * 4))" "$ht99" "$hb99" <<'PY'
import sys
label, per_round, rate = sys.argv[1], sys.argv[4], sys.argv[7]
t_rps, b_rps, t_cpu, b_cpu, t99, b99 = (float(sys.argv[i]) for i in (2, 3, 5, 6, 8, 9))
print(f"{label}: broker {t_rps:.0f} RPC/s vs baseline {b_rps:.0f} = {t_rps / b_rps:.2f}x "
      f"(per round: {per_round}); CPU/call {t_cpu} vs {b_cpu} us = "
      f"{b_cpu / max(t_cpu, 0.001):.2f}x; p99 at half rate ({rate} RPC/s) {t99} vs {b99} ms = "
      f"{t99 / max(b99, 0.001):.2f}x")
PY
)
  echo "  $line"
  summary+=("$line")
}

echo "servers on core 0, h2load ${load[*]} -n $requests on core 1, $rounds rounds"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for call in $calls; do
  case $call in
    permit) compare "AcquirePermit" "$broker" "${bare[permit]}" permit "${bare_rt[permit]}" ;;
    get) compare "GetUser (hit)" "$broker" "${bare[get]}" get "${bare_rt[get]}" ;;
    batch) compare "BatchGetUsers (100 hits)" "$broker" "${bare[batch]}" batch "${bare_rt[batch]}" ;;
  esac
done

if [ "${BENCH_REDIS:-0}" = 1 ]; then
  start_redis
  start_broker redis --redis-url "redis://127.0.0.1:$redis_port"
  compare "AcquirePermit, budget in Redis vs in memory" "$broker_redis" "$broker" permit
  # Redis's own work per permit over one more run: CPU and lease round trips.
  round_trips() {
    redis-cli -p "$redis_port" info commandstats |
      sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'
  }
  before=$(ticks "$redis_pid")
  trips=$(round_trips)
  read -r rps _ _ ok _ _ < <(run "$broker_redis" permit "$requests")
  line=$(python3 -c "print(f'AcquirePermit, budget in Redis: Redis CPU \
{($(ticks "$redis_pid") - $before) / $(getconf CLK_TCK) * 1e6 / max(1, $ok):.2f} us and \
{($(round_trips) - ${trips:-0}) / max(1, $ok):.4f} round trips per permit ($ok permits, $rps RPC/s)')")
  echo "  $line"
  summary+=("$line")
fi

if [ "${BENCH_TRACING:-0}" = 1 ]; then
  # The collector: a bare server answering every export with an empty message.
  sink_port=$(free_port)
  exec {sink_fd}< <(exec taskset -c "$load_core" "$bin/bench-bare-grpc" serve "127.0.0.1:$sink_port" /dev/null)
  pids+=($!)
  read -r _ <&"$sink_fd"
  OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 \
    start_broker tracing --otlp-endpoint "http://127.0.0.1:$sink_port"
  for call in permit get; do
    "$bin/bench-bare-grpc" call "$broker_tracing" "${paths[$call]}" "$work/$call.msg" \
      /dev/null "$token" >/dev/null
    compare "$call, tracing on (1 % sampled) vs off" "$broker_tracing" "$broker" "$call"
  done
fi

if [ "${BENCH_INSTRUCTIONS:-0}" = 1 ]; then
  if ! command -v valgrind >/dev/null 2>&1; then
    echo "installing valgrind (apt valgrind)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
  fi
  # instructions ADDRESS CALL N: instructions per call of the server at
  # ADDRESS (under callgrind) over N calls, after N warm-up calls.
  instructions() {
    local pid=${pid_of[$1]}
    run "$1" "$2" "$3" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    run "$1" "$2" "$3" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    # The second dump holds the measured calls only (a dump zeroes).
    for _ in $(seq 50); do
      [ "$(find "$work" -name "cg.$pid.*" | wc -l)" -ge 2 ] && break
      sleep 0.2
    done
    python3 - "$3" $(ls -v "$work"/cg."$pid".*) <<'PY'
import sys
n, dumps = int(sys.argv[1]), sys.argv[2:]
totals = [l for l in open(dumps[-1]) if l.startswith("totals:")]
print(f"{int(totals[0].split()[1]) / n:.0f}")
PY
  }
  cg=(valgrind --tool=callgrind "--callgrind-out-file=$work/cg.%p")
  under="${cg[*]}" start_tries=600 start_broker instructions
  for call in $calls; do
    n=2000
    [ "$call" = batch ] && n=500
    "$bin/bench-bare-grpc" call "$broker_instructions" "${paths[$call]}" "$work/$call.msg" \
      /dev/null "$token" >/dev/null
    port=$(free_port)
    exec {fd}< <(exec taskset -c 0 "${cg[@]}" "$bare_bin/bench-bare-grpc" serve "127.0.0.1:$port" \
      "$work/$call.answer" 2>/dev/null)
    pids+=($!)
    pid_of["127.0.0.1:$port"]=$!
    read -r _ <&"$fd"
    t=$(instructions "$broker_instructions" "$call" "$n")
    b=$(instructions "127.0.0.1:$port" "$call" "$n")
    kill "${pid_of[127.0.0.1:$port]}" 2>/dev/null || true
    line=$(python3 -c "print(f'$call, instructions per call (callgrind): broker $t vs baseline $b = {$b / $t:.2f}x')")
    echo "  $line"
    summary+=("$line")
  done
fi

echo "summary (medians of $rounds rounds; load average now $(cut -d' ' -f1-3 /proc/loadavg)):"
for line in "${summary[@]}"; do echo "  $line"; done
