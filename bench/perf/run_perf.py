#!/usr/bin/env python3
"""Regenerates docs/performance/*.csv and *.svg: how fast the scheduler decides and simulates.

    python3 bench/perf/run_perf.py [BUILD_DIR] [--quick] [--skip-micro] [--skip-day] [--policies=A,B] [--skip-day-for=A,B] [--tables-only]

--policies measures only those policies and keeps the other policies' rows already in the CSVs (to
refresh one policy after a change without re-running everything).

Needs a Release build of paraflex-micro, paraflex-sim and paraflex-workload in BUILD_DIR (default
./build). Standard library only. Every figure of docs/performance.md comes from this script:

  micro.csv            paraflex-micro: decide/, decide_cold/, simulate/ for every built-in policy
  runs.csv             whole paraflex-sim runs: the ~800-request file, 200,000 rows on 8 GPUs at three
                       loads, 1,000,000 rows on 1,024 GPUs at two loads (--skip-day leaves these out),
                       and the scaling sweep behind sim_wall_vs_requests.svg
  decide_vs_requests.svg, decide_vs_gpus.svg, cold_vs_requests.svg, sim_wall_vs_requests.svg
                       log-log plots
  tables.md            both CSVs as Markdown tables (--tables-only rewrites just this)

Wall times are host measurements: they vary with the machine and its load (docs/performance.md says
on which machine they were taken). Schedules do not: the JSON of a run is byte-identical for the
same input and seed, host timings aside.
"""
import csv, json, math, os, resource, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUILD = ARGS[0] if ARGS else os.path.join(ROOT, "build")
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_paths import PROFILE, TRACES, tool  # noqa: E402

