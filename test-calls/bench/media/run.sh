#!/usr/bin/env bash
# Media relay benchmark: callgate's RTP relay against rtpengine 10.5
# (Debian's rtpengine-daemon, userspace forwarding: no kernel module), both
# driven over rtpengine's ng control protocol by the same load generator.
#
#   test-calls/bench/media/run.sh [--quick] [--rounds N] [--rates 1000,5000,...]
#                                 [--secs S] [--share K] [--only rtpengine|callgate]
#                                 [--srtp]
#
# --srtp: side A of every call offers SDES-SRTP (a fresh AES_CM_128_HMAC_SHA1_80
# key per call) and the offer asks for plain RTP towards side B
# (`transport-protocol: RTP/AVP`), so each relay terminates SRTP: it opens
# A's packets and seals B's for A with its own key (rtpblast seals and opens
# with callgate's SRTP core, byte-identical with libsrtp). The baseline
# stays plain.
#
# Per round: the same stepped load goes (1) socket to socket with no relay
# — the baseline —, (2) through rtpengine, (3) through callgate. Each
# relay runs alone, pinned to core 0 (taskset), same port range size;
# rtpblast is pinned to core 1. At every rate, rtpblast (rtpblast/) sets up
# rate/100 calls over ng (offer from side A, answer from side B), sends
# 172-byte RTP packets (12-byte header + 160 bytes), 50/s per stream, in
# both directions of each call, 1 s warm-up then S s measured (the far
# ends of all calls are K sockets per side, --share, default 4, so that one
# core of load generator reaches 150k packets/s; --share 0: two sockets per
# call, which tops out near 100k), and reports
# loss, one-way latency p50/p90/p99 from the kernel's receive timestamps
# minus the send timestamps carried in the payload, and the relay's CPU
# time over the measured window (utime+stime from /proc/PID/stat; run time
# of all its threads from /proc/PID/task/*/schedstat). Calls are deleted
# over ng at the end. report.py turns the rounds into results.json and
# results.md (medians over rounds; added latency = relay minus baseline).
#
# Before each measured run the script waits (polling every 30 s, at most
# 20 min) until no SIP benchmark process (sip-loadgen, kamailio, sipp) runs
# and the machine is otherwise idle, and records in quiet.log whether it got
# a quiet machine; rtpblast also records how busy each core was during each
# measured window (machine.core_busy in the JSON lines).
#
# Environment: CALLGATE_BIN (default target/release/callgate, built if
# missing), RTPENGINE_BIN (default rtpengine on PATH), CALLGATE_MEDIA_EXTRA
# (lines added to callgate's [media], e.g. "busy_poll_us = 50"). Ports: relay media
# 40000-49999 (both relays, one at a time), ng 62510 (rtpengine) and 62511
# (callgate), callgate's SIP listeners 62512/62513 and admin 62514.
# Loopback only; every step is bounded by its packet count and drain time.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$here/out"

rates="1000,5000,10000,20000,30000,40000,50000,60000,70000,80000,90000,100000,110000,120000,130000,140000,150000"
secs=5
rounds=3
share=4
only=""
srtp=0
while (($#)); do
    case "$1" in
        --quick) rates="1000,10000,20000"; secs=2; rounds=1 ;;
        --rounds) rounds="$2"; shift ;;
        --rates) rates="$2"; shift ;;
        --secs) secs="$2"; shift ;;
        --share) share="$2"; shift ;;
        --only) only="$2"; shift ;;
        --srtp) srtp=1 ;;
        *) echo "usage: $0 [--quick] [--rounds N] [--rates LIST] [--secs S] [--share K] [--only rtpengine|callgate] [--srtp]" >&2; exit 2 ;;
    esac
    shift
done

relay_cpu=0
blast_cpu=1
port_min=40000
port_max=49999
ng_rtpengine=62510
ng_callgate=62511
p_trunk=62512
p_pbx=62513
p_admin=62514

