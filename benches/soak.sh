#!/bin/sh
# Soak run: does disk and memory stay flat under a long, steady load thanks to retention?
#
# Starts `rulehook serve` (loopback, fresh data dir) with two rules on the same IP Fabric event:
# a `log` action (as in load.sh's 1-rule case) and a `run_script` of a script that only exits 0,
# so every event makes two jobs with recorded attempts. A python3 stdlib client then posts signed
# events at a fixed RATE for DURATION seconds (keep-alive connections over a few threads; every
# body carries a counter, so every request is a new event: IP Fabric's delivery key is the body
# hash). Every SAMPLE seconds it prints RSS, the journal's size on disk, row counts and pending
# jobs; at the end, a verdict: did RSS and disk stay within ±TOLERANCE % of their value at the
# half-way point over the second half of the run? With retention working they plateau once the
# first events are older than RETAIN (SQLite reuses freed pages, so the file levels off rather
# than shrinking; the WAL is checkpointed automatically).
#
#   benches/soak.sh                                  # DURATION=600 RETAIN=60s RATE=300
#   DURATION=180 RETAIN=30d benches/soak.sh          # control: no pruning, steady growth
#
# Env: RULEHOOK_BIN (default target/release/rulehook; nothing is built), DURATION (s), RETAIN,
# RATE (req/s), THREADS (client connections, 4), SAMPLE (s, 30), TOLERANCE (%, 20),
# DEDUP_WINDOW (the source's dedup_window; default RETAIN, so the delivery-id entries expire and
# are pruned on the same horizon; IP Fabric's own default is 15m), CONCURRENCY (serve
# --concurrency, 8), SCRAPE (seconds between GETs of /metrics, as Prometheus would; 0, the
# default, never scrapes). Needs python3. Loopback only; bounded by DURATION; exit status 0 when
# the verdict is "flat", 1 when not, 2 on a setup error.
#
# Seen on 2026-11-24 (2 cores, 300 req/s): with SCRAPE=0, RSS rose ~135 B per request for the
# whole run while disk and rows were flat; with SCRAPE=15 RSS was flat. The metrics recorder is
# installed with install_recorder() and run_upkeep() is only called by GET /metrics, so the
# histogram samples pile up until something scrapes.
set -eu
cd "$(dirname "$0")/.."
BIN=${RULEHOOK_BIN:-target/release/rulehook}
DURATION=${DURATION:-600}
RETAIN=${RETAIN:-60s}
RATE=${RATE:-300}
THREADS=${THREADS:-4}
SAMPLE=${SAMPLE:-30}
TOLERANCE=${TOLERANCE:-20}
DEDUP_WINDOW=${DEDUP_WINDOW:-$RETAIN}
CONCURRENCY=${CONCURRENCY:-8}
SCRAPE=${SCRAPE:-0}
SECRET=soak-secret

[ -x "$BIN" ] || { echo "no rulehook binary at $BIN (set RULEHOOK_BIN)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rulehook-soak.XXXXXX")
SPID=""
CPID=""
ZPID=""
cleanup() {
  for p in $ZPID $CPID $SPID; do
    case $p in ''|*[!0-9]*) ;; *) kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true ;; esac
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK/rb" "$WORK/scripts" "$WORK/templates" "$WORK/data"
cat > "$WORK/rb/soak.yml" <<YML
sources:
  - { name: ipfabric, kind: ipfabric, secret: $SECRET, dedup_window: '$DEDUP_WINDOW' }
rules:
  - name: log
    condition: '\$.type == "snapshot" && \$.snapshot.id == "a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21" && \$.status == "completed"'
    actions: [{ log: { message: 'snapshot {{ event.snapshot.id }} completed' } }]
  - name: script
    condition: '\$.type == "snapshot" && \$.snapshot.id == "a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21" && \$.status == "completed"'
    actions: [{ run_script: { script: ok.sh } }]
YML
printf '#!/bin/sh\nexit 0\n' > "$WORK/scripts/ok.sh"
chmod +x "$WORK/scripts/ok.sh"

"$BIN" serve --rulebooks "$WORK/rb" --scripts "$WORK/scripts" --templates "$WORK/templates" \
  --data "$WORK/data" --listen 127.0.0.1:0 --retain "$RETAIN" --concurrency "$CONCURRENCY" \
  --grace 2s > "$WORK/server.out" 2> "$WORK/server.err" &
