#!/usr/bin/env bash
# Replay a sipp scenario against a running callgate, as a tester would.
#   test-calls/replay.sh [-t udp|tcp] [-n CALLS] [-r RATE] [--target HOST:PORT]
#                        [--local-ip IP] [--pbx-port PORT] [--pbx-transport udp|tcp]
#                        [--no-uas] [--logs DIR]
#                        [-inf FILE] [-trace_msg] [-trace_err] [-d MS] [-l LIMIT]
#                        (SCENARIO | --dir DIR) [-- SIPP-ARGS...]
# SCENARIO is a UAC scenario name (uac-basic, uac-cancel, uac-wait-bye,
# uac-reinvite, uac-options) or a path; --dir runs the uac.xml/uas.xml of a
# `callgate trace to-sipp` output. sipp's logs stay in --logs (default: a new
# directory, printed). Exits non-zero if any call failed (see test-calls/README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage() { sed -n '2,11p' "$0"; }
transport=udp calls="" rate=10 target=127.0.0.1:5060 local_ip=127.0.0.1 pbx_port=5080
uas=1 scenario="" dir="" logs="" pbx_transport=""
uac_args=() both_args=()
while (($#)); do
    case "$1" in
        -t) transport="$2"; shift ;;
        -n) calls="$2"; shift ;;
        -r) rate="$2"; shift ;;
        --target) target="$2"; shift ;;
        --local-ip) local_ip="$2"; shift ;;
        --pbx-port) pbx_port="$2"; shift ;;
        --pbx-transport) pbx_transport="$2"; shift ;;
        --no-uas) uas=0 ;;
        --dir) dir="$2"; shift ;;
        --logs) logs="$2"; shift ;;
        -inf|-d|-l) uac_args+=("$1" "$2"); shift ;;
        -trace_msg|-trace_err) both_args+=("$1") ;;
        --) shift; uac_args+=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option $1 (sipp options go after --)" >&2; exit 2 ;;
        *) scenario="$1" ;;
    esac
    shift
done
sipp_t() { case "$1" in udp) echo u1 ;; tcp) echo t1 ;; *) echo "transport must be udp or tcp" >&2; exit 2 ;; esac; }
t="$(sipp_t "$transport")"
# The UAS speaks what callgate's [pbx] target says (by default the UAC's transport).
uas_t="$(sipp_t "${pbx_transport:-$transport}")"
partner_file=""
if [[ -n "$dir" ]]; then
    [[ -z "$scenario" ]] || { echo "give a SCENARIO or --dir, not both" >&2; exit 2; }
    uac_file="$(cd "$dir" 2>/dev/null && pwd)/uac.xml" || { echo "no directory $dir" >&2; exit 2; }
    [[ -f "$uac_file" ]] || { echo "no uac.xml in $dir (a callgate trace to-sipp output?)" >&2; exit 2; }
    partner_file="$(dirname "$uac_file")/uas.xml"
    [[ -f "$partner_file" ]] || { echo "no uas.xml in $dir" >&2; exit 2; }
    name="$(basename "$(dirname "$uac_file")")"
    calls="${calls:-1}"
    # Converted with --expect action=reject: no call may reach the PBX, and
    # uac.xml checks the refusal.
    if grep -q 'callgate must refuse this call' "$partner_file"; then
        echo "uas.xml expects no call (--expect action=reject): no UAS started; uac.xml checks the refusal"
        partner_file=""
    fi
else
    [[ -n "$scenario" ]] || { usage >&2; exit 2; }
    uac_file="$scenario"
    [[ -f "$uac_file" ]] || uac_file="$here/scenarios/${scenario%.xml}.xml"
    [[ -f "$uac_file" ]] || { echo "no scenario $scenario" >&2; exit 2; }
    uac_file="$(cd "$(dirname "$uac_file")" && pwd)/$(basename "$uac_file")"
    name="$(basename "${uac_file%.xml}")"
    case "$name" in
        uac-basic) partner="uas-basic" ;;
        uac-cancel) partner="uas-ring-cancel" ;;
        uac-wait-bye) partner="uas-bye" ;;
        uac-reinvite) partner="uas-reinvite" ;;
        *) partner="" ;;
    esac
    [[ -z "$partner" ]] || partner_file="$here/scenarios/$partner.xml"
    calls="${calls:-10}"
fi
if [[ -n "$logs" ]]; then
    mkdir -p "$logs"
    logs="$(cd "$logs" && pwd)"
else
    logs="$(mktemp -d "${TMPDIR:-/tmp}/replay.XXXXXX")"
fi
echo "sipp logs in $logs"
timeout=$((calls / (rate > 0 ? rate : 1) + 60))
# Each side's logs under a fixed name, whatever sipp would call them.
files() { side_files=(-trace_stat -stf "$logs/$1_stats.csv" -message_file "$logs/$1_messages.log"
    -error_file "$logs/$1_errors.log" -log_file "$logs/$1_logs.log"); }
uas_pid="" uas_waited=0
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() { [[ -n "$uas_pid" ]] && ((!uas_waited)) && kill "$uas_pid" 2>/dev/null; true; }
trap cleanup EXIT
if ((uas)) && [[ -n "$partner_file" ]]; then
    # A to-sipp UAS checks the call too: it runs the same number of calls and
    # its exit counts. The suite's UAS scenarios are stopped when the UAC ends.
    # It also logs what it saw, or which expectation failed (-trace_logs).
    if [[ -n "$dir" ]]; then uas_bound=(-m "$calls" -timeout "${timeout}s" -timeout_error -trace_logs); else uas_bound=(-timeout 120s); fi
    files uas
    (cd "$logs" && exec sipp -sf "$partner_file" -i "$local_ip" -p "$pbx_port" -t "$uas_t" -nostdin \
        "${uas_bound[@]}" "${side_files[@]}" ${both_args[@]+"${both_args[@]}"} >/dev/null 2>"$logs/uas.stderr") &
    uas_pid=$!
    for _ in $(seq 1 100); do
        ss -lun -lnt | grep -q "$local_ip:$pbx_port " && break
        sleep 0.05
    done
fi
files uac
set +e
(cd "$logs" && sipp "$target" -sf "$uac_file" -i "$local_ip" -t "$t" -m "$calls" -r "$rate" -nostdin \
    -timeout "${timeout}s" -timeout_error "${side_files[@]}" ${both_args[@]+"${both_args[@]}"} \
    ${uac_args[@]+"${uac_args[@]}"} >/dev/null 2>"$logs/uac.stderr")
code=$?
uas_code=0
if [[ -n "$dir" && -n "$uas_pid" ]]; then
    wait "$uas_pid"
    uas_code=$?
    uas_waited=1
fi
set -e
[[ ! -f "$logs/uac_stats.csv" ]] || python3 - "$logs/uac_stats.csv" "$name" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
print(f"{sys.argv[2]}: {last[h.index('SuccessfulCall(C)')]} successful, {last[h.index('FailedCall(C)')]} failed")
PY
[[ $code -eq 0 ]] || { echo "sipp exit $code"; head -5 "$logs/uac.stderr"; }
if [[ $uas_code -ne 0 ]]; then
    echo "UAS (uas.xml) exit $uas_code"
    head -5 "$logs/uas.stderr"
    [[ $code -ne 0 ]] || code=$uas_code
fi
exit "$code"
