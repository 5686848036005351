#!/usr/bin/env python3
"""Merges the per-proxy results into results.json and a markdown table."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])


def clean(step):
    """A step where no call failed, none needed a retransmission from the
    UAC, and no datagram was dropped at the proxy's (or the loadgen's) sockets."""
    u = step.get("uac") or {}
    return (step["failed"] == 0 and step["ok"] == step["calls"]
            and u.get("invite_retrans") == 0 and u.get("bye_retrans") == 0 and u.get("uac_socket_drops") == 0
            and step.get("proxy_socket_drops") == 0 and step.get("uas_socket_drops") == 0)


def clean_cps(r):
    best = 0
    for step in r.get("loadgen_steps", []):
        if not clean(step):
            break
        best = step["cps"]
    return best


res = {}
for part in sorted(out.glob("*.json.part")):
    r = json.loads(part.read_text())
    res[r["proxy"]] = r
run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
for r in res.values():
    r["max_clean_cps"] = clean_cps(r)
(out / "results.json").write_text(json.dumps({"run": run, **res}, indent=2))
rows = [
    ("CPU per call at 1,000 calls/s (µs)", lambda r: r["cpu_us_per_call"], "lower"),
    ("INVITE in → out, p50 (µs)", lambda r: r["latency"]["invite"].get("p50_us"), "lower"),
    ("INVITE in → out, p99 (µs)", lambda r: r["latency"]["invite"].get("p99_us"), "lower"),
    ("200 in → out, p50 (µs)", lambda r: r["latency"]["ok200"].get("p50_us"), "lower"),
    ("200 in → out, p99 (µs)", lambda r: r["latency"]["ok200"].get("p99_us"), "lower"),
    ("highest zero-failure rate, sip-loadgen (calls/s)", lambda r: r["max_zero_failure_cps"], "higher"),
    ("highest clean rate, sip-loadgen (calls/s)", lambda r: clean_cps(r), "higher"),
]
cg, ka = res.get("callgate"), res.get("kamailio")
kam = f"Kamailio 5.6 (-x {run.get('kamailio_mem', 'qm')})"
lines = [f"| measure | callgate | {kam} | callgate / Kamailio |", "|---|---|---|---|"]
for label, get, _ in rows:
    a = get(cg) if cg else None
    b = get(ka) if ka else None
    ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
    lines.append(f"| {label} | {a if a is not None else '–'} | {b if b is not None else '–'} | {ratio} |")
# The zero-failure steps of each proxy: calls, failures, the proxy's CPU.
for name, r in (("callgate", cg), ("Kamailio", ka)):
    if not r or not r.get("loadgen_steps"):
        continue
    lines += ["", f"{name}, sip-loadgen steps:", "",
              "| calls/s | ok | failed | INVITE / BYE retransmissions | INVITE→200 p50 / p99 (ms) | dropped at the proxy's sockets | proxy CPU (% of a core) | loadgen UAC / UAS µs per call |",
              "|---|---|---|---|---|---|---|---|"]
    for s in r["loadgen_steps"]:
        u = s.get("uac") or {}
        why = ", ".join(f"{k}: {v}" for k, v in (u.get("failures") or {}).items())
        setup = u.get("setup_ms") or {}
        lines.append(
            f"| {s['cps']:,} | {s['ok']:,} | {s['failed']:,}{' (' + why + ')' if why else ''} "
            f"| {u.get('invite_retrans', '–'):,} / {u.get('bye_retrans', '–'):,} "
            f"| {setup.get('p50', '–')} / {setup.get('p99', '–')} | {s.get('proxy_socket_drops', '–'):,} "
            f"| {s['proxy_cpu_pct']} | {u.get('uac_us_per_call', '–')} / {s['uas_us_per_call']} |")
table = "\n".join(lines) + "\n"
(out / "results.md").write_text(table)
print(table)
