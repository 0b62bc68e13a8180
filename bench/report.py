"""Turn the suite's results into the printed table, bench/results.md and bench/results.png.

Only formatting lives here: every number comes from the results dict built by __main__.py
(also saved as bench/out/results.json). Throughput cells show items/s and the ratio to
multiprocessing.Queue in the same run and workload; a failed run shows FAILED, never a number.
The large-items section (bench/large.py) shows GB/s and the ratio to os.pipe instead.
"""

import math

__all__ = ["text_report", "markdown_report", "chart", "targets", "large_text",
           "large_markdown", "large_targets"]

BASELINE = "mp.Queue"
SHORT = {  # column headers for the plain-text table, which must stay narrow
    "shmfifo": "shmfifo", "shmfifo split": "shm split", "mp.Queue": "mp.Queue",
    "mp.SimpleQueue": "SimpleQ", "faster-fifo": "faster-fifo", "posix_ipc.mq": "posix mq",
    "os.pipe": "os.pipe", "C ring": "C ring", "C ring split": "C split",
}


def _si(value):
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _cell(result, baseline):
    """'1.23M 4.1x'; '*' marks a stand-in single-item figure in a batched row."""
    if result is None:
        return "-"
    if result.get("failure"):
        return "FAILED"
    value = result["items_per_s"]
    mark = "*" if result.get("note") else ""
    ratio = ""
    if baseline and baseline.get("items_per_s") and not baseline.get("failure"):
        ratio = f" {value / baseline['items_per_s']:.1f}x"
    return f"{_si(value)}{mark}{ratio}"


def _throughput_rows(results):
    impls = results["impls"]
    rows = []
    for row in results["throughput"]:
        baseline = row["results"].get(BASELINE)
        rows.append([row["label"]] + [_cell(row["results"].get(label), baseline)
                                      for label in impls])
    return rows


def _latency_rows(results):
    base = results["latency"].get(BASELINE, {})
    rows = []
    for label in results["impls"]:
        lat = results["latency"].get(label)
        if lat is None:
            continue
        if lat.get("failure"):
            rows.append([label, "FAILED", "", "", lat["failure"][:60]])
            continue
        ratio = (f"{lat['p99_us'] / base['p99_us']:.2f}x" if base.get("p99_us") else "-")
        rows.append([label, f"{lat['p50_us']:.1f}", f"{lat['p99_us']:.1f}",
                     f"{lat['max_us']:.1f}", ratio])
    return rows


def _rate_rows(cli):
    rate = cli.get("rate", {})
    rows = []
    for row in rate.get("rows", []):
        if row.get("failure"):
            rows.append([f"{row['target']:,}", "FAILED", "", row["failure"][:60]])
        else:
            rows.append([f"{row['target']:,}", f"{row['achieved']:,.3f}",
                         f"{row['error_pct']:+.4f}", f"{row['producer_cpu_pct']:.1f}"])
    return rows


def _client_rows(cli):
    rows = []
    idle = cli.get("idle_cpu", {})
    if idle.get("failure"):
        rows.append(["idle consumer CPU", "FAILED: " + idle["failure"][:70]])
    elif idle:
        rows.append(["idle consumer CPU, shmfifo CLI (% of a core)",
                     f"{idle['shmfifo_cli_pct']:.3f}"])
        rows.append(["idle consumer CPU, mp.Queue get() (% of a core)",
                     f"{idle['mp_queue_pct']:.3f}"])
    startup = cli.get("startup", {})
    if startup.get("failure"):
        rows.append(["start-up to first put", "FAILED: " + startup["failure"][:70]])
    elif startup:
        rows.append(["start-up to first put, median (ms)", f"{startup['median_ms']:.1f}"])
        rows.append(["  for reference: python -c pass (ms)", f"{startup['python_c_pass_ms']:.1f}"])
    memory = cli.get("memory", {})
    if memory.get("failure"):
        rows.append(["client memory", "FAILED: " + memory["failure"][:70]])
    else:
        names = {"shmfifo_producer": "idle CLI producer", "shmfifo_consumer": "idle CLI consumer",
                 "python_import_multiprocessing": "python + import multiprocessing"}
        for key, text in names.items():
            if key in memory:
                rows.append([f"RSS (USS) MB, {text}",
                             f"{memory[key]['rss_mb']:.1f} ({memory[key]['uss_mb']:.1f})"])
    return rows


# --- targets -------------------------------------------------------------------------------------

