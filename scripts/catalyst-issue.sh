#!/bin/sh
# Catalyst Center P1 issue: `catalyst-issue.sh DEVICE ISSUE-NAME`.
set -eu
log="${CATALYST_LOG:-/tmp/rulehook-catalyst.log}"
printf '%s run=%s device=%s issue=%s\n' "$(date -u +%FT%TZ)" "$RULEHOOK_RUN_ID" "$1" "$2" >> "$log"
echo "collecting diagnostics from $1"
