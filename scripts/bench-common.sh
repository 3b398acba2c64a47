# Shared by the benchmarks (scripts/bench-*.sh), sourced from the repository
# root with BENCH_BINS set to the release binaries to build: installs h2load
# when missing, builds, and starts the fake Clerk on core 1. Sets `bin`,
# `work` (a temporary directory), `pids` (killed at exit) and `fake` (the fake
# Clerk's base URL, without /v1); defines `free_port`.

if ! command -v h2load >/dev/null 2>&1; then
  echo "installing h2load (apt nghttp2-client)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nghttp2-client >/dev/null
fi
# shellcheck disable=SC2086 # one word per binary
cargo build --release --locked --quiet $(printf -- '--bin %s ' $BENCH_BINS)
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The fake Clerk, on core 1 (asked once per user: the benchmarks read cached users).
exec 3< <(CLERK_SECRET_KEY=sk_test_fake exec taskset -c 1 "$bin/clerk-broker" fake-clerk \
  --listen 127.0.0.1:0 --users 1000)
pids+=($!)
read -r banner <&3
fake=$(sed -n 's#^fake Clerk: \(http://[^ ]*\)/v1 .*#\1#p' <<<"$banner")
