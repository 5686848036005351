#!/usr/bin/env bash
# The cost of callgate's full inbound pipeline against the plain proxy, in
# one run (issue: "the full pipeline costs at most 1.3x the CPU per call of
# the plain proxy").
#
#   test-calls/bench/pipeline.sh [--calls N] [--rate R] [--rounds K] [--baseline BIN]
#
# With --baseline, every configuration also runs under BIN (an earlier
# build of callgate) in the same rounds, alternating which build goes
# first, and the report gives each build's figure and their ratio.
#
# The same sipp load (uac-csv/uas-basic: INVITE/100/180/200/ACK, 200 ms
# hold, BYE/200; every INVITE signed with a fresh SHAKEN PASSporT from
# `callgate sign --csv`, x5u served over HTTPS on loopback by sti-pki.sh)
# goes through three callgate configurations, alternating, K rounds:
#   plain    — the proxy alone; the Identity header is forwarded untouched;
#   risk     — + assess, route, tag and audit: the shipped policy
#              (sip-config/policy.toml) and the SQLite audit trail, with
#              verification on but every call unsigned (STIR_NONE);
#   full     — verify (chain cached after 10 warm-up calls, ES256, replay)
#              + assess + route + tag + audit, on the signed calls.
# CPU per call: utime+stime of the callgate process (all threads, the audit
# writer included) from /proc/PID/stat, over completed calls; the median of
# the rounds is reported, with each round's figure. Loopback only; every run
# is bounded by sipp's -m and -timeout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/out-pipeline"
scen="$repo/test-calls/scenarios"
calls=10000
rate=1000
rounds=3
baseline=""
while (($#)); do
    case "$1" in
        --calls) calls="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --rounds) rounds="$2"; shift ;;
        --baseline) baseline="$2"; shift ;;
        *) echo "usage: $0 [--calls N] [--rate R] [--rounds K] [--baseline BIN]" >&2; exit 2 ;;
    esac
    shift
done
for tool in sipp python3 openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
bin="${CALLGATE_BIN:-$repo/target/release/callgate}"
[[ -x "$bin" ]] || (cd "$repo" && cargo build --release --locked)
rm -rf "$out"; mkdir -p "$out"

# Ports in 62000-62999: above the kernel's ephemeral range and away from
# the test suite's ports (10000-32000) and run.sh's (61000-61999).
trunk=62060; pbx_side=62062; uas_port=62080; admin=62090; x5u_port=62443

# shellcheck source=lib.sh
source "$here/lib.sh"

pki="$out/pki"
STI_PKI_SECS=7200 "$repo/test-calls/sti-pki.sh" "$pki" "$x5u_port" >"$out/pki.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 400); do grep -q '^serving' "$out/pki.log" 2>/dev/null && break; sleep 0.05; done
grep -q '^serving' "$out/pki.log" || { echo "x5u server did not start" >&2; exit 1; }
x5u="https://127.0.0.1:$x5u_port/sti.pem"

(cd "$out" && exec sipp -sf "$scen/uas-basic.xml" -i 127.0.0.1 -p "$uas_port" -nostdin -max_socket 4096 >/dev/null 2>&1) &
pids+=("$!")
wait_udp "$uas_port"

base="$(two_sides_config "$trunk" "$pbx_side" "$uas_port")
[overload]
max_transactions = 100000
[admin]
listen = \"127.0.0.1:$admin\"
[log]
level = \"warn\"
"
stir="[stir]
enabled = true
trust_dir = \"$pki/trust\"
x5u_ca = [\"$pki/web-ca.pem\"]
allow_private_x5u = true
freshness_secs = 600
"
risk="[risk]
policy = \"$repo/sip-config/policy.toml\"
[audit]
path = \"$out/audit.db\"
"
printf '%s' "$base" >"$out/plain.toml"
printf '%s\n%s\n%s' "$base" "$stir" "$risk" >"$out/risk.toml"
printf '%s\n%s\n%s' "$base" "$stir" "$risk" >"$out/full.toml"

next_orig=15560000
# One sipp run; prints "ok failed". $3: signed (1) or not.
uac() { # calls rate signed label
    local dir="$out/sipp-$4"
    rm -rf "$dir"; mkdir -p "$dir"
    if (($3)); then
        "$bin" sign --orig "+$next_orig" --dest +15550100 --attest A --x5u "$x5u" \
            --key "$pki/sti-key.pem" --csv "$1" >"$dir/calls.csv"
    else
        python3 -c "
import sys
print('SEQUENTIAL')
for i in range($1): print(f'+{$next_orig + i};+15550100;X-No-Identity: unsigned;none')
" >"$dir/calls.csv"
    fi
    next_orig=$((next_orig + $1))
    (cd "$dir" && sipp "127.0.0.1:$trunk" -sf "$scen/uac-csv.xml" -inf calls.csv -i 127.0.0.1 -r "$2" -m "$1" \
        -l $(($2 * 2 + 100)) -nostdin -timeout $(($1 / $2 + 30))s -trace_stat -stf stats.csv >/dev/null 2>&1) || true
    python3 - "$dir/stats.csv" <<'PY'
import sys
rows = [l.rstrip('\n').split(';') for l in open(sys.argv[1])]
h, last = rows[0], rows[-1]
print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')])
PY
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the audit writer thread (0 without [audit]).
writer_ticks() {
    local t n=0
    for t in /proc/"$1"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == callgate-audit ]] && n=$((n + $(awk '{print $14 + $15}' "$t/stat")))
    done
    echo "$n"
}
clk=$(getconf CLK_TCK)

