#!/usr/bin/env bash
# Regenerates every language binding of the contracts in proto/ from scratch,
# offline, with one protoc (the one inside grpcio-tools):
#
#   clients/python/src/cortex/  grpcio: *_pb2.py, *_pb2.pyi, *_pb2_grpc.py, *_pb2_grpc.pyi (package `cortex`,
#                           shipped by the cortex-core-client distribution in clients/python)
#   generated/betterproto/  betterproto 2.0.0b7 dataclasses + grpclib stubs (package cortex_betterproto)
#   generated/ts/           protoc-gen-es v2 (target js+dts, ESM) for Connect v2
#   generated/go/           protoc-gen-go + protoc-gen-go-grpc (Debian packages), and its go.mod
#   docs/api/               the API reference in Markdown (scripts/api_reference.py)
#
# Usage: scripts/generate.sh [OUT_DIR]   (default: generated/ in the repository)
#        With OUT_DIR, the Python stubs go to OUT_DIR/python and the reference to
#        OUT_DIR/api unless CORTEX_PYTHON_OUT / CORTEX_API_OUT name other directories.
#        scripts/generate.sh --deps-only  (only refresh build/proto-deps, for buf)
#
# The googleapis protos (google/api, google/rpc) are copied from the
# googleapis-common-protos wheel into build/proto-deps/ (gitignored). Python and
# Go get google/* code from their runtime packages; betterproto and TypeScript
# have no such package, so google/rpc/status.proto (and, for TS, google/rpc/error_details.proto
# and the google/api annotation files) are generated next to ours.
#
# Output is byte-for-byte reproducible for fixed tool versions; see
# scripts/check_generated.sh and docs/contracts.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEPS_ONLY=0
if [[ "${1:-}" == "--deps-only" ]]; then
  DEPS_ONLY=1
  shift
fi
if [[ -n "${1:-}" ]]; then
  OUT="$1"
  PY_OUT="${CORTEX_PYTHON_OUT:-$OUT/python}"
  API_OUT="${CORTEX_API_OUT:-$OUT/api}"
else
  OUT="$ROOT/generated"
  PY_OUT="${CORTEX_PYTHON_OUT:-$ROOT/clients/python/src}"
  API_OUT="${CORTEX_API_OUT:-$ROOT/docs/api}"
fi
PY="${PY:-$ROOT/.venv/bin/python}"
DEPS="$ROOT/build/proto-deps"
GO_MODULE="github.com/cortexcore/cortex-core/generated/go"
# Debian 12's Go library versions (golang-google-grpc-dev 1.33.3, golang-google-protobuf-dev
# 1.28.1; genproto at the pseudo-version grpc 1.33's own go.mod requires).
GO_GRPC_VERSION="v1.33.3"
GO_PROTOBUF_VERSION="v1.28.1"
GO_GENPROTO_VERSION="v0.0.0-20200526211855-cb27e3aa2013"
PROTOC_GEN_ES="$ROOT/tools/node_modules/.bin/protoc-gen-es"
PROTOC_GEN_BETTERPROTO="$(dirname "$PY")/protoc-gen-python_betterproto"
PROTOC_GEN_MYPY_GRPC="$(dirname "$PY")/protoc-gen-mypy_grpc"

die() {
  echo "generate.sh: $*" >&2
  exit 1
}

[[ -x "$PY" ]] || die "no Python at $PY (create the venv first: make install)"
"$PY" -c 'import google.rpc.status_pb2' 2>/dev/null || die "googleapis-common-protos is missing from $PY"

# 1. googleapis protos from the installed googleapis-common-protos wheel.
GOOGLE_DIR="$("$PY" -c 'import os, google.rpc.status_pb2 as m; print(os.path.dirname(os.path.dirname(m.__file__)))')"
rm -rf "$DEPS"
mkdir -p "$DEPS/google"
for sub in api rpc; do
  (cd "$GOOGLE_DIR" && find "$sub" -name '*.proto' -print0) |
    while IFS= read -r -d '' f; do
      mkdir -p "$DEPS/google/$(dirname "$f")"
      cp "$GOOGLE_DIR/$f" "$DEPS/google/$f"
    done
