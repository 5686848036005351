#!/usr/bin/env bash
# Floods (issue 14): a steady legitimate load through callgate while one
# kind of unwanted traffic floods it, one run per kind.
#
#   test-calls/bench/flood.sh [--secs 30] [--rate 200] [--kinds "acl rate ..."]
#                             [--on-denied drop|reject] [--label NAME]
#                             [--baseline OLD/callgate]
#
# Legitimate load: sip-loadgen uac from 127.0.0.1 (the carrier) at --rate
# calls/s for --secs s (INVITE/100/180/200/ACK, 200 ms hold, BYE/200),
# through callgate to a sip-loadgen uas on the PBX side. At the same time,
# for --secs + 2 s, `sip-loadgen flood` sends from its own source address:
#   acl        INVITEs from 127.0.0.2, outside the trunk's ACL, as fast as it can
#   rate       INVITEs from 127.0.0.3, admitted, as fast as it can (rate_limit 1000/s)
#   velocity   INVITEs from 127.0.0.3 at 900/s, every one a new Call-ID and
#              From number, under the shipped policy (velocity windows)
#   identity   INVITEs from 127.0.0.3 at 900/s, each with a SHAKEN Identity
#              naming one of 100,000 x5u URLs on a server that accepts the
#              connection and never answers ([stir] on, deadline 300 ms)
#   options, register, response
#              OPTIONS, REGISTER, stray 200 OK from 127.0.0.3 as fast as it can
#   oversized  60 KB INVITEs from 127.0.0.3 as fast as it can
#   headers    INVITEs with 4,000 headers from 127.0.0.3 as fast as it can
#   vias       INVITEs with 800 Vias from 127.0.0.3 as fast as it can
#   halfopen   5,000 TCP connections to the trunk, each with half a request
#              head, held (from 127.0.0.1: the admitted carrier)
# Per run: legitimate calls completed / attempted, INVITE->200 p50/p99/max
# and BYE->200 p99 (ms; the in-dialog requests must not starve either),
# callgate's peak RSS (VmHWM), the kernel's drops at callgate's SIP
# sockets (/proc/net/udp, during the run), the trunk's messages the admit
# phase dropped before parsing (over rate_limit / over rate_limit_bytes;
# "-" where the build has no byte budget), flood messages sent, and whether
# callgate is still up (admin /health) at the end. callgate and the
# generators run at nice -10 (other work shares this machine).
#
# --baseline: each kind runs first with the OLD build, then with this one,
# so that both see the same load on a shared machine (rows "baseline" and
# "this").
# Results: test-calls/bench/out-flood[-LABEL]/results.md and results.json.
# Environment: CALLGATE_BIN (default target/release/callgate), LOADGEN_BIN
# (default loadgen/target/release/sip-loadgen; both built if missing).
# Fixed ports 61200-61299 (clear of run.sh's and the test suites').
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/lib.sh"

secs=30
rate=200
kinds="acl rate velocity identity options register response oversized headers vias halfopen"
on_denied=drop
label=""
baseline=""
while (($#)); do
    case "$1" in
        --secs) secs="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --kinds) kinds="$2"; shift ;;
        --on-denied) on_denied="$2"; shift ;;
        --label) label="$2"; shift ;;
        --baseline) baseline="$2"; shift ;;
        *) echo "usage: $0 [--secs S] [--rate R] [--kinds \"acl rate ...\"] [--on-denied drop|reject] [--label NAME] [--baseline OLD/callgate]" >&2; exit 2 ;;
    esac
    shift
done
out="$here/out-flood${label:+-$label}"
mkdir -p "$out"

p_trunk=61200 p_pbx=61202 p_uas=61210 p_admin=61260 p_x5u=61244

release_binaries "$repo" "$here"
# callgate asks for 8 MiB socket buffers; the kernel grants at most
# net.core.rmem_max (operations.md, "Kernel socket buffers"). The figures
# in benchmarks.md say which setting they were measured with.
rmem=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo 0)
((rmem >= 8388608)) || echo "flood.sh: net.core.rmem_max is $rmem (< 8 MiB): callgate's UDP receive buffers are capped; see docs/operations.md" >&2

