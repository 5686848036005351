#!/usr/bin/env bash
# Replay a sipp scenario against a running callgate, as a tester would.
#   test-calls/replay.sh [-t udp|tcp] [-n CALLS] [-r RATE] [--target HOST:PORT]
#                        [--pbx-port PORT] [--no-uas] SCENARIO
# SCENARIO is a UAC scenario name (uac-basic, uac-cancel, uac-wait-bye,
# uac-reinvite, uac-options) or a path. Exits non-zero if any call failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
transport=udp calls=10 rate=10 target=127.0.0.1:5060 pbx_port=5080 uas=1 scenario=""
while (($#)); do
    case "$1" in
        -t) transport="$2"; shift ;;
        -n) calls="$2"; shift ;;
        -r) rate="$2"; shift ;;
        --target) target="$2"; shift ;;
        --pbx-port) pbx_port="$2"; shift ;;
        --no-uas) uas=0 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) scenario="$1" ;;
    esac
    shift
done
[[ -n "$scenario" ]] || { sed -n '2,6p' "$0" >&2; exit 2; }
case "$transport" in udp) t=u1 ;; tcp) t=t1 ;; *) echo "transport must be udp or tcp" >&2; exit 2 ;; esac
uac_file="$scenario"
[[ -f "$uac_file" ]] || uac_file="$here/scenarios/${scenario%.xml}.xml"
[[ -f "$uac_file" ]] || { echo "no scenario $scenario" >&2; exit 2; }
name="$(basename "${uac_file%.xml}")"
case "$name" in
    uac-basic) partner=uas-basic ;;
    uac-cancel) partner=uas-ring-cancel ;;
    uac-wait-bye) partner=uas-bye ;;
    uac-reinvite) partner=uas-reinvite ;;
    *) partner="" ;;
esac
work="$(mktemp -d)"
uas_pid=""
cleanup() { [[ -n "$uas_pid" ]] && kill "$uas_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if ((uas)) && [[ -n "$partner" ]]; then
    (cd "$work" && exec sipp -sf "$here/scenarios/$partner.xml" -i 127.0.0.1 -p "$pbx_port" -t "$t" -nostdin -timeout 120s >/dev/null 2>&1) &
    uas_pid=$!
    for _ in $(seq 1 100); do
        ss -lun -lnt | grep -q "127.0.0.1:$pbx_port " && break
        sleep 0.05
    done
fi
set +e
(cd "$work" && sipp "$target" -sf "$uac_file" -i 127.0.0.1 -t "$t" -m "$calls" -r "$rate" -nostdin \
    -timeout $((calls / rate + 60))s -timeout_error -trace_stat -stf stats.csv >/dev/null 2>"$work/err")
code=$?
set -e
python3 - "$work/stats.csv" "$name" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
print(f"{sys.argv[2]}: {last[h.index('SuccessfulCall(C)')]} successful, {last[h.index('FailedCall(C)')]} failed")
PY
[[ $code -eq 0 ]] || { echo "sipp exit $code"; head -5 "$work/err"; }
exit "$code"
