#!/usr/bin/env bash
# Runs QEMU for the lab harness (test/lab/lab.ts), which starts this script as the leader of its own
# process group so one kill of the group ends everything.
# Usage: qemu-run.sh PIDFILE WATCH_PID LOCKFILE ARGSFILE
#   WATCH_PID  kill QEMU as soon as this process is gone (the test process); 0 = keep running (lab up)
#   LOCKFILE   the machine-wide lab lock (one emulated machine at a time: 2 cores). Taken with flock before QEMU
#              starts and held by this script's descriptor 9, which QEMU inherits, so it is held exactly as long
#              as QEMU runs, also after a detached start (`npm run lab -- up`). `-` = an ancestor of the caller
#              already holds it (`flock /tmp/xen-estate-lab.lock npm test`): taking it again would wait forever.
#   ARGSFILE   the QEMU command line, NUL-separated. The harness writes it only after this script has the lock
#              (PIDFILE.locked appears), so the host ports in it are chosen when the machine really starts, not
#              before a wait of unknown length.
# QEMU's pid is written to PIDFILE once QEMU runs.
pidfile="$1"
watch="$2"
lock="$3"
argsfile="$4"
# The test process gave up (or died) while we waited: start no machine nobody will use.
orphaned() { [[ "$watch" != 0 ]] && ! kill -0 "$watch" 2>/dev/null; }
if [[ "$lock" != - ]]; then
  exec 9>>"$lock"
  # One blocking flock in the background keeps this run's place among the waiters (a loop of short waits would
  # rejoin at the back each time); the lock it takes belongs to descriptor 9's open file, which this script shares.
  flock 9 &
  waiter=$!
  while kill -0 "$waiter" 2>/dev/null; do
    if orphaned; then
      kill "$waiter" 2>/dev/null
      exit 1
    fi
    sleep 1
  done
  wait "$waiter" || exit 1
fi
: >"$pidfile.locked"
until [[ -f "$argsfile" ]]; do
  if orphaned; then exit 1; fi
  sleep 0.1
done
mapfile -d '' -t cmd <"$argsfile"
"${cmd[@]}" &
qemu=$!
echo "$qemu" >"$pidfile"
trap 'kill "$qemu" 2>/dev/null' TERM INT HUP
if [[ "$watch" != 0 ]]; then
  while kill -0 "$qemu" 2>/dev/null; do
    if orphaned; then
      kill "$qemu" 2>/dev/null
      sleep 3
      kill -9 "$qemu" 2>/dev/null
      break
    fi
    sleep 1
  done
fi
wait "$qemu"
