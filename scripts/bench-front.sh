#!/usr/bin/env bash
# Benchmark of the Clerk-compatible front, measuring the server and not the
# client: cached `GET /v1/users/{id}` on the broker's front against a bare
# HTTP/1.1 server (bench-bare-http) answering the very same bytes, each
# pinned to core 0, h2load (HTTP/1.1 mode) pinned to core 1, rounds
# alternated. Prints requests/s, mean and max latency per round, the median
# of each, and their ratio. Nothing is asserted: figures depend on the
# machine.
#
#   scripts/bench-front.sh [ROUNDS [REQUESTS [CONNECTIONS]]]    (defaults 3, 100000, 16)
#
# Installs h2load (Debian's nghttp2-client) when missing; builds the release
# binaries as shipped, profile-guided, broker and baseline alike
# (scripts/build-pgo.sh; BENCH_PGO=0 or broker as in bench-common.sh). The
# broker runs as `serve` with production defaults (logs at info,
# metrics on), in front of `clerk-broker fake-clerk`, with no policy file.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
requests=${2:-100000}
connections=${3:-16}

BENCH_BINS="clerk-broker bench-bare-http"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
id=$(curl -s -H 'Authorization: Bearer sk_test_fake' "$fake/v1/users?limit=1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

front_port=$(free_port)
CLERK_SECRET_KEY=sk_test_fake RUST_LOG=info taskset -c 0 "$bin/clerk-broker" serve \
  --clerk-api-url "$fake/v1" --listen "127.0.0.1:$(free_port)" \
  --http-listen "127.0.0.1:$(free_port)" --clerk-api-listen "127.0.0.1:$front_port" \
  --upstream-rate 1000/10s --cache-ttl 1h 2>"$work/broker.log" &
pids+=($!)
front="http://127.0.0.1:$front_port"
for _ in $(seq 100); do
  curl -s -o /dev/null "$front/v1/jwks" && break
  sleep 0.1
done
path="/v1/users/$id"
# Warm the cache, and keep the exact answer for the baseline.
curl -s -H 'Authorization: Bearer sk_test_bench' "$front$path" >"$work/body.json"
[ "$(curl -s -D - -o /dev/null -H 'Authorization: Bearer sk_test_bench' "$front$path" |
  tr -d '\r' | sed -n 's/^x-cache: //p')" = hit ] || { echo "the front did not cache the user" >&2; exit 1; }

bare_port=$(free_port)
exec 4< <(exec taskset -c 0 "$bare_bin/bench-bare-http" "127.0.0.1:$bare_port" "$work/body.json")
pids+=($!)
read -r _ <&4
baseline="http://127.0.0.1:$bare_port"

# One round: requests/s and mean/max latency (ms) of h2load against $1.
round() {
  taskset -c "$load_core" h2load --h1 -t 1 -c "$connections" -n "$requests" \
    -H 'Authorization: Bearer sk_test_bench' "$1$path" >"$work/h2load.out"
  python3 - "$work/h2load.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", text).group(1))
ok = re.search(r"(\d+) succeeded, (\d+) failed", text)
row = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
def ms(value):
    number = float(re.match(r"[\d.]+", value).group(0))
    return number / 1000 if value.endswith("us") else number * 1000 if value.endswith("s") and not value.endswith("ms") else number
print(f"{rps:.0f} {ms(row.group(3)):.3f} {ms(row.group(2)):.3f} {ok.group(1)} {ok.group(2)}")
PY
}

bytes=$(wc -c <"$work/body.json")
echo "cached GET /v1/users/{id} ($bytes bytes), h2load --h1 -c $connections -n $requests on core 1, servers on core 0"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
front_rps=()
bare_rps=()
for r in $(seq "$rounds"); do
  read -r rps mean max ok failed < <(round "$baseline")
  bare_rps+=("$rps")
  echo "round $r bare  : $rps req/s, mean ${mean} ms, max ${max} ms ($ok ok, $failed failed)"
  read -r rps mean max ok failed < <(round "$front")
  front_rps+=("$rps")
  echo "round $r front : $rps req/s, mean ${mean} ms, max ${max} ms ($ok ok, $failed failed)"
done
python3 - "${front_rps[*]}" "${bare_rps[*]}" <<'PY'
import statistics, sys
front = statistics.median(map(float, sys.argv[1].split()))
bare = statistics.median(map(float, sys.argv[2].split()))
print(f"median: front {front:.0f} req/s, bare {bare:.0f} req/s, ratio {front / bare:.2f}x")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