done
[[ $DEPS_ONLY == 0 ]] || exit 0

"$PY" -c 'import grpc_tools.protoc' 2>/dev/null || die "grpcio-tools is missing from $PY"
[[ -x "$PROTOC_GEN_BETTERPROTO" ]] || die "missing $PROTOC_GEN_BETTERPROTO (pip install 'betterproto[compiler]==2.0.0b7')"
[[ -x "$PROTOC_GEN_MYPY_GRPC" ]] || die "missing $PROTOC_GEN_MYPY_GRPC (pip install 'mypy-protobuf==5.1.0')"
[[ -x "$PROTOC_GEN_ES" ]] || die "missing $PROTOC_GEN_ES (run: npm ci --prefix tools, or make tools)"
command -v protoc-gen-go >/dev/null || die "protoc-gen-go not on PATH (apt-get install protoc-gen-go, or make tools)"
command -v protoc-gen-go-grpc >/dev/null || die "protoc-gen-go-grpc not on PATH (apt-get install protoc-gen-go-grpc, or make tools)"
mkdir -p "$OUT" "$PY_OUT" "$API_OUT"
OUT="$(cd "$OUT" && pwd)"
PY_OUT="$(cd "$PY_OUT" && pwd)"
API_OUT="$(cd "$API_OUT" && pwd)"

