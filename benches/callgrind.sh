#!/bin/sh
# Instruction counts per request: rulehook against the minimal baseline receiver, each run under
# valgrind --tool=callgrind. Unlike benches/load.sh the figures do not depend on the machine's
# speed or load: they are instructions executed by the server (all its threads), per request.
# Needs valgrind (callgrind_control, callgrind_annotate) and python3 (stdlib only). Loopback only,
# bounded: every wait has a timeout.
#
#   benches/callgrind.sh                  # builds both binaries (release), N=2000 WARMUP=200 K=16
#   RULEHOOK_BIN=... BASELINE_BIN=... benches/callgrind.sh   # prebuilt binaries, no build
#   KEEP=/tmp/cg benches/callgrind.sh     # keep the callgrind.out files and annotations there
#
# Environment: N (measured requests, default 2000), WARMUP (default 200), K (keep-alive
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
WARMUP=${WARMUP:-200}
K=${K:-16}
TOP=${TOP:-25}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-180}
JOB_TIMEOUT=${JOB_TIMEOUT:-300}
SECRET=bench-secret
EVENT=rulebooks/events/ipfabric-discover-completed.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rulehook-callgrind.XXXXXX")
PIDS=""

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

# 2. The load client: exactly WARMUP then N signed requests over K persistent connections; runs
#    the zero command between the two phases and the dump command at the end, while the
#    connections are still open (so connection set-up and teardown are not in the figure).
cat > "$WORK/client.py" <<'PY'
import hashlib, hmac, http.client, json, sqlite3, subprocess, sys, threading, time, urllib.parse

url, secret, event, warmup, n, k, zero_cmd, dump_cmd, journal, job_timeout = sys.argv[1:]
warmup, n, k, job_timeout = int(warmup), int(n), int(k), float(job_timeout)
u = urllib.parse.urlsplit(url)
template = json.load(open(event))
base_ts = int(template.get("timestamp", 0))

def body(i):
    # A unique body per request: IP Fabric sends no delivery id, the key is the body's hash.
    doc = dict(template)
    doc["timestamp"] = base_ts + i
    return json.dumps(doc, separators=(",", ":")).encode()

conns = []
for _ in range(k):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    c.connect()
    conns.append(c)

def phase(first, count):
    stats = {"2xx": 0, "non2xx": {}, "duplicate": 0, "errors": 0}
    lock = threading.Lock()
    def worker(t):
        c = conns[t]
        for i in range(first + t, first + count, k):
            b = body(i)
            sig = hmac.new(secret.encode(), b, hashlib.sha256).hexdigest()
            try:
                c.request("POST", u.path, body=b, headers={
                    "Content-Type": "application/json", "X-IPF-Signature": sig})
                r = c.getresponse()
                data = r.read()
            except Exception as e:  # counted, and the connection is replaced
                with lock:
                    stats["errors"] += 1
                print(f"request {i}: {e!r}", file=sys.stderr)
                c.close()
                c = conns[t] = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                continue
            with lock:
                if 200 <= r.status < 300:
                    stats["2xx"] += 1
                    try:
                        if json.loads(data).get("duplicate") is True:
                            stats["duplicate"] += 1
                    except ValueError:
                        pass
                else:
                    stats["non2xx"][r.status] = stats["non2xx"].get(r.status, 0) + 1
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(k)]
    t0 = time.time()
    for t in threads: t.start()
    for t in threads: t.join()
    stats["seconds"] = round(time.time() - t0, 1)
    return stats

def pending():
    # The journal is held exclusively while the server runs (SQLite's unix-excl VFS): ask the
    # server itself (its /metrics, loopback is admin) how many jobs are pending or running.
    import urllib.request
    text = urllib.request.urlopen(f"{u.scheme}://{u.netloc}/metrics", timeout=30).read().decode()
    return int(sum(float(l.split()[-1]) for l in text.splitlines()
                   if l.split("{")[0].split(" ")[0] == "rulehook_jobs_pending"))

w = phase(0, warmup)
if w["2xx"] != warmup:
    print(f"warm-up: {w}", file=sys.stderr); sys.exit(1)
