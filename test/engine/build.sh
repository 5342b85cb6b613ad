#!/usr/bin/env bash
# Builds the real Pulumi CLI (and a Node.js language host) from Go modules, offline
# except for the Go module proxy, into a cache directory outside the work tree.
#
#   bash test/engine/build.sh        # prints the bin directory that holds `pulumi`
#
# Environment:
#   XEN_ESTATE_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/xen-estate)
#   XEN_ESTATE_FORCE_BUILD  1 = build even when a suitable `pulumi` is on PATH, and rebuild
#                           even when the cached build matches the pin
#   XEN_ESTATE_BUILD_QUIET  1 = say nothing unless a build is needed
#   XEN_ESTATE_LANGHOST_PSEUDO_VERSION
#                           pseudo-version of github.com/pulumi/pulumi/sdk/nodejs/cmd/
#                           pulumi-language-nodejs/v3 at the release commit; when set, the
#                           language host is built from that module (see README.md)
#
# The last line of stdout is always the directory holding `pulumi`; progress goes to stderr.
set -euo pipefail

PULUMI_VERSION=v3.274.1
MIN_PATH_VERSION=3.270.0
# The Go module proxy used here does not serve the untagged language-host module
# (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3) at any version. Until
# v3.68.0 the same host was a package inside sdk/v3, which the proxy does serve, so that is
# the fallback. The CLI >= 3.2xx no longer passes runtime options as flags, so a small
# wrapper script turns Pulumi.yaml's `typescript: false` into the old host's flag.
LANGHOST_FALLBACK_SDK_VERSION=v3.68.0
LANGHOST_PSEUDO_VERSION=${XEN_ESTATE_LANGHOST_PSEUDO_VERSION:-}
BUILD_TAGS=osusergo,grpcnotrace

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${XEN_ESTATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xen-estate}
dest="$cache_root/pulumi-$PULUMI_VERSION"
bin="$dest/bin"

log() { printf 'build.sh: %s\n' "$*" >&2; }
# note: routine messages that XEN_ESTATE_BUILD_QUIET=1 (used by pulumi.sh) silences.
note() { [ "${XEN_ESTATE_BUILD_QUIET:-}" = 1 ] || log "$@"; }
die() { log "error: $*"; exit 1; }

