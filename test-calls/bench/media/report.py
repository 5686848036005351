#!/usr/bin/env python3
"""Summarises rtpblast's JSON lines (out/{direct,rtpengine,callgate}.jsonl)
into out/results.json and out/results.md.

Per rate and relay, over rounds: the median of each figure; loss summed.
Added latency = relay percentile minus the no-relay baseline's percentile
at the same rate in the same round (the relay's added p50 is the
difference of medians), then the median over rounds. CPU per packet: the
relay's CPU time over the measured window (run time of all its threads
from schedstat — softirq work its sends do inline included — plus the
ksoftirqd of its core; utime+stime ticks as a cross-check) divided by the
packets it relayed in that window.

usage: report.py OUT_DIR RATES SECS ROUNDS [SHARE]
"""
import json
import statistics
import sys
from pathlib import Path

GOAL_CPU_RATIO = 0.5
GOAL_P50_US = 80.0
GOAL_RATE_RATIO = 1.5
P90_LIMIT_US = 1000.0
MID_RATE = 20000
P50_BAND = (10000, 50000)


def load(out, label):
    p = out / f"{label}.jsonl"
    rows = []
    if p.exists():
        for line in p.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(rows, base):
    by_rate = {}
    for r in rows:
        by_rate.setdefault(r["rate"], []).append(r)
    base_at = {(b["round"], b["rate"]): b for b in base}
    out = {}
    for rate, rs in sorted(by_rate.items()):
        def added(key, r):
            b = base_at.get((r["round"], rate))
            return None if b is None else (r["lat_ns"][key] - b["lat_ns"][key]) / 1000.0

        def added_user(key, r):
            b = base_at.get((r["round"], rate))
            return None if b is None else (r["lat_user_ns"][key] - b["lat_user_ns"][key]) / 1000.0

        cpu = [r.get("cpu") for r in rs if r.get("cpu")]
        out[rate] = {
            "rounds": len(rs),
            "calls": rs[0]["calls"],
            "sent": sum(r["sent"] for r in rs),
            "lost": sum(r["lost"] for r in rs),
            "lost_rounds": [r["lost"] for r in rs],
            "lat_us": {k: med(r["lat_ns"][k] / 1000.0 for r in rs) for k in ("p50", "p90", "p99", "max")},
            "added_us": {k: med(added(k, r) for r in rs) for k in ("p50", "p90", "p99")},
            "added_user_us": {k: med(added_user(k, r) for r in rs) for k in ("p50", "p90", "p99")},
            "added_p90_us_rounds": [added("p90", r) for r in rs],
            "send_late_p99_us": med(r["send_late_ns"]["p99"] / 1000.0 for r in rs),
            "cpu_ns_per_packet": med(c.get("ns_per_packet_total", c["ns_per_packet_sched"]) for c in cpu) if cpu else None,
            "cpu_ns_per_packet_threads_only": med(c["ns_per_packet_sched"] for c in cpu) if cpu else None,
            "cpu_ns_per_packet_ticks": med(c["ns_per_packet_ticks"] for c in cpu) if cpu else None,
            "core_share": med(c.get("core_share_total", c["core_share"]) for c in cpu) if cpu else None,
            "blaster_send_late_p99_us": med(r["send_late_ns"]["p99"] / 1000.0 for r in rs),
            "machine_core_busy": [r["machine"]["core_busy"] for r in rs],
        }
    return out