def _find(results, producers, capacity, batch, item_size=64):
    for row in results["throughput"]:
        w = row["workload"]
        if (w["producers"], w["capacity"], w["item_size"]) == (producers, capacity, item_size) \
                and (w["batch"] > 1) == (batch > 1):
            return row["results"]
    return None


def _rate(results, label):
    if results is None or label not in results:
        return None
    r = results[label]
    return None if r.get("failure") else r.get("items_per_s")


def _ratio_check(text, num, den, goal, at_most=False, unit="items/s"):
    """num/den must be >= goal (or <= goal with at_most)."""
    if num is None or den is None:
        return [text, "not measured or failed", "-", "n/a"]
    ratio = num / den
    ok = ratio <= goal if at_most else ratio >= goal
    shown = f"{_si(num)} / {_si(den)}" if unit == "items/s" else f"{num:.1f} / {den:.1f}"
    return [text, f"{shown} {unit}", f"{ratio:.2f}x (goal {'<=' if at_most else '>='} {goal}x)",
            "PASS" if ok else "MISS"]


def _limit_check(text, value, limit, unit, lower_is_better=True):
    if value is None:
        return [text, "not measured or failed", "-", "n/a"]
    ok = value <= limit if lower_is_better else value >= limit
    return [text, f"{value:.3g} {unit}", f"{value / limit:.2f} of the limit {limit} {unit}",
            "PASS" if ok else "MISS"]


def targets(results):
    """Each target as [what, measured, ratio, PASS|MISS|n/a]."""
    rows = []
    single32 = _find(results, 1, 32, 1)
    rows.append(_ratio_check("1P/1C cap 32 single, shmfifo vs mp.Queue",
                             _rate(single32, "shmfifo"), _rate(single32, "mp.Queue"), 2.0))
    rows.append(_ratio_check("1P/1C cap 32 single, shmfifo vs faster-fifo",
                             _rate(single32, "shmfifo"), _rate(single32, "faster-fifo"), 1.3))
    rows.append(_ratio_check("1P/1C cap 32 single, shmfifo split vs mp.Queue",
                             _rate(single32, "shmfifo split"), _rate(single32, "mp.Queue"), 4.0))
    batch1024 = _find(results, 1, 1024, 64)
    single1024 = _find(results, 1, 1024, 1)
    for label, ring in (("shmfifo", "C ring"), ("shmfifo split", "C ring split")):
        rows.append(_ratio_check(f"1P/1C cap 1024 batched, {label} vs mp.Queue",
                                 _rate(batch1024, label), _rate(single1024, "mp.Queue"), 8.0))
        rows.append(_ratio_check(f"1P/1C cap 1024 batched, {label} vs {ring} (single item)",
                                 _rate(batch1024, label), _rate(single1024, ring), 0.8))
    for capacity in (32, 1024):
        for label in ("shmfifo", "shmfifo split"):
            rows.append(_ratio_check(f"cap {capacity} single, {label}: 8P/8C vs 1P/1C",
                                     _rate(_find(results, 8, capacity, 1), label),
                                     _rate(_find(results, 1, capacity, 1), label), 0.7))
    latency = results["latency"]
    base_p99 = (latency.get(BASELINE) or {}).get("p99_us")
    for label in ("shmfifo", "shmfifo split"):
        lat = latency.get(label) or {}
        rows.append(_limit_check(f"latency @1000/s p50, {label}", lat.get("p50_us"), 50, "us"))
        rows.append(_ratio_check(f"latency @1000/s p99, {label} vs mp.Queue",
                                 lat.get("p99_us"), base_p99, 0.5, at_most=True, unit="us"))
    cli = results.get("cli", {})
    rate_rows = [r for r in cli.get("rate", {}).get("rows", [])]
    if rate_rows:
        failed = [r for r in rate_rows if r.get("failure")]
        worst = None if failed else max(abs(r["error_pct"]) for r in rate_rows)
        targets_text = ", ".join(f"{r['target']:,}" for r in rate_rows)
        rows.append(_limit_check(f"rate accuracy, worst |error| over {targets_text}/s",
                                 worst, 0.1, "%"))
        at_10k = [r for r in rate_rows if r["target"] == 10_000 and not r.get("failure")]
        rows.append(_limit_check("producer CPU at 10,000/s",
                                 at_10k[0]["producer_cpu_pct"] if at_10k else None, 15, "%"))
    idle = cli.get("idle_cpu", {})
    rows.append(_limit_check("idle consumer CPU (shmfifo CLI)", idle.get("shmfifo_cli_pct"),
                             0.5, "%"))
    rows.append(_limit_check("start-up to first put (median)",
                             cli.get("startup", {}).get("median_ms"), 100, "ms"))
    memory = cli.get("memory", {})
    for key, text in (("shmfifo_producer", "producer"), ("shmfifo_consumer", "consumer")):
        rss = (memory.get(key) or {}).get("rss_mb")
        rows.append(_limit_check(f"RSS of an idle CLI {text}", rss, 20, "MB"))
    if results.get("large"):
        rows += large_targets(results["large"])
    return rows


