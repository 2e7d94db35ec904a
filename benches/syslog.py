#!/usr/bin/env python3
"""Syslog intake speed: rulehook against rsyslog, side by side in the same run.

400,000 RFC 3164 lines over one TCP connection (LF framing), none matching a rule but the last.
rulehook (`keep: matched`, the default) acts on the last line by running a script that creates a
marker file; rsyslog (its own instance: imtcp, every line into a file with omfile, the last line
also into a marker file) does what it is best at. Measured: time from the first byte sent to the
marker file existing. Each side runs ROUNDS times, alternating; the medians and their ratio are
printed. RSS of rulehook is read before and after (flat memory over unmatched lines).

    cargo build --release && python3 benches/syslog.py [LINES] [ROUNDS]

Needs `rsyslogd` (Debian package rsyslog). Traffic stays on 127.0.0.1.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BIN = os.environ.get("RULEHOOK_BIN", "target/release/rulehook")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def payload(n, tag):
    body = []
    for i in range(n - 1):
        body.append(
            f"<134>Dec  6 23:{i // 60 % 60:02}:{i % 60:02} edge{i % 50} sshd[{1000 + i % 9000}]: "
            f"Accepted publickey for ops from 10.0.{i % 250}.{i % 200} port {20000 + i % 40000} ssh2\n"
        )
    body.append(f"<134>Dec  6 23:59:59 edge1 bench: {tag}\n")
    return "".join(body).encode()


def wait_port(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def marks(marker):
    try:
        with open(marker, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def send_and_wait(port, data, marker, deadline=600):
    # The marker file is appended to, never removed: rsyslog keeps it open.
    before = marks(marker)
    s = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    s.sendall(data)
    end = time.time() + deadline
    while marks(marker) <= before:
        if time.time() > end:
            raise SystemExit(f"{marker} never appeared")
        time.sleep(0.002)
    took = time.perf_counter() - start
    s.close()
    return took


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    if not shutil.which("rsyslogd"):
        raise SystemExit("rsyslogd is needed (apt-get install rsyslog)")
    tmp = tempfile.mkdtemp(prefix="rulehook-syslog-bench-")
    procs = []
    try:
        # rulehook
        rh_port = free_port()
        for d in ("rulebooks", "scripts", "templates", "data"):
            os.makedirs(f"{tmp}/rh/{d}")
        rh_marker = f"{tmp}/rh/done"
        with open(f"{tmp}/rh/rulebooks/bench.yml", "w") as f:
            f.write(
                f"""
sources:
  - name: routers
    kind: syslog
    listen: tcp://127.0.0.1:{rh_port}
rules:
  - name: last-line
    sources: [routers]
    condition: '$.app_name == "bench" && $.message == "LAST-LINE"'
    actions:
      - run_script: {{ script: done.sh }}
"""
            )
        with open(f"{tmp}/rh/scripts/done.sh", "w") as f:
            f.write(f"#!/bin/sh\necho done >> {rh_marker}\n")
        os.chmod(f"{tmp}/rh/scripts/done.sh", 0o755)
        rh = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data", f"{tmp}/rh/data",
             "--rulebooks", f"{tmp}/rh/rulebooks", "--scripts", f"{tmp}/rh/scripts",
             "--templates", f"{tmp}/rh/templates"],
            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/rh/serve.log", "w"),
        )
        procs.append(rh)
        # rsyslog
        rs_port = free_port()
        rs = f"{tmp}/rs"
        os.makedirs(f"{rs}/work")
        rs_marker = f"{rs}/done"
        with open(f"{rs}/rsyslog.conf", "w") as f:
            f.write(
                f"""
global(workDirectory="{rs}/work" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" port="{rs_port}" address="127.0.0.1" ruleset="bench")
ruleset(name="bench") {{
  action(type="omfile" file="{rs}/all.log")
  if $msg contains "LAST-LINE" then action(type="omfile" file="{rs_marker}")
}}
"""
            )
        rsd = subprocess.Popen(
            ["rsyslogd", "-n", "-f", f"{rs}/rsyslog.conf", "-i", f"{rs}/rsyslogd.pid"],
            stdout=subprocess.DEVNULL, stderr=open(f"{rs}/rsyslogd.log", "w"),
        )
        procs.append(rsd)
        wait_port(rh_port)
        wait_port(rs_port)
        data = payload(LINES, "LAST-LINE")
        print(f"{LINES} lines, {len(data) / 1e6:.1f} MB per round, {ROUNDS} rounds each")
        rh_rss_before = rss_kib(rh.pid)
        times = {"rulehook": [], "rsyslog": []}
        for r in range(ROUNDS):
            times["rsyslog"].append(send_and_wait(rs_port, data, rs_marker))
            times["rulehook"].append(send_and_wait(rh_port, data, rh_marker))
            print(f"round {r + 1}: rsyslog {times['rsyslog'][-1]:.3f} s, "
                  f"rulehook {times['rulehook'][-1]:.3f} s")
        rh_rss_after = rss_kib(rh.pid)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in ("rsyslog", "rulehook"):
            print(f"{k:9} median {med[k]:.3f} s = {LINES / med[k]:,.0f} lines/s")
        print(f"rulehook / rsyslog time ratio: {med['rulehook'] / med['rsyslog']:.2f} "
              f"(below 1: rulehook faster)")
        print(f"rulehook RSS before {rh_rss_before / 1024:.1f} MiB, after "
              f"{ROUNDS * LINES:,} lines {rh_rss_after / 1024:.1f} MiB")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
