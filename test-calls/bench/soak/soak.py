#!/usr/bin/env python3
"""Summaries for test-calls/bench/soak.sh.

  soak.py --step DIR RATE              one line: rate ok failed p50 p99
  soak.py --report DIR RATE SECS HOLD  DIR/../soak.md (table over time,
                                       growth verdict) and DIR/../soak.png

DIR holds the sampler's samples.txt and one directory per chunk of the
load (chunk-NNN/), each with its sipp's stats.csv and *_rtt.csv
(-trace_rtt: one line per call, "Date_ms;response_time_ms;rtd_no", the
milliseconds counted from that sipp's StartTime).
"""
import glob
import os
import sys


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def ms_text(v):
    """sipp's -trace_rtt counts whole milliseconds: 0 is "under 1 ms"."""
    if v != v:
        return "–"
    return "< 1" if v < 1 else f"{v:.0f}"


def chunks(dirname):
    """The run's sipp directories (soak.sh starts one sipp per chunk)."""
    return sorted(glob.glob(os.path.join(dirname, "chunk-*"))) or [dirname]


def start_epoch(stats_csv):
    """sipp's StartTime ("date<TAB>time<TAB>epoch") from its stats file."""
    rows = [l.rstrip("\n").split(";") for l in open(stats_csv)]
    return float(rows[1][rows[0].index("StartTime")].split("\t")[-1])


def stats(dirname):
    ok = failed = 0
    for d in chunks(dirname):
        rows = [l.rstrip("\n").split(";") for l in open(os.path.join(d, "stats.csv"))]
        head, last = rows[0], rows[-1]
        ok += int(last[head.index("SuccessfulCall(C)")])
        failed += int(last[head.index("FailedCall(C)")])
    return ok, failed


def rtts(dirname):
    """(time_s since the run started, INVITE→200 ms) per call."""
    out = []
    for d in chunks(dirname):
        offset = start_epoch(os.path.join(d, "stats.csv"))
        for path in glob.glob(os.path.join(d, "*_rtt.csv")):
            for line in open(path):
                f = line.strip().split(";")
                if len(f) < 3 or not f[0][:1].isdigit():
                    continue
                out.append((offset + float(f[0]) / 1000.0, float(f[1])))
    out.sort()
    start = os.path.join(dirname, "start")
    t0 = float(open(start).read()) if os.path.exists(start) else (out[0][0] if out else 0.0)
    return [(t - t0, ms) for t, ms in out]


def samples(dirname):
    lines = open(os.path.join(dirname, "samples.txt")).read().split("\n")
    head = lines[0].split()
    rows = []
    for line in lines[1:]:
        f = line.split()
        if len(f) != len(head):
            continue
        rows.append({k: (float(v) if v not in ("", "-") else 0.0) for k, v in zip(head, f)})
    for r in rows:
        # Calls answered: relay sessions created (one per call); older
        # sample files only have the 2xx sent to the trunk (INVITE and BYE).
        if "calls" not in r:
            r["calls"] = r["calls_ok"] / 2
    return rows


def step(dirname, rate):
    ok, failed = stats(dirname)
    ms = [m for _, m in rtts(dirname)]
    print(f"{rate} {ok} {failed} {pct(ms, 50):.2f} {pct(ms, 99):.2f}")


