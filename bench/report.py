"""The tables of a bench.py run, in Markdown (ready for bench/RESULTS.md), from its results
file: one JSON object a line, {"figure", "who", "value"}; a figure measured several times
shows the median. Ratios compare tpt with the best peer for each figure.

    /usr/bin/python3 bench/report.py RESULTS.jsonl     the tables of a kept run (KEEP=1)
"""
import json
import re
import statistics
import sys

import lib

PEERS = ("haproxy", "haproxy-splice", "nginx")
MAIN_COLUMNS = ("direct", "tpt", "tpt-base", "tpt-splice") + PEERS

# figure, label, larger is better (None: not compared, shown for what it says about the
# load), unit formatter, target for tpt / best peer
MAIN_FIGURES = [
    ("sni_rate", "SNI-routed new connections/s (1,000 names + 1 wildcard)", True, "rate",
     ">= 1.15"),
    ("sni_p99", "SNI-routed p99 latency", False, "ms", "<= 1.0"),
    ("sni_p50", "SNI-routed p50 latency", False, "ms", None),
    ("sni_cpu_us", "proxy CPU per SNI connection", False, "us", None),
    ("sni_client_us", "load generator CPU per SNI connection", None, "us", None),
    ("sni_errors", "SNI connections failed (per run)", None, "int", None),
    ("throughput", "single-stream throughput (iperf3)", True, "gbit", ">= 1.2"),
    ("cpu_per_gb", "CPU seconds per GB relayed", False, "s", None),
    ("rps_keepalive", "keep-alive requests/s (wrk -c64)", True, "rate", None),
    ("p99_keepalive", "keep-alive p99 latency", False, "ms", "<= 1.0"),
    ("rps_close", "plain new connections/s (wrk, Connection: close)", True, "rate", ">= 1.1"),
    ("rss_per_tunnel", "RSS per idle tunnel", False, "bytes", "<= 0.4"),
]

# Each peer's setting for the figure, as bench/peers.py configures it.
SETTINGS = {
    "tpt": "2 workers, log warn, no admin; copies between loopback peers (its default)",
    "tpt-splice": "tpt with TPT_SPLICE=1: splices streams even between loopback peers",
    "haproxy": "nbthread 2, option splice-auto, tcp-smart-connect; client-first listeners: "
               "defer-accept + tcp-smart-accept; SNI: inspect-delay, req.ssl_hello_type 1, "
               "req.ssl_sni map + map_end wildcard",
    "haproxy-splice": "as haproxy, with option splice-request + splice-response (forced)",
    "nginx": "worker_processes 2, reuseport, multi_accept (nginx 1.22's stream listen has no "
             "deferred); SNI: ssl_preread + map hostnames",
}


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            runs.setdefault(rec["figure"], {}).setdefault(rec["who"], []).append(rec["value"])
    return runs


def medians(runs):
    return {fig: {who: statistics.median(v) if not isinstance(v[0], str) else v[0]
                  for who, v in by.items()} for fig, by in runs.items()}


def fmt(kind, v):
    if v is None:
        return "-"
    return {"rate": f"{v:,.0f}/s", "ms": f"{v:.3f} ms", "us": f"{v:.1f} µs",
            "gbit": f"{v / 1e9:.2f} Gbit/s", "s": f"{v:.3f} s", "bytes": f"{v:,.0f} B",
            "int": f"{v:,.0f}", "ratio": f"{v:.3f}x"}[kind]


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(ratio, target):
    if ratio is None or not target:
        return target or "-"
    op, bound = target.split()
    ok = ratio >= float(bound) if op == ">=" else ratio <= float(bound)
    return f"{target}: {'met' if ok else 'MISSED'}"


def best_peer(values, larger_better):
    present = [(values[p], p) for p in PEERS if values.get(p) is not None]
    if not present:
        return None, None
    v, who = (max if larger_better else min)(present)
    return who, v


def main_table(med):
    columns = [c for c in MAIN_COLUMNS if any(c in med.get(f[0], {}) for f in MAIN_FIGURES)]
    header = ["figure"] + columns + ["best peer", "tpt / best", "target"]
    rows = []
    for key, label, larger, kind, target in MAIN_FIGURES:
        vals = med.get(key)
        if not vals:
            continue
        who, best = best_peer(vals, larger) if larger is not None else (None, None)
        tpt = vals.get("tpt")
        ratio = tpt / best if tpt is not None and best else None
        rows.append([label] + [fmt(kind, vals.get(c)) for c in columns] +
                    [who or "-", fmt("ratio", ratio), verdict(ratio, target)])
    return md_table(header, rows) if rows else ""