# A trust anchor for [stir] (the identity flood never gets as far as a
# chain: its x5u server never answers).
pki="$out/pki"
if [[ ! -s "$pki/root.pem" ]]; then
    mkdir -p "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$pki/root-key.pem" -out "$pki/root.pem" -days 30 -subj "/CN=flood root" 2>/dev/null
fi

# A certificate server that accepts connections and never says a word.
start_tarpit() {
    python3 - "$p_x5u" <<'PY' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4096)
held = []
s.settimeout(1)
end = time.time() + 600
while time.time() < end:
    try:
        c, _ = s.accept()
        held.append(c)
    except OSError:
        pass
PY
    pids+=($!)
}

# Drops column of /proc/net/udp for callgate's two SIP ports.
udp_drops() {
    local pat
    pat=$(printf '%04X|%04X' "$p_trunk" "$p_pbx")
    awk -v pat=":($pat)\$" 'NR > 1 && $2 ~ pat { s += $NF } END { print s + 0 }' /proc/net/udp
}

config() { # kind
    local risk="" stir=""
    if [[ "$1" == velocity ]]; then
        risk="[risk]
policy = \"$repo/sip-config/policy.toml\""
    fi
    if [[ "$1" == identity ]]; then
        stir="[stir]
enabled = true
trust_dir = \"$pki\"
allow_private_x5u = true
deadline_ms = 300"
    fi
    cat <<TOML
[trunk]
udp = "127.0.0.1:$p_trunk"
tcp = "127.0.0.1:$p_trunk"
allow = ["127.0.0.1/32", "127.0.0.3/32"]
on_denied = "$on_denied"
rate_limit = 1000
targets = ["sip:127.0.0.1:9;transport=udp"]
[pbx]
udp = "127.0.0.1:$p_pbx"
allow = ["127.0.0.0/8"]
targets = ["sip:127.0.0.1:$p_uas;transport=udp"]
[health]
interval_secs = 0
[overload]
max_transactions = 100000
[admin]
listen = "127.0.0.1:$p_admin"
[log]
level = "warn"
$risk
$stir
TOML
}

flood_args() { # kind
    local d=$((secs + 2))
    case "$1" in
        acl) echo "--kind invite --bind 127.0.0.2:0 --rate 0 --duration-s $d" ;;
        rate) echo "--kind invite --bind 127.0.0.3:0 --rate 0 --duration-s $d" ;;
        velocity) echo "--kind invite --bind 127.0.0.3:0 --rate 900 --duration-s $d" ;;
        identity) echo "--kind identity --bind 127.0.0.3:0 --rate 900 --duration-s $d --x5u-base https://127.0.0.1:$p_x5u --x5u-count 100000" ;;
        options | register | response | oversized | headers | vias)
            echo "--kind $1 --bind 127.0.0.3:0 --rate 0 --duration-s $d" ;;
        halfopen) echo "--kind halfopen --conns 5000 --rate 0 --duration-s $d" ;;
        *) echo "unknown kind $1" >&2; return 1 ;;
    esac
}

