#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (CI's fuzz step;
# docs/fuzzing.md). Installs cargo-fuzz (and the nightly toolchain, with
# rustup) when missing. Each target starts from its committed seeds
# (fuzz/seeds/<target>, plus the SIP torture suites for the SIP targets)
# and a scratch corpus in fuzz/corpus/<target> (not committed).
#
#   test-calls/fuzz.sh                 # every target, FUZZ_SECS (20) each
#   FUZZ_SECS=600 test-calls/fuzz.sh sdp pipeline
#
# Exits non-zero when any target crashed; the crashing inputs are in
# fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run <target> <file>;
# then add it to tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECS:-20}"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || { echo "fuzz.sh: needs a nightly toolchain (rustup)" >&2; exit 1; }
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo +nightly install cargo-fuzz --locked
fi

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build of every target first (the runs below then start at once).
cargo +nightly fuzz build --sanitizer "$sanitizer"
failed=()
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    seeds=()
    [[ -d fuzz/seeds/$t ]] && seeds+=("fuzz/seeds/$t")
    case "$t" in
        parse | pipeline) seeds+=(tests/sip-torture/rfc4475 tests/sip-torture/rfc5118) ;;
    esac
    echo "== fuzz $t for ${secs}s" >&2
    log="fuzz/corpus/$t.log"
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -n 1 >&2 || true
        grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$log" >&2 || true
    else
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${secs}s each, no crash" >&2
