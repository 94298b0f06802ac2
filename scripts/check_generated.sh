#!/usr/bin/env bash
# Fails when generated/ is not exactly what scripts/generate.sh produces from
# proto/ with the pinned tools.
#
# It regenerates into a temporary directory and compares it with generated/
# (ignoring node_modules links and __pycache__). With CI set, it also fails
# when generated/ has uncommitted or untracked changes, so the committed copy
# is what was checked.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/cortex-generated.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

scripts/generate.sh "$TMP" >/dev/null

status=0
if ! diff -r --brief --exclude=node_modules --exclude=__pycache__ generated "$TMP" >"$TMP.diff" 2>&1; then
  status=1
  {
    echo "check_generated.sh: generated/ is out of date with proto/ (or was edited by hand):"
    sed -e "s#$TMP#<fresh>#g" -e 's/^/  /' "$TMP.diff"
    echo "Run 'make generate' (or scripts/generate.sh) and commit generated/."
  } >&2
fi
rm -f "$TMP.diff"

if [[ "${CI:-}" != "" && "${CI:-}" != "false" ]] && git rev-parse --git-dir >/dev/null 2>&1; then
  changes="$(git status --porcelain --untracked-files=all -- generated)"
  if [[ -n "$changes" ]]; then
    status=1
    {
      echo "check_generated.sh: generated/ differs from the committed copy:"
      echo "$changes" | sed 's/^/  /'
      echo "Commit the regenerated files."
    } >&2
  fi
fi

if [[ $status == 0 ]]; then
  echo "check_generated.sh: generated/ matches proto/"
fi
exit $status
