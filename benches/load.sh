#!/bin/sh
# Load run: rulehook against a minimal baseline receiver, same machine, same run, same load.
# Needs wrk (apt-get install wrk) and python3. Bounded: each wrk run lasts DURATION seconds,
# loopback only. Prints req/s and latency per setup; see docs/benchmarks.md.
#
#   benches/load.sh            # DURATION=10 CONNS=32 by default
set -eu
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
# SETUPS: rule counts to load (default "1 1000 10000"); SETUPS= runs the latency part only.
SETUPS=${SETUPS-1 1000 10000}
CONNS=${CONNS:-32}
SECRET=bench-secret
WORK=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# RULEHOOK_BIN / BASELINE_BIN: prebuilt binaries (e.g. an older release, to compare in one run).
RULEHOOK_BIN=${RULEHOOK_BIN:-./target/release/rulehook}
[ "$RULEHOOK_BIN" != ./target/release/rulehook ] || cargo build --release --quiet
BASELINE=${BASELINE_BIN:-$(cargo build --release --bench baseline_server --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="baseline_server" and m.get("executable"): print(m["executable"])')}

BODY=$(cat rulebooks/events/ipfabric-discover-completed.json)
SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/.* //')
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-IPF-Signature"] = "$SIG"
LUA

rules() { # $1 = number of rules; the event matches exactly one of them (a log action)
  mkdir -p "$WORK/rb$1" "$WORK/scripts" "$WORK/templates"
  python3 - "$1" "$WORK/rb$1/bench.yml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
out = ["sources:", "  - { name: ipfabric, kind: ipfabric, secret: bench-secret, dedup_window: 'off' }", "rules:"]
for i in range(n):
    sid = "a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21" if i == 0 else f"snap-{i}"
    out.append(f"  - name: r{i}")
    out.append(f"    condition: '$.type == \"snapshot\" && $.snapshot.id == \"{sid}\" && $.status == \"completed\"'")
    out.append("    actions: [{ log: { message: 'snapshot {{ event.snapshot.id }} completed' } }]")
open(path, "w").write("\n".join(out) + "\n")
PY
}

wait_listen() { # $1 = log file; prints the base URL (10,000 rules load slowly on a busy machine)
  for _ in $(seq "${STARTUP_TIMEOUT:-120}0"); do
    u=$(sed -n 's/^listening on //p' "$1" | head -1)
    [ -n "$u" ] && { echo "$u"; return; }
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}

rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2 " kB"}' "/proc/$1/status"; }
# The sum of a metric's samples from /metrics ($1 = base URL, $2 = name): the journal itself is
# held exclusively by the server (SQLite's unix-excl VFS), so it is not opened from here.
metric() { python3 -c "import sys,urllib.request as u;t=u.urlopen(sys.argv[1]+'/metrics').read().decode();print(int(sum(float(l.split()[-1]) for l in t.splitlines() if l.split('{')[0].split(' ')[0]==sys.argv[2])))" "$1" "$2"; }

run_wrk() { # $1 = label, $2 = url
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$2" > "$WORK/wrk.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.txt")
  echo "$1: ${rps} req/s  p50 ${p50}  p99 ${p99}  non-2xx ${non2xx:-0}"
}

if [ -n "$SETUPS" ]; then
  "$BASELINE" 127.0.0.1:0 "$SECRET" > "$WORK/baseline.out" 2>&1 &
  BPID=$!; PIDS="$PIDS $BPID"
  B=$(wait_listen "$WORK/baseline.out")
  echo "baseline idle RSS $(rss $BPID)"
  run_wrk "baseline (verify + parse, no store)" "$B/hooks/ipfabric"
  echo "baseline peak RSS $(hwm $BPID)"
  kill $BPID
fi

for n in $SETUPS; do
  rules "$n"
  rm -rf "$WORK/data$n"
  "$RULEHOOK_BIN" serve --rulebooks "$WORK/rb$n" --scripts "$WORK/scripts" --templates "$WORK/templates" \
    --data "$WORK/data$n" --listen 127.0.0.1:0 > "$WORK/rh$n.out" 2> "$WORK/rh$n.err" &
  RPID=$!; PIDS="$PIDS $RPID"
  R=$(wait_listen "$WORK/rh$n.out")
  sleep 0.5
  echo "rulehook ($n rules) idle RSS $(rss $RPID)"
  run_wrk "rulehook ($n rules, journal + match + log action)" "$R/hooks/ipfabric"
  sleep 1
  echo "rulehook ($n rules) peak RSS $(hwm $RPID); jobs pending 1s after the load: $(metric "$R" rulehook_jobs_pending); events stored: $(metric "$R" rulehook_events_accepted_total)"
  kill $RPID; wait $RPID 2>/dev/null || true
done

# POST -> script start, idle: sequential posts, the script records when it starts.
mkdir -p "$WORK/lat/rb" "$WORK/lat/scripts"
cat > "$WORK/lat/rb/lat.yml" <<'YML'
sources:
  - { name: ipfabric, kind: ipfabric, secret: bench-secret, dedup_window: 'off' }
rules:
  - name: stamp
    actions: [{ run_script: { script: stamp.sh } }]
YML
printf '#!/bin/sh\ndate +%%s%%N >> "$STAMPS"\n' > "$WORK/lat/scripts/stamp.sh"
chmod +x "$WORK/lat/scripts/stamp.sh"
STAMPS="$WORK/lat/stamps" "$RULEHOOK_BIN" serve --rulebooks "$WORK/lat/rb" --scripts "$WORK/lat/scripts" \
  --templates "$WORK/templates" --data "$WORK/lat/data" --listen 127.0.0.1:0 > "$WORK/lat.out" 2>/dev/null &
LPID=$!; PIDS="$PIDS $LPID"
L=$(wait_listen "$WORK/lat.out")
python3 - "$L/hooks/ipfabric" "$WORK/lat/stamps" "$SECRET" "$WORK/lat/scripts/stamp.sh" <<'PY'
import sys, time, hmac, hashlib, json, os, socket, statistics, subprocess
url, stamps, secret, script = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4]
# Floor, same run: starting the same script directly (fork + exec of sh and date).
floor = []
direct = stamps + ".direct"
for i in range(60):
    t0 = time.time_ns()
    subprocess.run([script], env={**os.environ, "STAMPS": direct}, check=True)
    floor.append((int(open(direct).read().splitlines()[i]) - t0) / 1e6)