def third_mean(rows, key, which):
    n = len(rows)
    part = rows[which * n // 3:(which + 1) * n // 3]
    return sum(r[key] for r in part) / max(1, len(part))


def report(dirname, rate, secs, hold):
    ok, failed = stats(dirname)
    calls = rtts(dirname)
    rows = samples(dirname)
    top = os.path.dirname(dirname)
    bucket = max(60, int(secs) // 10)
    lines = [
        f"Soak: {rate} calls/s for {secs} s, {hold} ms of RTP both ways per call; "
        f"{ok} calls completed, {failed} failed.",
        "",
        "| minute | RSS (MiB) | fds | threads | CPU per call (µs) | relay sessions | live transactions | audit queue | INVITE→200 p50 / p99 (ms, sipp's 1 ms resolution) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    prev = None
    for start in range(0, int(secs), bucket):
        part = [r for r in rows if start <= r["t_s"] < start + bucket]
        if not part:
            continue
        last = part[-1]
        ms = [m for t, m in calls if start <= t < start + bucket]
        cpu = ""
        if prev is not None and last["calls"] > prev["calls"]:
            cpu = f"{(last['cpu_s'] - prev['cpu_s']) * 1e6 / (last['calls'] - prev['calls']):.0f}"
        prev = last
        lines.append(
            f"| {start // 60}–{(start + bucket) // 60} | {last['rss_kib'] / 1024:.1f} | {int(last['fds'])} "
            f"| {int(last['threads'])} | {cpu} | {int(last['sessions'])} | {int(last['transactions'])} "
            f"| {int(last['audit_queue'])} | {ms_text(pct(ms, 50))} / {ms_text(pct(ms, 99))} |"
        )
    lines.append("")
    if len(rows) >= 6:
        verdict = []
        for key, label in (("rss_kib", "RSS"), ("fds", "file descriptors"), ("threads", "threads")):
            mid, end = third_mean(rows, key, 1), third_mean(rows, key, 2)
            growth = (end - mid) / mid * 100 if mid else 0.0
            verdict.append(f"{label} {mid:.0f} → {end:.0f} ({growth:+.1f} %)")
        lines.append("Middle third against last third (mean of the samples): " + "; ".join(verdict) + ".")
    all_ms = [m for _, m in calls]
    lines.append(
        f"INVITE→200 over the whole run: p50 {ms_text(pct(all_ms, 50))} ms, p99 {ms_text(pct(all_ms, 99))} ms, "
        f"p99.9 {ms_text(pct(all_ms, 99.9))} ms, max {ms_text(max(all_ms) if all_ms else float('nan'))} ms; "
        f"peak RSS {max((r['hwm_kib'] for r in rows), default=0) / 1024:.1f} MiB."
    )
    lines.append(decisions(dirname))
    open(os.path.join(top, "soak.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, calls, os.path.join(top, "soak.png"), rate, secs)


def decisions(dirname):
    """What callgate decided, from its last scrape: a soak whose PASSporTs
    went stale (or whose x5u failed) would otherwise look healthy while
    measuring the cheaper failure path."""
    found = {}
    try:
        for line in open(os.path.join(dirname, "final.metrics")):
            for name in ("callgate_stir_verifications_total", "callgate_decisions_total"):
                if line.startswith(name + "{"):
                    labels, value = line[len(name) + 1:].rsplit("} ", 1)
                    found[f"{name.removeprefix('callgate_')}{{{labels}}}"] = int(float(value))
    except OSError:
        return "No final scrape (final.metrics) to count verifications and decisions."
    return "Verifications and decisions at the end: " + ", ".join(
        f"`{k}` {v}" for k, v in sorted(found.items()) if v) + "."


def plot(rows, calls, path, rate, secs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(t, [r["rss_kib"] / 1024 for r in rows], label="RSS (MiB)")
    ax[0].set_ylabel("MiB")
    ax[0].legend(loc="upper left")
    ax[1].plot(t, [r["fds"] for r in rows], label="open fds")
    ax[1].plot(t, [r["threads"] for r in rows], label="threads")
    ax[1].plot(t, [r["sessions"] for r in rows], label="relay sessions")
    ax[1].legend(loc="upper left")
    cpu_t, cpu = [], []
    for a, b in zip(rows, rows[1:]):
        if b["calls"] > a["calls"]:
            cpu_t.append(b["t_s"] / 60)
            cpu.append((b["cpu_s"] - a["cpu_s"]) * 1e6 / (b["calls"] - a["calls"]))
    ax[2].plot(cpu_t, cpu, label="CPU per call (µs)")
    ax[2].legend(loc="upper left")
    width = 30.0
    lt, p50, p99 = [], [], []
    start = 0.0
    while start < secs:
        ms = [m for tt, m in calls if start <= tt < start + width]
        if ms:
            lt.append((start + width / 2) / 60)
            p50.append(pct(ms, 50))
            p99.append(pct(ms, 99))
        start += width
    ax[3].plot(lt, p50, label="INVITE→200 p50 (ms)")
    ax[3].plot(lt, p99, label="INVITE→200 p99 (ms)")
    ax[3].set_xlabel("minutes")
    ax[3].legend(loc="upper left")
    fig.suptitle(f"callgate soak: {rate} calls/s, verification + policy + audit + media")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--step":
        step(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "--report":
        report(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
