# Shared by benches/callgrind.sh and benches/callgrind_syslog.sh (sourced, not run): stopping the
# processes a run started (listed in PIDS) and removing its work directory (WORK) on any exit.

stop() { # $1 = pid: TERM, wait up to 30 s (valgrind writes its last dump), then KILL
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  for p in $PIDS; do stop "$p"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
