#!/usr/bin/env python3
"""Self cost grouped by component (the crate, or sqlite3.c, libc malloc, ... whose code ran) from
a callgrind dump, per request/event: used by benches/callgrind.sh and benches/callgrind_syslog.sh.
Standard-library code inlined into a crate's function is charged to that crate.

    callgrind_components.py DUMP N TOP REPO_ROOT
"""
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
