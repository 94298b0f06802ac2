#!/usr/bin/env bash
# Lays out MODULE_DIR/vendor so `GOFLAGS=-mod=vendor go build ./...` works offline.
#
# There is no Go module proxy here: the Go libraries come from Debian's packages
# (make go-tools) as sources under /usr/share/gocode/src. vendor/ is a set of symlinks to
# them (and to the `replace`d local modules), plus the vendor/modules.txt that go
# checks against go.mod: every module go.mod requires is listed, at the version go.mod
# names, marked explicit. vendor/ is gitignored and rebuilt on every run.
#
# Usage: scripts/go_vendor.sh MODULE_DIR...
set -euo pipefail

GOCODE="${GOCODE:-/usr/share/gocode/src}"
# Modules Debian ships that grpc-go and protobuf-go import, with the packages' versions
# (golang-golang-x-net-dev 0.7.0, -x-sys-dev 0.3.0, -x-text-dev 0.7.0,
# golang-github-golang-protobuf-1-5-dev 1.5.2); the ones go.mod names take its version.
DEBIAN_MODULES=(
  "google.golang.org/grpc v1.33.3"
  "google.golang.org/protobuf v1.28.1"
  "google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013"
  "github.com/golang/protobuf v1.5.2"
  "golang.org/x/net v0.7.0"
  "golang.org/x/sys v0.3.0"
  "golang.org/x/text v0.7.0"
)

die() {
  echo "go_vendor.sh: $*" >&2
  exit 1
}

vendor_module() {
  local dir="$1"
  [[ -f "$dir/go.mod" ]] || die "no go.mod in $dir"
  dir="$(cd "$dir" && pwd)"
  local vendor="$dir/vendor"
  rm -rf "$vendor"
  mkdir -p "$vendor"
  local modules="$vendor/modules.txt"
  : >"$modules"

  # `path version` for each requirement, `path => ../dir` for each local replacement.
  local required replaced
  required="$(sed -n -e '/^require (/,/^)/{/^require (/d;/^)/d;p}' -e 's/^require \([^ (]\+ [^ ]\+\).*/\1/p' "$dir/go.mod" |
    sed -e 's#//.*##' -e 's/^[[:space:]]*//' | awk 'NF >= 2 {print $1, $2}')"
  replaced="$(sed -n 's/^replace \([^ ]\+\) => \(\.[^ ]*\).*/\1 \2/p' "$dir/go.mod")"

  local path version target wildcard=""
  while read -r path target; do
    [[ -n "$path" ]] || continue
    version="$(awk -v p="$path" '$1 == p {print $2}' <<<"$required")"
    [[ -n "$version" ]] || die "$dir/go.mod replaces $path but does not require it"
    [[ -d "$dir/$target" ]] || die "$path => $target: no such directory"
    mkdir -p "$vendor/$(dirname "$path")"
    ln -sfn "$(cd "$dir/$target" && pwd)" "$vendor/$path"
    printf '# %s %s => %s\n## explicit\n' "$path" "$version" "$target" >>"$modules"
    wildcard+="# $path => $target"$'\n' # a replace without a version is also listed alone
  done <<<"$replaced"

  local entry
  for entry in "${DEBIAN_MODULES[@]}"; do
    read -r path version <<<"$entry"
    [[ -d "$GOCODE/$path" ]] || die "$GOCODE/$path is missing (run: make go-tools)"
    mkdir -p "$vendor/$(dirname "$path")"
    ln -sfn "$GOCODE/$path" "$vendor/$path"
    local wanted
    wanted="$(awk -v p="$path" '$1 == p {print $2}' <<<"$required")"
    if [[ -n "$wanted" ]]; then
      printf '# %s %s\n## explicit\n' "$path" "$wanted" >>"$modules"
    else
      printf '# %s %s\n' "$path" "$version" >>"$modules"
    fi
  done
  printf '%s' "$wildcard" >>"$modules"
}

[[ $# -gt 0 ]] || die "usage: scripts/go_vendor.sh MODULE_DIR..."
for module in "$@"; do
  vendor_module "$module"
done
