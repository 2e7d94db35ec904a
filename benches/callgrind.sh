#!/bin/sh
# Instruction counts per request: rulehook against the minimal baseline receiver, each run under
# valgrind --tool=callgrind. Unlike benches/load.sh the figures do not depend on the machine's
# speed or load: they are instructions executed by the server (all its threads), per request.
# Needs valgrind (callgrind_control, callgrind_annotate) and python3 (stdlib only). Loopback only,
# bounded: every wait has a timeout.
#
#   benches/callgrind.sh                  # builds both binaries (release), N=2000 WARMUP=600 K=16
#   RULEHOOK_BIN=... BASELINE_BIN=... benches/callgrind.sh   # prebuilt binaries, no build
#   KEEP=/tmp/cg benches/callgrind.sh     # keep the callgrind.out files and annotations there
#
# Environment: N (measured requests, default 2000), WARMUP (default 600: the service releases
# its start-up pages (service/trim.rs) about a second after it starts, and with 200 warm-up
# requests that could land in the measured window, ~2k per event at random), K (keep-alive
# connections, default 16), TOP (lines of each profile printed, default 25),
# DEDUP (the source's dedup_window; unset = the kind's default, so the delivery look-up runs;
# 'off' = as load.sh), LOG_LEVEL (the log action's level, default info; 'debug' is below the
# default filter, so the action runs and is recorded but no line is written: the breakdown
# without the line's formatting), STARTUP_TIMEOUT (seconds, default 180), JOB_TIMEOUT (default 300).
#
# Method, per server: start it under callgrind (full instrumentation from the start, so call
# stacks are complete), send WARMUP signed requests over K keep-alive connections, zero the
# counters (callgrind_control -z), send exactly N requests over the same connections (each body
# unique: IP Fabric has no delivery id, its delivery key is the body hash, so every request is a
# new event), for rulehook wait until the journal has no pending job (the actions are counted),
# then dump (callgrind_control --dump) and read the dump's total Ir. Ir/request = total / N.
# Repeat runs agree within ~0.3 %. Caveat: valgrind hides some CPU features (SHA-NI among them),
# so SHA-256 runs its portable code here and its share is larger than on the real CPU.
set -eu
cd "$(dirname "$0")/.."
N=${N:-2000}
WARMUP=${WARMUP:-600}
K=${K:-16}
TOP=${TOP:-25}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-180}
JOB_TIMEOUT=${JOB_TIMEOUT:-300}
SECRET=bench-secret
EVENT=rulebooks/events/ipfabric-discover-completed.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rulehook-callgrind.XXXXXX")
PIDS=""

. benches/callgrind_lib.sh

for tool in valgrind callgrind_control callgrind_annotate python3; do
  command -v "$tool" > /dev/null || { echo "callgrind.sh: $tool not found" >&2; exit 1; }
done
case "$N$WARMUP$K" in *[!0-9]*) echo "N, WARMUP and K must be integers" >&2; exit 1 ;; esac
[ "$WARMUP" -ge "$K" ] || { echo "WARMUP must be at least K (every connection warms up)" >&2; exit 1; }

# 1. The binaries: prebuilt (RULEHOOK_BIN, BASELINE_BIN) or built here (release profile; cargo
#    honours CARGO_TARGET_DIR). Only what is not given is built.
if [ -z "${RULEHOOK_BIN:-}" ] || [ -z "${BASELINE_BIN:-}" ]; then
  set --
  [ -n "${RULEHOOK_BIN:-}" ] || set -- "$@" --bin rulehook
  [ -n "${BASELINE_BIN:-}" ] || set -- "$@" --bench baseline_server
  cargo build --release "$@" --message-format=json-render-diagnostics > "$WORK/build.json"
  exe() { # $1 = target name, $2 = target kind
    python3 - "$1" "$2" "$WORK/build.json" <<'PY'
import sys, json
name, kind, path = sys.argv[1:]
for line in open(path):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name \
            and kind in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])
PY
  }
  [ -n "${RULEHOOK_BIN:-}" ] || RULEHOOK_BIN=$(exe rulehook bin)
  [ -n "${BASELINE_BIN:-}" ] || BASELINE_BIN=$(exe baseline_server bench)
fi
for b in "$RULEHOOK_BIN" "$BASELINE_BIN"; do
  [ -x "$b" ] || { echo "callgrind.sh: not an executable: '$b'" >&2; exit 1; }
done
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; KEEP=$(cd "$KEEP" && pwd); fi

# 2. The load client (benches/callgrind_client.py): exactly WARMUP then N signed requests over K
#    persistent connections; runs the zero command between the two phases and the dump command
#    at the end, while the connections are still open (so connection set-up and teardown are not
#    in the figure).

