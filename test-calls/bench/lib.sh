# Shared by the benchmark scripts (sourced): background processes killed
# on exit, and a bounded wait for a UDP listener.

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_udp() { # port: waits (at most 20 s) until something listens on it
    for _ in $(seq 1 400); do
        ss -lun | grep -q "127.0.0.1:$1 " && return 0
        sleep 0.05
    done
    echo "nothing listening on udp $1" >&2
    return 1
}

two_sides_config() { # trunk_port pbx_port uas_port: the benchmarks' base config
    # (UDP both sides on loopback, PBX target = the sipp UAS, no health probes)
    printf '[trunk]\nudp = "127.0.0.1:%s"\nallow = ["127.0.0.0/8"]\ntargets = ["sip:127.0.0.1:9;transport=udp"]\n[pbx]\nudp = "127.0.0.1:%s"\nallow = ["127.0.0.0/8"]\ntargets = ["sip:127.0.0.1:%s;transport=udp"]\n[health]\ninterval_secs = 0\n' "$1" "$2" "$3"
}

release_binaries() { # repo here: sets bin (callgate) and lg (sip-loadgen),
    # from CALLGATE_BIN / LOADGEN_BIN or the release builds (built if missing)
    bin="${CALLGATE_BIN:-$1/target/release/callgate}"
    if [[ ! -x "$bin" ]]; then
        [[ -z "${CALLGATE_BIN:-}" ]] || { echo "CALLGATE_BIN=$bin is not executable" >&2; exit 1; }
        (cd "$1" && cargo build --release)
    fi
    lg="${LOADGEN_BIN:-$2/loadgen/target/release/sip-loadgen}"
    if [[ ! -x "$lg" ]]; then
        [[ -z "${LOADGEN_BIN:-}" ]] || { echo "LOADGEN_BIN=$lg is not executable" >&2; exit 1; }
        cargo build --release --manifest-path "$2/loadgen/Cargo.toml"
    fi
    echo "callgate: $bin; load generator: $lg" >&2
}
