#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the repository: the shipped rulebooks and their sample
events, the rulebooks, conditions and templates written in the tests, and the JSONPath
compliance suite's selectors. Run from anywhere; idempotent."""
import glob
import hashlib
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


events = [read(p) for p in sorted(glob.glob(os.path.join(ROOT, "rulebooks/events/*.json")))]
events.append(b'{"type":"snapshot","status":"completed","snapshot":{"id":"s1"},"n":1}')
tests = "".join(open(p, errors="replace").read() for p in glob.glob(os.path.join(ROOT, "tests/*.rs")))

# Rulebooks: the shipped ones, and every YAML text given to `env.rulebook(…)` in the tests.
for p in glob.glob(os.path.join(ROOT, "rulebooks/*.yml")):
    put("rulebook", read(p))
for m in re.finditer(r'r#"\n(sources:|rules:)(.*?)"#', tests, re.S):
    put("rulebook", (m.group(1) + m.group(2)).encode())

# Conditions: from rulebooks and tests, each with every sample event; JSONPath CTS selectors.
conditions = set()
for text in [read(p).decode(errors="replace") for p in glob.glob(os.path.join(ROOT, "rulebooks/*.yml"))] + [tests]:
    for m in re.finditer(r"condition: '([^']*)'", text):
        conditions.add(m.group(1).replace('\\"', '"'))
cts = os.path.join(ROOT, "tests/data/jsonpath-cts.json")
if os.path.exists(cts):
    for t in json.load(open(cts))["tests"][:400]:
        doc = json.dumps(t.get("document", {})).encode()
        put("condition", t["selector"].encode() + b"\0" + doc)
for c in conditions:
    for e in events:
        put("condition", c.encode() + b"\0" + e)

# Templates: the shipped files and inline strings with `{{`, with every sample event.
templates = [read(p) for p in glob.glob(os.path.join(ROOT, "templates/*"))]
for m in re.finditer(r"(?:message|body|url): '([^']*\{\{[^']*)'", tests):
    templates.append(m.group(1).encode())
for t in templates:
    for e in events:
        put("template", t + b"\0" + e)

# Verification: every kind (byte 0), signed and not (byte 1), with headers and sample bodies.
for kind in range(12):
    for sign in (0, 1):
        for e in events:
            put("verify", bytes([kind, sign]) + b"content-type: application/json\nx-request-id: r1\n\n" + e)
            put("verify", bytes([kind, sign]) + e)

# SNMP: datagrams net-snmp's snmptrap/snmpinform sent (tests/data/snmp), as they are and with
# the harness's "put the right HMAC in" (bit 0) and "user with privacy" (bit 1) modes.
for p in glob.glob(os.path.join(ROOT, "tests/data/snmp/*.bin")):
    for mode in range(4):
        put("snmp", bytes([mode]) + read(p))

print({t: len(os.listdir(os.path.join(CORPUS, t))) for t in os.listdir(CORPUS)})

# Syslog streams and RELP sessions: the first byte picks the chunk size, the rest is the stream.
syslog_lines = [
    b"<189>Jan  6 11:22:33 router1 %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
    b"<166>2026-12-06T10:00:00.123Z leaf1 Ebra: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up",
    b"<13>1 2026-12-06T10:00:00Z host app 123 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\"] message",
    b"<187>42: *Mar  1 00:01:02.345: %SYS-5-CONFIG_I: Configured from console by vty0 (10.1.1.1)",
    b"<30>Dec  6 10:00:00 mx1 mgd[1234]: UI_COMMIT: User 'ops' requested 'commit' operation",
]
for chunk in (1, 7, 63):
    put("syslog", bytes([chunk]) + b"\n".join(syslog_lines) + b"\n")
    octets = b"".join(str(len(l)).encode() + b" " + l for l in syslog_lines)
    put("syslog", bytes([chunk]) + octets)
relp = (b"1 open 85 relp_version=0\nrelp_software=librelp,1.11.0,https://www.librelp.com\ncommands=syslog\n"
        + b"2 syslog 89 " + syslog_lines[0][:89] + b"\n" + b"3 close 0\n")
for chunk in (1, 13, 63):
    put("relp", bytes([chunk]) + relp)
