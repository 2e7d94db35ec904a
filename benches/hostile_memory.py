#!/usr/bin/env python3
"""Memory under hostile input, a baseline binary against a candidate in the same run (python3
stdlib only): correlation events whose group_by values are huge, then parallel pages of
/api/stored-events over those events.

For each binary: a fresh data directory, `serve` on a loopback port, N events to an open source
with a correlation rule grouping by `$.device` (each device value SIZE bytes, all different),
then PAGES parallel GET /api/stored-events?limit=5000. Reported: RSS after start, after the
events, the peak while the pages are read, and the data directory's size; then each figure of
the candidate as a ratio of the baseline's.

  BASE=/path/to/old/rulehook NEW=target/debug/rulehook python3 benches/hostile_memory.py

Env: BASE (required), NEW (target/debug/rulehook), N (300), SIZE (65536), PAGES (4).
Loopback only; bounded by N requests and PAGES reads per binary.
"""
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

BASE = os.environ["BASE"]
NEW = os.environ.get("NEW", "target/debug/rulehook")
N = int(os.environ.get("N", "300"))
SIZE = int(os.environ.get("SIZE", "65536"))
PAGES = int(os.environ.get("PAGES", "4"))

RULEBOOK = """sources:
  - { name: open, kind: none }
rules:
  - name: pair
    correlate:
      within: 1h
      group_by: ['$.device']
      all_of:
        - { name: down, condition: '$.state == "down"' }
        - { name: up, condition: '$.state == "up"' }
    actions:
      - log: { message: 'pair' }
"""


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def run(binary):
    tmp = tempfile.mkdtemp(prefix="rulehook-hostile-")
    try:
        for d in ["rulebooks", "scripts", "templates", "data"]:
            os.makedirs(os.path.join(tmp, d))
        with open(os.path.join(tmp, "rulebooks", "r.yml"), "w") as f:
            f.write(RULEBOOK)
        proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data", f"{tmp}/data",
             "--rulebooks", f"{tmp}/rulebooks", "--scripts", f"{tmp}/scripts",
             "--templates", f"{tmp}/templates"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = None
        deadline = time.time() + 30
        while port is None and time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("listening on "):
                port = int(line.strip().rsplit(":", 1)[1])
        if port is None:
            raise SystemExit(f"{binary} did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        time.sleep(0.5)
        out = {"start_kb": rss_kb(proc.pid)}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(N):
            device = f"{i:06d}" + "x" * SIZE
            body = json.dumps({"device": device, "state": "down"})
            conn.request("POST", "/hooks/open", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 202:
                raise SystemExit(f"event {i}: {resp.status}")
        time.sleep(1)
        out["after_events_kb"] = rss_kb(proc.pid)
        peak = [out["after_events_kb"]]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kb(proc.pid))
                time.sleep(0.02)

        def page():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("GET", "/api/stored-events?limit=5000")
            c.getresponse().read()

        sampler = threading.Thread(target=sample)
        sampler.start()
        readers = [threading.Thread(target=page) for _ in range(PAGES)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        done.set()
        sampler.join()
        out["pages_peak_kb"] = peak[0]
        out["data_bytes"] = dir_bytes(f"{tmp}/data")
        proc.terminate()
        proc.wait(timeout=30)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    base, new = run(BASE), run(NEW)
    print(f"{N} events with {SIZE}-byte group values, {PAGES} parallel stored-event pages")
    print(f"{'figure':<18}{'baseline':>14}{'candidate':>14}{'ratio':>8}")
    for k in base:
        ratio = new[k] / base[k] if base[k] else float("nan")
        print(f"{k:<18}{base[k]:>14}{new[k]:>14}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