# --- text ---------------------------------------------------------------------------------------

def _aligned(header, rows, right_from=1):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(c).ljust(w) if i < right_from else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if r is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def text_report(results):
    meta = results["meta"]
    parts = [
        f"shmfifo benchmark: {meta['date']}, {meta['nproc']} cores, Python {meta['python']}, "
        f"median of {meta['repeat']} run(s); command: {meta['command']}; load average "
        f"{_load(meta['loadavg_start'])} before, {_load(meta['loadavg_end'])} after",
        "",
        "Throughput, items/s (ratio to mp.Queue in the same workload; * = single put/get, "
        "the peer has no batch API)",
        _aligned(["workload"] + [SHORT.get(l, l) for l in results["impls"]],
                 _throughput_rows(results)),
        "",
        "Latency put->get at 1,000 items/s, consumer blocked (us)",
        _aligned(["implementation", "p50", "p99", "max", "p99 vs mp.Queue"],
                 _latency_rows(results)),
        "",
        "shmfifo CLI producer rate accuracy "
        f"({results['cli'].get('rate', {}).get('window_s', '?')} s per target)",
        _aligned(["target/s", "achieved/s", "error %", "producer CPU %"],
                 _rate_rows(results["cli"])),
        "",
        _aligned(["client", "value"], _client_rows(results["cli"])),
        "",
        *([large_text(results["large"], with_targets=False), ""] if results.get("large")
          else []),
        "Targets",
        _aligned(["target", "measured", "ratio", "result"], targets(results), right_from=4),
    ]
    notes = _notes(results)
    if notes:
        parts += ["", "Notes"] + [f"- {n}" for n in notes]
    return "\n".join(parts)


def _notes(results):
    notes = list(results.get("notes", []))
    spreads = sorted(
        max(r["runs"]) / min(r["runs"])
        for row in results["throughput"] for r in row["results"].values()
        if not r.get("note") and len(r.get("runs") or []) > 1)
    if spreads:
        notes.append(f"run-to-run spread (fastest / slowest repeat of a cell): median "
                     f"{spreads[len(spreads) // 2]:.2f}x, worst {spreads[-1]:.2f}x; "
                     "differences smaller than that are noise")
    seen = set()
    for row in results["throughput"]:
        for label, result in row["results"].items():
            note = result.get("capacity_note")
            if note and (label, note) not in seen:
                seen.add((label, note))
                notes.append(f"{label}, {row['label']}: {note}")
            if result.get("failure") and not result.get("note"):
                notes.append(f"FAILED {label}, {row['label']}: {result['failure']}")
    if results.get("leftovers"):
        notes.append("LEFTOVER POSIX names had to be removed by the final sweep: "
                     + ", ".join(results["leftovers"]))
    return notes


# --- markdown -----------------------------------------------------------------------------------

