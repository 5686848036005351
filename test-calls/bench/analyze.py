#!/usr/bin/env python3
"""Added latency of a proxy from a loopback capture.

usage: analyze.py CAPTURE PROXY_PORT UAS_PORT

Pairs, per Call-ID, the INVITE entering the proxy (to PROXY_PORT from the
UAC) with the INVITE leaving it (to UAS_PORT), and the 200 OK for the
INVITE entering it (from UAS_PORT) with the one leaving it (to the UAC).
Prints JSON with p50/p99 in microseconds for each direction.
"""
import json
import subprocess
import sys

cap, proxy, uas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fields = ["frame.time_epoch", "udp.srcport", "udp.dstport", "sip.Call-ID", "sip.CSeq.method", "sip.Status-Code", "sip.Method"]
cmd = ["tshark", "-r", cap, "-Y", "sip", "-T", "fields", "-E", "separator=\t"] + sum([["-e", f] for f in fields], [])
out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
inv_in, inv_out, ok_in, ok_out = {}, {}, {}, {}
for line in out.splitlines():
    p = line.split("\t")
    if len(p) < 7:
        continue
    t, src, dst, cid, cseq_m, status, method = float(p[0]), int(p[1]), int(p[2]), p[3], p[4], p[5], p[6]
    if method == "INVITE":
        if dst == proxy and src != uas:
            inv_in.setdefault(cid, t)
        elif dst == uas:
            inv_out.setdefault(cid, t)
    elif status == "200" and cseq_m == "INVITE":
        if src == uas:
            ok_in.setdefault(cid, t)
        elif dst != uas and src != uas:
            ok_out.setdefault(cid, t)


def pct(a, b):
    d = sorted((b[k] - a[k]) * 1e6 for k in a if k in b and b[k] >= a[k])
    if not d:
        return {"n": 0}
    return {"n": len(d), "p50_us": round(d[len(d) // 2], 1), "p99_us": round(d[min(len(d) - 1, int(len(d) * 0.99))], 1)}


print(json.dumps({"invite": pct(inv_in, inv_out), "ok200": pct(ok_in, ok_out)}))
