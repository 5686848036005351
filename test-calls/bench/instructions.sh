#!/usr/bin/env bash
# Instructions per call of two callgate builds, side by side: the same
# sipp load (uac-csv/uas-basic, unsigned calls, 50 calls/s) through each
# build under valgrind's callgrind, for the plain proxy and for the risk
# path (verification on, the shipped policy, the audit trail). Callgrind
# counts instructions, not seconds: repeatable on a busy or virtual
# machine, where CPU-time figures swing by ±15 %. The whole process is
# counted (every thread, start-up and shutdown included).
#
#   test-calls/bench/instructions.sh BASELINE_BIN CURRENT_BIN [--calls N]
#
# Needs sipp, valgrind, python3 and openssl. Ports 62160-62180 on loopback.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
base_bin="${1:?usage: $0 BASELINE_BIN CURRENT_BIN [--calls N]}"
cur_bin="${2:?usage: $0 BASELINE_BIN CURRENT_BIN [--calls N]}"
shift 2
calls=500
while (($#)); do
    case "$1" in
        --calls) calls="$2"; shift ;;
        *) echo "usage: $0 BASELINE_BIN CURRENT_BIN [--calls N]" >&2; exit 2 ;;
    esac
    shift
done
for tool in sipp valgrind callgrind_annotate python3 openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
out="$here/out-instructions"
scen="$repo/test-calls/scenarios"
rm -rf "$out"; mkdir -p "$out"
trunk=62160; pbx_side=62162; uas_port=62180

# shellcheck source=lib.sh
source "$here/lib.sh"

# A trust directory for the risk path's verification (no call is signed).
STI_PKI_SECS=1 "$repo/test-calls/sti-pki.sh" "$out/pki" 62179 >"$out/pki.log" 2>&1 || true
[[ -d $out/pki/trust ]] || { echo "no test PKI made" >&2; exit 1; }

base="$(two_sides_config "$trunk" "$pbx_side" "$uas_port")
[log]
level = \"warn\"
"
printf '%s' "$base" >"$out/plain.toml"
printf '%s\n[stir]\nenabled = true\ntrust_dir = "%s"\n[risk]\npolicy = "%s"\n[audit]\npath = "%s"\n' \
    "$base" "$out/pki/trust" "$repo/sip-config/policy.toml" "$out/audit.db" >"$out/risk.toml"

(cd "$out" && exec sipp -sf "$scen/uas-basic.xml" -i 127.0.0.1 -p "$uas_port" -nostdin -max_socket 4096 >/dev/null 2>&1) &
pids+=("$!")
wait_udp "$uas_port"

python3 -c "
print('SEQUENTIAL')
for i in range($calls): print(f'+{15580000 + i};+15550100;X-No-Identity: unsigned;none')
" >"$out/calls.csv"

count() { # label binary config -> prints instructions
    local label=$1 exe=$2 cfg=$3
    rm -f "$out"/audit.db*
    valgrind --tool=callgrind --callgrind-out-file="$out/$label.cg" "$exe" run --config "$cfg" \
        >/dev/null 2>"$out/$label.log" &
    local cg=$!
    wait_udp "$trunk"
    (cd "$out" && sipp "127.0.0.1:$trunk" -sf "$scen/uac-csv.xml" -inf calls.csv -i 127.0.0.1 -r 50 \
        -m "$calls" -l 200 -nostdin -timeout $((calls / 50 + 60))s >/dev/null 2>&1) || true
    kill -TERM "$cg"; wait "$cg" 2>/dev/null || true
    callgrind_annotate "$out/$label.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

printf '| configuration | baseline (instructions per call) | current | current / baseline |\n|---|---|---|---|\n'
for cfg in plain risk; do
    b=$(count "baseline-$cfg" "$base_bin" "$out/$cfg.toml")
    c=$(count "current-$cfg" "$cur_bin" "$out/$cfg.toml")
    python3 -c "b, c, n = $b, $c, $calls; print(f'| $cfg | {b / n:,.0f} | {c / n:,.0f} | {c / b:.3f} |')"
done