def paired(a, b):
    """The median of a[i] / b[i] (measured in the same repetition) and its bootstrap 95 %
    interval, as text; "-" with fewer than 3 pairs."""
    ratios = [x / y for x, y in zip(a, b) if y]
    if len(ratios) < 3:
        return "-"
    low, high = lib.median_interval(ratios)
    return f"{statistics.median(ratios):.3f}x ({low:.3f} .. {high:.3f})"


def ab_table(runs, med):
    """tpt against tpt-base on every figure both have: "no figure worse than 3 %". The last
    column pairs the runs of one repetition (the two ran one after the other)."""
    rows = []
    for fig, by in sorted(med.items()):
        spec = next((f for f in MAIN_FIGURES if f[0] == fig), None)
        if fig.startswith("sys:") or fig in ("sys_tool", "skip") or (spec and spec[2] is None):
            continue  # the syscall table has the calls one by one
        if fig.endswith("_client_us"):
            continue  # the load generator's CPU: not a figure of tpt's
        base = {k: v for k, v in by.items() if k.startswith("tpt-base")}
        for base_who, b in base.items():
            who = base_who.replace("tpt-base", "tpt")
            if who not in by or isinstance(b, str) or not b:
                continue
            larger = spec[2] if spec else fig.endswith("_rate") or fig == "throughput"
            change = (by[who] / b - 1) * (1 if larger else -1)
            rows.append([f"{fig} ({who})", f"{b:,.4g}", f"{by[who]:,.4g}",
                         f"{by[who] / b:.3f}x", f"{change * 100:+.1f} %",
                         "worse by > 3 %" if change < -0.03 else "ok",
                         paired(runs[fig][who], runs[fig][base_who])])
    header = ["figure", "tpt-base", "tpt", "tpt / base", "better (+) / worse (-)", "3 % rule",
              "tpt / base per repetition: median (95 %)"]
    return md_table(header, rows) if rows else ""


def syscall_table(med):
    who = [w for w in MAIN_COLUMNS if w in med.get("sys_total", {})]
    if not who:
        return ""
    names = sorted({f[4:] for f in med if f.startswith("sys:")},
                   key=lambda n: -max(med[f"sys:{n}"].values()))
    rows = []
    for n in names:
        vals = med[f"sys:{n}"]
        if max(vals.values()) >= 0.01:
            rows.append([f"`{n}`"] + [f"{vals[w]:.2f}" if w in vals else "0" for w in who])
    rows.append(["**total**"] + [f"{med['sys_total'][w]:.2f}" for w in who])
    tools = ", ".join(f"{w}: {med['sys_tool'][w]}" for w in who)
    return md_table(["per SNI connection"] + who, rows) + f"\n\n(counted with {tools})"


def load_table(med, prefix, rows_order, base=None, note=None, ratios=("p50", "machine_us"),
               extra=()):
    """conn/s, p50, p99 and CPU per connection of one load's rows, `extra` columns (label,
    figure), and the rows' ratios to the row `base` for the figures in `ratios`."""
    order = [w for w in rows_order if w in med.get(f"{prefix}_rate", {})]
    if not order:
        return ""
    header = ["row", "conn/s", "p50", "p99", "proxy CPU/conn", "machine CPU/conn", "failed"]
    header += [label for label, _ in extra]
    header += [f"{r} / {base}" for r in ratios] if base else []
    rows = []
    for w in order:
        def get(figure, who=w):
            return med.get(figure if figure in med else f"{prefix}_{figure}", {}).get(who)

        row = [w, fmt("rate", get("rate")), fmt("ms", get("p50")), fmt("ms", get("p99")),
               fmt("us", get("cpu_us")), fmt("us", get("machine_us")), fmt("int", get("errors"))]
        row += [fmt("us", get(figure)) for _, figure in extra]
        for r in ratios if base else ():
            b = get(r, base)
            row.append(fmt("ratio", get(r) / b) if b and get(r) is not None else "-")
        rows.append(row)
    return md_table(header, rows) + (f"\n\n{note}" if note else "")


def reload_table(runs, med):
    if "reload_ms" not in runs:
        return ""
    ms = sorted(runs["reload_ms"]["tpt"])
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    rows = [["POST /reload → answer (10,000 routes)", f"median {statistics.median(ms):.1f} ms, "
             f"p90 {p90:.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} reloads)", "< 100 ms"],
            ["tpt CPU per reload (all threads)",
             f"{med['reload_cpu_ms']['tpt']:.1f} ms", "-"]]
    if "reload_log_ms" in runs:
        rows.append(["the log line's own timing",
                     f"median {statistics.median(runs['reload_log_ms']['tpt']):.1f} ms", "-"])
    quiet = med.get("reload-quiet_p99", {}).get("tpt")
    busy = med.get("reload-reloading_p99", {}).get("tpt")
    if quiet and busy:
        rows.append(["p99 of new connections: no reload / a reload per second",
                     f"{quiet:.3f} / {busy:.3f} ms = {busy / quiet:.2f}x",
                     verdict(busy / quiet, "<= 1.1")])
    return md_table(["figure", "measured", "target"], rows)


