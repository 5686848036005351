#!/usr/bin/env bash
# Benchmark callgate against Kamailio 5.6 as plain SIP proxies, in one run.
#
#   test-calls/bench/run.sh [--quick] [--only callgate|kamailio]
#
# The same sipp load (uac-basic/uas-basic: INVITE/100/180/200/ACK, 200 ms
# hold, BYE/200) goes through each proxy, and for each one the harness
# reports:
#   - CPU time per call at 1,000 calls/s: utime+stime from /proc/PID/stat
#     of every process of the proxy, before and after, over completed calls;
#   - the proxy's own added latency, INVITE in -> INVITE out and
#     200 in -> 200 out, p50/p99, from a loopback capture (dumpcap) of
#     that step, decoded by tshark and paired by Call-ID (analyze.py);
#   - the highest rate with zero failed calls, stepping up the rate.
# Results: test-calls/bench/out/results.json and results.md, printed too.
# Loopback only; every step is bounded by sipp's -m and -timeout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/out"
scen="$repo/test-calls/scenarios"
quick=0
only=""
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --only) only="$2"; shift ;;
        *) echo "usage: $0 [--quick] [--only callgate|kamailio]" >&2; exit 2 ;;
    esac
    shift
done

cpu_calls=10000; cpu_rate=1000
steps=(1000 1500 2000 2500 3000 3500 4000 5000 6000 8000)
if ((quick)); then cpu_calls=2000; steps=(1000 2000 4000); fi