SPID=$!
URL=""
for _ in $(seq 100); do
  URL=$(sed -n 's/^listening on //p' "$WORK/server.out" | head -1)
  [ -n "$URL" ] && break
  kill -0 "$SPID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$URL" ]; then
  echo "server did not start:" >&2; cat "$WORK/server.out" "$WORK/server.err" >&2; exit 2
fi
case $URL in http://127.0.0.1:*) ;; *) echo "unexpected listen address $URL" >&2; exit 2 ;; esac
sleep 0.5

# The load: RATE req/s on a fixed schedule (request i is due at start + i/RATE), THREADS
# keep-alive connections. Cumulative counters and a latency histogram go to stats.json once a
# second; the sampler takes differences.
cat > "$WORK/client.py" <<'PY'
import sys, time, json, hmac, hashlib, threading, http.client, os
host, port, secret, rate, threads, duration, out, scrape = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), \
    float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), sys.argv[7], float(sys.argv[8])
EDGES = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, float("inf")]  # ms
lock = threading.Lock()
st = {"sent": 0, "ok": 0, "bad": 0, "err": 0, "lag_max": 0.0, "hist": [0] * len(EDGES), "status": {},
      "scrapes": 0, "scrape_err": 0}
nxt = [0]
t0 = time.monotonic()
end = t0 + duration
def worker():
    conn = None
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        due = t0 + i / rate
        if due >= end:
            return
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        lag = time.monotonic() - due
        body = json.dumps({"type": "snapshot", "action": "discover", "status": "completed",
                           "requester": "soak", "snapshot": {"id": "a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21",
                           "name": "nightly"}, "timestamp": int(time.time() * 1000), "n": i},
                          separators=(",", ":")).encode()
        sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
        t1 = time.monotonic()
        code = None
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("POST", "/hooks/ipfabric", body,
                         {"X-IPF-Signature": sig, "Content-Type": "application/json"})
            r = conn.getresponse(); r.read(); code = r.status
            if r.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception:
            try:
                conn.close()
            except Exception:
                pass
            conn = None
        ms = (time.monotonic() - t1) * 1000
        with lock:
            st["sent"] += 1
            st["lag_max"] = max(st["lag_max"], lag)
            if code is None:
                st["err"] += 1
            else:
                if code == 202: st["ok"] += 1
                else: st["bad"] += 1
                st["status"][str(code)] = st["status"].get(str(code), 0) + 1
                for k, e in enumerate(EDGES):
                    if ms <= e:
                        st["hist"][k] += 1; break
def scraper():
    while time.monotonic() + scrape < end:
        time.sleep(scrape)
        try:
            c = http.client.HTTPConnection(host, port, timeout=10)
            c.request("GET", "/metrics"); r = c.getresponse(); r.read(); c.close()
            ok = r.status == 200
        except Exception:
            ok = False
        with lock:
            st["scrapes" if ok else "scrape_err"] += 1
def dump():
    with lock:
        s = json.dumps(st)
    with open(out + ".tmp", "w") as f:
        f.write(s)
    os.replace(out + ".tmp", out)
ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
for t in ts: t.start()
if scrape > 0:
    threading.Thread(target=scraper, daemon=True).start()
while any(t.is_alive() for t in ts):
    dump(); time.sleep(1)
dump()
PY

# One sample: a TSV line appended to samples.tsv and a table row on stdout.
cat > "$WORK/sample.py" <<'PY'
import sys, os, json, sqlite3
t, pid, data, stats, prev, tsv, errlog = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
after = len(sys.argv) > 8  # a sample after the load: no request rate
EDGES = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, float("inf")]
def kb(field):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(field + ":"):
            return int(l.split()[1])
    return 0
rss, hwm = kb("VmRSS"), kb("VmHWM")
fds = len(os.listdir(f"/proc/{pid}/fd"))
def size(p):
    try: return os.path.getsize(p)
    except OSError: return 0
db, wal = size(f"{data}/journal.db"), size(f"{data}/journal.db-wal")
# The server holds the journal exclusively (SQLite's unix-excl VFS): read the main file without
# locks (immutable=1), so counts are as of the last WAL checkpoint (at most ~1,000 pages behind).
c = sqlite3.connect(f"file:{data}/journal.db?mode=ro&immutable=1", uri=True, timeout=10)
c.execute("BEGIN")  # one read snapshot for all the counts (a sweep may commit in between)
q = lambda s: c.execute(s).fetchone()[0]
ev, jobs, att, state = q("SELECT COUNT(*) FROM events"), q("SELECT COUNT(*) FROM jobs"), \
    q("SELECT COUNT(*) FROM attempts"), q("SELECT COUNT(*) FROM state")