measure() { # config round binary -> prints us/call
    local name=$1 signed=0 exe=${3:-$bin}
    [[ $name == full || $name == plain ]] && signed=1
    rm -f "$out"/audit.db*
    "$exe" run --config "$out/$name.toml" >"$out/$name.stdout" 2>"$out/$name.log" &
    local cg=$!
    wait_udp "$trunk"
    if ((signed)); then uac 10 10 1 "$name-$2-warm" >/dev/null; fi
    local t0 t1 w0 w1 ok failed
    t0=$(ticks "$cg"); w0=$(writer_ticks "$cg")
    read -r ok failed < <(uac "$calls" "$rate" "$signed" "$name-$2")
    t1=$(ticks "$cg"); w1=$(writer_ticks "$cg")
    # What callgate counted (refusals, parse errors), for a round that
    # lost calls.
    python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$admin/metrics', timeout=5).read().decode())" \
        >"$out/$name-$2-$(basename "$exe").metrics" 2>/dev/null || true
    kill "$cg"; wait "$cg" 2>/dev/null || true
    python3 -c "print(round(($t1 - $t0) * 1e6 / $clk / max($ok, 1), 1), $ok, $failed, round(($w1 - $w0) * 1e6 / $clk / max($ok, 1), 1))"
}

declare -A figures
builds=(current)
[[ -n $baseline ]] && builds=(baseline current)
for r in $(seq 1 "$rounds"); do
    # Alternate which build goes first, round by round.
    order=("${builds[@]}")
    if ((${#builds[@]} == 2 && r % 2 == 0)); then order=(current baseline); fi
    for name in plain risk full; do
        for b in "${order[@]}"; do
            exe=$bin
            [[ $b == baseline ]] && exe=$baseline
            read -r us ok failed writer < <(measure "$name" "$r" "$exe")
            echo "round $r: $b $name $us us/call ($ok ok, $failed failed; audit writer thread $writer us/call)" >&2
            figures[$b:$name]+="$us "
        done
    done
done

python3 - "$out" "${figures[current:plain]}" "${figures[current:risk]}" "${figures[current:full]}" \
    "${figures[baseline:plain]:-}" "${figures[baseline:risk]:-}" "${figures[baseline:full]:-}" <<'PY'
import json, statistics, sys
out = sys.argv[1]
names = ["plain", "risk", "full"]
runs = {k: [float(x) for x in v.split()] for k, v in zip(names, sys.argv[2:5])}
base = {k: [float(x) for x in v.split()] for k, v in zip(names, sys.argv[5:8]) if v.strip()}
med = {k: statistics.median(v) for k, v in runs.items()}
bmed = {k: statistics.median(v) for k, v in base.items()}
res = {"rounds": runs, "median_us_per_call": med,
       "risk_over_plain": round(med["risk"] / med["plain"], 2),
       "full_over_plain": round(med["full"] / med["plain"], 2)}
if bmed:
    res["baseline_rounds"] = base
    res["baseline_median_us_per_call"] = bmed
    res["current_over_baseline"] = {k: round(med[k] / bmed[k], 3) for k in bmed}
json.dump(res, open(f"{out}/results.json", "w"), indent=2)
labels = [("plain", "plain proxy (signed calls, Identity forwarded)"),
          ("risk", "assess + route + tag + audit (unsigned calls, verification on)"),
          ("full", "verify + assess + route + tag + audit (signed calls)")]
if bmed:
    lines = ["| configuration | baseline (µs, median; rounds) | current (µs, median; rounds) | current / baseline |",
             "|---|---|---|---|"]
    for k, label in labels:
        lines.append(f"| {label} | {bmed[k]:.1f} ({', '.join(f'{x:.0f}' for x in base[k])}) | "
                     f"{med[k]:.1f} ({', '.join(f'{x:.0f}' for x in runs[k])}) | {med[k] / bmed[k]:.3f} |")
else:
    lines = ["| configuration | CPU per call (µs, median) | rounds | / plain |", "|---|---|---|---|"]
    for k, label in labels:
        lines.append(f"| {label} | {med[k]:.1f} | {', '.join(f'{x:.0f}' for x in runs[k])} | {med[k] / med['plain']:.2f} |")
text = "\n".join(lines) + "\n"
open(f"{out}/results.md", "w").write(text)
print(text)
PY