def _load(loadavg):
    return "/".join(f"{x:.2f}" for x in loadavg)


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(results):
    meta = results["meta"]
    cli = results["cli"]
    parts = [
        "# shmfifo benchmark results",
        "",
        f"Measured {meta['date']} on a {meta['nproc']}-core machine ({meta['cpu']}), "
        f"Python {meta['python']}, Linux {meta['kernel']}; median of {meta['repeat']} run(s) "
        f"per cell, each sized to about {meta['target_s']} s, taken in separate passes over all "
        f"the cells (so a cell's runs are minutes apart). Command: `{meta['command']}` "
        f"(total {meta['runtime_s']:.0f} s). Load average (1/5/15 min) before the run "
        f"{_load(meta['loadavg_start'])}, after {_load(meta['loadavg_end'])}.",
        "",
        "Each side runs in its own processes (forked workers; the C ring forks its own). Every "
        "run is checked: each item (producer id, sequence) delivered exactly once, and each "
        "consumer sees each producer's sequence increasing; a run that fails is shown as "
        "FAILED, never as a number.",
        "",
        "## Throughput (items/s; ratio to mp.Queue in the same workload)",
        "",
        "`*`: single put/get shown in a batched row, because the peer has no batch API.",
        "",
        _md_table(["workload"] + results["impls"], _throughput_rows(results)),
        "",
        "![throughput](results.png)",
        "",
        "## Latency put→get at 1,000 items/s, consumer blocked on an empty queue (µs)",
        "",
        _md_table(["implementation", "p50", "p99", "max", "p99 vs mp.Queue"],
                  _latency_rows(results)),
        "",
        "## shmfifo CLI producer: rate accuracy and CPU",
        "",
        f"`python -m shmfifo producer --fifo F item=a rate=R --count N`, "
        f"N = R × {cli.get('rate', {}).get('window_s', '?')} s + 1, drained by a library "
        "consumer; achieved = (N − 1) / (put time of the last item − put time of the first), "
        "from the put times shmfifo stamps into each slot. CPU: the producer's CPU time "
        "(schedstat) over the middle 80 % of the window.",
        "",
        _md_table(["target/s", "achieved/s", "error %", "producer CPU % of a core"],
                  _rate_rows(cli)),
        "",
        "## Clients: idle CPU, start-up, memory",
        "",
        _md_table(["measure", "value"], _client_rows(cli)),
        "",
        *(["## Large items", "", large_markdown(results["large"]), ""] if results.get("large")
          else []),
        "## Targets",
        "",
        _md_table(["target", "measured", "ratio", "result"], targets(results)),
    ]
    notes = _notes(results)
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


# --- large items --------------------------------------------------------------------------------

LARGE_HEADER = ["transport", "GB/s", "spread (min-max)", "items/s", "vs os.pipe"]
LARGE_BASELINE = "os.pipe"
# The targets are stated for this geometry only (1 MiB items, capacity 8).
LARGE_TARGETS = (1 << 20, 8, (("shmfifo get", 1.5), ("shmfifo get_view", 2.5)))


def _large_gbps(large, label):
    """The median GB/s of a row, or None (not run, or failed)."""
    for row in large["rows"] + large["memcpy"]["rows"]:
        if row["label"] == label:
            return row["gbps"]
    return None


def _large_rows(large):
    base = _large_gbps(large, LARGE_BASELINE)
    rows = []
    for row in large["rows"] + large["memcpy"]["rows"]:
        median, runs = row["gbps"], row["gbps_runs"]
        if median is None:
            rows.append([row["label"], "FAILED" if row["failure"] else "n/a", "", "", ""])
            continue
        rows.append([row["label"], f"{median:.2f}", f"{min(runs):.2f}-{max(runs):.2f}",
                     f"{median * 1e9 / large['size']:,.0f}",
                     f"{median / base:.2f}x" if base else "-"])
    return rows


def _size_text(size):
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:,} B"


def _large_title(large):
    runs = (f"{large['items']:,} items" if large["items"]
            else f"about {large['target_s']} s")
    segment = next((r["segment_bytes"] for r in large["rows"] if r["segment_bytes"]), None)
    geometry = (", ".join(f"{key} {value}" for key, value in large["geometry"].items())
                or "the default geometry")
    return (f"Large items, 1P/1C: {_size_text(large['size'])} ({large['size']:,} B) items, "
            f"capacity {large['capacity']}"
            + (f"; the FIFO's segment takes {segment:,} B of /dev/shm ({geometry})"
               if segment else "")
            + f"; median of {large['repeat']} run(s) of {runs} each, with the slowest and "
            f"fastest run; GB = 10^9 B; load average {_load(large['loadavg_start'])} before, "
            f"{_load(large['loadavg_end'])} after")


def _large_notes(large):
    notes = []
    for r in large["rows"]:
        notes.append(f"{r['label']}: " + "; ".join(
            text for text in (r["skipped"] or r["what"], r["capacity_note"]) if text))
        if r["failure"]:
            notes.append(f"FAILED {r['label']}: {r['failure']}")
    notes.append(f"the producer puts {large['pool']} items, made before the run, in turn; the "
                 "consumer reads each one's 16-byte header, and the run counts only if it "
                 "received them all, in order")
    notes.append("memcpy: memoryview slice assignment of SIZE bytes in one process; in cache: "
                 "the same bytes each time; out of cache: the next SIZE bytes of a source and "
                 f"a target of {large['memcpy']['working_set'] >> 20} MiB together (four times "
                 "the largest CPU cache); items/s = copies/s")
    if large.get("leftovers"):
        notes.append("LEFTOVER POSIX names had to be removed by the final sweep: "
                     + ", ".join(large["leftovers"]))
    return notes


