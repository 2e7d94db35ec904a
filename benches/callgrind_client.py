#!/usr/bin/env python3
"""The signed-webhook load client of benches/callgrind.sh and benches/callgrind_syslog.sh:
exactly WARMUP then N signed IP Fabric requests over K persistent connections; runs the zero
command between the two phases and the dump command at the end, while the connections are still
open (so connection set-up and teardown are not in the figure). With a journal path (not `-`),
waits before the dump until the server has no pending job (the actions are counted).

    callgrind_client.py URL SECRET EVENT WARMUP N K ZERO_CMD DUMP_CMD JOURNAL|- JOB_TIMEOUT
"""
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
