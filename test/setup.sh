#!/usr/bin/env bash
# Installs everything xen-estate's tests and the example estate need on a Debian 12 machine (run as root).
# Idempotent and quick once done: apt packages, `npm ci` (Node 22 comes from the npm package node@22), the Pulumi
# engine (test/engine/build.sh: a `pulumi` >= 3.270 on PATH, else a cached offline build) and the lab images.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/go/bin"
t0=$(date +%s)
step() { echo "=== setup: $* (+$(($(date +%s) - t0)) s)" >&2; }

need=()
for p in openssh-server openssh-client sudo iproute2 iptables nftables lvm2 procps ca-certificates git varnish; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]} > 0)); then
  step "apt: ${need[*]}"
  # openssh-server/sudo: the executor's tests start real sshd; iproute2: namespaces for the jump-host test;
  # varnish: the rendered VCL is compiled and served by a real varnishd; nftables: Dom0Firewall's rules are loaded for real.
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
step "lab packages"
bash test/lab/install-deps.sh >&2

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm ci"
  npm ci --no-audit --no-fund >&2
fi

step "Pulumi engine"
command -v pulumi >/dev/null || command -v go >/dev/null ||
  { echo "setup: neither pulumi nor Go found; see test/engine/README.md" >&2; exit 1; }
bash test/engine/build.sh >&2

step "lab images"
npm run --silent lab -- build >&2
step "ready"
