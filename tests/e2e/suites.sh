#!/usr/bin/env bash
# make e2e: run tests/e2e/run.sh once per Debian suite, in parallel (each suite's boots are one
# vCPU each under TCG; two suites at once keep at most four VMs, 4 GiB, on the host). In parallel,
# only the step lines ("[e2e SUITE 12s] ...") show live and a failed suite's whole output follows
# at the end; exit non-zero when any suite failed. Logs: $ARC_ENROLL_E2E_LOGS (default target/e2e)
# / <suite>.log.
# Usage: suites.sh "bookworm trixie" [parallel|sequential] RUN.SH-ARGS...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suites=$1 mode=$2; shift 2
logs=${ARC_ENROLL_E2E_LOGS:-target/e2e}
mkdir -p "$logs"
t0=$(date +%s)
declare -A pid rc took
run_one() {
  local s=$1 t; t=$(date +%s); shift
  if [ "$mode" = parallel ]; then
    bash "$here/run.sh" --suite "$s" "$@" 2>&1 | tee "$logs/$s.log" | grep -a --line-buffered '^\[e2e '
  else
    bash "$here/run.sh" --suite "$s" "$@" 2>&1 | tee "$logs/$s.log"
  fi
  local r=${PIPESTATUS[0]}
  echo "$r $(( $(date +%s) - t ))" >"$logs/$s.rc"
  return "$r"
}
for s in $suites; do
  rm -f "$logs/$s.rc"
  if [ "$mode" = parallel ]; then
    run_one "$s" "$@" &
    pid[$s]=$!
  else
    run_one "$s" "$@"
  fi
done
wait
fail=0
echo "e2e suites ($mode): total $(( $(date +%s) - t0 ))s"
for s in $suites; do
  read -r r secs <"$logs/$s.rc" 2>/dev/null || { r=1; secs=?; }
  [ "$r" = 0 ] || fail=1
  printf '  %-9s %s in %ss: %s\n' "$s" "$([ "$r" = 0 ] && echo passed || echo "FAILED (exit $r)")" "$secs" \
    "$(grep -a 'PASSED\|FAILED' "$logs/$s.log" | tail -1 | sed 's/^\[e2e [^]]*\] //')"
done
if [ "$mode" = parallel ]; then
  for s in $suites; do
    read -r r _ <"$logs/$s.rc" 2>/dev/null || r=1
    [ "$r" = 0 ] || { echo "=============== $s: whole output ($logs/$s.log)"; cat "$logs/$s.log"; }
  done
fi
exit $fail
