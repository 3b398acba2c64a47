#!/usr/bin/env bash
# The Go client's checks (client/go), run by scripts/test-clients.sh:
# gofmt, go vet and `go test ./...` against a demo broker of its own.
#
# Everything comes from Debian's packages (installed here when missing, after
# `apt-get update`): the Go toolchain, protoc with protoc-gen-go and
# protoc-gen-go-grpc (the stubs' freshness test runs them), and the sources
# of grpc-go, protobuf-go, genproto, golang/protobuf and golang.org/x/*
# under /usr/share/gocode. There is no Go module proxy here, so the module
# is built in vendor mode from a temporary copy whose vendor/ tree is
# assembled from those sources under the versions client/go/go.mod requires:
# nothing is fetched, and client/go itself stays a plain module (no vendor/,
# no replace lines) for callers who build it with the normal tooling.
#
# CLERK_BROKER_BIN names the broker binary (test-clients.sh sets it); without
# it the suite builds one with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# Debian package -> what it must have put on the machine.
packages=(
  golang-go:/usr/bin/go
  protobuf-compiler:/usr/bin/protoc
  libprotobuf-dev:/usr/include/google/protobuf/duration.proto
  protoc-gen-go:/usr/bin/protoc-gen-go
  protoc-gen-go-grpc:/usr/bin/protoc-gen-go-grpc
  golang-google-grpc-dev:/usr/share/gocode/src/google.golang.org/grpc/go.mod
  golang-google-protobuf-dev:/usr/share/gocode/src/google.golang.org/protobuf/go.mod
  golang-google-genproto-dev:/usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails
  # grpc-go needs golang/protobuf's APIv2-backed 1.5 (not the 1.3 apt would
  # otherwise pick to satisfy golang-google-grpc-dev).
  golang-github-golang-protobuf-1-5-dev:/usr/share/gocode/src/github.com/golang/protobuf/ptypes/any/any.pb.go
  golang-golang-x-net-dev:/usr/share/gocode/src/golang.org/x/net/http2
  golang-golang-x-sys-dev:/usr/share/gocode/src/golang.org/x/sys/unix
  golang-golang-x-text-dev:/usr/share/gocode/src/golang.org/x/text/unicode/bidi
)
missing=()
for entry in "${packages[@]}"; do
  [ -e "${entry#*:}" ] || missing+=("${entry%%:*}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (apt)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  for entry in "${packages[@]}"; do
    if [ ! -e "${entry#*:}" ]; then
      echo "${entry%%:*} is installed but ${entry#*:} is missing" >&2
      exit 1
    fi
  done
fi
go version
protoc --version
dpkg-query -W -f='${Package} ${Version}\n' "${packages[@]%%:*}"

# A copy of client/go in the repository's layout (proto/ beside it, for the
# stubs' freshness test), with vendor/ made of Debian's sources: one entry in
# vendor/modules.txt per requirement of go.mod, at the version go.mod names,
# listing every package of the module. Vendor mode reads nothing else (no
# go.sum, no module graph, no network).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo/client"
cp -r client/go "$work/repo/client/go"
ln -s "$REPO/proto" "$work/repo/proto"
module=$work/repo/client/go
rm -rf "$module/vendor"
(
  cd "$module"
  go mod edit -json | python3 -c '
import json, os, re, sys
gocode = "/usr/share/gocode/src"
vendor = sys.argv[1]
lines = []
for req in json.load(sys.stdin).get("Require") or []:
    path, version = req["Path"], req["Version"]
    source = os.path.join(gocode, path)
    if not os.path.isdir(source):
        sys.exit(f"{path} is not under {gocode}: which Debian package ships it?")
    os.makedirs(os.path.dirname(os.path.join(vendor, path)), exist_ok=True)
    os.symlink(source, os.path.join(vendor, path))
    go = ""
    try:
        with open(os.path.join(source, "go.mod")) as f:
            m = re.search(r"^go (\d+\.\d+)", f.read(), re.M)
            go = f"; go {m.group(1)}" if m else ""
    except FileNotFoundError:
        pass
    lines += [f"# {path} {version}", f"## explicit{go}"]
    packages = set()
    for directory, dirs, files in os.walk(source):
        # Nested modules, test data and hidden folders are not packages of it.
        dirs[:] = sorted(d for d in dirs if d not in ("testdata", "vendor") and d[0] not in "._"
                         and not os.path.exists(os.path.join(directory, d, "go.mod")))
        if any(f.endswith(".go") and not f.endswith("_test.go") for f in files):
            rel = os.path.relpath(directory, source)
            packages.add(path if rel == "." else f"{path}/{rel}")
    lines += sorted(packages)
with open(os.path.join(vendor, "modules.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
' "$module/vendor"
)

cd "$module"
export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GO111MODULE=on
# go needs a build cache; without HOME (some CI environments) it has none.
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE="$REPO/target/go-build"
fi
unformatted=$(gofmt -l . | grep -v '^vendor/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted (run gofmt -w client/go)" >&2
  exit 1
fi
go vet ./...
CLERK_BROKER_REPO=$REPO go test -count=1 ./...
