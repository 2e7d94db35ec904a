#!/bin/sh
# Remediation after an IP Fabric discovery: called as `remediate.sh --snapshot ID`.
# The whole event arrives as JSON on stdin; RULEHOOK_RUN_ID is stable across retries.
set -eu
snapshot=""
while [ $# -gt 0 ]; do
  case "$1" in
    --snapshot) snapshot="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
done
[ -n "$snapshot" ] || { echo "no --snapshot given" >&2; exit 64; }
event=$(cat)
log="${REMEDIATION_LOG:-/tmp/rulehook-remediation.log}"
printf '%s run=%s snapshot=%s bytes=%s\n' "$(date -u +%FT%TZ)" "$RULEHOOK_RUN_ID" "$snapshot" "${#event}" >> "$log"
echo "remediated snapshot $snapshot"
