#!/usr/bin/env python3
"""Chaos soak: mixed valid, forged and malformed traffic, a rulebook edit every EDIT seconds,
a `kill -9` and restart every KILL seconds, for DURATION seconds (python3 stdlib only).

Every valid request carries a unique counter; the rule's script appends the event id to a file.
A valid request that finds the server down (killed, restarting) is sent again, as a sender
would, until it gets an answer.
At the end the load stops, the last server drains, and the verdict checks:
  - every event answered 202 ran its action (at least once) -- "0 accepted events without
    their action";
  - RSS was flat: the mean of the samples of the first and of the last 5 minutes within 10 %;
  - no ERROR/WARN line in the logs except those the run provoked (listed).

  RULEHOOK_BIN=target/release/rulehook DURATION=1800 nice -n 19 python3 benches/chaos_soak.py

Env: RULEHOOK_BIN (default target/release/rulehook), DURATION (1800), RATE (valid req/s, 40),
EDIT (10), KILL (120), SAMPLE (10), RETAIN (serve --retain, and the source's dedup_window,
60s: the journal levels off within the first minutes, as in soak.sh; with IP Fabric's default
15-minute window the de-duplication keys, one per event, would grow for the first 15 minutes),
OUT (summary JSON path; default stdout only).
Loopback only; bounded by DURATION plus a drain of at most 120 s. Exit 0 when every check held.
"""
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("RULEHOOK_BIN", "target/release/rulehook")
DURATION = float(os.environ.get("DURATION", "1800"))
RATE = float(os.environ.get("RATE", "40"))
EDIT = float(os.environ.get("EDIT", "10"))
KILL = float(os.environ.get("KILL", "120"))
SAMPLE = float(os.environ.get("SAMPLE", "10"))
RETAIN = os.environ.get("RETAIN", "60s")
OUT = os.environ.get("OUT")
SECRET = b"chaos-secret"

work = tempfile.mkdtemp(prefix="rulehook-chaos.")
for d in ("rb", "scripts", "templates", "data"):
    os.makedirs(os.path.join(work, d))
done_file = os.path.join(work, "done.txt")
with open(os.path.join(work, "scripts", "record.sh"), "w") as f:
    f.write('#!/bin/sh\necho "$RULEHOOK_EVENT_ID" >> "%s"\n' % done_file)
os.chmod(os.path.join(work, "scripts", "record.sh"), 0o755)

edits = [0]


def write_rulebook():
    edits[0] += 1
    text = (
        "sources:\n"
        "  - { name: ipf, kind: ipfabric, secret: chaos-secret, dedup_window: %s }\n" % RETAIN +
        "rules:\n"
        "  - name: record\n"
        "    condition: '$.type == \"snapshot\"'\n"
        "    actions:\n"
        "      - run_script: { script: record.sh }\n"
        "      - log: { level: debug, message: 'edit %d: {{ event.n }}' }\n" % edits[0]
    )
    path = os.path.join(work, "rb", "chaos.yml")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


write_rulebook()

lock = threading.Lock()
state = {"url": None, "proc": None, "starts": 0}
stats = {"valid": 0, "accepted": 0, "forged": 0, "forged_401": 0, "malformed": 0,
         "malformed_400": 0, "busy_503": 0, "resent_while_down": 0, "other": {}, "rss_kb": [],
         "restart_s": []}
accepted_ids = []
logs = []


