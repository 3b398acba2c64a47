#!/usr/bin/env bash
# Proto hygiene: `buf lint` (rules in buf.yaml), then `buf breaking` of proto/
# against the previous commit (HEAD~1, or BUF_BREAKING_AGAINST=REF, e.g. main
# while working on a branch), so a wire-incompatible change fails the build.
# Run by scripts/test-clients.sh; buf comes from client/node's devDependencies
# (or $BUF).
#
# Not comparable, said loudly, and not a failure: the repository's first
# commit, a checkout without git, and a shallow clone whose previous commit
# cannot be fetched. In a normal clone a missing REF is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-client/node/node_modules/.bin/buf}

"$BUF" lint
echo "buf lint: proto/ is clean"

against=${BUF_BREAKING_AGAINST:-HEAD~1}
has_commit() { git rev-parse --verify --quiet "$1^{commit}" >/dev/null; }
shallow() { [ "$(git rev-parse --is-shallow-repository)" = true ]; }

if ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo "buf breaking: NOT CHECKED: this is not a git checkout, so there is no previous commit"
  exit 0
fi
if ! has_commit "$against" && shallow; then
  git fetch --quiet --deepen=1 2>/dev/null || true
fi
if ! has_commit "$against"; then
  if shallow; then
    echo "buf breaking: NOT CHECKED: shallow clone without $against, and fetching it failed;" \
      "clone with history (or git fetch --deepen=1) to check"
    exit 0
  elif [ "$against" = HEAD~1 ] && [ "$(git rev-list --count HEAD)" = 1 ]; then
    echo "buf breaking: nothing to compare: HEAD is the repository's first commit"
    exit 0
  fi
  echo "buf breaking: there is no commit $against to compare with" >&2
  exit 1
fi
if [ -z "$(git ls-tree -d "$against" proto)" ]; then
  echo "buf breaking: nothing to compare: $against has no proto/"
  exit 0
fi
previous=$(mktemp -d)
trap 'rm -rf "$previous"' EXIT
git archive "$against" proto | tar -x -C "$previous"
"$BUF" breaking --against "$previous/proto"
echo "buf breaking: proto/ is compatible with $against ($(git rev-parse --short "$against"))"
