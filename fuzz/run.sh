#!/bin/sh
# Runs one fuzz target (built by fuzz/build.sh) on its corpus (seeded by fuzz/seed.py) until it
# made RUNS inputs or ran SECONDS, whichever comes first; a crash, a panic, an input slower than
# 10 s (a hang) or 2 GB of memory stops it and leaves the input in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh verify 10000000 3600
set -eu
cd "$(dirname "$0")"
TARGET=$1
RUNS=${2:-10000000}
SECONDS_MAX=${3:-3600}
BIN="target/$(rustc -vV | sed -n 's/^host: //p')/release/$TARGET"
[ -x "$BIN" ] || { echo "build first: fuzz/build.sh" >&2; exit 2; }
[ -d "corpus/$TARGET" ] || python3 seed.py
mkdir -p "artifacts/$TARGET"
exec "$BIN" "corpus/$TARGET" -runs="$RUNS" -max_total_time="$SECONDS_MAX" -timeout=10 \
  -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="artifacts/$TARGET/"