def reload_log_timings(log_text):
    """Milliseconds from "config reloaded" log lines that carry a duration field (tpt at
    67c4a9d logs none: then the POST's round trip is the figure)."""
    out = []
    for line in log_text.splitlines():
        if "config reloaded" in line:
            m = re.search(r"(?:duration|elapsed|took)_?(ms|us)?\W+([\d.]+)\s*(ms|us|s)?", line)
            if m:
                unit = m.group(1) or m.group(3) or "ms"
                out.append(float(m.group(2)) * {"ms": 1, "us": 1e-3, "s": 1e3}[unit])
    return out


def paired_ratio(runs, figure, who, base):
    """`who` against `base` repetition by repetition (each pair ran back to back): the
    median of the ratios and its bootstrap 95 % interval, which the ratio of two medians
    does not give."""
    a, b = runs.get(figure, {}).get(who, []), runs.get(figure, {}).get(base, [])
    ratios = [x / y for x, y in zip(a, b) if y]
    if len(ratios) < 3:
        return ""
    low, high = lib.median_interval(ratios)
    return (f"{who} / {base}, {figure}, repetition by repetition: median "
            f"{statistics.median(ratios):.3f}, 95 % interval {low:.3f} .. {high:.3f} "
            f"({len(ratios)} pairs; each pair ran back to back).")


def print_report(path, meta):
    runs = load(path)
    med = medians(runs)
    print(f"\nload average (1/5/15 min) at the start: {meta['load_start']}; at the end: "
          f"{meta['load_end']}")
    print(f"tpt: {meta['tpt']}" + (f"; tpt-base: {meta['tpt_base']}" if meta["tpt_base"]
                                    else "") +
          f"; {meta['duration']:g} s runs x {meta['repeat']} (medians); "
          f"{meta['tunnels']} idle tunnels")
    sections = [
        ("Against the peers", main_table(med)),
        ("Peer settings", "\n".join(f"- {k}: {v}" for k, v in SETTINGS.items())),
        ("tpt against tpt-base (A/B)", ab_table(runs, med)),
        ("System calls per SNI connection", syscall_table(med)),
        ("HTTP Host routing", load_table(med, "http", ["direct", "tpt", "haproxy"], "haproxy",
                                         ratios=("rate", "p99", "cpu_us"))),
        ("CONNECT path: tpt -> squid against client -> squid",
         load_table(med, "connect", ["squid", "tpt+squid", "tpt-base+squid"], "squid",
                    "proxy CPU/conn is the CPU of the proxy the client connects to (squid in "
                    "the squid row, tpt in the others). Target: tpt adds <= 10 % (p50 and "
                    "machine CPU ratios <= 1.10).", extra=[("squid CPU/conn",
                                                            "connect_squid_us")])),
        ("CONNECT path, one connection at a time (the time a connection takes)",
         load_table(med, "connect-serial", ["squid", "tpt+squid", "tpt-base+squid"], "squid",
                    "Target: tpt adds <= 10 % (p50 / squid <= 1.10).",
                    extra=[("squid CPU/conn", "connect-serial_squid_us")])),
        ("CONNECT listener: tpt accept_connect against squid",
         load_table(med, "listener", ["tpt", "squid"], "squid",
                    ratios=("rate", "p99", "cpu_us"))),
        ("Reload at scale", reload_table(runs, med)),
        ("Captured against explicit path", load_table(
            med, "capture", ["explicit", "captured"], "explicit",
            "Target: the captured path's tpt CPU per connection <= 1.05x the explicit path's. " +
            paired_ratio(runs, "capture_cpu_us", "captured", "explicit"),
            ratios=("rate", "p99", "cpu_us"))),
        ("Skipped", "\n".join(f"- {who}: {why}" for who, why in
                              med.get("skip", {}).items())),
    ]
    if not sections[0][1]:
        del sections[1]  # the settings go with the main table
    for title, text in sections:
        if text:
            print(f"\n### {title}\n\n{text}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print_report(sys.argv[1], {"load_start": "?", "load_end": "?", "tpt": "?", "tpt_base": "",
                               "duration": 0, "repeat": 0, "tunnels": 0})