wait_listen() { # $1 = label, $2 = pid; prints the base URL
  i=0
  while [ "$i" -lt "$((STARTUP_TIMEOUT * 10))" ]; do
    u=$(sed -n 's/^listening on //p' "$WORK/$1.stdout" | head -1)
    [ -n "$u" ] && { echo "$u"; return; }
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
  done
  echo "$1 did not start within ${STARTUP_TIMEOUT}s; its output:" >&2
  tail -n 20 "$WORK/$1.stdout" "$WORK/$1.stderr" "$WORK/valgrind.$1.log" >&2 || true
  exit 1
}

rulebook() { # $1 = dir, $2 = snapshot id the one rule matches (same shape as load.sh's `rules 1`)
  mkdir -p "$1"
  dedup=""
  [ -n "${DEDUP:-}" ] && dedup=", dedup_window: '$DEDUP'"
  cat > "$1/bench.yml" <<YML
sources:
  - { name: ipfabric, kind: ipfabric, secret: $SECRET$dedup }
rules:
  - name: r0
    condition: '\$.type == "snapshot" && \$.snapshot.id == "$2" && \$.status == "completed"'
    actions: [{ log: { message: 'snapshot {{ event.snapshot.id }} completed', level: ${LOG_LEVEL:-info} } }]
YML
}

IR=""
measure() { # $1 = label, $2 = journal file or -, then the server command; sets IR
  label=$1; journal=$2; shift 2
  out="$WORK/callgrind.out.$label"
  valgrind --tool=callgrind --callgrind-out-file="$out" --log-file="$WORK/valgrind.$label.log" \
    "$@" > "$WORK/$label.stdout" 2> "$WORK/$label.stderr" &
  pid=$!; PIDS="$PIDS $pid"
  url=$(wait_listen "$label" "$pid")
  echo "$label: pid $pid, $url"
  rc=0
  python3 benches/callgrind_client.py "$url/hooks/ipfabric" "$SECRET" "$EVENT" "$WARMUP" "$N" "$K" \
    "callgrind_control -z $pid" "callgrind_control --dump=measured $pid" "$journal" "$JOB_TIMEOUT" || rc=$?
  dump=$(ls "$out".* 2>/dev/null | head -1)
  [ -n "$dump" ] || { echo "no callgrind dump for $label" >&2; exit 1; }
  stop "$pid"
  PIDS=$(echo "$PIDS" | sed "s/ $pid\$//; s/ $pid / /")
  IR=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  echo "  total Ir $IR -> $(python3 -c "print(f'{$IR / $N:,.0f}')") Ir/request"
  # callgrind_annotate 3.19 counts the cost of a call that was in progress when the counters
  # were zeroed ("calls=0") as the caller's self cost: count such calls once (costs unchanged).
  sed 's/^calls=0 /calls=1 /' "$dump" > "$WORK/$label.callgrind"
  rm -f "$dump"
  [ -z "${KEEP:-}" ] || cp "$WORK/$label.callgrind" "$KEEP/callgrind.out.$label"
  [ "$rc" -eq 0 ] || { echo "$label: not every measured request got a 2xx" >&2; exit 1; }
}

# 3. The runs.
mkdir -p "$WORK/scripts" "$WORK/templates"
measure baseline - "$BASELINE_BIN" 127.0.0.1:0 "$SECRET"
IR_BASE=$IR

rulebook "$WORK/rb-match" a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21
measure rulehook-match "$WORK/data-match/journal.db" "$RULEHOOK_BIN" serve --rulebooks "$WORK/rb-match" \
  --scripts "$WORK/scripts" --templates "$WORK/templates" --data "$WORK/data-match" --listen 127.0.0.1:0
IR_MATCH=$IR
jobs=$(python3 -c "import sqlite3,sys;print(', '.join(f'{s} {c}' for s,c in sqlite3.connect(sys.argv[1]).execute('select state, count(*) from jobs group by state')))" "$WORK/data-match/journal.db" 2>/dev/null || echo "?")
echo "  jobs by state (warm-up included): $jobs"

rulebook "$WORK/rb-nomatch" no-such-snapshot
measure rulehook-nomatch "$WORK/data-nomatch/journal.db" "$RULEHOOK_BIN" serve --rulebooks "$WORK/rb-nomatch" \
  --scripts "$WORK/scripts" --templates "$WORK/templates" --data "$WORK/data-nomatch" --listen 127.0.0.1:0
IR_NOMATCH=$IR

# 4. The figures.
echo
python3 - "$N" "$IR_BASE" "$IR_MATCH" "$IR_NOMATCH" "${DEDUP:-default}" <<'PY'
import sys
n, base, match, nomatch, dedup = int(sys.argv[1]), *map(int, sys.argv[2:5]), sys.argv[5]
b, m, x = base / n, match / n, nomatch / n
print(f"Instructions (Ir) per request, N={n}, dedup_window {dedup}:")
print(f"  baseline (verify + parse, no store)      {b:>12,.0f} Ir/request")
print(f"  rulehook, 1 rule matching (log action)   {m:>12,.0f} Ir/event   baseline/rulehook {b/m:.3f}  ({m/b:.1f}x baseline)")
print(f"  rulehook, no rule matching (accept only) {x:>12,.0f} Ir/event   baseline/rulehook {b/x:.3f}  ({x/b:.1f}x baseline)")
print(f"  the matched rule's job and action cost   {m-x:>12,.0f} Ir/event")
PY

