#!/usr/bin/env python3
"""Merges the per-proxy results into results.json and a markdown table."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
res = {}
for part in sorted(out.glob("*.json.part")):
    r = json.loads(part.read_text())
    res[r["proxy"]] = r
(out / "results.json").write_text(json.dumps(res, indent=2))
rows = [
    ("CPU per call at 1,000 calls/s (µs)", lambda r: r["cpu_us_per_call"], "lower"),
    ("INVITE in → out, p50 (µs)", lambda r: r["latency"]["invite"].get("p50_us"), "lower"),
    ("INVITE in → out, p99 (µs)", lambda r: r["latency"]["invite"].get("p99_us"), "lower"),
    ("200 in → out, p50 (µs)", lambda r: r["latency"]["ok200"].get("p50_us"), "lower"),
    ("200 in → out, p99 (µs)", lambda r: r["latency"]["ok200"].get("p99_us"), "lower"),
    ("highest zero-failure rate (calls/s)", lambda r: r["max_zero_failure_cps"], "higher"),
]
cg, ka = res.get("callgate"), res.get("kamailio")
lines = ["| measure | callgate | Kamailio 5.6 | callgate / Kamailio |", "|---|---|---|---|"]
for label, get, _ in rows:
    a = get(cg) if cg else None
    b = get(ka) if ka else None
    ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
    lines.append(f"| {label} | {a if a is not None else '–'} | {b if b is not None else '–'} | {ratio} |")
table = "\n".join(lines) + "\n"
(out / "results.md").write_text(table)
print(table)
