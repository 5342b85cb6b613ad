#!/usr/bin/env bash
# `npm run pulumi -- <args>`: runs the Pulumi CLI for this project.
#
# Picks the CLI (a `pulumi` >= 3.270 on PATH, else the cached offline build, building it with
# build.sh first when missing), puts its directory and the project's node_modules/.bin (Node 22)
# first on PATH, turns off update checks and plugin downloads, and unless PULUMI_BACKEND_URL is
# set, uses a local file backend under <repo>/.cache/pulumi-state with a fixed development
# passphrase (only when PULUMI_CONFIG_PASSPHRASE[_FILE] is unset). Then execs pulumi.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

bin=$(XEN_ESTATE_BUILD_QUIET=1 bash "$here/build.sh" | tail -n1)
[ -x "$bin/pulumi" ] || { echo "pulumi.sh: no pulumi in '$bin'" >&2; exit 1; }

export PATH="$bin:$repo/node_modules/.bin:$PATH"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true

if [ -z "${PULUMI_BACKEND_URL:-}" ]; then
  state="$repo/.cache/pulumi-state"
  mkdir -p "$state"
  export PULUMI_BACKEND_URL="file://$state"
  if [ -z "${PULUMI_CONFIG_PASSPHRASE+x}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    # A development-only passphrase for the local lab state; set your own for anything real.
    export PULUMI_CONFIG_PASSPHRASE=xen-estate-local-dev
  fi
fi

exec "$bin/pulumi" "$@"