# Self cost grouped by component: the crate (or sqlite3.c, libc malloc, ...) whose code ran.
# Standard-library code inlined into a crate's function is charged to that crate.

profile() { # $1 = label, $2 = yes (inclusive) | no (self); writes $WORK/$1.{inclusive,self}.txt
  kind=$([ "$2" = yes ] && echo inclusive || echo self)
  callgrind_annotate --auto=no --threshold=100 --inclusive="$2" "$WORK/$1.callgrind" > "$WORK/$1.$kind.txt" 2>/dev/null || true
  [ -z "${KEEP:-}" ] || cp "$WORK/$1.$kind.txt" "$KEEP/"
}
top() { # $1 = annotate output; the TOP first functions, file paths cut, runtime plumbing left out
  awk '/^-+$/ {d++; next} d >= 3 && NF' "$1" | sed -n '/file:function/,$p' | sed 1d \
    | sed -E 's#  (\?\?\?|[^ ]*\.(rs|c|S|h|cc|cpp)):#  #; s# \[[^]]*\]$##' \
    | grep -Ev '  (clone|start_thread)$|thread_start|call_once\{\{vtable\.shim|__rust_begin_short_backtrace$|tokio::runtime::(context|task|scheduler|blocking::pool)|<core::(pin::Pin<P>|future::poll_fn::PollFn<F>) as' \
    | head -"$TOP" | cut -c1-170
}
for label in rulehook-match rulehook-nomatch; do
  profile "$label" yes
  profile "$label" no
done
echo
echo "Top $TOP functions by inclusive cost (all threads; tokio/thread plumbing left out), rulehook, 1 matching rule:"
top "$WORK/rulehook-match.inclusive.txt"
echo
echo "Top $TOP functions by self cost, rulehook, 1 matching rule:"
top "$WORK/rulehook-match.self.txt"
# The parts of the issue's breakdown, inclusive (they overlap: allocation is inside each), per
# event; "the rest" is the total less the store's writer thread, the verification and the job.
part() { # $1 = inclusive annotate output, $2 = function name (the end of it)
  grep -E "[:>]$2( \[|$)" "$1" | sed -E 's/^ *([0-9,]+).*/\1/; s/,//g' | sort -n | tail -1
}
parts() { # $1 = label
  f="$WORK/$1.inclusive.txt"
  total=$(sed -n 's/^ *\([0-9,]*\) *(100.0%) *PROGRAM TOTALS.*/\1/p' "$f" | tr -d ,)
  [ -n "$total" ] || total=$(grep -m1 'PROGRAM TOTALS' "$f" | sed -E 's/^ *([0-9,]+).*/\1/; s/,//g')
  w=$(part "$f" 'rulehook::store::sqlite::writer::run'); v=$(part "$f" 'rulehook::verify::Verifier::verify')
  j=$(part "$f" 'rulehook::engine::job::<impl rulehook::engine::Engine>::run_job::\{\{closure\}\}')
  d=$(part "$f" 'rulehook::body::BodyFormat::decode'); q=$(part "$f" 'sqlite3_step'); p=$(part "$f" 'pagerWalFrames')
  echo "Where the instructions go, $1 (inclusive, per event):"
  for kv in "the store's writer thread|${w:-0}" "  of it sqlite3_step|${q:-0}" "  of it WAL frames (commits)|${p:-0}" \
            "Verifier::verify|${v:-0}" "  of it BodyFormat::decode|${d:-0}" "run_job (the job and its action)|${j:-0}" \
            "the rest (HTTP, handler, matching, queue, tasks)|$(( ${total:-0} - ${w:-0} - ${v:-0} - ${j:-0} ))"; do
    printf '  %-50s %8d Ir/event\n' "${kv%%|*}" $(( ${kv##*|} / N ))
  done
}
echo
parts rulehook-match
for label in rulehook-match rulehook-nomatch baseline; do
  echo
  echo "Self cost by component, $label:"
  python3 benches/callgrind_components.py "$WORK/$label.callgrind" "$N" 20 "$(pwd)"
done
if [ -n "${KEEP:-}" ]; then
  echo
  echo "Kept in $KEEP: callgrind.out.{baseline,rulehook-match,rulehook-nomatch}, rulehook-*.{inclusive,self}.txt (full lists)"
  echo "  e.g. callgrind_annotate --inclusive=yes $KEEP/callgrind.out.rulehook-match | less -S"
fi