def start_server():
    log = os.path.join(work, "serve-%d.log" % state["starts"])
    logs.append(log)
    proc = subprocess.Popen(
        [BIN, "serve", "--rulebooks", os.path.join(work, "rb"), "--scripts",
         os.path.join(work, "scripts"), "--templates", os.path.join(work, "templates"),
         "--data", os.path.join(work, "data"), "--listen", "127.0.0.1:0", "--grace", "2s",
         "--retain", RETAIN],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    line = proc.stdout.readline()
    m = re.match(r"listening on (http://127\.0\.0\.1:\d+)", line or "")
    if not m:
        proc.kill()
        raise SystemExit("server did not start: %s" % open(log).read())
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    with lock:
        state["url"], state["proc"] = m.group(1), proc
        state["starts"] += 1


def post(conn_box, body, headers):
    url = state["url"]
    host, port = url[len("http://"):].split(":")
    try:
        if conn_box[0] is None or conn_box[1] != url:
            conn_box[0], conn_box[1] = http.client.HTTPConnection(host, int(port), timeout=10), url
        conn_box[0].request("POST", "/hooks/ipf", body, headers)
        r = conn_box[0].getresponse()
        data = r.read()
        return r.status, data
    except Exception:
        try:
            conn_box[0].close()
        except Exception:
            pass
        conn_box[0] = None
        return None, b""


def load(t_end):
    conn = [None, None]
    i = 0
    t0 = time.monotonic()
    while time.monotonic() < t_end:
        due = t0 + i / RATE
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        i += 1
        body = json.dumps({"type": "snapshot", "n": i, "pad": "x" * random.randint(0, 512)}).encode()
        sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        while True:
            st, data = post(conn, body, {"X-IPF-Signature": sig, "Content-Type": "application/json"})
            if st is not None or time.monotonic() >= t_end:
                break
            with lock:
                stats["resent_while_down"] += 1
            time.sleep(0.05)
        with lock:
            stats["valid"] += 1
            if st == 202:
                stats["accepted"] += 1
                accepted_ids.append(json.loads(data)["id"])
            elif st == 503:
                stats["busy_503"] += 1
            else:
                stats["other"][str(st)] = stats["other"].get(str(st), 0) + 1
        r = random.random()
        if r < 0.15:
            st, _ = post(conn, body, {"X-IPF-Signature": "0" * 64})
            with lock:
                stats["forged"] += 1
                stats["forged_401"] += st == 401
        elif r < 0.30:
            bad = b'{"type": "snapshot", "n": ' + str(i).encode() + b", oops"
            sig = hmac.new(SECRET, bad, hashlib.sha256).hexdigest()
            st, _ = post(conn, bad, {"X-IPF-Signature": sig})
            with lock:
                stats["malformed"] += 1
                stats["malformed_400"] += st == 400


def rss_kb(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit("no rulehook binary at %s (set RULEHOOK_BIN)" % BIN)
    start_server()
    t_start = time.monotonic()
    t_end = t_start + DURATION
    loader = threading.Thread(target=load, args=(t_end,), daemon=True)
    loader.start()
    next_edit, next_kill, next_sample = t_start + EDIT, t_start + KILL, t_start
    kills = 0
    while time.monotonic() < t_end:
        now = time.monotonic()
        if now >= next_sample:
            kb = rss_kb(state["proc"].pid)
            if kb:
                stats["rss_kb"].append((round(now - t_start), kb))
            next_sample += SAMPLE
        if now >= next_edit:
            write_rulebook()
            next_edit += EDIT
        if now >= next_kill:
            state["proc"].send_signal(signal.SIGKILL)
            state["proc"].wait()
            kills += 1
            t_kill = time.monotonic()
            start_server()
            stats["restart_s"].append(round(time.monotonic() - t_kill, 2))
            next_kill += KILL
        time.sleep(0.2)
    loader.join()
    # Drain: every accepted event's action must run.
    want = set(accepted_ids)
    deadline = time.monotonic() + 120
    missing = want
    while time.monotonic() < deadline:
        try:
            seen = set(open(done_file).read().split())
        except OSError:
            seen = set()
        missing = want - seen
        if not missing:
            break
        time.sleep(1)
    proc = state["proc"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    runs = len(open(done_file).read().split()) if os.path.exists(done_file) else 0
    # Log lines at WARN/ERROR, split into those the run provoked and the rest.
    # Provoked: a kill -9 interrupts runs. A job pending at a kill whose rule was edited before
    # the restart loads the version it matched from the rule archive; one that could not would
    # fail as "changed since the match" (counted apart, and a failure of the run).
    provoked = re.compile(r"interrupted|lease|kill|signal|was running|stopped|previous process")
    unexpected, expected, version_gone = [], 0, 0
    for path in logs:
        for line in open(path, errors="replace"):
            if " WARN " in line or " ERROR " in line:
                if "changed since the match" in line:
                    version_gone += 1
                elif provoked.search(line):
                    expected += 1
                else:
                    unexpected.append(line.strip())
    rss = stats["rss_kb"]
    first = [kb for t, kb in rss if t <= 300]
    last = [kb for t, kb in rss if t >= DURATION - 300]
    mean = lambda xs: sum(xs) / len(xs) if xs else 0
    ratio = mean(last) / mean(first) if first and last else None
    summary = {
        "duration_s": DURATION, "kills": kills, "edits": edits[0] - 1,
        "valid_sent": stats["valid"], "accepted": stats["accepted"],
        "busy_503": stats["busy_503"], "other_status": stats["other"],
        "resent_while_down": stats["resent_while_down"],
        "restart_s_max": max(stats["restart_s"] or [0]),
        "restart_s_mean": round(sum(stats["restart_s"]) / len(stats["restart_s"]), 2)
        if stats["restart_s"] else 0,
        "forged": stats["forged"], "forged_401": stats["forged_401"],
        "malformed": stats["malformed"], "malformed_400": stats["malformed_400"],
        "accepted_without_action": len(missing), "action_runs": runs,
        "rss_first5_mean_kb": round(mean(first)), "rss_last5_mean_kb": round(mean(last)),
        "rss_last_over_first": round(ratio, 3) if ratio else None,
        "rss_kb_every_minute": [kb for t, kb in rss if t % 60 < SAMPLE],
        "warn_error_provoked": expected, "jobs_whose_rule_version_was_gone": version_gone,
        "warn_error_unexpected": unexpected[:20],
        "warn_error_unexpected_count": len(unexpected),
    }
    ok = (not missing) and ratio is not None and abs(ratio - 1) <= 0.10 and not unexpected \
        and version_gone == 0
    summary["verdict"] = "ok" if ok else "failed"
    text = json.dumps(summary, indent=2)
    print(text)
    if OUT:
        with open(OUT, "w") as f:
            f.write(text + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        p = state.get("proc")
        if p and p.poll() is None:
            p.kill()