def verdict(s):
    """Headline figures of one relay."""
    if not s:
        return {}
    mid = s.get(MID_RATE) or s[min(s, key=lambda r: abs(r - MID_RATE))]
    band = {r: v["added_us"]["p50"] for r, v in s.items() if P50_BAND[0] <= r <= P50_BAND[1]}
    ok = [
        r
        for r, v in s.items()
        if v["lost"] == 0
        and v["added_p90_us_rounds"]
        and all(x is not None and x < P90_LIMIT_US for x in v["added_p90_us_rounds"])
    ]
    # The highest rate that passes with every lower rate passing too.
    sustained = None
    for r in sorted(s):
        if r in ok:
            sustained = r
        else:
            break
    return {
        "cpu_ns_per_packet_at_mid": mid["cpu_ns_per_packet"],
        "mid_rate": [r for r in s if s[r] is mid][0],
        "added_p50_us_10k_50k": band,
        "added_p50_us_10k_50k_max": max(band.values()) if band else None,
        "highest_rate_p90_under_1ms_no_loss": sustained,
        "passing_rates": sorted(ok),
    }


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def main():
    out = Path(sys.argv[1])
    rates = [int(r) for r in sys.argv[2].split(",")]
    secs, rounds = int(sys.argv[3]), int(sys.argv[4])
    share = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    base_rows = load(out, "direct")
    base = {}
    for r in base_rows:
        base.setdefault(r["rate"], []).append(r)
    baseline = {
        rate: {
            "lost": sum(r["lost"] for r in rs),
            "lat_us": {k: med(r["lat_ns"][k] / 1000.0 for r in rs) for k in ("p50", "p90", "p99")},
            "lat_user_us": {k: med(r["lat_user_ns"][k] / 1000.0 for r in rs) for k in ("p50", "p90", "p99")},
            "send_late_p99_us": med(r["send_late_ns"]["p99"] / 1000.0 for r in rs),
        }
        for rate, rs in sorted(base.items())
    }
    relays = {}
    for label in ("rtpengine", "callgate"):
        rows = load(out, label)
        if rows:
            s = summarise(rows, base_rows)
            relays[label] = {"steps": s, "summary": verdict(s)}
    top = max(rates)
    for v in relays.values():
        v["summary"]["passed_top_step"] = v["summary"].get("highest_rate_p90_under_1ms_no_loss") == top
    ratios = {}
    if "rtpengine" in relays and "callgate" in relays:
        e, c = relays["rtpengine"]["summary"], relays["callgate"]["summary"]
        if e["cpu_ns_per_packet_at_mid"] and c["cpu_ns_per_packet_at_mid"]:
            ratios["cpu_per_packet"] = c["cpu_ns_per_packet_at_mid"] / e["cpu_ns_per_packet_at_mid"]
        if e["added_p50_us_10k_50k_max"] and c["added_p50_us_10k_50k_max"]:
            ratios["added_p50_10k_50k_max"] = c["added_p50_us_10k_50k_max"] / e["added_p50_us_10k_50k_max"]
        if e["highest_rate_p90_under_1ms_no_loss"] and c["highest_rate_p90_under_1ms_no_loss"]:
            ratios["rate_p90_under_1ms"] = (
                c["highest_rate_p90_under_1ms_no_loss"] / e["highest_rate_p90_under_1ms_no_loss"]
            )
            # A relay that passed the top step has its limit above it.
            ratios["rate_ratio_is"] = (
                "unknown (both passed the top step)"
                if c["passed_top_step"] and e["passed_top_step"]
                else "a lower bound (callgate passed the top step)"
                if c["passed_top_step"]
                else "an upper bound (rtpengine passed the top step)"
                if e["passed_top_step"]
                else "measured"
            )
    result = {
        "rates": rates,
        "secs_per_step": secs,
        "rounds": rounds,
        "far_end_sockets_per_side": share or "one per call side",
        "packet_bytes": 172,
        "per_stream_pps": 50,
        "directions": "both (each call: A->B and B->A streams; rate = packets/s the relay forwards)",
        "latency": "kernel receive timestamp (SO_TIMESTAMPNS) minus send timestamp in the payload; added = relay minus no-relay baseline",
        "baseline": baseline,
        "relays": relays,
        "ratios_callgate_over_rtpengine": ratios,
        "quiet": (out / "quiet.log").read_text().splitlines() if (out / "quiet.log").exists() else [],
    }
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")

    md = []
    md.append(
        f"Stepped load, {secs} s per step after 1 s warm-up, {rounds} round(s), medians over rounds "
        "(loss: total over rounds). 172-byte RTP, 50 packets/s per stream, both directions of each call "
        f"(far ends: {str(share) + ' sockets per side' if share else 'one socket per call side'}); "
        "rate = packets/s through the relay. Latency: kernel receive timestamp minus the send "
        "timestamp in the payload; *added* = relay minus the no-relay baseline at the same rate. "
        "CPU: the relay's run time (all its threads, plus its core's ksoftirqd) per packet relayed; "
        "core = share of its core that is.\n"
    )
    labels = [l for l in ("rtpengine", "callgate") if l in relays]
    head = "| rate pps | calls | baseline p50 µs |"
    sep = "|---:|---:|---:|"
    for l in labels:
        head += f" {l} lost | {l} added p50/p90/p99 µs | {l} CPU ns/pkt | {l} core |"
        sep += "---:|---:|---:|---:|"
    md += [head, sep]
    for rate in sorted(set().union(*[relays[l]["steps"].keys() for l in labels]) if labels else []):
        b = baseline.get(rate, {})
        any_s = next(relays[l]["steps"][rate] for l in labels if rate in relays[l]["steps"])
        row = f"| {rate} | {any_s['calls']} | {fmt(b.get('lat_us', {}).get('p50'))} |"
        for l in labels:
            s = relays[l]["steps"].get(rate)
            if not s:
                row += " | | | |"
                continue
            a = s["added_us"]
            row += (
                f" {s['lost']} | {fmt(a['p50'])} / {fmt(a['p90'])} / {fmt(a['p99'])} |"
                f" {fmt(s['cpu_ns_per_packet'], 0)} | {fmt(None if s['core_share'] is None else 100 * s['core_share'], 0)}% |"
            )
        md.append(row)
    md.append("")
    if labels:
        md.append("| figure | " + " | ".join(labels) + (" | callgate/rtpengine | goal |" if len(labels) == 2 else " |"))
        md.append("|---|" + "---:|" * len(labels) + ("---:|---|" if len(labels) == 2 else ""))
        sm = {l: relays[l]["summary"] for l in labels}

        def line(name, vals, ratio, goal):
            r = f"| {name} | " + " | ".join(vals) + " |"
            if len(labels) == 2:
                r += f" {ratio} | {goal} |"
            md.append(r)

        line(
            f"CPU per packet at {sm[labels[0]]['mid_rate']} pps (ns)",
            [fmt(sm[l]["cpu_ns_per_packet_at_mid"], 0) for l in labels],
            fmt(ratios.get("cpu_per_packet"), 2),
            f"≤ {GOAL_CPU_RATIO}",
        )
        line(
            "added p50 at 10k–50k pps, worst step (µs)",
            [fmt(sm[l]["added_p50_us_10k_50k_max"]) for l in labels],
            fmt(ratios.get("added_p50_10k_50k_max"), 2),
            f"callgate < {GOAL_P50_US:.0f} µs",
        )
        def rate_cell(l):
            r = sm[l]["highest_rate_p90_under_1ms_no_loss"]
            return "–" if not r else (f"≥ {r}" if sm[l]["passed_top_step"] else str(r))

        kind = ratios.get("rate_ratio_is", "measured")
        line(
            "highest rate with added p90 < 1 ms and zero loss, all rounds (pps)",
            [rate_cell(l) for l in labels],
            ("≥ " if kind.startswith("a lower") else "≤ " if kind.startswith("an upper") else "")
            + fmt(ratios.get("rate_p90_under_1ms"), 2),
            f"≥ {GOAL_RATE_RATIO}",
        )
        md.append("")
        if kind != "measured":
            md.append(f"The rate ratio is {kind}: the load generator's top step is {top} packets/s.\n")
    md.append(
        "Baseline (no relay), blaster pacing: "
        + ", ".join(
            f"{r}: p50 {fmt(v['lat_us']['p50'])} µs, send lateness p99 {fmt(v['send_late_p99_us'])} µs, lost {v['lost']}"
            for r, v in baseline.items()
        )
        + "\n"
    )
    if result["quiet"]:
        md.append("Machine: " + "; ".join(result["quiet"]) + "\n")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
