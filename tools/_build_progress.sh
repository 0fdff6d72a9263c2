#!/usr/bin/env bash
# Follow a running build for tools/install.sh: every INTERVAL seconds (default 15)
# print the compiler's latest [n/N] step, the elapsed time and an estimate of the
# time left, until process PID ends.
#
#   bash tools/_build_progress.sh LOG PID [LABEL]
set -uo pipefail
log_file=$1 pid=$2 label=${3:-build}
interval=${PROGRESS_INTERVAL:-15}
start=$SECONDS last="" quiet=0
while kill -0 "$pid" 2>/dev/null; do
  sleep "$interval"
  step="$(grep -oE '\[[0-9]+/[0-9]+\]' "$log_file" 2>/dev/null | tail -n 1 | tr -d '[]')"
  elapsed=$((SECONDS - start))
  clock="$((elapsed / 60)) min $((elapsed % 60)) s"
  if [ -n "$step" ] && [ "$step" != "$last" ]; then
    n=${step%/*} total=${step#*/} left=""
    if [ "$n" -gt 0 ]; then
      left=", about $(( (elapsed * (total - n) / n + 59) / 60 )) min left"
    fi
    printf '[install] %s: step %s of %s, %s%s\n' "$label" "$n" "$total" "$clock" "$left"
    last=$step quiet=0
  else
    quiet=$((quiet + interval))
    if [ "$quiet" -ge 60 ]; then  # a long step: still say it is alive, once a minute
      printf '[install] %s: %s%s\n' "$label" "${step:+step ${step%/*} of ${step#*/}, }" "$clock"
      quiet=0
    fi
  fi
done