pend, failed = q("SELECT COUNT(*) FROM jobs WHERE state='pending'"), q("SELECT COUNT(*) FROM jobs WHERE state='failed'")
free, pages = q("PRAGMA freelist_count"), q("PRAGMA page_count")
c.close()
try: s = json.load(open(stats))
except (OSError, ValueError): s = {"sent": 0, "ok": 0, "bad": 0, "err": 0, "hist": [0] * len(EDGES)}
try: p = json.load(open(prev))
except (OSError, ValueError): p = {"sent": 0, "ok": 0, "bad": 0, "err": 0, "hist": [0] * len(EDGES), "t": 0}
json.dump({**s, "t": t}, open(prev, "w"))
dt = max(t - p["t"], 1)
h = [a - b for a, b in zip(s["hist"], p["hist"])]
def pct(q):
    n = sum(h)
    if n == 0: return "-"
    acc = 0
    for e, k in zip(EDGES, h):
        acc += k
        if acc >= q * n: return f"<={e:g}" if e != float("inf") else ">5000"
warn = sum(1 for l in open(errlog, errors="replace") if " WARN " in l or " ERROR " in l)
row = dict(t=t, rss_kb=rss, hwm_kb=hwm, fds=fds, db=db, wal=wal, disk=db + wal, free=free, pages=pages,
           events=ev, jobs=jobs, attempts=att, state=state, pending=pend, failed=failed,
           rps=(s["sent"] - p["sent"]) / dt, non202=(s["bad"] - p["bad"]) + (s["err"] - p["err"]),
           p99=pct(0.99), warn=warn)
if after:
    row["rps"], row["non202"], row["p99"] = 0, 0, "-"
new = not os.path.exists(tsv)
with open(tsv, "a") as f:
    if new: f.write("\t".join(row) + "\n")
    f.write("\t".join(str(v) for v in row.values()) + "\n")
mb = lambda b: f"{b / 1048576:.1f}"
rps_s = "-" if after else f"{row['rps']:.0f}"
print(f"{t:>5} {rss / 1024:>7.1f} {hwm / 1024:>7.1f} {fds:>4} {mb(db):>7} {mb(wal):>6} {mb(db + wal):>7} {free:>6} "
      f"{ev:>7} {jobs:>7} {att:>7} {state:>7} {pend:>5} {failed:>4} {rps_s:>6} {row['non202']:>5} {row['p99']:>7} {warn:>4}",
      flush=True)
PY

echo "rulehook soak: $BIN, DURATION=${DURATION}s RETAIN=$RETAIN RATE=${RATE}/s THREADS=$THREADS dedup_window=$DEDUP_WINDOW concurrency=$CONCURRENCY SCRAPE=${SCRAPE}s, $URL"
echo "two rules per event (log, run_script exit 0); sample every ${SAMPLE}s; sizes in MiB, RSS in MiB, p99 in ms (histogram bucket)"
printf '%5s %7s %7s %4s %7s %6s %7s %6s %7s %7s %7s %7s %5s %4s %6s %5s %7s %4s\n' \
  t_s rss hwm fds db wal disk freepg events jobs attempts state pend fail req/s err p99_ms warn

HP=${URL#http://}
python3 "$WORK/client.py" "${HP%:*}" "${HP##*:}" "$SECRET" "$RATE" "$THREADS" "$DURATION" "$WORK/stats.json" "$SCRAPE" \
  > "$WORK/client.out" 2>&1 &
CPID=$!
START=$(date +%s)
python3 "$WORK/sample.py" 0 "$SPID" "$WORK/data" "$WORK/stats.json" "$WORK/prev.json" "$WORK/samples.tsv" "$WORK/server.err"
t=0
while [ "$t" -lt "$DURATION" ]; do
  t=$((t + SAMPLE)); [ "$t" -gt "$DURATION" ] && t=$DURATION
  now=$(date +%s); wait_s=$((START + t - now))
  # sleep in the background and wait for it: a signal then ends the run at once
  if [ "$wait_s" -gt 0 ]; then sleep "$wait_s" & ZPID=$!; wait "$ZPID" || true; ZPID=""; fi
  kill -0 "$SPID" 2>/dev/null || { echo "the server exited:" >&2; tail -20 "$WORK/server.err" >&2; exit 1; }
  python3 "$WORK/sample.py" "$t" "$SPID" "$WORK/data" "$WORK/stats.json" "$WORK/prev.json" "$WORK/samples.tsv" "$WORK/server.err"
done
wait "$CPID" 2>/dev/null || true
CPID=""
sleep 2
echo "2 s after the load:"
python3 "$WORK/sample.py" "$((DURATION + 2))" "$SPID" "$WORK/data" "$WORK/stats.json" "$WORK/prev.json" "$WORK/tail.tsv" "$WORK/server.err" after

echo
python3 - "$WORK/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"client: {s['sent']} requests, {s['ok']} answered 202, {s['bad']} other status {s['status']}, "
      f"{s['err']} connection errors; worst lag behind schedule {s['lag_max'] * 1000:.0f} ms"
      + (f"; /metrics scraped {s['scrapes']} times ({s['scrape_err']} failed)" if s['scrapes'] + s['scrape_err'] else ""))
