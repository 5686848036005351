#!/usr/bin/env bash
# Soak: a steady load through callgate with every phase on — verification
# (a fresh SHAKEN PASSporT per call, x5u over HTTPS), the shipped policy,
# the SQLite audit trail and media anchoring with RTP both ways — for a long
# time, sampling the process every few seconds to show that nothing grows
# without bound (issue 14, "Soak").
#
#   test-calls/bench/soak.sh [--rate R] [--secs S] [--sample-secs K] [--hold-ms H]
#   test-calls/bench/soak.sh --steps 50,100,200 [--step-secs 30]
#
# --steps: the clean-rate search. Each rate runs for --step-secs against a
# fresh callgate and prints successful/failed calls and the INVITE→200 p99;
# the clean rate is the highest step with no failed call. The soak proper
# runs at half of it (issue 14: "a steady load at half the measured clean
# rate").
#
# The load: sipp (uac-media.xml) sends R calls/s from the carrier side, each
# a signed INVITE with an SDP offer; the PBX side is a sipp UAS
# (uas-basic.xml, -rtp_echo) that answers with SDP and echoes every RTP
# packet; after the ACK the UAC streams --hold-ms of A-law audio (50 packets
# per second) through callgate's relay and hangs up. So every call crosses
# verify, assess, route, tag, audit and media, in both directions.
#
# Samples (every --sample-secs, from /proc and callgate's /metrics): RSS and
# its high-water mark, open file descriptors, threads, CPU time, relay
# sessions, live transactions, audit queue; INVITE→200 per call from sipp's
# -trace_rtt. report: soak.py writes out-soak/soak.md (a table over time)
# and out-soak/soak.png (the plot), and says whether anything grew.
#
# callgate, sipp and the x5u server run at nice -10 so that other work on
# the machine (compiles) disturbs the latency figures less; every run is
# bounded by sipp's -m and -timeout. Loopback only; ports 63000-63999 for
# signalling (sipp's carrier ports from 63100), 64000-64100 for sipp's RTP
# (sipp 3.6 streams every call of an instance from one socket at -mp; above
# the kernel's ephemeral range, so no short-lived socket of anything else
# can hold it), 52000-59999 for callgate's relay.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/out-soak"
rate=50
secs=1800
sample=10
hold=2000
steps=""
step_secs=30
while (($#)); do
    case "$1" in
        --rate) rate="$2"; shift ;;
        --secs) secs="$2"; shift ;;
        --sample-secs) sample="$2"; shift ;;
        --hold-ms) hold="$2"; shift ;;
        --steps) steps="$2"; shift ;;
        --step-secs) step_secs="$2"; shift ;;
        *) echo "usage: $0 [--rate R] [--secs S] [--sample-secs K] [--hold-ms H] | --steps R1,R2,... [--step-secs S]" >&2; exit 2 ;;
    esac
    shift
done
for tool in sipp python3 openssl curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
python3 -c "import matplotlib" 2>/dev/null \
    || python3 -m pip install -q --root-user-action=ignore matplotlib
bin="${CALLGATE_BIN:-$repo/target/release/callgate}"
[[ -x "$bin" ]] || (cd "$repo" && cargo build --release --locked)
rm -rf "$out"; mkdir -p "$out"

trunk=63060; pbx_side=63062; uas_port=63080; admin=63090; x5u_port=63443

# shellcheck source=lib.sh
source "$here/lib.sh"
prio=(nice -n -10)

# The x5u server must outlive the run: the soak, or every step.
pki_secs=$((secs + 600))
[[ -n $steps ]] && pki_secs=$(( (step_secs + 120) * $(tr ',' '\n' <<<"$steps" | wc -l) + 600 ))
pki="$out/pki"
STI_PKI_SECS=$pki_secs "${prio[@]}" "$repo/test-calls/sti-pki.sh" "$pki" "$x5u_port" >"$out/pki.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 400); do grep -q '^serving' "$out/pki.log" 2>/dev/null && break; sleep 0.05; done
grep -q '^serving' "$out/pki.log" || { echo "x5u server did not start" >&2; exit 1; }
x5u="https://127.0.0.1:$x5u_port/sti.pem"

# 2 s of an A-law tone as a WAV file (format 6) for sipp's rtp_stream.
python3 - "$out/tone.wav" <<'PY'
import math, struct, sys
data = bytes(((int(64 * math.sin(i / 8)) + 128) ^ 0x55) & 0xFF for i in range(16000))
fmt = struct.pack('<HHIIHH', 6, 1, 8000, 8000, 1, 8)
body = b'WAVE' + b'fmt ' + struct.pack('<I', len(fmt)) + fmt + b'data' + struct.pack('<I', len(data)) + data
open(sys.argv[1], 'wb').write(b'RIFF' + struct.pack('<I', len(body)) + body)
PY

(cd "$out" && exec "${prio[@]}" sipp -sf "$repo/test-calls/scenarios/uas-basic.xml" -i 127.0.0.1 -p "$uas_port" \
    -mp 64100 -rtp_echo -nostdin -max_socket 4096 >/dev/null 2>&1) &
pids+=("$!")
wait_udp "$uas_port"

cat >"$out/callgate.toml" <<EOF
$(two_sides_config "$trunk" "$pbx_side" "$uas_port")
[overload]
max_transactions = 100000
[admin]
listen = "127.0.0.1:$admin"
[log]
level = "warn"
[stir]
enabled = true
trust_dir = "$pki/trust"
x5u_ca = ["$pki/web-ca.pem"]
allow_private_x5u = true
[risk]
policy = "$repo/sip-config/policy.toml"
[audit]
path = "$out/audit.db"
[media]
enabled = true
bind = "127.0.0.1"
port_min = 52000
port_max = 59999
max_ports_per_source = 8000
EOF