# version_ge A B: true when dotted version A >= B (leading v ignored).
version_ge() {
  local a=${1#v} b=${2#v}
  a=${a%%[-+]*}
  b=${b%%[-+]*}
  [ "$(printf '%s\n%s\n' "$a" "$b" | sort -t. -k1,1n -k2,2n -k3,3n | head -n1)" = "$b" ]
}

# 1. A user's own Pulumi CLI on PATH wins (unless forced).
if [ "${XEN_ESTATE_FORCE_BUILD:-}" != 1 ]; then
  if path_pulumi=$(command -v pulumi 2>/dev/null) && [ "$(dirname "$path_pulumi")" != "$bin" ]; then
    v=$(PULUMI_SKIP_UPDATE_CHECK=true "$path_pulumi" version 2>/dev/null | head -n1 || true)
    if [ -n "$v" ] && version_ge "$v" "$MIN_PATH_VERSION"; then
      note "using pulumi $v from PATH: $path_pulumi"
      dirname "$path_pulumi"
      exit 0
    fi
    note "ignoring pulumi on PATH ($path_pulumi, version '${v:-?}' < $MIN_PATH_VERSION)"
  fi
fi

# 2. The cached build, when it matches the pin.
if [ -n "$LANGHOST_PSEUDO_VERSION" ]; then
  langhost_recipe="module github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3@$LANGHOST_PSEUDO_VERSION"
else
  langhost_recipe="package github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs@$LANGHOST_FALLBACK_SDK_VERSION + options wrapper"
fi
recipe_hash=$(sed -n '/^# RECIPE-BEGIN/,/^# RECIPE-END/p' "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
stamp_text="pulumi $PULUMI_VERSION
langhost $langhost_recipe
tags $BUILD_TAGS
recipe $recipe_hash"
stamp="$dest/stamp"

install_node_scripts() {
  # The dynamic-provider plugin is a shell script shipped at the root of the @pulumi/pulumi npm
  # package; it runs `node` from PATH and resolves @pulumi/pulumi/cmd/dynamic-provider from its
  # working directory (the Pulumi project directory).
  local pkg="$repo/node_modules/@pulumi/pulumi" f
  [ -f "$pkg/pulumi-resource-pulumi-nodejs" ] || die "$pkg not found: run npm install first"
  for f in pulumi-resource-pulumi-nodejs pulumi-resource-pulumi-nodejs.cmd pulumi-analyzer-policy pulumi-analyzer-policy.cmd; do
    if [ -f "$pkg/$f" ] && ! cmp -s "$pkg/$f" "$bin/$f"; then
      cp "$pkg/$f" "$bin/$f"
      chmod 0755 "$bin/$f"
    fi
  done
}

if [ "${XEN_ESTATE_FORCE_BUILD:-}" != 1 ] && [ -x "$bin/pulumi" ] && [ -x "$bin/pulumi-language-nodejs" ] &&
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ]; then
  install_node_scripts
  note "cached build matches the pin: $bin"
  echo "$bin"
  exit 0
fi

# RECIPE-BEGIN (changing anything between these markers invalidates the cached build)
go_bin=$(command -v go 2>/dev/null || true)
[ -n "$go_bin" ] || { [ -x /usr/local/go/bin/go ] && go_bin=/usr/local/go/bin/go; } || true
[ -n "$go_bin" ] || die "Go toolchain not found (install Go >= 1.26, or install the official Pulumi CLI)"
log "go: $("$go_bin" version)"

# GOTOOLCHAIN stays as the user has it: an older Go fetches go1.26 through the module proxy.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -buildvcs=false"
work="$dest/work"
rm -rf "$work" "$bin.new"
mkdir -p "$work/cli" "$work/langhost" "$bin.new"
start=$(date +%s)

# The CLI. pkg/v3's go.mod has replace directives (sdk/v3 => ../sdk and a clipboard fork for
# Windows), so `go install pkg@version` is refused: build it from a generated wrapper module
# that requires pkg/v3 and sdk/v3 at the same version and repeats the clipboard replace.
cat >"$work/cli/go.mod" <<EOF
module xen-estate.local/pulumi-cli

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 $PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 $PULUMI_VERSION
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
EOF
cat >"$work/cli/tools.go" <<'EOF'
//go:build tools

package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
EOF
log "resolving github.com/pulumi/pulumi/pkg/v3@$PULUMI_VERSION (first run downloads ~1.5 GB of modules)"
(cd "$work/cli" && "$go_bin" mod tidy >&2)
log "building pulumi $PULUMI_VERSION (a cold build takes 10-20 minutes on 2 cores)"
(cd "$work/cli" && "$go_bin" build -trimpath -tags "$BUILD_TAGS" \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
  -o "$bin.new/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2)

# The Node.js language host.
if [ -n "$LANGHOST_PSEUDO_VERSION" ]; then
  cat >"$work/langhost/go.mod" <<EOF
module xen-estate.local/pulumi-language-nodejs

go 1.26

require (
	github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3 $LANGHOST_PSEUDO_VERSION
	github.com/pulumi/pulumi/pkg/v3 $PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 $PULUMI_VERSION
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
EOF
  langhost_pkg=github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3
  langhost_version=$PULUMI_VERSION
  langhost_out="$bin.new/pulumi-language-nodejs"
else
  # sdk/v3@v3.68.0's go.mod replaces golang.org/x/text; repeat it here.
  cat >"$work/langhost/go.mod" <<EOF
module xen-estate.local/pulumi-language-nodejs

go 1.18

require github.com/pulumi/pulumi/sdk/v3 $LANGHOST_FALLBACK_SDK_VERSION

replace golang.org/x/text => golang.org/x/text v0.3.6
EOF
  langhost_pkg=github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs
  langhost_version=$LANGHOST_FALLBACK_SDK_VERSION
  mkdir -p "$bin.new/libexec"
  langhost_out="$bin.new/libexec/pulumi-language-nodejs"
fi
cat >"$work/langhost/tools.go" <<EOF
//go:build tools

package tools

import _ "$langhost_pkg"
EOF
log "building pulumi-language-nodejs ($langhost_recipe)"
(cd "$work/langhost" && "$go_bin" mod tidy >&2)
(cd "$work/langhost" && "$go_bin" build -trimpath -tags "$BUILD_TAGS" \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$langhost_version" \
  -o "$langhost_out" "$langhost_pkg" >&2)

if [ -z "$LANGHOST_PSEUDO_VERSION" ]; then
  # The old host reads runtime options from command-line flags, which the current CLI no longer
  # passes (it sends them in RunRequest.Info). The plugin runs in the project directory, so
  # read `typescript:` from its Pulumi.yaml and pass it on; the old default is true.
  cat >"$bin.new/pulumi-language-nodejs" <<'EOF'
#!/bin/sh
# Generated by xen-estate test/engine/build.sh: passes Pulumi.yaml's runtime option
# `typescript: false` to the v3.68 language host as the flag it understands.
# The host runs in the program's directory (the project root, or `main` when that is a
# directory below it), so look upwards for the project file.
here=$(dirname "$0")
flags=
dir=$(pwd)
while :; do
  for f in "$dir/Pulumi.yaml" "$dir/Pulumi.yml"; do
    if [ -f "$f" ]; then
      if grep -Eq '^[[:space:]]+typescript:[[:space:]]*("false"|false)[[:space:]]*$' "$f"; then
        flags=-typescript=false
      fi
      break 2
    fi
  done
  [ "$dir" = / ] && break
  dir=$(dirname "$dir")
done
exec "$here/libexec/pulumi-language-nodejs" $flags "$@"
EOF
  chmod 0755 "$bin.new/pulumi-language-nodejs"
fi
# RECIPE-END

rm -rf "$bin"
mv "$bin.new" "$bin"
install_node_scripts
printf '%s\n' "$stamp_text" >"$stamp"
rm -rf "$work"
log "built in $(($(date +%s) - start))s: $("$bin/pulumi" version)"
echo "$bin"
