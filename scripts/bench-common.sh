# shellcheck shell=bash
# Shared by the benchmarks (scripts/bench-*.sh) and the profile-guided build
# (scripts/build-pgo.sh), sourced from the repository root with BENCH_BINS set
# to the binaries needed: installs h2load when missing, builds, and starts the
# fake Clerk on core 1. Sets `bin`, `work` (a temporary directory), `pids`
# (killed at exit), `fake` (the fake Clerk's base URL, without /v1) and
# `load_core`; defines `free_port`, `start_redis`, and for gRPC calls
# `grpc_requests`, `start_broker`, `start_bare` and `start_baselines`.
#
# The binaries are the release build as shipped, profile-guided
# (scripts/build-pgo.sh, into target/pgo/release), broker and baselines alike;
# BENCH_PGO=0: the plain `cargo build --release` ones (target/release), both
# alike too; BENCH_PGO=broker: the profile-guided broker against plain
# baselines (what a bare tonic server built as usual answers). A caller that
# sets `bin` itself builds its own.

if ! command -v h2load >/dev/null 2>&1; then
  echo "installing h2load (apt nghttp2-client)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nghttp2-client >/dev/null
fi
if [ -z "${bin:-}" ]; then
  if [ "${BENCH_PGO:-1}" != 0 ]; then
    scripts/build-pgo.sh
    bin=target/pgo/release
  fi
  if [ "${BENCH_PGO:-1}" != 1 ]; then
    # shellcheck disable=SC2046 # one word per binary
    cargo build --release --locked --quiet $(printf -- '--bin %s ' $BENCH_BINS)
    bin=${bin:-target/release}
    bare_bin=target/release
  fi
fi
# Where the baselines come from: with the broker, unless BENCH_PGO=broker.
bare_bin=${bare_bin:-$bin}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Servers run on core 0; load generators, the fake Clerk and Redis on core 1
# (on a single core, core 0 too: the figures then mean little, but a
# profile-guided build still trains).
load_core=1
[ "$(nproc)" -ge 2 ] || load_core=0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The fake Clerk, on core 1 (asked once per user: the benchmarks read cached
# users). A profile-collecting build's profile of it is not kept.
exec 3< <(CLERK_SECRET_KEY=sk_test_fake LLVM_PROFILE_FILE="$work/fake-%p.profraw" \
  exec taskset -c "$load_core" "$bin/clerk-broker" fake-clerk --listen 127.0.0.1:0 --users 1000)
pids+=($!)
read -r banner <&3
fake=$(sed -n 's#^fake Clerk: \(http://[^ ]*\)/v1 .*#\1#p' <<<"$banner")

# The calls measured, their paths, and the caller the broker admits them for.
declare -A paths=(
  [permit]=/clerk_broker.v1.QuotaService/AcquirePermit
  [get]=/clerk_broker.v1.UserService/GetUser
  [batch]=/clerk_broker.v1.UserService/BatchGetUsers
)
token=bench-token-0123456789abcdef
declare -A pid_of

# grpc_requests: writes $work/policy.toml (one caller, scopes read_users and
# acquire_permits), $work/users.json (the fake's first 100 users), and each
# call's request message ($work/CALL.msg, protobuf written by hand: field 1,
# length-delimited) and gRPC frame for h2load ($work/CALL.frame).
grpc_requests() {
  curl -s -H 'Authorization: Bearer sk_test_fake' "$fake/v1/users?limit=100" >"$work/users.json"
  cat >"$work/policy.toml" <<POLICY
[[callers]]
name = "bench"
token_sha256 = "$(printf %s "$token" | sha256sum | cut -d' ' -f1)"
scopes = ["read_users", "acquire_permits"]
max_in_flight = 1024
POLICY
  python3 - "$work" <<'PY'
import json, struct, sys
work = sys.argv[1]
ids = [user["id"] for user in json.load(open(f"{work}/users.json"))]
def field1(text):
    data = text.encode()
    return b"\x0a" + bytes([len(data)]) + data
messages = {
    "permit": b"",
    "get": field1(ids[0]),
    "batch": b"".join(field1(i) for i in ids[:100]),
}
for name, message in messages.items():
    open(f"{work}/{name}.msg", "wb").write(message)
    open(f"{work}/{name}.frame", "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
PY
}

# start_redis: a redis-server on core 1, without persistence; sets
# $redis_port and $redis_pid once it answers.
start_redis() {
  redis_port=$(free_port)
  taskset -c "$load_core" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
    --appendonly no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# start_broker NAME [FLAGS...]: a broker on core 0 (run under $under if set),
# with production defaults (logs at info, metrics on) and the policy of
# grpc_requests; sets $broker_NAME (its gRPC address) and $front_NAME (its
# Clerk-compatible front's base URL).
start_broker() {
  local name=$1 port front_port
  shift
  port=$(free_port)
  front_port=$(free_port)
  # shellcheck disable=SC2086 # $under: a command and its flags, or nothing
  CLERK_SECRET_KEY=sk_test_fake RUST_LOG=info taskset -c 0 ${under:-} "$bin/clerk-broker" serve \
    --clerk-api-url "$fake/v1" --listen "127.0.0.1:$port" --config "$work/policy.toml" \
    --http-listen "127.0.0.1:$(free_port)" --clerk-api-listen "127.0.0.1:$front_port" \
    --upstream-rate 1000000/1ms --cache-ttl 1h "$@" 2>"$work/broker-$name.log" &
  pids+=($!)
  pid_of["127.0.0.1:$port"]=$!
  # Up to 10 s (a minute under valgrind) to start.
  for _ in $(seq "${start_tries:-100}"); do
    "$bin/bench-bare-grpc" call "127.0.0.1:$port" "${paths[permit]}" "$work/permit.msg" \
      /dev/null "$token" >/dev/null 2>&1 && break
    sleep 0.1
  done
  printf -v "broker_$name" %s "127.0.0.1:$port"
  printf -v "front_$name" %s "http://127.0.0.1:$front_port"
}

# start_bare ANSWER_FILE [FLAGS...]: a bare server on core 0 answering the
# bytes of ANSWER_FILE; sets $bare_address.
start_bare() {
  local port fd
  port=$(free_port)
  exec {fd}< <(exec taskset -c 0 "$bare_bin/bench-bare-grpc" serve "127.0.0.1:$port" "$@")
  pids+=($!)
  pid_of["127.0.0.1:$port"]=$!
  read -r _ <&"$fd"
  bare_address="127.0.0.1:$port"
}

# start_baselines BROKER CALL...: warms BROKER's cache with each call and
# captures its answer ($work/CALL.answer); starts, per call, two bare servers
# on core 0 answering those very bytes: bare[CALL] on tokio's default runtime
# (what `#[tokio::main]` builds), bare_rt[CALL] on the broker's
# (server/runtime.rs).
declare -A bare bare_rt
start_baselines() {
  local broker=$1 call cache
  shift
  for call in "$@"; do
    for _ in 1 2; do
      cache=$("$bin/bench-bare-grpc" call "$broker" "${paths[$call]}" "$work/$call.msg" \
        "$work/$call.answer" "$token")
    done
    if [ "$call" != permit ] && [ "$cache" != hit ]; then
      echo "the broker did not cache the users of $call (x-cache: $cache)" >&2
      exit 1
    fi
    start_bare "$work/$call.answer"
    bare[$call]=$bare_address
    start_bare "$work/$call.answer" --broker-runtime
    bare_rt[$call]=$bare_address
  done
}