PY
n=$(grep -c -E ' (WARN|ERROR) ' "$WORK/server.err" || true)
if [ "${n:-0}" -gt 0 ]; then
  echo "server log: $n WARN/ERROR lines; distinct messages (first 10):"
  grep -E ' (WARN|ERROR) ' "$WORK/server.err" | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn | head -10
else
  echo "server log: no WARN/ERROR lines"
fi

python3 - "$WORK/samples.tsv" "$DURATION" "$TOLERANCE" "$RETAIN" "$RATE" <<'PY'
import sys, csv
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
duration, tol = int(sys.argv[2]), float(sys.argv[3]) / 100
half_t = duration / 2
half = min(rows, key=lambda r: abs(int(r["t"]) - half_t))
later = [r for r in rows if int(r["t"]) >= int(half["t"])]
flat = True
not_flat = []
print(f"\nverdict (second half, t = {half['t']}..{later[-1]['t']} s, vs. t = {half['t']} s, ±{tol * 100:g} %):")
for key, name, unit in (("rss_kb", "RSS", 1024), ("disk", "disk (journal.db + -wal)", 1048576),
                        ("events", "events rows", 1), ("attempts", "attempts rows", 1)):
    ref = float(half[key])
    vals = [float(r[key]) for r in later]
    lo, hi = min(vals), max(vals)
    dev = max(abs(v - ref) for v in vals) / ref if ref else float("inf")
    ok = dev <= tol
    if key in ("rss_kb", "disk"):
        flat &= ok
        if not ok:
            not_flat.append(name.split()[0])
    span = int(later[-1]["t"]) - int(half["t"])
    slope = ""
    if key in ("rss_kb", "disk") and span > 0:
        grew = (float(later[-1][key]) - ref) * (1024 if key == "rss_kb" else 1)
        slope = f"  ({grew / span / 1024:+.1f} KiB/s, {grew / (span * float(sys.argv[5])):+.0f} B/request)"
    print(f"  {name:<26} at half {ref / unit:10.1f}  range {lo / unit:10.1f} .. {hi / unit:10.1f}  "
          f"max deviation {dev * 100:6.1f} %  end/half {float(later[-1][key]) / ref if ref else 0:5.2f}  "
          f"{('flat' if ok else 'NOT flat') if key in ('rss_kb', 'disk') else ('(rows, informational)' if ok else f'(rows, informational: outside ±{tol * 100:g} %)')}{slope}")
span = int(later[-1]["t"]) - int(half["t"])
if span > 0:
    mib_h = (float(later[-1]["rss_kb"]) - float(half["rss_kb"])) / 1024 / span * 3600
    if mib_h > 1:
        print(f"  note: RSS still rising over the second half, {mib_h:+.0f} MiB/hour at this rate")
import re
m = re.fullmatch(r"(\d+)\s*(s|m|min|h|d)?", sys.argv[4].strip())
if m:
    ret = int(m.group(1)) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
    if int(half["t"]) < ret * 1.25 and ret < 86400:
        print(f"  note: the half-way point ({half['t']} s) comes before retention has pruned a full sweep "
              f"(RETAIN {ret} s + a sweep every {max(1, ret // 4)} s): run DURATION >= {int(ret * 2.5)} s")
pend = max(int(r["pending"]) for r in rows)
print(f"  jobs pending: max {pend} over the run (keeping up: {'yes' if pend < float(sys.argv[5]) * 2 else 'NO, lower RATE'}); "
      f"dead letters at the end: {rows[-1]['failed']}")
print("VERDICT: " + ("FLAT - RSS and disk plateaued under steady load (retention pruning keeps them bounded)"
                     if flat else f"GROWING - {' and '.join(not_flat)} kept growing over the second half of the run"))
sys.exit(0 if flat else 1)
PY
