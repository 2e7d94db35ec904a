#!/bin/sh
# Alertmanager page: `alert-diagnostics.sh ALERTNAME INSTANCE`.
set -eu
log="${ALERT_LOG:-/tmp/rulehook-alerts.log}"
printf '%s run=%s alert=%s instance=%s\n' "$(date -u +%FT%TZ)" "$RULEHOOK_RUN_ID" "$1" "$2" >> "$log"
echo "collected diagnostics for $2"