floor.sort()
print(f"floor: exec of the same script directly: p50 {statistics.median(floor):.2f} ms")
# One kept-alive connection, each request built before its clock starts: the client's own cost
# (urllib's set-up and a connection per request cost ~0.5 ms here) stays out of the figure.
host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
conn = socket.create_connection((host, int(port)))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lat, acked = [], []
for i in range(60):
    body = json.dumps({"type": "snapshot", "status": "completed", "n": i}).encode()
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    req = (f"POST /hooks/ipfabric HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
           f"X-IPF-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    t0 = time.time_ns()
    conn.sendall(req)
    reply = b""
    while not (b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}")):
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit("the server closed the connection")
        reply += chunk
    acked.append((time.time_ns() - t0) / 1e6)
    if not reply.startswith(b"HTTP/1.1 202"):
        sys.exit(f"not accepted: {reply[:80]!r}")
    for _ in range(400):
        if os.path.exists(stamps) and len(open(stamps).read().splitlines()) > i:
            break
        time.sleep(0.005)
    start = int(open(stamps).read().splitlines()[i])
    lat.append((start - t0) / 1e6)
    time.sleep(0.05)
lat.sort()
print(f"POST -> script start (idle, {len(lat)} samples): p50 {statistics.median(lat):.2f} ms  p90 {lat[int(len(lat)*0.9)]:.2f} ms  max {lat[-1]:.2f} ms")
print(f"POST -> 202 (the event durable; the same requests): p50 {statistics.median(acked):.2f} ms")
PY