json="$out/results.json"
md="$out/results.md"
echo "[" >"$json"
{
    echo "| flood | build | sent | legitimate calls ok / attempted | INVITE->200 p50 / p99 / max (ms) | BYE->200 p99 (ms) | callgate peak RSS (MiB) | kernel drops at callgate's SIP sockets | dropped before parsing (rate / bytes) | up after |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$md"
calls=$((secs * rate))
first=1

run_one() { # kind build-label callgate-binary
    local kind=$1 build=$2 cgbin=$3 tag="$1-$2" args uas cg fl tarpit drops0 drops up rss_kb sent refused
    args=$(flood_args "$kind")
    config "$kind" >"$out/callgate-$tag.toml"
    nice -n -10 "$lg" uas --listen "127.0.0.1:$p_uas" --stats-s 0 >"$out/uas-$tag.log" 2>&1 &
    uas=$!
    pids+=("$uas")
    nice -n -10 "$cgbin" run --config "$out/callgate-$tag.toml" >"$out/callgate-$tag.stdout" 2>"$out/callgate-$tag.log" &
    cg=$!
    pids+=("$cg")
    wait_udp "$p_trunk"
    tarpit=""
    if [[ "$kind" == identity ]]; then start_tarpit; tarpit=${pids[-1]}; fi
    drops0=$(udp_drops)
    # shellcheck disable=SC2086
    nice -n -10 "$lg" flood --target "127.0.0.1:$p_trunk" $args --json "$out/flood-$tag.json" >/dev/null 2>"$out/flood-$tag.log" &
    fl=$!
    pids+=("$fl")
    nice -n -10 "$lg" uac --target "127.0.0.1:$p_trunk" --rate "$rate" --calls "$calls" \
        --timeout-s $((secs + 40)) --json "$out/uac-$tag.json" >/dev/null 2>"$out/uac-$tag.log" || true
    wait "$fl" || true
    drops=$(($(udp_drops) - drops0))
    up=no
    if kill -0 "$cg" 2>/dev/null && curl -sf "http://127.0.0.1:$p_admin/healthz" >/dev/null; then up=yes; fi
    rss_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$cg/status" 2>/dev/null || echo 0)
    curl -s "http://127.0.0.1:$p_admin/metrics" >"$out/metrics-$tag.txt" || true
    # Dropped by the admit phase before any copy or parse (trunk).
    refused=$(awk '/^callgate_admission_refusals_total\{side="trunk",reason="(rate_limit|byte_rate)"\}/ { split($1, a, "reason=\""); sub(/".*/, "", a[2]); printf "%s%s=%s", sep, a[2], $2; sep = "," }' "$out/metrics-$tag.txt" 2>/dev/null || true)
    kill "$cg" "$uas" 2>/dev/null || true
    [[ -z "$tarpit" ]] || kill "$tarpit" 2>/dev/null || true
    wait "$cg" "$uas" 2>/dev/null || true
    sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$out/flood-$tag.json" 2>/dev/null || echo "?")
    python3 - "$out/uac-$tag.json" "$kind" "$build" "$sent" "$calls" "${rss_kb:-0}" "$drops" "$up" "$first" "$refused" >>"$json" 2>>"$out/report.err" <<'PY' || true
import json, sys
path, kind, build, sent, calls, rss, drops, up, first, refused = sys.argv[1:]
try:
    u = json.load(open(path))
except Exception:
    u = {"ok": 0, "failed": int(calls), "setup_ms": {"p50": 0, "p99": 0, "max": 0}}
row = {"kind": kind, "build": build, "sent": sent, "ok": u["ok"], "attempted": int(calls),
       "setup_ms": u["setup_ms"], "bye_ms": u.get("bye_ms", {"p99": 0}),
       "rss_mib": round(int(rss) / 1024, 1), "socket_drops": int(drops), "up": up == "yes",
       "failures": u.get("failures", {}),
       "refused_before_parse": {k: int(float(v)) for k, v in
                                (p.split("=") for p in refused.split(",") if "=" in p)}}
print(("" if first == "1" else ",") + json.dumps(row))
PY
    first=0
    python3 - "$json" >>"$md" <<'PY' || true
import json, sys
r = json.loads(open(sys.argv[1]).read() + "]")[-1]
s = r["setup_ms"]
f = r.get("refused_before_parse", {})
print(f"| {r['kind']} | {r['build']} | {r['sent']} | {r['ok']} / {r['attempted']} | {s['p50']:.1f} / {s['p99']:.1f} / {s['max']:.1f} | {r['bye_ms']['p99']:.1f} | {r['rss_mib']} | {r['socket_drops']} | {f.get('rate_limit', 0)} / {f.get('byte_rate', '-')} | {'yes' if r['up'] else 'NO'} |")
PY
    tail -n 1 "$md" >&2
}

for kind in $kinds; do
    # With --baseline, the two builds take turns on each kind (the same
    # machine load for both, as far as a shared machine allows).
    if [[ -n "$baseline" ]]; then run_one "$kind" baseline "$baseline"; fi
    run_one "$kind" this "$bin"
done
echo "]" >>"$json"
echo >&2
cat "$md"