mkdir -p "$out"
rm -f "$out"/*.jsonl "$out/quiet.log"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# Many sockets: two per call on the blaster side, four per call in a relay.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bin="${CALLGATE_BIN:-$repo/target/release/callgate}"
if [[ ! -x "$bin" ]]; then
    [[ -z "${CALLGATE_BIN:-}" ]] || { echo "CALLGATE_BIN=$bin is not executable" >&2; exit 1; }
    (cd "$repo" && cargo build --release --locked)
fi
rtpengine="${RTPENGINE_BIN:-$(command -v rtpengine || true)}"
[[ -x "$rtpengine" ]] || { echo "rtpengine not found: apt-get install rtpengine-daemon" >&2; exit 1; }
features=()
srtp_arg=()
if ((srtp)); then features=(--features srtp); srtp_arg=(--srtp); fi
cargo build --release --locked --manifest-path "$here/rtpblast/Cargo.toml" "${features[@]}" >&2
blast="$here/rtpblast/target/release/rtpblast"
echo "callgate: $bin; rtpengine: $rtpengine ($("$rtpengine" --version 2>&1 | head -1)); blaster: $blast" >&2

# Share of the machine's CPU time busy over 3 s (all cores), in percent.
machine_busy() {
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 3
    read -r -a b < <(grep '^cpu ' /proc/stat)
    local total=0 idle=$(( (b[4] + b[5]) - (a[4] + a[5]) ))
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

# Waits until no SIP benchmark process (sip-loadgen, kamailio, sipp) runs
# and the machine is mostly idle (< 15% busy over 3 s): they would share
# the cores. Gives up after 20 min and says so in quiet.log.
wait_quiet() { # what
    local waited=0 busy
    while true; do
        busy=$(machine_busy)
        if ! pgrep -f 'sip-loadgen|kamailio|sipp' >/dev/null && ((busy < 15)); then
            echo "$1: quiet (waited ${waited}s, machine ${busy}% busy before the run)" >>"$out/quiet.log"
            return 0
        fi
        if ((waited >= 1200)); then
            echo "$1: NOT quiet after 20 min (machine ${busy}% busy; $(pgrep -fa 'sip-loadgen|kamailio|sipp' | cut -c1-60 | tr '\n' ';'))" | tee -a "$out/quiet.log" >&2
            return 0
        fi
        echo "$1: waiting for a quiet machine (${busy}% busy, $(pgrep -f 'sip-loadgen|kamailio|sipp' | wc -l) SIP benchmark processes)" >&2
        sleep 27
        waited=$((waited + 30))
    done
}

# Records whether something started while a run was measuring.
check_still_quiet() { # what
    if pgrep -f 'sip-loadgen|kamailio|sipp' >/dev/null; then
        echo "$1: DISTURBED: a SIP benchmark process ran at the end of the run" | tee -a "$out/quiet.log" >&2
    fi
}

wait_udp() { # port
    for _ in $(seq 1 200); do
        ss -lun | grep -q "127.0.0.1:$1 " && return 0
        sleep 0.05
    done
    echo "nothing listening on udp $1" >&2
    return 1
}

blast_run() { # label round [rtpblast args...]
    local label="$1" round="$2"
    shift 2
    wait_quiet "$label round $round"
    taskset -c "$blast_cpu" "$blast" --label "$label" --rates "$rates" --secs "$secs" --share "$share" "$@" \
        | sed "s/^{/{\"round\":$round,/" >>"$out/$label.jsonl"
    check_still_quiet "$label round $round"
}

run_rtpengine() { # round
    # Userspace only (--table=-1: no kernel forwarding table), one worker
    # thread (as callgate's one relay worker), no config file, foreground.
    taskset -c "$relay_cpu" "$rtpengine" --config-file=none --table=-1 --foreground --log-stderr \
        --log-level=5 --interface=127.0.0.1 --listen-ng="127.0.0.1:$ng_rtpengine" \
        --port-min="$port_min" --port-max="$port_max" --num-threads=1 --delete-delay=0 \
        --timeout=60 --pidfile="$out/rtpengine.pid" >"$out/rtpengine-$1.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_udp "$ng_rtpengine"
    blast_run rtpengine "$1" --ng "127.0.0.1:$ng_rtpengine" --relay-pid "$pid" --relay-core "$relay_cpu" "${srtp_arg[@]}"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

run_callgate() { # round
    cat >"$out/callgate.toml" <<TOML
[trunk]
udp = "127.0.0.1:$p_trunk"
allow = ["127.0.0.0/8"]
targets = ["sip:127.0.0.1:9;transport=udp"]
[pbx]
udp = "127.0.0.1:$p_pbx"
allow = ["127.0.0.0/8"]
targets = ["sip:127.0.0.1:9;transport=udp"]
[health]
interval_secs = 0
[admin]
listen = "127.0.0.1:$p_admin"
[log]
level = "warn"
[media]
enabled = true
bind = "127.0.0.1"
port_min = $port_min
port_max = $port_max
workers = 1
ng_listen = "127.0.0.1:$ng_callgate"
${CALLGATE_MEDIA_EXTRA:-}
TOML
    taskset -c "$relay_cpu" "$bin" run --config "$out/callgate.toml" >"$out/callgate-$1.stdout" 2>"$out/callgate-$1.log" &
    local pid=$!
    pids+=("$pid")
    wait_udp "$ng_callgate"
    blast_run callgate "$1" --ng "127.0.0.1:$ng_callgate" --relay-pid "$pid" --relay-core "$relay_cpu" "${srtp_arg[@]}"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    blast_run direct "$round" --direct
    if [[ -z "$only" || "$only" == rtpengine ]]; then run_rtpengine "$round"; fi
    if [[ -z "$only" || "$only" == callgate ]]; then run_callgate "$round"; fi
done

python3 "$here/report.py" "$out" "$rates" "$secs" "$rounds" "$share"
cat "$out/quiet.log" >&2
