#!/usr/bin/env bash
# Fails when generated/, the Python stubs in clients/python/src/cortex or the API
# reference in docs/api are not exactly what scripts/generate.sh produces from
# proto/ with the pinned tools.
#
# It regenerates into a temporary directory and compares each with its fresh copy
# (ignoring node_modules links, __pycache__ and Go vendor/ links). With CI set, it
# also fails when any of them has uncommitted or untracked changes, so the
# committed copy is what was checked.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/cortex-generated.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

CORTEX_PYTHON_OUT="$TMP/python" CORTEX_API_OUT="$TMP/api" scripts/generate.sh "$TMP/generated" >/dev/null

# committed copy => fresh copy
declare -A FRESH=(
  [generated]="$TMP/generated"
  [clients/python/src/cortex]="$TMP/python/cortex"
  [docs/api]="$TMP/api"
)
status=0
for committed in "${!FRESH[@]}"; do
  if ! diff -r --brief --exclude=node_modules --exclude=__pycache__ --exclude=vendor \
    "$committed" "${FRESH[$committed]}" >"$TMP.diff" 2>&1; then
    status=1
    {
      echo "check_generated.sh: $committed is out of date with proto/ (or was edited by hand):"
      sed -e "s#$TMP#<fresh>#g" -e 's/^/  /' "$TMP.diff"
      echo "Run 'make generate' (or scripts/generate.sh) and commit $committed."
    } >&2
  fi
done
rm -f "$TMP.diff"

if [[ "${CI:-}" != "" && "${CI:-}" != "false" ]] && git rev-parse --git-dir >/dev/null 2>&1; then
  changes="$(git status --porcelain --untracked-files=all -- "${!FRESH[@]}")"
  if [[ -n "$changes" ]]; then
    status=1
    {
      echo "check_generated.sh: generated code differs from the committed copy:"
      echo "$changes" | sed 's/^/  /'
      echo "Commit the regenerated files."
    } >&2
  fi
fi

if [[ $status == 0 ]]; then
  echo "check_generated.sh: generated/, clients/python/src/cortex and docs/api match proto/"
fi
exit $status
