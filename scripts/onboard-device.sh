#!/bin/sh
# NetBox device onboarding: `onboard-device.sh NAME SITE`.
set -eu
log="${ONBOARD_LOG:-/tmp/rulehook-onboard.log}"
printf '%s run=%s device=%s site=%s\n' "$(date -u +%FT%TZ)" "$RULEHOOK_RUN_ID" "$1" "$2" >> "$log"
echo "queued onboarding of $1 at $2"
