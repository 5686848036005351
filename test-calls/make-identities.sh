#!/usr/bin/env bash
# Write a sipp -inf CSV of calls with signed, unsigned and tampered Identity
# headers, for scenarios/uac-csv.xml.
#
#   test-calls/make-identities.sh KEY X5U > calls.csv
#   sipp 127.0.0.1:5060 -sf test-calls/scenarios/uac-csv.xml -inf calls.csv -m 4
#
# Columns: calling number; called number; "Identity: <token>" (or a
# harmless "X-No-Identity: unsigned" for the unsigned call); x5u. sipp
# separates fields with ';', so the scenario adds the header's parameters.
set -euo pipefail
key="${1:?usage: make-identities.sh KEY X5U}"
x5u="${2:?usage: make-identities.sh KEY X5U}"
here="$(cd "$(dirname "$0")/.." && pwd)"
# The newest build of callgate (or $CALLGATE).
bin="${CALLGATE:-}"
if [[ -z "$bin" ]]; then
    bin="$here/target/release/callgate"
    if [[ ! -x "$bin" || "$here/target/debug/callgate" -nt "$bin" ]]; then bin="$here/target/debug/callgate"; fi
fi
# The token only: the part before the first ';' of the header value.
sign() { "$bin" sign --orig "$1" --dest "$2" --attest "$3" --x5u "$x5u" --key "$key" | cut -d';' -f1; }
a="$(sign +15550101 +15550100 A)"
c="$(sign +15550102 +15550100 C)"
other="$(sign +15550104 +15550100 A)"
echo "SEQUENTIAL"
echo "+15550101;+15550100;Identity: $a;$x5u"
echo "+15550102;+15550100;Identity: $c;$x5u"
echo "+15550103;+15550100;X-No-Identity: unsigned;none"
echo "+15550199;+15550100;Identity: $other;$x5u"   # signed for another number: orig mismatch