MICRO = tool(BUILD, "paraflex-micro")
SIM = tool(BUILD, "paraflex-sim")
GEN = tool(BUILD, "paraflex-workload")
OUT = os.path.join(ROOT, "docs", "performance")
WORK = os.path.join(BUILD, "perf-work")
ALL_POLICIES = ["static:2", "rssp", "round-based", "edf-best-fit", "slo-aware", "throughput-first"]
ONLY = next((a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--policies=")), None)
POLICIES = ONLY or ALL_POLICIES
# Policies left out of the 1,000,000-request runs (each is recorded as a row saying so).
DAY_SKIP = next((a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--skip-day-for=")), [])

import svg_plot as svg  # noqa: E402


def sh(cmd, timeout=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p.stdout


def workload(name, args):
    path = os.path.join(WORK, name + ".csv")
    if not os.path.exists(path):
        sh([GEN, *args, "--profile", PROFILE, "-o", path])
    return path


def as_numbers(row):
    """A CSV row with its numbers as numbers again and its empty cells left out (as a fresh row has them)."""
    out = {}
    for k, v in row.items():
        if v is None or v == "":
            continue
        for kind in (int, float):
            try:
                v = kind(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def write_csv(name, rows):
    """Writes rows, keeping the rows of the policies not measured this time (--policies); returns
    every row written, so that the plots show every policy, not only those just measured."""
    if ONLY:
        rows = [as_numbers(r) for r in read_csv(name) if r.get("policy") not in ONLY] + rows
    if not rows:
        return rows
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(os.path.join(OUT, name + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return rows


# ---- log-log SVG plots (bench/svg_plot.py) ---------------------------------------------------------
COLORS = dict(svg.POLICY_COLORS, target="#d62728")


def loglog(path, title, x_label, y_label, series):
    box = W, H, L, R, T, B = 680, 420, 80, 160, 40, 50
    pts_all = [(x, y) for pts in series.values() for x, y in pts if x > 0 and y and y > 0]
    if not pts_all:
        return
    lx = [math.log10(x) for x, _ in pts_all]
    ly = [math.log10(y) for _, y in pts_all]
    x0, x1 = math.floor(min(lx)), math.ceil(max(lx))
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    sx = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)
    sy = lambda y: H - B - (math.log10(y) - y0) / (y1 - y0) * (H - T - B)
    e = svg.head(box, title) + svg.axis_labels(box, f"{x_label} (log)", f"{y_label} (log)", 10)
    for d in range(y0, y1 + 1):  # decades
        y = 10.0 ** d
        e.append(f'<line x1="{L}" y1="{sy(y):.1f}" x2="{W - R}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        e.append(f'<text x="{L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for d in range(x0, x1 + 1):
        x = 10.0 ** d
        e.append(f'<line x1="{sx(x):.1f}" y1="{T}" x2="{sx(x):.1f}" y2="{H - B}" stroke="#ddd"/>')
        e.append(f'<text x="{sx(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:g}</text>')
    e.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="black"/>')
    e += svg.series_lines(box, series, sx, sy, lambda pts: sorted((x, y) for x, y in pts if x > 0 and y and y > 0), COLORS, "target")
    svg.write(path, e)


# ---- micro-benchmarks -------------------------------------------------------------------------------
def micro():
    families = "(decide|decide_cold)" if QUICK else "(decide|decide_cold|simulate)"
    policies = "|".join(ONLY) if ONLY else "[^/]+"
    sizes = "requests:(100|1000|10000)/gpus:(8|64)$" if QUICK else ""
    flt = f"^{families}/({policies})/{sizes}"
    doc = json.loads(sh([MICRO, f"--benchmark_filter={flt}", "--benchmark_min_time=0.2", "--benchmark_format=json"]))
    rows = []
    for b in doc["benchmarks"]:
        family, policy, rest = b["name"].split("/", 2)
        parts = dict(p.split(":") for p in rest.split("/") if ":" in p)
        row = {"family": family, "policy": policy, "requests": int(parts["requests"]), "gpus": int(parts["gpus"]),
               "cpu_us": b["cpu_time"] * (1000.0 if b["time_unit"] == "ms" else 1.0),
               "real_us": b["real_time"] * (1000.0 if b["time_unit"] == "ms" else 1.0)}
        for k in ("policy_us", "allocs", "known", "round_us", "events/s"):
            if k in b:
                row[k.replace("/", "_per_")] = b[k]
        if "error_message" in b:
            row["error"] = b["error_message"]
        rows.append(row)
    rows = write_csv("micro", rows)

    def series(family, fixed_key, fixed, x_key, value="cpu_us"):
        s = {}
        for r in rows:
            if r["family"] == family and r[fixed_key] == fixed and value in r:
                s.setdefault(r["policy"], []).append((r[x_key], r[value]))
        return s

    s = series("decide", "gpus", 64, "requests")
    s["target"] = [(1000, 10.0)]
    loglog(os.path.join(OUT, "decide_vs_requests.svg"), "steady-state turn (task end + decision), 64 GPUs",
           "requests known", "CPU us per turn", s)
    s = series("decide", "requests", 100000 if not QUICK else 10000, "gpus")
    if not QUICK:
        s["target"] = [(512, 100.0)]
    loglog(os.path.join(OUT, "decide_vs_gpus.svg"), f"steady-state turn, {100000 if not QUICK else 10000} requests known",
           "GPUs", "CPU us per turn", s)
    loglog(os.path.join(OUT, "cold_vs_requests.svg"), "first decision (cold), 64 GPUs", "requests waiting",
           "CPU us per call", series("decide_cold", "gpus", 64, "requests"))
    return rows


# ---- whole runs -------------------------------------------------------------------------------------
def run_sim(wl, gpus, policy, per_node=8, timeout=900):
    args = [SIM, "--workload", wl, "--profile", PROFILE, "--gpus", str(gpus), "--gpus-per-node", str(min(per_node, gpus)),
            "--policy", policy, "--format", "json", "--quiet"]
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = sh(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"policy": policy, "gpus": gpus, "process_s": None, "error": f"over {timeout} s"}
    process_s = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the run (user + system): what the run costs whatever else the machine is doing.
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    r = json.loads(out)["results"][0]
    return {"policy": policy, "gpus": gpus, "requests": r["requests"], "process_s": round(process_s, 3), "cpu_s": round(cpu_s, 3),
            "run_wall_s": r["scheduler"]["wall_s"], "decisions": r["scheduler"]["decisions"],
            "decision_us_mean": r["scheduler"]["decision_us_mean"], "decision_us_p99": r["scheduler"]["decision_us_p99"],
            "slo_attainment": r["slo_attainment"], "completed": r["completed"], "dropped": r["dropped"]}


def runs():
    rows = []
    gen = lambda name, n, gpus, load, seed, extra=(): workload(name, ["--requests", str(n), "--gpus", str(gpus), "--load", str(load),
                                                                        "--mix", "skewed", "--slo-rule", "alpha:3", "--seed", str(seed),
                                                                        *extra])
    # The ~800-request file of docs/python.md (real Azure arrivals, FLUX skewed mix).
    w797 = workload("w797", ["--mix", "skewed", "--arrivals", "trace:" + os.path.join(TRACES, "AzureLLMInferenceTrace_conv.csv"),
                             "--requests", "797", "--steps", "50", "--slo-rule", "alpha:4", "--load", "1.0", "--seed", "1"])
    for p in POLICIES:
        rows.append(dict(run_sim(w797, 8, p), setup="797 requests, 8 GPUs, Azure conv arrivals"))
    # Scaling: requests at load 0.9 on 8 GPUs.
    for n in ([1000, 10000] if QUICK else [1000, 10000, 100000]):
        wl = gen(f"scale_{n}", n, 8, 0.9, 31)
        for p in POLICIES:
            rows.append(dict(run_sim(wl, 8, p), setup=f"scaling: {n} requests, 8 GPUs, load 0.9"))
    if not QUICK:
        for load in (0.9, 1.5, 10):
            wl = gen(f"r200k_{load}", 200000, 8, load, 11)
            for p in POLICIES:
                rows.append(dict(run_sim(wl, 8, p), setup=f"200,000 requests, 8 GPUs, load {load}"))
    if not QUICK and "--skip-day" not in sys.argv:
        for load in (0.9, 1.5):
            wl = gen(f"m1_{load}", 1000000, 1024, load, 21)
            for p in POLICIES:
                setup = f"1,000,000 requests, 1,024 GPUs, load {load}"
                if p in DAY_SKIP:
                    rows.append({"policy": p, "gpus": 1024, "setup": setup, "error": "not run (--skip-day-for)"})
                    continue
                rows.append(dict(run_sim(wl, 1024, p), setup=setup))
    rows = write_csv("runs", rows)
    s = {}
    for r in rows:
        if r["setup"].startswith("scaling") and r.get("process_s"):
            s.setdefault(r["policy"], []).append((int(r["requests"]), float(r.get("cpu_s") or r["process_s"])))
    loglog(os.path.join(OUT, "sim_wall_vs_requests.svg"), "paraflex-sim CPU time (user + system), 8 GPUs, load 0.9", "requests",
           "seconds", s)
    return rows


def read_csv(name):
    path = os.path.join(OUT, name + ".csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fmt(x, digits=3):
    if x in (None, ""):
        return "-"
    v = float(x)
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def tables():
    """docs/performance/tables.md: every row of micro.csv and runs.csv as Markdown tables."""
    out = ["# Measured tables", "", "Generated by `bench/perf/run_perf.py` from `micro.csv` and `runs.csv` in this folder;",
           "docs/performance.md explains them. CPU microseconds are the benchmark thread's CPU time.", ""]
    micro_rows = read_csv("micro")
    for family, title, cols in (("decide", "Steady-state turn: task end, devices free, decision, launches",
                                 [("cpu_us", "CPU us/turn"), ("policy_us", "decide() us"), ("allocs", "allocs/turn"), ("round_us", "round us")]),
                                ("decide_cold", "Cold first decision (fresh policy, R waiting)", [("cpu_us", "CPU us/call")]),
                                ("simulate", "Whole simulated run (~0.9 load)", [("cpu_us", "CPU us/run"), ("events_per_s", "events/s")])):
        rows = [r for r in micro_rows if r["family"] == family]
        if not rows:
            continue
        out += [f"## {title} (`paraflex-micro {family}/...`)", "",
                "| policy | requests | GPUs | " + " | ".join(c[1] for c in cols) + " |",
                "|---|---:|---:|" + "---:|" * len(cols)]
        for r in sorted(rows, key=lambda r: (ALL_POLICIES.index(r["policy"]) if r["policy"] in ALL_POLICIES else 99,
                                             int(r["requests"]), int(r["gpus"]))):
            out.append(f"| {r['policy']} | {int(r['requests']):,} | {r['gpus']} | " +
                       " | ".join(fmt(r.get(c[0])) for c in cols) + " |")
        out.append("")
    runs_rows = read_csv("runs")
    if runs_rows:
        out += ["## Whole `paraflex-sim` runs", "",
                "| setup | policy | CPU s | wall s | decisions | decision us (mean / p99) | SLO attainment | completed | dropped |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in runs_rows:
            if r.get("error"):
                out.append(f"| {r['setup']} | {r['policy']} | {r['error']} | | | | | | |")
                continue
            out.append(f"| {r['setup']} | {r['policy']} | {fmt(r.get('cpu_s'))} | {fmt(r.get('process_s'))} | {int(float(r['decisions'])):,} | "
                       f"{fmt(r.get('decision_us_mean'))} / {fmt(r.get('decision_us_p99'))} | {fmt(r.get('slo_attainment'))} | "
                       f"{r['completed']} | {r['dropped']} |")
        out.append("")
    with open(os.path.join(OUT, "tables.md"), "w") as f:
        f.write("\n".join(out))


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    if "--tables-only" not in sys.argv:
        if "--skip-micro" not in sys.argv:
            micro()
        runs()
    tables()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
