#!/usr/bin/env bash
# Runs QEMU for the lab harness (test/lab/lab.ts), which starts this script as the leader of its own
# process group so one kill of the group ends everything.
# Usage: qemu-run.sh PIDFILE WATCH_PID qemu-system-x86_64 ARGS...
#   WATCH_PID  kill QEMU as soon as this process is gone (the test process); 0 = keep running (lab up)
pidfile="$1"
watch="$2"
shift 2
"$@" &
qemu=$!
echo "$qemu" >"$pidfile"
trap 'kill "$qemu" 2>/dev/null' TERM INT HUP
if [[ "$watch" != 0 ]]; then
  while kill -0 "$qemu" 2>/dev/null; do
    if ! kill -0 "$watch" 2>/dev/null; then
      kill "$qemu" 2>/dev/null
      sleep 3
      kill -9 "$qemu" 2>/dev/null
      break
    fi
    sleep 1
  done
fi
wait "$qemu"