for tool in sipp dumpcap tshark python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install sip-tester tshark)" >&2; exit 1; }
done
mkdir -p "$out"
rm -f "$out"/*.pcap "$out"/*.csv "$out"/*.json.part

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pkill -f "kamailio -f $out/kamailio.cfg" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

clk_tck=$(getconf CLK_TCK)

# All pids of a process tree rooted at $1.
tree() {
    local p=$1
    echo "$p"
    for c in $(pgrep -P "$p" || true); do tree "$c"; done
}

# Sum of utime+stime (clock ticks) over the given pids.
cpu_ticks() {
    local total=0 p f
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        f=$(sed 's/^.*) //' "/proc/$p/stat")
        read -r -a a <<<"$f"
        total=$((total + a[11] + a[12]))
    done
    echo "$total"
}

wait_udp() { # port
    for _ in $(seq 1 200); do
        ss -lun | grep -q "127.0.0.1:$1 " && return 0
        sleep 0.05
    done
    echo "nothing listening on udp $1" >&2
    return 1
}

# sipp UAC run; prints "successful failed".
uac() { # target rate calls label
    local dir="$out/sipp-$4"
    rm -rf "$dir"; mkdir -p "$dir"
    (cd "$dir" && sipp "$1" -sf "$scen/uac-basic.xml" -i 127.0.0.1 -r "$2" -m "$3" -l $(($2 * 2 + 100)) \
        -d 200 -nostdin -timeout $(($3 / $2 + 30))s -trace_stat -stf stats.csv -trace_err -max_socket 4096 >/dev/null 2>&1) || true
    python3 - "$dir/stats.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
# Why calls failed, on stderr (the caller reads "ok failed" from stdout).
why = {k: last[h.index(k)] for k in h if k.startswith('Failed') and k.endswith('(C)') and k in h and last[h.index(k)] not in ('0', '')}
why['Retransmissions(C)'] = last[h.index('Retransmissions(C)')]
print('      ' + ', '.join(f'{k}={v}' for k, v in why.items()), file=sys.stderr)
print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')])
PY
}

measure() { # name listen_port capture_filter pid-of-root
    local name=$1 port=$2 filter=$3 root=$4 uas_port=$5
    echo "== $name: CPU per call at $cpu_rate calls/s ($cpu_calls calls), with capture" >&2
    dumpcap -q -i lo -f "$filter" -w "$out/$name.pcap" -B 64 >/dev/null 2>&1 &
    local cap=$!
    pids+=("$cap")
    sleep 1 # dumpcap has no ready signal; give it a second to open the interface
    mapfile -t procs < <(tree "$root")
    local t0; t0=$(cpu_ticks "${procs[@]}")
    read -r ok failed < <(uac "127.0.0.1:$port" "$cpu_rate" "$cpu_calls" "$name-cpu")
    mapfile -t procs < <(tree "$root")
    local t1; t1=$(cpu_ticks "${procs[@]}")
    kill "$cap" 2>/dev/null || true
    wait "$cap" 2>/dev/null || true
    local us_per_call
    us_per_call=$(python3 -c "print(round(($t1-$t0)*1e6/$clk_tck/max($ok,1),1))")
    echo "   $ok ok, $failed failed, $((t1 - t0)) ticks -> $us_per_call us/call" >&2
    echo "== $name: added latency from the capture" >&2
    local lat
    lat=$(python3 "$here/analyze.py" "$out/$name.pcap" "$port" "$uas_port")
    echo "   $lat" >&2
    echo "== $name: highest rate with zero failed calls" >&2
    local best=0
    for r in "${steps[@]}"; do
        read -r ok failed < <(uac "127.0.0.1:$port" "$r" $((r * 3)) "$name-$r")
        echo "   $r calls/s: $ok ok, $failed failed" >&2
        if [[ "$failed" == 0 && "$ok" == $((r * 3)) ]]; then best=$r; else break; fi
    done
    printf '{"proxy":"%s","cpu_us_per_call":%s,"cpu_calls_ok":%s,"latency":%s,"max_zero_failure_cps":%s}\n' \
        "$name" "$us_per_call" "$cpu_calls" "$lat" "$best" >"$out/$name.json.part"
}

start_uas() { # port
    (cd "$out" && exec sipp -sf "$scen/uas-basic.xml" -i 127.0.0.1 -p "$1" -nostdin -max_socket 4096 >/dev/null 2>&1) &
    pids+=("$!")
    wait_udp "$1"
}

if [[ -z "$only" || "$only" == callgate ]]; then
    bin="$repo/target/release/callgate"
    [[ -x "$bin" ]] || (cd "$repo" && cargo build --release)
    cat >"$out/callgate.toml" <<TOML
[trunk]
udp = "127.0.0.1:15060"
allow = ["127.0.0.0/8"]
targets = ["sip:127.0.0.1:9;transport=udp"]
[pbx]
udp = "127.0.0.1:15062"
allow = ["127.0.0.0/8"]
targets = ["sip:127.0.0.1:15080;transport=udp"]
[health]
interval_secs = 0
[overload]
max_transactions = 100000
[log]
level = "warn"
TOML
    start_uas 15080
    "$bin" run --config "$out/callgate.toml" >"$out/callgate.stdout" 2>"$out/callgate.log" &
    cg=$!
    pids+=("$cg")
    wait_udp 15060
    measure callgate 15060 "udp port 15060 or udp port 15062" "$cg" 15080
    kill "$cg"
fi

if [[ -z "$only" || "$only" == kamailio ]]; then
    sed -e "s/LISTEN_PORT/15070/; s/UAS_PORT/15081/" "$here/kamailio.cfg" >"$out/kamailio.cfg"
    kamailio -c -f "$out/kamailio.cfg" >/dev/null 2>&1 || { echo "kamailio config check failed" >&2; exit 1; }
    start_uas 15081
    kamailio -f "$out/kamailio.cfg" -P "$out/kamailio.pid" -m 256 -M 16 -E >"$out/kamailio.log" 2>&1
    wait_udp 15070
    measure kamailio 15070 "udp port 15070" "$(cat "$out/kamailio.pid")" 15081
    kill "$(cat "$out/kamailio.pid")" || true
fi

python3 "$here/report.py" "$out"
