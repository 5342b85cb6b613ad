#!/usr/bin/env bash
# Installs everything xen-estate's tests and the example estate need on a Debian 12 machine (run as root).
# Idempotent and quick once done: apt packages, `npm ci` (Node 22 comes from the npm package node@22), the Pulumi
# engine (test/engine/build.sh: a `pulumi` >= 3.270 on PATH, else a cached offline build) and the lab images
# (test/lab/images/build-*.sh, cached by recipe hash). The lab images build beside npm ci and the engine: the one
# waits mostly on the Debian mirror and the disk, the other on the CPU.
# XEN_ESTATE_TIMINGS=FILE: append one row per step to FILE (test/timings.mjs; .ci/run prints the table).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/go/bin"
t0=$(date +%s)
t0_ms=$(date +%s%3N)
step() { echo "=== setup: $* (+$(($(date +%s) - t0)) s)" >&2; }
now_ms() { date +%s%3N; }
# `timed NAME COMMAND…`: runs the command and records its row.
timed() {
  local name=$1 start rc=0
  shift
  start=$(now_ms)
  "$@" || rc=$?
  if [[ -n "${XEN_ESTATE_TIMINGS:-}" ]]; then
    printf '%s\t%s\t%s\t%s\t\n' "$start" "$(awk -v a="$start" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')" \
      "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "setup: $name" >>"$XEN_ESTATE_TIMINGS"
  fi
  return "$rc"
}

apt_packages() {
  local need=() p
  for p in openssh-server openssh-client sudo iproute2 iptables nftables lvm2 procps ca-certificates git varnish netplan.io iputils-ping; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ((${#need[@]} > 0)); then
    step "apt: ${need[*]}"
    # openssh-server/sudo: the executor's tests start real sshd; iproute2: namespaces for the jump-host test;
    # varnish: the rendered VCL is compiled and served by a real varnishd; nftables: Dom0Firewall's rules are loaded for real;
    # netplan.io: Dom0Network's netplan file is checked by the real netplan (never applied here);
    # iputils-ping: a guest's wait for its network pings its address (the guest cut matrix, in a network namespace).
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
}
timed "apt packages" apt_packages
step "lab packages"
timed "lab packages" bash test/lab/install-deps.sh >&2

node_and_engine() {
  if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    step "npm ci"
    timed "npm ci" npm ci --no-audit --no-fund >&2 || return 1
  fi
  step "Pulumi engine"
  command -v pulumi >/dev/null || command -v go >/dev/null ||
    { echo "setup: neither pulumi nor Go found; see test/engine/README.md" >&2; return 1; }
  timed "Pulumi engine" bash test/engine/build.sh >&2 || return 1
}

lab_images() {
  local host
  for host in dom0 bare source; do
    timed "lab image: $host" bash "test/lab/images/build-$host.sh" >/dev/null || return 1
  done
}

step "lab images (beside npm ci and the Pulumi engine)"
(lab_images 2>&1 | sed -u 's/^/[lab images] /' >&2) &
images=$!
engine_rc=0
node_and_engine || engine_rc=$?
images_rc=0
wait "$images" || images_rc=$?
if ((engine_rc != 0 || images_rc != 0)); then
  echo "setup: failed (npm ci / Pulumi engine: exit $engine_rc; lab images: exit $images_rc)" >&2
  exit 1
fi
step "ready"
if [[ -n "${XEN_ESTATE_TIMINGS:-}" ]]; then
  printf '%s\t%s\tok\tsetup (all steps)\t\n' "$t0_ms" \
    "$(awk -v a="$t0_ms" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')" >>"$XEN_ESTATE_TIMINGS"
fi