subprocess.run(zero_cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
m = phase(warmup, n)
print(f"  measured: {n} requests in {m['seconds']} s: 2xx {m['2xx']}, non-2xx {sum(m['non2xx'].values())} {m['non2xx'] or ''}, "
      f"transport errors {m['errors']}, duplicate {m['duplicate']}")
if journal != "-":
    # The actions run after the 202: wait (collection still on) until no job is left.
    deadline, left = time.time() + job_timeout, None
    while time.time() < deadline:
        try:
            left = pending()
        except OSError as e:
            print(f"  (cannot read /metrics: {e}; sleeping 10 s instead)"); time.sleep(10); break
        if left == 0:
            break
        time.sleep(0.5)
    print(f"  jobs pending/running when dumped: {left}")
    time.sleep(1)
subprocess.run(dump_cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for c in conns:
    c.close()
sys.exit(0 if m["2xx"] == n else 2)
PY

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
  python3 "$WORK/client.py" "$url/hooks/ipfabric" "$SECRET" "$EVENT" "$WARMUP" "$N" "$K" \
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
cat > "$WORK/components.py" <<'PY'
import re, sys
from collections import defaultdict

def parse(path):
    """Self cost (Ir) per (source file, function) from a callgrind dump; call lines are skipped."""
    names = {"fl": {}, "fn": {}}
    def name(kind, text):
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), text)
    cost = defaultdict(int)
    fl = fi = fn = None
    skip_next = False
    for line in open(path, errors="replace"):
        c = line[0]
        if c.isdigit() or c in "+-*":
            if skip_next:
                skip_next = False
                continue
            parts = line.split()
            if len(parts) > 1:
                cost[(fi, fn)] += int(parts[1])
        elif line.startswith("fl="):
            fl = fi = name("fl", line[3:].rstrip("\n"))
        elif line.startswith(("fi=", "fe=")):
            fi = name("fl", line[3:].rstrip("\n"))
        elif line.startswith("fn="):
            fn = name("fn", line[3:].rstrip("\n")); fi = fl
        elif line.startswith(("cfi=", "cfl=")):
            name("fl", line[4:].rstrip("\n"))
        elif line.startswith("cfn="):
            name("fn", line[4:].rstrip("\n"))
        elif line.startswith("calls="):
            skip_next = True
    return cost

def crate_of_fn(fn):
    m = re.match(r"[<&*\s]*(?:dyn |mut |const )?([A-Za-z_][A-Za-z0-9_]*)::", fn or "")
    return m.group(1) if m else None

def component(f, fn, root):
    f = f or "???"
    m = re.search(r"index\.crates\.io-[^/]+/([A-Za-z0-9_\-]+?)-\d+\.\d+\.\d+[^/]*/", f)
    if m:
        return "sqlite3.c" if m.group(1) == "libsqlite3-sys" else m.group(1).replace("-", "_")
    m = re.search(r"/rustc/[0-9a-f]+/library/([a-z_]+)/", f) or re.search(r"^/rust/deps/([a-z_]+)-[0-9]", f)
    if m:  # std code inlined into a caller: charge the function's crate when it is not std's
        c = crate_of_fn(fn)
        if c == "rulehook":
            r = re.match(r"[<&*\s]*rulehook::(\w+)", fn)
            return "rulehook " + r.group(1)
        if c and c not in ("core", "alloc", "std", "hashbrown"):
            return c
        return f"rust {c or m.group(1)}"
    if f.startswith("src/") or f.startswith(root + "/src/"):
        return "rulehook " + f.split("src/", 1)[1].split("/")[0].removesuffix(".rs")
    if "malloc" in f:
        return "libc malloc/free"
    if f.startswith("./") or "sysdeps" in f:
        return "libc " + ("mem*/str*" if "string" in f else "other")
    return f"? {f[:50]}"

path, total_n, top, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cost = parse(path)
total = sum(cost.values())
groups = defaultdict(int)
for (f, fn), v in cost.items():
    groups[component(f, fn, root)] += v
for g, v in sorted(groups.items(), key=lambda kv: -kv[1])[:top]:
    print(f"  {v / total_n:>10,.0f} Ir/req {100 * v / total:5.1f}%  {g}")
PY

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
for label in rulehook-match rulehook-nomatch baseline; do
  echo
  echo "Self cost by component, $label:"
  python3 "$WORK/components.py" "$WORK/$label.callgrind" "$N" 20 "$(pwd)"
done
if [ -n "${KEEP:-}" ]; then
  echo
  echo "Kept in $KEEP: callgrind.out.{baseline,rulehook-match,rulehook-nomatch}, rulehook-*.{inclusive,self}.txt (full lists)"
  echo "  e.g. callgrind_annotate --inclusive=yes $KEEP/callgrind.out.rulehook-match | less -S"
fi
