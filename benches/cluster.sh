#!/bin/sh
# JetStream figures (docs/benchmarks.md), all in one run on this machine, loopback only:
#   1. events/s one node accepts: embedded store vs JetStream (wrk, DURATION s each)
#   2. time for N_JOBS ~50 ms actions with 1, 2 and 3 worker processes (same --concurrency)
#   3. p50/p99 from POST to the action's start (a paced sender), JetStream vs embedded
# Needs wrk, python3 and nats-server: a private one with JetStream is started on a free port,
# storing in a temporary directory (or set NATS=nats://HOST:PORT to use a running one).
#
#   benches/cluster.sh     # DURATION=10 N_JOBS=1500 CONCURRENCY=8
set -eu
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
N_JOBS=${N_JOBS:-1500}
CONCURRENCY=${CONCURRENCY:-8}
BIN=${RULEHOOK_BIN:-./target/release/rulehook}
[ "$BIN" != ./target/release/rulehook ] || cargo build --release --quiet
TOOLS="python3 benches/cluster_tools.py"
WORK=$(mktemp -d)
PIDS=""
NATS_PID=""
cleanup() {
  for p in $PIDS $(cat "$WORK/node.pids" 2>/dev/null) $NATS_PID; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
RECV_PORT=$((20000 + $$ % 20000))
if [ -z "${NATS:-}" ]; then
  NATS_PORT=$((RECV_PORT + 1))
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/js" > "$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  NATS=nats://127.0.0.1:$NATS_PORT
  sleep 1
fi

mkdir -p "$WORK/scripts" "$WORK/templates"
rulebook() { # $1 = dir, $2 = action URL
  mkdir -p "$1"
  cat > "$1/bench.yml" <<YML
sources:
  - { name: in, kind: bearer, secret: bench-token }
rules:
  - name: work
    condition: '\$.n >= 0'
    actions:
      - post_webhook: { url: "$2", body: '{"n": {{ event.n }}, "t": {{ event.t }}}', retries: 0 }
YML
}
node() { # $1 = name, then serve arguments; prints the base URL
  log="$WORK/$1.log"; shift
  RUST_LOG=warn "$BIN" serve --rulebooks "$WORK/rb" --scripts "$WORK/scripts" --templates "$WORK/templates" \
    --listen 127.0.0.1:0 "$@" > "$log" 2>&1 &
  echo $! >> "$WORK/node.pids"
  for _ in $(seq 100); do
    u=$(sed -n 's/^listening on //p' "$log" | head -1)
    [ -n "$u" ] && { echo "$u"; return; }
    sleep 0.1
  done
  echo "node did not start: $(cat "$log")" >&2; exit 1
}
stop_nodes() { # the nodes and receivers started so far (not the NATS server)
  for p in $PIDS $(cat "$WORK/node.pids" 2>/dev/null); do
    kill "$p" 2>/dev/null || true
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
  PIDS=""; : > "$WORK/node.pids"
}
port() { echo "$1" | sed 's/.*://'; }
prefix() { echo "bench$$_$1"; }
wrk_post() { # $1 = base URL
  cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"n": 1, "t": 0}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
LUA
  wrk -t2 -c32 -d"${DURATION}s" -s "$WORK/post.lua" "$1/hooks/in" | awk '/Requests\/sec/ {print $2}'
}

echo "== 1. events/s accepted by one node (wrk -c32, ${DURATION}s; actions to a 0 ms receiver)"
: > "$WORK/recv0.txt"
$TOOLS receiver "$RECV_PORT" 0 "$WORK/recv0.txt" & PIDS="$PIDS $!"
rulebook "$WORK/rb" "http://127.0.0.1:$RECV_PORT/r"
sleep 0.5
u=$(node embedded --data "$WORK/data-embedded")
echo "embedded (one node, --role all):  $(wrk_post "$u") req/s"
stop_nodes
$TOOLS receiver "$RECV_PORT" 0 "$WORK/recv0.txt" & PIDS="$PIDS $!"; sleep 0.5
u=$(node nats-all --store "$NATS" --store-prefix "$(prefix all)")
echo "JetStream (one node, --role all): $(wrk_post "$u") req/s"
stop_nodes
$TOOLS receiver "$RECV_PORT" 0 "$WORK/recv0.txt" & PIDS="$PIDS $!"; sleep 0.5
u=$(node nats-ingest --store "$NATS" --store-prefix "$(prefix ingest)" --role ingest)
echo "JetStream (--role ingest):        $(wrk_post "$u") req/s"
stop_nodes

echo "== 2. $N_JOBS actions of ~50 ms, --concurrency $CONCURRENCY per worker"
for workers in 1 2 3; do
  out="$WORK/recv-w$workers.txt"; : > "$out"
  $TOOLS receiver "$RECV_PORT" 50 "$out" & PIDS="$PIDS $!"; sleep 0.5
  p=$(prefix "w$workers")
  u=$(node ingest --store "$NATS" --store-prefix "$p" --role ingest)
  $TOOLS post "$(port "$u")" "$N_JOBS" 16
  sleep 2 # dispatched
  for w in $(seq "$workers"); do
    node "worker$w" --store "$NATS" --store-prefix "$p" --role worker --concurrency "$CONCURRENCY" >/dev/null
  done
  echo "$workers worker(s): $($TOOLS count "$out" "$N_JOBS" 300) s"
  stop_nodes
done

echo "== 3. POST -> action start, 500 events at 50/s"
for store in embedded nats; do
  out="$WORK/lat-$store.txt"; : > "$out"
  $TOOLS receiver "$RECV_PORT" 0 "$out" & PIDS="$PIDS $!"; sleep 0.5
  if [ $store = embedded ]; then
    u=$(node lat-embedded --data "$WORK/data-lat")
  else
    u=$(node lat-nats --store "$NATS" --store-prefix "$(prefix lat)")
  fi
  $TOOLS paced "$(port "$u")" 500 50
  $TOOLS count "$out" 500 60 >/dev/null
  echo "$store: $($TOOLS latency "$out")"
  stop_nodes
done
