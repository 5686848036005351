#!/usr/bin/env bash
# Where a relay's time goes under a steady RTP load: syscalls per packet
# (perf stat on syscall tracepoints) and a CPU profile (perf record), for
# callgate and rtpengine set up as in run.sh (pinned to core 0, rtpblast on
# core 1, loopback).
#
#   test-calls/bench/media/profile.sh [--rate PPS] [--secs S] [--only rtpengine|callgate]
#
# Output in out/: profile-LABEL-RATE.txt (syscall counts and per-packet ratios,
# top symbols by self time, top call chains), perf-LABEL-RATE.data. Bounded:
# rtpblast sends a fixed number of packets; perf runs for S seconds twice.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$here/out"
rate=20000
secs=5
only=""
while (($#)); do
    case "$1" in
        --rate) rate="$2"; shift ;;
        --secs) secs="$2"; shift ;;
        --only) only="$2"; shift ;;
        *) echo "usage: $0 [--rate PPS] [--secs S] [--only rtpengine|callgate]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
ulimit -n 65536 2>/dev/null || true
bin="${CALLGATE_BIN:-$repo/target/release/callgate}"
rtpengine="${RTPENGINE_BIN:-$(command -v rtpengine)}"
cargo build --release --locked --manifest-path "$here/rtpblast/Cargo.toml" >&2
blast="$here/rtpblast/target/release/rtpblast"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

wait_udp() {
    for _ in $(seq 1 200); do
        ss -lun | grep -q "127.0.0.1:$1 " && return 0
        sleep 0.05
    done
    return 1
}

syscalls="raw_syscalls:sys_enter"
for s in recvfrom recvmsg recvmmsg sendto sendmsg sendmmsg epoll_wait epoll_pwait poll read write futex; do
    syscalls="$syscalls,syscalls:sys_enter_$s"
done

profile() { # label pid ng_port
    local label="$1" pid="$2" ng="$3" f="$out/profile-$1-$rate.txt"
    # Load for warm-up + perf stat + perf record, with a margin.
    taskset -c 1 "$blast" --label "$label" --ng "127.0.0.1:$ng" --rates "$rate" --share 4 \
        --secs $((2 * secs + 3)) --relay-pid "$pid" >"$out/profile-$label-$rate.jsonl" &
    local bl=$!
    sleep 2.5
    {
        echo "# $label at $rate packets/s (perf stat over $secs s)"
        perf stat -x, -e "$syscalls,context-switches,task-clock" -p "$pid" -- sleep "$secs" 2>&1 |
            awk -F, -v rate="$rate" -v secs="$secs" \
                '{ printf "%-34s %14s  per packet %8.3f\n", $3, $1, $1 / (rate * secs) }'
    } >"$f"
    perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" -o "$out/perf-$label-$rate.data" -- sleep "$secs" 2>/dev/null
    wait "$bl" || true
    local rep="$out/perf-$label-$rate.report"
    {
        echo
        echo "# top symbols, self time"
        perf report -i "$out/perf-$label-$rate.data" --stdio --no-children --sort sym -g none >"$rep" 2>/dev/null || true
        grep -E '^ +[0-9]' "$rep" | head -40 || true
        echo
        echo "# by shared object, self time"
        perf report -i "$out/perf-$label-$rate.data" --stdio --no-children --sort dso -g none >"$rep" 2>/dev/null || true
        grep -E '^ +[0-9]' "$rep" | head -12 || true
        echo
        echo "# inclusive (children) time, top"
        perf report -i "$out/perf-$label-$rate.data" --stdio --children --sort sym -g none >"$rep" 2>/dev/null || true
        grep -E '^ +[0-9]' "$rep" | head -50 || true
    } >>"$f"
    cat "$f"
}

if [[ -z "$only" || "$only" == rtpengine ]]; then
    taskset -c 0 "$rtpengine" --config-file=none --table=-1 --foreground --log-stderr --log-level=5 \
        --interface=127.0.0.1 --listen-ng=127.0.0.1:62510 --port-min=40000 --port-max=49999 \
        --num-threads=1 --delete-delay=0 >"$out/profile-rtpengine.log" 2>&1 &
    p=$!
    pids+=("$p")
    wait_udp 62510
    profile rtpengine "$p" 62510
    kill "$p"; wait "$p" 2>/dev/null || true
fi
if [[ -z "$only" || "$only" == callgate ]]; then
    sed -e 's/^level = .*/level = "warn"/' "$out/callgate.toml" >"$out/profile-callgate.toml" 2>/dev/null || {
        echo "run run.sh first (it writes out/callgate.toml)" >&2
        exit 1
    }
    taskset -c 0 "$bin" run --config "$out/profile-callgate.toml" >/dev/null 2>"$out/profile-callgate.log" &
    p=$!
    pids+=("$p")
    wait_udp 62511
    profile callgate "$p" 62511
    kill "$p"; wait "$p" 2>/dev/null || true
fi