metrics() {
    curl -s --max-time 5 "http://127.0.0.1:$admin/metrics" 2>/dev/null || true
}

# One load run against a fresh callgate: rate, seconds, label. Leaves
# sipp's files (one directory per chunk) and the samples in $out/$3/.
#
# PASSporTs must be fresh when they arrive (`[stir] freshness_secs`, 60 s by
# default, kept here so that replay and certificate state live as long as
# in production): the load is cut into chunks of $chunk s, each signed just
# before it starts and sent by its own sipp, started every $chunk s so that
# the next chunk's calls follow the last one's without a gap (their tails
# overlap by one call's length).
chunk=40
run() {
    local r=$1 s=$2 dir="$out/$3"
    rm -rf "$dir"; mkdir -p "$dir"
    rm -f "$out"/audit.db*
    "${prio[@]}" "$bin" run --config "$out/callgate.toml" >"$dir/callgate.stdout" 2>"$dir/callgate.log" &
    local cg=$!
    wait_udp "$trunk"
    # The sampler: one line per --sample-secs while callgate lives.
    (
        clk=$(getconf CLK_TCK)
        t0=$(date +%s.%N)
        echo "t_s rss_kib hwm_kib fds threads cpu_s sessions transactions audit_queue packets calls"
        while kill -0 "$cg" 2>/dev/null; do
            m=$(metrics)
            val() { awk -v k="$1" '$1 == k {print $2; exit}' <<<"$m"; }
            rss=$(awk '/^VmRSS/ {print $2}' "/proc/$cg/status" 2>/dev/null || echo 0)
            hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$cg/status" 2>/dev/null || echo 0)
            thr=$(awk '/^Threads/ {print $2}' "/proc/$cg/status" 2>/dev/null || echo 0)
            fds=$(ls "/proc/$cg/fd" 2>/dev/null | wc -l)
            cpu=$(awk -v c="$clk" '{printf "%.2f", ($14 + $15) / c}' "/proc/$cg/stat" 2>/dev/null || echo 0)
            printf '%s %s %s %s %s %s %s %s %s %s %s\n' \
                "$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")" "$rss" "$hwm" "$fds" "$thr" "$cpu" \
                "$(val callgate_media_sessions)" "$(val callgate_server_transactions)" \
                "$(val callgate_audit_queue_depth)" "$(val callgate_media_packets_total)" \
                "$(val callgate_media_sessions_created_total)"
            sleep "$sample"
        done
    ) >"$dir/samples.txt" &
    local sampler=$!
    date +%s.%N >"$dir/start"
    local k=0 n=$(( (s + chunk - 1) / chunk )) senders=() next
    next=$(date +%s)
    while ((k < n)); do
        local c="$dir/chunk-$(printf %03d "$k")" secs_k=$(( s - k * chunk < chunk ? s - k * chunk : chunk ))
        mkdir -p "$c"; cp "$out/tone.wav" "$c/"
        # Sign just before the chunk starts: its last call's PASSporT is
        # then at most one chunk plus the signing old, inside the verifier's
        # 60 s freshness window (signing a chunk ahead made the second half
        # of every chunk fail as stale-date).
        while (( $(date +%s) < next - 3 )); do sleep 0.1; done
        "$bin" sign --orig "+1556$(printf %07d $((k * r * chunk)))" --dest +15550100 --attest A --x5u "$x5u" \
            --key "$pki/sti-key.pem" --csv $((r * secs_k)) >"$c/calls.csv"
        # Start on the chunk's boundary, not when signing happened to end.
        while (( $(date +%s) < next )); do sleep 0.1; done
        (cd "$c" && exec "${prio[@]}" sipp "127.0.0.1:$trunk" -sf "$here/soak/uac-media.xml" -inf calls.csv \
            -i 127.0.0.1 -p $((63100 + k % 50)) -mp $((64000 + (k % 8) * 4)) \
            -d "$hold" -r "$r" -m $((r * secs_k)) -l $((r * 10 + 100)) -nostdin -timeout $((secs_k + 60))s \
            -trace_stat -fd "$sample" -stf stats.csv -trace_rtt -rtt_freq 1 \
            -trace_err >/dev/null 2>&1) &
        senders+=("$!")
        next=$((next + chunk)); k=$((k + 1))
    done
    # (a sender that ended long ago may be reaped already: wait says so, harmlessly)
    for p in "${senders[@]}"; do wait "$p" 2>/dev/null || true; done
    metrics >"$dir/final.metrics"
    # Where the resident memory is at the end (heap arenas, SQLite, stacks):
    # the mappings by RSS, for a reader asking what grew.
    cat "/proc/$cg/smaps_rollup" >"$dir/smaps_rollup.txt" 2>/dev/null || true
    awk '/^[0-9a-f]+-[0-9a-f]+ / {m = $0} /^Rss:/ {print $2, m}' "/proc/$cg/smaps" 2>/dev/null \
        | sort -rn | head -20 >"$dir/smaps_top.txt" || true
    kill "$cg"; wait "$cg" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
}

if [[ -n $steps ]]; then
    echo "rate ok failed invite_200_p50_ms invite_200_p99_ms" | tee "$out/steps.txt"
    for r in ${steps//,/ }; do
        run "$r" "$step_secs" "step-$r"
        python3 "$here/soak/soak.py" --step "$out/step-$r" "$r" | tee -a "$out/steps.txt"
    done
    exit 0
fi

run "$rate" "$secs" soak
python3 "$here/soak/soak.py" --report "$out/soak" "$rate" "$secs" "$hold"