# 2. The inputs, relative to proto/, in a stable order.
mapfile -t PROTOS < <(cd proto && find cortex -name '*.proto' | LC_ALL=C sort)
[[ ${#PROTOS[@]} -gt 0 ]] || die "no .proto files under proto/"
GOOGLE_STATUS=(google/rpc/status.proto)
GOOGLE_ANNOTATIONS=(google/api/field_behavior.proto google/api/resource.proto)
# Browsers get ErrorInfo / BadRequest / RetryInfo decoded (ConnectError.findDetails), not as
# raw Any bytes: TypeScript also gets the error-detail messages.
GOOGLE_ERROR_DETAILS=(google/rpc/error_details.proto)

protoc() {
  "$PY" -m grpc_tools.protoc -I proto -I "$DEPS" "$@"
}

rm -rf "$PY_OUT/cortex" "$OUT/betterproto" "$OUT/ts" "$OUT/go" "$API_OUT"
mkdir -p "$PY_OUT" "$OUT/betterproto" "$OUT/ts" "$OUT/go" "$API_OUT"

# 3. Python grpcio (google/* comes from googleapis-common-protos at runtime), into the
#    client distribution's source tree beside its hand-written cortex_client package.
#    mypy-protobuf's protoc-gen-mypy_grpc adds *_pb2_grpc.pyi, so stubs built on a grpc.aio
#    channel are typed as async stubs (protoc's --pyi_out types only the messages).
protoc --python_out="$PY_OUT" --pyi_out="$PY_OUT" --grpc_python_out="$PY_OUT" \
  --plugin=protoc-gen-mypy_grpc="$PROTOC_GEN_MYPY_GRPC" --mypy_grpc_out="$PY_OUT" \
  "${PROTOS[@]}" 2>"$OUT/.mypy_grpc.log" ||
  { cat "$OUT/.mypy_grpc.log" >&2; die "Python generation failed"; }
rm -f "$OUT/.mypy_grpc.log" # it only lists the files written
find "$PY_OUT/cortex" -type d -print0 | while IFS= read -r -d '' d; do : >"$d/__init__.py"; done
cat >"$PY_OUT/cortex/py.typed" <<'EOF'
EOF

# 4. betterproto, in its own tree under the wrapper package `cortex_betterproto`:
#    betterproto imports google/rpc relative to the output root
#    (`from ....google import rpc`), so the root must itself be a package, and
#    a top-level `google` package would shadow protobuf's. Import it as
#    `cortex_betterproto.cortex.experts.v1` with PYTHONPATH=generated/betterproto.
mkdir -p "$OUT/betterproto/cortex_betterproto"
protoc --plugin=protoc-gen-python_betterproto="$PROTOC_GEN_BETTERPROTO" \
  --python_betterproto_out="$OUT/betterproto/cortex_betterproto" \
  "${PROTOS[@]}" "${GOOGLE_STATUS[@]}" 2>"$OUT/.betterproto.log" ||
  { cat "$OUT/.betterproto.log" >&2; die "betterproto generation failed"; }
rm -f "$OUT/.betterproto.log" # it only lists the files written

# 5. TypeScript / JavaScript for Connect (ESM .js + .d.ts, runs in node as is).
protoc --plugin=protoc-gen-es="$PROTOC_GEN_ES" \
  --es_out="$OUT/ts" --es_opt=target=js+dts,import_extension=js \
  "${PROTOS[@]}" "${GOOGLE_STATUS[@]}" "${GOOGLE_ERROR_DETAILS[@]}" "${GOOGLE_ANNOTATIONS[@]}"
# The runtime the stubs were generated against, as tools/package-lock.json pins it:
# the package asks for that version (a caret range), so it never drifts from it.
locked() {
  node -e 'const lock = require(process.argv[1]);
    const found = lock.packages["node_modules/" + process.argv[2]];
    if (!found) { console.error(process.argv[2] + " is not in " + process.argv[1]); process.exit(1); }
    console.log(found.version);' "$ROOT/tools/package-lock.json" "$1"
}
PROTOBUF_ES_VERSION="$(locked @bufbuild/protobuf)" || die "no @bufbuild/protobuf in tools/package-lock.json"
PROTOC_GEN_ES_VERSION="$(locked @bufbuild/protoc-gen-es)" || die "no protoc-gen-es in tools/package-lock.json"
cat >"$OUT/ts/package.json" <<EOF
{
  "name": "@cortex-core/contracts",
  "private": true,
  "description": "Generated by scripts/generate.sh (protoc-gen-es $PROTOC_GEN_ES_VERSION, target js+dts). Do not edit.",
  "type": "module",
  "peerDependencies": {
    "@bufbuild/protobuf": "^$PROTOBUF_ES_VERSION"
  }
}
EOF
printf 'node_modules\n' >"$OUT/ts/.gitignore"

# 6. Go (google/* comes from google.golang.org/genproto).
protoc --go_out="$OUT/go" --go_opt=module="$GO_MODULE" \
  --go-grpc_out="$OUT/go" --go-grpc_opt=module="$GO_MODULE" "${PROTOS[@]}"

# The module the stubs form. The versions are the Debian packages' (make go-tools), the only
# Go libraries this machine has; scripts/go_vendor.sh links them for an offline build.
cat >"$OUT/go/go.mod" <<EOF
// Generated by scripts/generate.sh. Do not edit.
module $GO_MODULE

go 1.19

require (
	google.golang.org/genproto $GO_GENPROTO_VERSION
	google.golang.org/grpc $GO_GRPC_VERSION
	google.golang.org/protobuf $GO_PROTOBUF_VERSION
)
EOF

# 7. The API reference, from a descriptor set that keeps the comments (source info).
DESCRIPTORS="$(mktemp "${TMPDIR:-/tmp}/cortex-descriptors.XXXXXX")"
trap 'rm -f "$DESCRIPTORS"' EXIT
protoc --include_imports --include_source_info --descriptor_set_out="$DESCRIPTORS" "${PROTOS[@]}"
"$PY" "$ROOT/scripts/api_reference.py" "$DESCRIPTORS" "$ROOT/docs/contracts.md" "$API_OUT"

echo "generate.sh: regenerated python ($PY_OUT), betterproto, ts and go under $OUT, the reference in $API_OUT"
