#!/usr/bin/env bash
# The clients' and the contract's checks, run by scripts/test.sh after the
# cargo steps (which test the Rust client and clerk-broker-cli):
#   buf lint and buf breaking on proto/, pytest on client/python, go test on
#   client/go (scripts/test-go-client.sh), node --test on client/node, each
#   suite against one demo broker of its own.
# Installs whatever is missing first: a virtualenv in .venv/ with
# client/python/requirements.txt (pinned), and client/node's npm packages
# (which bring buf), and Debian's Go toolchain and Go sources for client/go.
# A missing tool is installed or the run fails: nothing is skipped silently.
#
# BUF_BREAKING_AGAINST=REF compares proto/ with another commit than HEAD~1
# (e.g. `main` while working on a branch): see scripts/buf-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "broker binary"
# The one `cargo test` just built (same features, so nothing is rebuilt);
# every suite starts it.
CLERK_BROKER_BIN=$(
  cargo test --workspace --locked --no-run --message-format=json-render-diagnostics 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "clerk-broker" \
            and "bin" in m["target"]["kind"] and not m["profile"]["test"]:
        print(m["executable"])
        sys.stdin.read()  # drain: cargo, still building, must not hit a closed pipe
        break
'
)
if [ ! -x "${CLERK_BROKER_BIN:-}" ]; then
  echo "cargo built no clerk-broker binary" >&2
  exit 1
fi
export CLERK_BROKER_BIN
echo "$CLERK_BROKER_BIN"

step "python packages (.venv)"
VENV=.venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum client/python/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r client/python/requirements.txt
  echo "$want" >"$stamp"
fi

step "node packages (client/node)"
stamp=client/node/node_modules/.package-lock.sha256
want=$(sha256sum client/node/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  (cd client/node && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
BUF=$PWD/client/node/node_modules/.bin/buf
"$BUF" --version

step "buf lint and breaking"
BUF="$BUF" ./scripts/buf-check.sh

step "pytest client/python"
status=0
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pytest client/python -q || status=$?
if [ "$status" -ne 0 ]; then
  [ "$status" -eq 5 ] && echo "pytest collected no tests" >&2
  exit "$status"
fi

step "go test client/go"
./scripts/test-go-client.sh

step "node --test client/node"
# Last, so that its summary closes the run.
(cd client/node && node --test test/*.test.js)
