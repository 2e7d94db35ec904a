#!/bin/sh
# Syslog in instructions (valgrind --tool=callgrind), every figure from the same build in the same
# run, so the ratios do not depend on the machine's speed or load:
#
#   rsyslog          LINES RFC 3164 lines over one TCP connection into rsyslogd (imtcp, every
#                    line into a file with omfile): rsyslog's Ir per line (skipped without rsyslogd)
#   syslog-nomatch   the same lines into rulehook (`keep: matched`, the rule index rules every
#                    line out): Ir per line, and the ratio to rsyslog's
#   syslog-match     N lines over one TCP connection, each matching one rule whose action writes
#                    a log line: Ir per matched event (a connection's lines are stored one after
#                    the other, so each is its own commit); syslog-match-k the same over K
#                    connections (commits grouped, as the webhooks' are)
#   webhook-match    N signed IP Fabric requests over K keep-alive connections (as
#                    benches/callgrind.sh), each matching one rule with the same log action:
#                    Ir per matched event, and the ratio syslog / webhook
#
#   benches/callgrind_syslog.sh               # builds rulehook (release), LINES=20000 N=2000
#   RULEHOOK_BIN=... benches/callgrind_syslog.sh
#   KEEP=/tmp/cg benches/callgrind_syslog.sh  # keep the callgrind.out files there
#
# Environment: LINES (default 20000), N (default 2000), WARMUP (default 200, lines or requests
# before the counters are zeroed), K (webhook connections, and syslog's in syslog-match-k,
# default 16), TOP (components printed,
# default 15), LOG_LEVEL (the log action's level, default info), STARTUP_TIMEOUT (default 180 s),
# JOB_TIMEOUT (default 300 s). Needs valgrind and python3 (stdlib only); rsyslogd for the
# rsyslog figure. Loopback only; every wait has a timeout.
#
# Method, per server: start it under callgrind, send WARMUP lines (or requests), wait until they
# are taken (rulehook: its /metrics counters; rsyslog: a marker line its rule writes to a second
# file), zero the counters (callgrind_control -z), send the measured lines the same way, wait
# until every one is taken and, for rulehook, no job is pending (the actions are counted), then
# dump and read the total Ir of all threads. The waits poll rulehook's /metrics every 0.5 s
# (a few requests, well under 1 % of a run's instructions).
set -eu
cd "$(dirname "$0")/.."
LINES=${LINES:-20000}
N=${N:-2000}
WARMUP=${WARMUP:-200}
K=${K:-16}
TOP=${TOP:-15}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-180}
JOB_TIMEOUT=${JOB_TIMEOUT:-300}
SECRET=bench-secret
EVENT=rulebooks/events/ipfabric-discover-completed.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rulehook-callgrind-syslog.XXXXXX")
PIDS=""

. benches/callgrind_lib.sh

for tool in valgrind callgrind_control python3; do
  command -v "$tool" > /dev/null || { echo "callgrind_syslog.sh: $tool not found" >&2; exit 1; }
done
case "$LINES$N$WARMUP$K" in *[!0-9]*) echo "LINES, N, WARMUP and K must be integers" >&2; exit 1 ;; esac

if [ -z "${RULEHOOK_BIN:-}" ]; then
  cargo build --release --bin rulehook
  RULEHOOK_BIN="${CARGO_TARGET_DIR:-target}/release/rulehook"
fi
[ -x "$RULEHOOK_BIN" ] || { echo "callgrind_syslog.sh: not an executable: '$RULEHOOK_BIN'" >&2; exit 1; }
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; KEEP=$(cd "$KEEP" && pwd); fi

# The syslog client: WARMUP then COUNT lines over one TCP connection, each phase's end awaited
# (rulehook: its counters and pending jobs from /metrics; rsyslog: a marker line per phase).
cat > "$WORK/syslog_client.py" <<'PY'
import os, socket, subprocess, sys, threading, time, urllib.request

target, warmup, count, zero_cmd, dump_cmd, wait_on, timeout, conns = sys.argv[1:]
warmup, count, timeout, conns = int(warmup), int(count), float(timeout), int(conns)
host, port = target.rsplit(":", 1)

def lines(first, n, last_tag):
    out = []
    for i in range(first, first + n):
        tag = f"bench: {last_tag}" if i == first + n - 1 and last_tag else \
            f"sshd[{1000 + i % 9000}]: Accepted publickey for ops from 10.0.{i % 250}.{i % 200} port {20000 + i % 40000} ssh2"
        out.append(f"<134>Dec  6 23:{i // 60 % 60:02}:{i % 60:02} edge{i % 50} {tag}\n")
    return "".join(out).encode()

def metric(text, name, labels):
    total = 0.0
    for l in text.splitlines():
        if l.startswith(name) and all(x in l for x in labels):
            total += float(l.split()[-1])
    return total

