#!/usr/bin/env python3
"""Helpers for benches/cluster.sh (loopback only, bounded).

  receiver PORT DELAY_MS OUT    an HTTP receiver: waits DELAY_MS, then appends
                                "<now> <body>" to OUT for each POST
  post PORT N CONNS             posts N events {"n": i, "t": <send time>} to /hooks/in
  paced PORT N RATE             posts N events at RATE per second (latency runs)
  latency OUT                   p50/p99 of receive time - send time, in ms
  count OUT N TIMEOUT           waits until OUT has N lines; prints the seconds it took
"""
import asyncio, http.client, json, sys, threading, time


def receiver(port, delay_ms, out):
    f = open(out, "a", buffering=1)

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                got = time.time()
                await asyncio.sleep(delay_ms / 1000)
                f.write(f"{got} {body.decode(errors='replace')}\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _post(conn, i):
    body = json.dumps({"n": i, "t": time.time()})
    conn.request("POST", "/hooks/in", body=body, headers={
        "authorization": "Bearer bench-token", "content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 202:
        raise SystemExit(f"event {i}: {r.status}")


def post(port, n, conns):
    def work(start):
        c = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(start, n, conns):
            _post(c, i)
    ts = [threading.Thread(target=work, args=(s,)) for s in range(conns)]
    [t.start() for t in ts]
    [t.join() for t in ts]


def paced(port, n, rate):
    c = http.client.HTTPConnection("127.0.0.1", port)
    start = time.time()
    for i in range(n):
        wait = start + i / rate - time.time()
        if wait > 0:
            time.sleep(wait)
        _post(c, i)


def latency(out):
    ms = []
    for line in open(out):
        got, body = line.split(" ", 1)
        ms.append((float(got) - json.loads(body)["t"]) * 1000)
    ms.sort()
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"n={len(ms)} p50={pick(0.5):.1f}ms p99={pick(0.99):.1f}ms")


def count(out, n, timeout):
    start = time.time()
    while time.time() - start < timeout:
        try:
            if sum(1 for _ in open(out)) >= n:
                print(f"{time.time() - start:.2f}")
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timeout: fewer than {n} lines in {out}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "receiver":
        receiver(int(args[0]), int(args[1]), args[2])
    elif cmd == "post":
        post(int(args[0]), int(args[1]), int(args[2]))
    elif cmd == "paced":
        paced(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "latency":
        latency(args[0])
    elif cmd == "count":
        count(args[0], int(args[1]), float(args[2]))
