#!/bin/sh
# Written by gpujobs: the node tells the user itself that it stopped the job at its budget
# (budget.max_hours), for when the laptop that launched it is gone.
# $1: the targets file (0600; lines "webhook URL" or "ntfy URL"), $2: the event, $3: the message
# (gpujobs' own words: no quotes or backslashes). URLs go to curl on its stdin (-K -), never on a
# command line other users could read in ps.
targets=$1
event=$2
message=$3
job=${GPUJOBS_JOB_ID:-unknown}
[ -r "$targets" ] || exit 0
json=$(printf '{"event": "%s", "job": "%s", "name": "%s", "state": "RUNNING", "title": "gpujobs: %s stopped on the node", "message": "%s", "source": "node"}' \
    "$event" "$job" "$job" "$job" "$message")

post() {  # $1: URL, $2: content type, $3: body
    if command -v curl >/dev/null 2>&1; then
        printf 'url = "%s"\n' "$1" | curl -fsS -m 10 -K - -X POST \
            -H "Content-Type: $2" -H "Title: gpujobs: $job stopped on the node" \
            --data-binary "$3" >/dev/null 2>&1
    elif command -v python3 >/dev/null 2>&1; then
        printf '%s\n' "$1" | python3 -c '
import sys, urllib.request
url = sys.stdin.readline().strip()
request = urllib.request.Request(url, data=sys.argv[2].encode(), method="POST",
    headers={"Content-Type": sys.argv[1], "Title": sys.argv[3]})
urllib.request.urlopen(request, timeout=10).close()
' "$2" "$3" "gpujobs: $job stopped on the node" >/dev/null 2>&1
    fi
}

while read -r kind url; do
    case $kind in
        webhook) post "$url" application/json "$json" ;;
        ntfy) post "$url" text/plain "$message" ;;
    esac
done < "$targets"
exit 0
