#!/usr/bin/env bash
# The shared console's cost on calls (docs/benchmarks.md, "The shared
# console's tick"): two release callgates, cg-a and cg-b, on one
# redis-server, each carrying --rate calls/s for --secs s (sip-loadgen uac
# through each, calls held --hold-ms so that hundreds are in progress and
# every tick rewrites and re-reads both instances' call lists), the
# shipped policy deciding every call; INVITE->200 through cg-a with
# `[state] share_console` off, then on, --runs times in turn.
#
#   cargo build --release && test-calls/bench/cluster.sh [--secs 15] [--rate 200] [--hold-ms 3000] [--runs 2]
#
# Prints one line per run: mode, calls ok, INVITE->200 p50 / p99 / max
# through cg-a and cg-b, and what cg-a's sharing thread did (ticks that
# failed, instances seen).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

secs=15 rate=200 hold=3000 runs=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --secs) secs="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --hold-ms) hold="$2"; shift ;;
        --runs) runs="$2"; shift ;;
        *) echo "usage: $0 [--secs S] [--rate R] [--hold-ms MS] [--runs N]" >&2; exit 2 ;;
    esac
    shift
done
out="$here/out-cluster"
mkdir -p "$out"
release_binaries "$repo" "$here"

p_redis=61300 p_uas=61310
redis-server --port "$p_redis" --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$p_redis" ping >/dev/null 2>&1 && break; sleep 0.05; done
nice -n -10 "$lg" uas --listen "127.0.0.1:$p_uas" --stats-s 0 >"$out/uas.log" 2>&1 &
pids+=($!)
wait_udp "$p_uas"

config() { # name trunk pbx admin share
    two_sides_config "$2" "$3" "$p_uas"
    cat <<TOML
[instance]
name = "$1"
[admin]
listen = "127.0.0.1:$4"
[log]
level = "warn"
[risk]
policy = "$repo/sip-config/policy.toml"
[state]
redis = "redis://127.0.0.1:$p_redis"
key_prefix = "bench-cluster:"
share_console = $5
TOML
}

stat() { # uac json: "ok p50 / p99 / max"
    python3 -c 'import json,sys; u=json.load(open(sys.argv[1])); s=u["setup_ms"]; print("%d %.1f / %.1f / %.1f" % (u["ok"], s["p50"], s["p99"], s["max"]))' "$1" 2>/dev/null || echo "? ?"
}

calls=$((secs * rate))
echo "| run | share_console | cg-a calls ok | cg-a INVITE->200 p50 / p99 / max (ms) | cg-b calls ok | cg-b p50 / p99 / max (ms) | cg-a instances seen | cg-a tick failures |"
echo "|---|---|---|---|---|---|---|---|"
for run in $(seq 1 "$runs"); do
    for share in false true; do
        redis-cli -p "$p_redis" flushall >/dev/null
        config cg-a 61320 61322 61360 "$share" >"$out/a-$share.toml"
        config cg-b 61330 61332 61361 "$share" >"$out/b-$share.toml"
        nice -n -10 "$bin" run --config "$out/a-$share.toml" >/dev/null 2>"$out/a-$share.log" &
        a=$!
        nice -n -10 "$bin" run --config "$out/b-$share.toml" >/dev/null 2>"$out/b-$share.log" &
        b=$!
        pids+=("$a" "$b")
        wait_udp 61320
        wait_udp 61330
        nice -n -10 "$lg" uac --target 127.0.0.1:61330 --rate "$rate" --calls "$calls" --hold-ms "$hold" \
            --bind 127.0.0.4:0 --timeout-s $((secs + 40)) --json "$out/uac-b.json" >/dev/null 2>"$out/uac-b.log" &
        ub=$!
        nice -n -10 "$lg" uac --target 127.0.0.1:61320 --rate "$rate" --calls "$calls" --hold-ms "$hold" \
            --bind 127.0.0.5:0 --timeout-s $((secs + 40)) --json "$out/uac-a.json" >/dev/null 2>"$out/uac-a.log" || true
        wait "$ub" || true
        metrics=$(curl -s "http://127.0.0.1:61360/metrics" || true)
        seen=$(awk '/^callgate_cluster_instances /{print $2}' <<<"$metrics")
        failed=$(awk '/^callgate_cluster_tick_failures_total /{print $2}' <<<"$metrics")
        kill "$a" "$b" 2>/dev/null || true
        wait "$a" "$b" 2>/dev/null || true
        read -r aok astat <<<"$(stat "$out/uac-a.json")"
        read -r bok bstat <<<"$(stat "$out/uac-b.json")"
        echo "| $run | $share | $aok / $calls | $astat | $bok / $calls | $bstat | ${seen:--} | ${failed:--} |"
    done
done
