#!/usr/bin/env bash
# Regenerates the Go stubs in clerkbrokerv1/ from every .proto under the
# repository's proto/ directory, with protoc, protoc-gen-go and
# protoc-gen-go-grpc (Debian 12: protobuf-compiler 3.21.12, protoc-gen-go
# 1.28.1, protoc-gen-go-grpc 1.0 from grpc-go 1.33.3; scripts/test-go-client.sh
# installs them).
#
#   client/go/generate.sh            # rewrite client/go/clerkbrokerv1/
#   client/go/generate.sh --out DIR  # write DIR/clerkbrokerv1/ (the freshness test)
#
# The output is committed; clerkbroker/generated_test.go fails when it
# differs from what this script produces, so a change to proto/ must come
# with a run of it. The protos carry no go_package option (buf breaking
# guards their options): the Go import path is given here with M flags.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROTO_ROOT=$(cd "$HERE/../../proto" && pwd)
MODULE=github.com/example/clerk-broker/client/go
PACKAGE=clerkbrokerv1

out=$HERE
if [ "${1:-}" = "--out" ] && [ -n "${2:-}" ]; then
  out=$2
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--out DIR]" >&2
  exit 64
fi
for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is missing: apt-get install protobuf-compiler protoc-gen-go protoc-gen-go-grpc" >&2
    exit 1
  fi
done

cd "$PROTO_ROOT"
mapfile -t protos < <(find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
if [ "${#protos[@]}" -eq 0 ]; then
  echo "no .proto files under $PROTO_ROOT" >&2
  exit 1
fi
# Every file of the one proto package clerk_broker.v1 goes to one Go package.
mappings=()
for proto in "${protos[@]}"; do
  mappings+=("M$proto=$MODULE/$PACKAGE;$PACKAGE")
done
opts=$(IFS=,; echo "module=$MODULE,${mappings[*]}")

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
protoc -I. --go_out="$scratch" --go_opt="$opts" \
  --go-grpc_out="$scratch" --go-grpc_opt="$opts" "${protos[@]}"
rm -rf "${out:?}/$PACKAGE"
mkdir -p "$out"
cp -r "$scratch/$PACKAGE" "$out/$PACKAGE"