def wait_for(n, phase):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if wait_on.startswith("http"):
            m = urllib.request.urlopen(wait_on + "/metrics", timeout=30).read().decode()
            taken = metric(m, "rulehook_events_unmatched_total", ['source="routers"']) + \
                metric(m, "rulehook_events_accepted_total", ['source="routers"', 'duplicate="false"'])
            if taken >= n and metric(m, "rulehook_jobs_pending", []) == 0:
                return
        else:
            try:
                with open(wait_on) as f:
                    if f.read().count(f"END-{phase}") >= 1:
                        return
            except FileNotFoundError:
                pass
        time.sleep(0.5)
    sys.exit(f"phase {phase}: not every line was taken within {timeout}s")

def send(first, n, last_tag):
    # The phase's lines split over the connections, all sent at once; the marker line last.
    data = lines(first, n, last_tag).splitlines(keepends=True)
    body, last = data[:-1], data[-1]
    parts = [b"".join(body[i::conns]) for i in range(conns)]
    threads = [threading.Thread(target=socks[i].sendall, args=(parts[i],)) for i in range(conns)]
    for t in threads: t.start()
    for t in threads: t.join()
    socks[0].sendall(last)

socks = [socket.create_connection((host, int(port))) for _ in range(conns)]
send(0, warmup, "END-warmup")
wait_for(warmup, "warmup")
subprocess.run(zero_cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t0 = time.time()
send(warmup, count, "END-measured")
wait_for(warmup + count, "measured")
print(f"  measured: {count} lines over {conns} connection(s) in {time.time() - t0:.1f} s")
time.sleep(1)
subprocess.run(dump_cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for s in socks:
    s.close()
PY

wait_line() { # $1 = label, $2 = pid, $3 = sed expression printing what is awaited from stdout
  i=0
  while [ "$i" -lt "$((STARTUP_TIMEOUT * 10))" ]; do
    u=$(sed -n "$3" "$WORK/$1.stdout" | head -1)
    [ -n "$u" ] && { echo "$u"; return; }
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
  done
  echo "$1 did not start within ${STARTUP_TIMEOUT}s; its output:" >&2
  tail -n 20 "$WORK/$1.stdout" "$WORK/$1.stderr" "$WORK/valgrind.$1.log" >&2 || true
  exit 1
}

IR=""
finish() { # $1 = label, $2 = pid, $3 = client's exit code: reads the dump, sets IR
  dump=$(ls "$WORK/callgrind.out.$1".* 2>/dev/null | head -1)
  [ -n "$dump" ] || { echo "no callgrind dump for $1" >&2; exit 1; }
  stop "$2"
  PIDS=$(echo "$PIDS" | sed "s/ $2\$//; s/ $2 / /")
  IR=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  sed 's/^calls=0 /calls=1 /' "$dump" > "$WORK/$1.callgrind"
  rm -f "$dump"
  [ -z "${KEEP:-}" ] || cp "$WORK/$1.callgrind" "$KEEP/callgrind.out.$1"
  [ "$3" -eq 0 ] || { echo "$1: the client failed" >&2; exit 1; }
}

under_callgrind() { # $1 = label, then the command; sets PID
  cg=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.$cg" \
    --log-file="$WORK/valgrind.$cg.log" "$@" > "$WORK/$cg.stdout" 2> "$WORK/$cg.stderr" &
  PID=$!; PIDS="$PIDS $PID"
}

rulebook() { # $1 = dir, $2 = condition, $3 = the log message
  mkdir -p "$1"
  cat > "$1/bench.yml" <<YML
sources:
  - { name: routers, kind: syslog, listen: 'tcp://127.0.0.1:0' }
  - { name: ipfabric, kind: ipfabric, secret: $SECRET }
rules:
  - name: syslog
    sources: [routers]
    condition: '$2'
    actions: [{ log: { message: '$3', level: ${LOG_LEVEL:-info} } }]
  - name: webhook
    sources: [ipfabric]
    condition: '\$.type == "snapshot" && \$.snapshot.id == "a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21" && \$.status == "completed"'
    actions: [{ log: { message: 'snapshot {{ event.snapshot.id }} completed', level: ${LOG_LEVEL:-info} } }]
YML
}

measure_syslog() { # $1 = label, $2 = lines, $3 = condition, $4 = log message, $5 = connections; sets IR
  label=$1
  rulebook "$WORK/rb-$label" "$3" "$4"
  mkdir -p "$WORK/scripts" "$WORK/templates"
  under_callgrind "$label" "$RULEHOOK_BIN" serve --rulebooks "$WORK/rb-$label" --scripts "$WORK/scripts" \
    --templates "$WORK/templates" --data "$WORK/data-$label" --listen 127.0.0.1:0
  url=$(wait_line "$label" "$PID" 's/^listening on //p')
  to=$(wait_line "$label" "$PID" 's#^source routers at tcp://##p')
  echo "$label: pid $PID, syslog at $to"
  rc=0
  python3 "$WORK/syslog_client.py" "$to" "$WARMUP" "$2" "callgrind_control -z $PID" \
    "callgrind_control --dump=measured $PID" "$url" "$JOB_TIMEOUT" "$5" || rc=$?
  finish "$label" "$PID" "$rc"
  echo "  total Ir $IR -> $(python3 -c "print(f'{$IR / $2:,.0f}')") Ir/line"
}

# 1. rsyslog (when installed): the intake baseline.
IR_RSYSLOG=0
if command -v rsyslogd > /dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/rs/work"
  cat > "$WORK/rs/rsyslog.conf" <<CONF
global(workDirectory="$WORK/rs/work" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" port="$port" address="127.0.0.1" ruleset="bench")
ruleset(name="bench") {
  action(type="omfile" file="$WORK/rs/all.log")
  if \$msg contains "END-" then action(type="omfile" file="$WORK/rs/marker")
}
CONF
  under_callgrind rsyslog rsyslogd -n -f "$WORK/rs/rsyslog.conf" -i "$WORK/rs/rsyslogd.pid"
  i=0
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt "$((STARTUP_TIMEOUT * 2))" ] || { echo "rsyslogd did not start" >&2; exit 1; }
    sleep 0.5
  done
  echo "rsyslog: pid $PID, imtcp at 127.0.0.1:$port"
  rc=0
  python3 "$WORK/syslog_client.py" "127.0.0.1:$port" "$WARMUP" "$LINES" "callgrind_control -z $PID" \
    "callgrind_control --dump=measured $PID" "$WORK/rs/marker" "$JOB_TIMEOUT" 1 || rc=$?
  finish rsyslog "$PID" "$rc"
  IR_RSYSLOG=$IR
  echo "  total Ir $IR -> $(python3 -c "print(f'{$IR / $LINES:,.0f}')") Ir/line"
else
  echo "rsyslogd not found: no rsyslog figure"
fi

# 2. rulehook: the same lines, ruled out by the index; then matched lines; then webhooks.
measure_syslog syslog-nomatch "$LINES" '$.app_name == "bench" && $.message == "never"' 'never' 1
IR_NOMATCH=$IR
measure_syslog syslog-match "$N" '$.app_name == "sshd" && $.severity_name == "info"' \
  'login on {{ event.hostname }} accepted' 1
IR_SMATCH=$IR
measure_syslog syslog-match-k "$N" '$.app_name == "sshd" && $.severity_name == "info"' \
  'login on {{ event.hostname }} accepted' "$K"
IR_SMATCH_K=$IR

rulebook "$WORK/rb-webhook" '$.app_name == "never"' 'never'
under_callgrind webhook-match "$RULEHOOK_BIN" serve --rulebooks "$WORK/rb-webhook" --scripts "$WORK/scripts" \
  --templates "$WORK/templates" --data "$WORK/data-webhook" --listen 127.0.0.1:0
url=$(wait_line webhook-match "$PID" 's/^listening on //p')
echo "webhook-match: pid $PID, $url"
rc=0
python3 benches/callgrind_client.py "$url/hooks/ipfabric" "$SECRET" "$EVENT" "$WARMUP" "$N" "$K" \
  "callgrind_control -z $PID" "callgrind_control --dump=measured $PID" "$WORK/data-webhook/journal.db" \
  "$JOB_TIMEOUT" || rc=$?
finish webhook-match "$PID" "$rc"
IR_WMATCH=$IR
echo "  total Ir $IR -> $(python3 -c "print(f'{$IR / $N:,.0f}')") Ir/event"

# 3. The figures.
echo
python3 - "$LINES" "$N" "$IR_RSYSLOG" "$IR_NOMATCH" "$IR_SMATCH" "$IR_WMATCH" "$IR_SMATCH_K" "$K" <<'PY'
import sys
lines, n, rs, nomatch, smatch, wmatch, smatch_k, k = map(int, sys.argv[1:])
print(f"Instructions (Ir), same build, same run (LINES={lines}, N={n}):")
x = nomatch / lines
if rs:
    r = rs / lines
    print(f"  rsyslog intake (imtcp -> omfile)            {r:>10,.0f} Ir/line")
    print(f"  rulehook intake, no rule can match          {x:>10,.0f} Ir/line   rulehook/rsyslog {x / r:.2f}")
else:
    print(f"  rulehook intake, no rule can match          {x:>10,.0f} Ir/line")
s, w, sk = smatch / n, wmatch / n, smatch_k / n
print(f"  rulehook signed webhook matching (log), {k:>2} connections {w:>10,.0f} Ir/event")
print(f"  rulehook syslog line matching (log),    {k:>2} connections {sk:>10,.0f} Ir/event  syslog/webhook {sk / w:.2f}")
print(f"  rulehook syslog line matching (log),     1 connection  {s:>10,.0f} Ir/event  syslog/webhook {s / w:.2f}")
PY
for label in syslog-nomatch syslog-match syslog-match-k webhook-match; do
  n=$([ "$label" = syslog-nomatch ] && echo "$LINES" || echo "$N")
  echo
  echo "Self cost by component, $label (per line or event):"
  python3 benches/callgrind_components.py "$WORK/$label.callgrind" "$n" "$TOP" "$(pwd)"
done
if [ "$IR_RSYSLOG" -gt 0 ]; then
  echo
  echo "Self cost by component, rsyslog (per line):"
  python3 benches/callgrind_components.py "$WORK/rsyslog.callgrind" "$LINES" "$TOP" "$(pwd)"
fi
