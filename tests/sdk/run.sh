#!/usr/bin/env bash
# Clerk's official SDKs (Node @clerk/backend, Python clerk-backend-api) against a
# Clerk-compatible Backend API; see tests/sdk/README.md.
#
#   tests/sdk/run.sh BASE_URL [KEY [EXPECT_URL [EXPECT_KEY]]]
#   tests/sdk/run.sh --fake
#   tests/sdk/run.sh --broker
#
# BASE_URL is what the SDKs are pointed at, without /v1 (the fake Clerk, or the broker's front);
# KEY the secret key they send (default sk_test_fake). EXPECT_URL and EXPECT_KEY say where the
# suites read what the fake holds with plain HTTP (default: BASE_URL and KEY), so that behind
# the broker the expectations still come from the fake itself. Fixture ids can be given with
# SDK_USER_IDS, SDK_WRITE_USER, SDK_PYTHON_WRITE_USER and SDK_ORG_ID (default: discovered).
#
# --fake starts `clerk-broker fake-clerk` (debug build, 500 users, a free loopback port; or the
# binary in CLERK_BROKER_BIN), runs both suites against it and stops it.
# --broker also starts `clerk-broker serve` in front of that fake (a policy with two caller
# tokens), points the SDKs at its Clerk-compatible front with expectations from the fake, and
# runs node/broker.test.mjs too: what the front promises, checked through @clerk/backend.
#
# Installs what is missing first: tests/sdk/node's npm packages (npm ci, from the lock file) and
# a virtualenv .venv-sdk/ with tests/sdk/python/requirements.txt (pinned).
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
}
[ $# -ge 1 ] || usage

fake_pid=
broker_pid=
work=
cleanup() {
  for pid in $broker_pid $fake_pid; do
    kill "$pid" 2>/dev/null || true
  done
  [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT

mode=$1
if [ "$mode" = "--fake" ] || [ "$mode" = "--broker" ]; then
  if [ -z "${CLERK_BROKER_BIN:-}" ]; then
    cargo build --locked --quiet --bin clerk-broker
    target=$(cargo metadata --format-version 1 --no-deps |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    CLERK_BROKER_BIN=$target/debug/clerk-broker
  fi
  # The fake prints its address once its listener is bound: read that line, no polling.
  exec 3< <(CLERK_SECRET_KEY=sk_test_fake exec "$CLERK_BROKER_BIN" fake-clerk \
    --listen 127.0.0.1:0 --users 500)
  fake_pid=$!
  read -r banner <&3
  base=$(sed -n 's#^fake Clerk: \(http://[^ ]*\)/v1 .*#\1#p' <<<"$banner")
  if [ -z "$base" ]; then
    echo "the fake did not announce its address: $banner" >&2
    exit 1
  fi
  set -- "$base" sk_test_fake
fi

if [ "$mode" = "--broker" ]; then
  work=$(mktemp -d)
  trusted="sk_live_sdk_trusted_$(openssl rand -hex 12)"
  reader="sk_live_sdk_reader_$(openssl rand -hex 12)"
  hash() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
  cat >"$work/policy.toml" <<POLICY
[[callers]]
name = "sdk-trusted"
token_sha256 = "$(hash "$trusted")"
scopes = ["read_users", "read_private_metadata", "write_users"]
routes = ["* /v1/organizations/**", "POST /v1/invitations"]

[[callers]]
name = "sdk-reader"
token_sha256 = "$(hash "$reader")"
scopes = ["read_users"]
POLICY
  read -r grpc_port http_port front_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
  # A 2 s default deadline: beyond Clerk's per-user write limit, writes are refused at once.
  # A 250 ms batch window: one Node process needs tens of milliseconds to send 200 requests,
  # and a debug broker on a loaded machine reads them slowly too (a batch still leaves at once
  # when it holds 100 ids); the default 5 ms suits callers spread over many processes.
  CLERK_SECRET_KEY=sk_test_fake "$CLERK_BROKER_BIN" serve --clerk-api-url "$base/v1" \
    --listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$http_port" \
    --clerk-api-listen "127.0.0.1:$front_port" --config "$work/policy.toml" \
    --upstream-rate 1000/10s --clerk-api-timeout 2s --batch-window 250ms 2>"$work/broker.log" &
  broker_pid=$!
  front="http://127.0.0.1:$front_port"
  for _ in $(seq 100); do
    curl -s -o /dev/null "$front/v1/jwks" && break
    sleep 0.2
  done
  curl -s -o /dev/null "$front/v1/jwks" || { cat "$work/broker.log" >&2; exit 1; }
  export SDK_READER_KEY=$reader
  export SDK_BROKER_METRICS="http://127.0.0.1:$http_port/metrics"
  export SDK_BROKER_GRPC="127.0.0.1:$grpc_port"
  set -- "$front" "$trusted" "$base" sk_test_fake
fi

export CLERK_API_URL=$1
export CLERK_SECRET_KEY=${2:-sk_test_fake}
export SDK_EXPECT_URL=${3:-$CLERK_API_URL}
export SDK_EXPECT_KEY=${4:-$CLERK_SECRET_KEY}
echo "SDKs against $CLERK_API_URL; expectations from $SDK_EXPECT_URL"

stamp=tests/sdk/node/node_modules/.package-lock.sha256
want=$(sha256sum tests/sdk/node/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  npm ci --prefix tests/sdk/node --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi

VENV=.venv-sdk
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp=$VENV/.requirements.sha256
want=$(sha256sum tests/sdk/python/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r tests/sdk/python/requirements.txt
  echo "$want" >"$stamp"
fi

status=0
echo "== node @clerk/backend"
node --test tests/sdk/node/sdk.test.mjs || status=1
if [ "$mode" = "--broker" ]; then
  echo "== node @clerk/backend: the front's promises"
  node --test tests/sdk/node/broker.test.mjs || status=1
fi
echo "== python clerk-backend-api"
python_status=0
"$VENV/bin/python" -m pytest tests/sdk/python -q -p no:cacheprovider || python_status=$?
if [ "$python_status" -ne 0 ]; then
  [ "$python_status" -eq 5 ] && echo "pytest collected no tests" >&2
  status=1
fi
exit "$status"