def large_targets(large):
    """The issue's targets for large items, as rows of the Targets table; none at another
    size or capacity than they are stated for."""
    size, capacity, goals = LARGE_TARGETS
    if (large["size"], large["capacity"]) != (size, capacity):
        return []
    return [_ratio_check(f"{_size_text(size)} 1P/1C cap {capacity}, {label} vs os.pipe",
                         _large_gbps(large, label), _large_gbps(large, LARGE_BASELINE), goal,
                         unit="GB/s")
            for label, goal in goals]


def large_text(large, with_targets=True):
    parts = [_large_title(large), _aligned(LARGE_HEADER, _large_rows(large))]
    if with_targets and large_targets(large):
        parts += ["", _aligned(["target", "measured", "ratio", "result"], large_targets(large),
                               right_from=4)]
    return "\n".join(parts + [""] + [f"- {n}" for n in _large_notes(large)])


def large_markdown(large):
    return "\n".join([_large_title(large) + ".", "", _md_table(LARGE_HEADER, _large_rows(large)),
                      ""] + [f"- {n}" for n in _large_notes(large)])


# --- chart --------------------------------------------------------------------------------------

def chart(results, path):
    """Grouped bars, log scale: one panel for 64 B scaling workloads, one for item sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = results["impls"]
    groups = [("64 B items: producers/consumers, capacity, single or batched", "scaling"),
              ("1P/1C, capacity 32, single put/get: item size", "sizes")]
    fig, axes = plt.subplots(2, 1, figsize=(16, 10), gridspec_kw={"height_ratios": [3, 2]})
    colors = plt.get_cmap("tab10").colors
    for ax, (title, group) in zip(axes, groups):
        rows = [r for r in results["throughput"] if r["workload"]["group"] == group]
        width = 0.8 / max(1, len(impls))
        for i, label in enumerate(impls):
            color = colors[i % len(colors)]
            bars = {False: ([], []), True: ([], [])}  # stand-in single figure? -> xs, ys
            failed = []
            for x, row in enumerate(rows):
                result = row["results"].get(label) or {}
                pos = x + (i - (len(impls) - 1) / 2) * width
                if result.get("failure"):
                    failed.append(pos)
                elif result.get("items_per_s"):
                    xs, ys = bars[bool(result.get("note"))]
                    xs.append(pos)
                    ys.append(result["items_per_s"])
            ax.bar(*bars[False], width, label=label, color=color)
            # A peer without a batch API shows its single-item figure in batched groups, hatched.
            ax.bar(*bars[True], width, color=color, alpha=0.35, hatch="//", edgecolor=color)
            for pos in failed:
                ax.text(pos, 1e4, "FAILED", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("items/s (log)")
        ax.set_title(title)
        ax.set_xticks(range(len(rows)))
        ticks = [_short_label(r["workload"], group) for r in rows]
        ax.set_xticklabels(ticks, fontsize=8, rotation=0 if group == "sizes" else 30,
                           ha="center" if group == "sizes" else "right")
        ax.grid(axis="y", which="both", alpha=0.3)
        values = [r["results"][l]["items_per_s"] for r in rows for l in impls
                  if (r["results"].get(l) or {}).get("items_per_s")]
        if values:
            ax.set_ylim(10 ** math.floor(math.log10(min(values))),
                        10 ** math.ceil(math.log10(max(values) * 1.5)))
    meta = results["meta"]
    fig.suptitle(f"shmfifo vs peers: throughput, median of {meta['repeat']} "
                 f"({meta['nproc']} cores, Python {meta['python']}, {meta['date']}); "
                 "hatched: single put/get standing in for a missing batch API")
    fig.legend(*axes[0].get_legend_handles_labels(), ncol=len(impls), fontsize=9,
               loc="upper center", bbox_to_anchor=(0.5, 0.955))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _short_label(w, group):
    if group == "sizes":
        return f"{w['item_size']} B"
    mode = f"batch {w['batch']}" if w["batch"] > 1 else "single"
    return f"{w['producers']}P/{w['consumers']}C cap {w['capacity']}\n{mode}"
