#!/usr/bin/env bash
# Clerk's official SDKs (Node @clerk/backend, Python clerk-backend-api) against a
# Clerk-compatible Backend API; see tests/sdk/README.md.
#
#   tests/sdk/run.sh BASE_URL [KEY [EXPECT_URL [EXPECT_KEY]]]
#   tests/sdk/run.sh --fake
#
# BASE_URL is what the SDKs are pointed at, without /v1 (the fake Clerk, or the broker's front);
# KEY the secret key they send (default sk_test_fake). EXPECT_URL and EXPECT_KEY say where the
# suites read what the fake holds with plain HTTP (default: BASE_URL and KEY), so that behind
# the broker the expectations still come from the fake itself. Fixture ids can be given with
# SDK_USER_IDS, SDK_WRITE_USER, SDK_PYTHON_WRITE_USER and SDK_ORG_ID (default: discovered).
#
# --fake starts `clerk-broker fake-clerk` (debug build, 500 users, a free loopback port; or the
# binary in CLERK_BROKER_BIN), runs both suites against it and stops it.
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
cleanup() {
  if [ -n "$fake_pid" ]; then
    kill "$fake_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ "$1" = "--fake" ]; then
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
echo "== python clerk-backend-api"
python_status=0
"$VENV/bin/python" -m pytest tests/sdk/python -q -p no:cacheprovider || python_status=$?
if [ "$python_status" -ne 0 ]; then
  [ "$python_status" -eq 5 ] && echo "pytest collected no tests" >&2
  status=1
fi
exit "$status"
