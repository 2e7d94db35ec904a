#!/bin/sh
# Cisco EEM interface flap: `eem-link.sh STATE SYSLOG-LINE DEVICE`.
set -eu
log="${EEM_LOG:-/tmp/rulehook-eem.log}"
interface=$(printf '%s\n' "$2" | sed -n 's/.*Interface \([^,]*\),.*/\1/p')
printf '%s run=%s device=%s interface=%s state=%s\n' "$(date -u +%FT%TZ)" "$RULEHOOK_RUN_ID" "$3" "$interface" "$1" >> "$log"
echo "recorded $interface $1 on $3"
