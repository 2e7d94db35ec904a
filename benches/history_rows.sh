#!/bin/sh
# What the history's rows cost in SQLite alone, per event (benches/history_rows.rs): instructions
# counted by callgrind for 2,200 and 200 events, the difference divided by 2,000 (set-up out).
# Deterministic: the figure does not depend on the machine's speed or load. See docs/decisions.md.
#
#   benches/history_rows.sh          # builds the bench (release), prints one line per setup
#   HISTORY_ROWS_BIN=... benches/history_rows.sh
set -eu
cd "$(dirname "$0")/.."
BIN=${HISTORY_ROWS_BIN:-$(cargo build --release --bench history_rows --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="history_rows" and m.get("executable"): print(m["executable"])')}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rulehook-rows.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

ir() { # $1 = events, then BATCH MODE DEDUP: instructions of the whole run
  rm -f "$WORK"/t.db*
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" "$1" "$2" "$3" "$4" "$WORK/t.db" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

while read -r batch mode dedup label; do
  small=$(ir 200 "$batch" "$mode" "$dedup")
  large=$(ir 2200 "$batch" "$mode" "$dedup")
  printf '%-72s %8d Ir/event\n' "$label" $(( (large - small) / 2000 ))
done <<'SETUPS'
5 today 1 as written today: 5 events per commit, job updated to done next commit
16 today 1 as written today, 16 events per commit
512 lazy 1 log-fronted at best: 512 per batch, no sync, job inserted once as done
5 today 0 as written today, no delivery key (dedup_window off)
512 lazy 0 log-fronted at best, no delivery key
SETUPS
