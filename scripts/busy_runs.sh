#!/usr/bin/env bash
# Run one test command N times in a row on a busy machine: HOGS CPU hogs (default 1, a
# busy-looping process each) run beside it the whole time and stop when this script ends,
# also on Ctrl-C. Prints each run's outcome and a closing "N runs, F failed" line; a failed
# run's output is kept in build/runs/.
#   scripts/busy_runs.sh 50 -m fault
#   scripts/busy_runs.sh 10 -m durability
#   HOGS=2 scripts/busy_runs.sh 10 -m fault     # one hog per core of a 2-core machine
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:?usage: scripts/busy_runs.sh RUNS [pytest args]}
shift
mkdir -p build/runs
hogs=()
for _ in $(seq "${HOGS:-1}"); do
  python3 -c 'while True: pass' &
  hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
failed=0
for i in $(seq "$runs"); do
  log=build/runs/run-$i.log
  started=$SECONDS
  if .venv/bin/python -m pytest -p no:cacheprovider -q "$@" >"$log" 2>&1; then
    echo "run $i: passed in $((SECONDS - started)) s ($(tail -n 1 "$log"))"
    rm -f "$log"
  else
    failed=$((failed + 1))
    echo "run $i: FAILED in $((SECONDS - started)) s, output kept in $log ($(grep -m1 'fault seed' "$log"))"
  fi
done
echo "$runs runs, $failed failed: pytest $* beside ${HOGS:-1} CPU hog(s) on $(nproc) cores"
[ "$failed" -eq 0 ]
