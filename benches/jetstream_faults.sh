#!/bin/sh
# Fault injection on a real three-server nats-server cluster (R3 streams), started on free
# loopback ports: one ingest and two worker nodes, RULEHOOK_FAULT_EVENTS GitLab-signed events
# (default 3,000) at ~110/s from 16 senders that retry a 503 with the same delivery id. Each
# round runs once without a fault, then kills (SIGKILL) and restarts the leader of the events,
# the queue and the state stream in turn. One line per run: accepted, run, dead-lettered,
# stored twice, answers 503 and the longest 503 stall a sender saw.
#
#   RULEHOOK_FAULT_RUNS=3 RELEASE=1 benches/jetstream_faults.sh   # RELEASE=1: a release build
#   RULEHOOK_TEST_BIN=/path/to/an/older/rulehook RULEHOOK_TEST_ONE_SEED=1 benches/jetstream_faults.sh
set -eu
cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || { echo "needs nats-server (Debian package nats-server)" >&2; exit 1; }
exec cargo test ${RELEASE:+--release} --test jetstream_faults -- --ignored fault_injection_bench --nocapture --test-threads 1
