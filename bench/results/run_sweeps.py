#!/usr/bin/env python3
"""Regenerates docs/results/*.csv and *.svg: policy comparisons on the simulator.

    python3 bench/results/run_sweeps.py [BUILD_DIR] [--quick]

Uses only the standard library. Needs the built paraflex-sim and paraflex-workload (BUILD_DIR,
default ./build). Every figure in docs/results.md comes from this script; see that page for the
setups and the SLO rule."""
import csv, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
BUILD = ARGS[0] if ARGS else os.path.join(ROOT, "build")
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_paths import PROFILE, TRACES, sh, tool  # noqa: E402

SIM = tool(BUILD, "paraflex-sim")
GEN = tool(BUILD, "paraflex-workload")
OUT = os.path.join(ROOT, "docs", "results")
WORK = os.path.join(BUILD, "results-work")
import svg_plot as svg  # noqa: E402

POLICIES = ["static:1", "static:2", "static:4", "static:8", "rssp", "round-based", "edf-best-fit", "slo-aware", "throughput-first"]


def workload(name, args):
    path = os.path.join(WORK, name + ".csv")
    sh([GEN, *args, "--profile", PROFILE, "-o", path])
    return path


def simulate(wl, gpus, gpu, policies=POLICIES):
    doc = json.loads(sh([SIM, "--workload", wl, "--profile", PROFILE, "--gpus", str(gpus), "--gpu", gpu,
                         "--policy", ",".join(policies), "--format", "json", "--bound", "--quiet"]))
    return doc["results"]


def rows_of(setup, x_name, x, results):
    out = []
    for r in results:
        lat = r["latency_s"]
        out.append({"setup": setup, x_name: x, "policy": r["policy"], "slo_attainment": r["slo_attainment"],
                    "mean_s": lat["mean"], "p95_s": lat["p95"], "dropped": r["dropped"], "gpu_busy_s": r["gpu_busy_s"],
                    "migrations": r["migrations"], "bound": r.get("upper_bound", {}).get("slo_attainment")})
    return out


def write_csv(name, rows):
    with open(os.path.join(OUT, name + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


# ---- SVG line plots (bench/svg_plot.py) ---------------------------------------------------------
COLORS = dict(svg.POLICY_COLORS, **{"static:1": "#9e9e9e", "static:4": "#616161", "static:8": "#424242"}, bound="#d62728")


def svg_plot(path, title, x_label, y_label, series, y_max=None):
    box = W, H, L, R, T, B = 640, 400, 70, 150, 40, 50
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts if y is not None]
    if not xs or not ys:
        return
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, y_max if y_max is not None else max(ys) * 1.05
    sx = lambda x: L + (x - x0) / ((x1 - x0) or 1) * (W - L - R)
    sy = lambda y: H - B - (y - y0) / ((y1 - y0) or 1) * (H - T - B)
    e = svg.head(box, title) + [f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
                                f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    e += svg.axis_labels(box, x_label, y_label, 12)
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        e.append(f'<line x1="{L - 4}" y1="{sy(y):.1f}" x2="{W - R}" y2="{sy(y):.1f}" stroke="#eee"/>')
        e.append(f'<text x="{L - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    for x in xs:
        e.append(f'<text x="{sx(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:g}</text>')
    e += svg.series_lines(box, series, sx, sy, lambda pts: [(x, y) for x, y in sorted(pts) if y is not None], COLORS, "bound")
    svg.write(path, e)


def plots(name, rows, x_name, title):
    for metric, label, ymax in (("slo_attainment", "SLO attainment", 1.0), ("mean_s", "mean latency (s)", None),
                                ("p95_s", "p95 latency (s)", None)):
        series = {}
        for r in rows:
            series.setdefault(r["policy"], []).append((r[x_name], r[metric]))
        if metric == "slo_attainment":
            seen = {}
            for r in rows:
                seen[r[x_name]] = r["bound"]
            series["bound"] = list(seen.items())
        svg_plot(os.path.join(OUT, f"{name}_{metric}.svg"), title, x_name, label, series, ymax)


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    n = "150" if QUICK else "400"
    loads = [0.5, 0.7, 1.0, 1.2] if QUICK else [0.5, 0.7, 0.9, 1.0, 1.2, 1.5]
    scales = [1.0, 1.25, 1.5] if QUICK else [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    base_alpha = 2.0  # SLO = scale x 2.0 x (latency alone at the fastest degree): docs/results.md

    # A. TetriServe-like: FLUX.1-dev 256..2048 px, Poisson, 50 steps, 8 GPUs.
    for mix in ("uniform", "skewed"):
        rows = []
        for load in loads:
            wl = workload(f"tetri_{mix}_load{load}", ["--model", "flux-dev", "--mix", mix, "--arrivals", "poisson", "--requests", n,
                                                     "--steps", "50", "--slo-rule", f"alpha:{base_alpha}", "--load", str(load),
                                                     "--gpus", "8", "--seed", "1"])
            rows += rows_of(f"tetriserve-{mix}", "load", load, simulate(wl, 8, "l20-inferred"))
        write_csv(f"tetriserve_{mix}_load", rows)
        plots(f"tetriserve_{mix}_load", rows, "load", f"FLUX 256-2048px {mix}, Poisson, 8 GPUs, SLO scale 1.0")
        rows = []
        for scale in scales:
            wl = workload(f"tetri_{mix}_scale{scale}", ["--model", "flux-dev", "--mix", mix, "--arrivals", "poisson", "--requests", n,
                                                       "--steps", "50", "--slo-rule", f"alpha:{base_alpha * scale}", "--load", "1.0",
                                                       "--gpus", "8", "--seed", "1"])
            rows += rows_of(f"tetriserve-{mix}", "slo_scale", scale, simulate(wl, 8, "l20-inferred"))
        write_csv(f"tetriserve_{mix}_scale", rows)
        plots(f"tetriserve_{mix}_scale", rows, "slo_scale", f"FLUX 256-2048px {mix}, Poisson, 8 GPUs, load 1.0")

    # B. GF-DiT-like: Qwen-Image S/M/L on H20, deadline = alpha x single-GPU time, priorities,
    #    a 60-minute piecewise Poisson profile (quiet, peak, quiet).
    rows = []
    for alpha in (1.5, 2.0, 6.0):
        for load in ([0.7, 1.0] if QUICK else [0.5, 0.7, 1.0, 1.2]):
            wl = workload(f"gfdit_a{alpha}_load{load}", ["--model", "qwen-image", "--shapes", "512,1024,1536", "--mix", "uniform",
                                                         "--arrivals", "phases:1200@0.5,1200@1.5,1200@0.5", "--steps", "50",
                                                         "--slo-rule", f"alpha-deg1:{alpha}", "--labels", "size",
                                                         "--priority-weights", "3,1", "--load", str(load), "--gpus", "8",
                                                         "--gpu", "h20", "--seed", "2"] + (["--requests", "300"] if QUICK else []))
            rows += [dict(r, alpha=alpha) for r in rows_of("gfdit", "load", load, simulate(wl, 8, "h20"))]
    write_csv("gfdit_qwen", rows)
    for alpha in (1.5, 2.0, 6.0):
        sub = [r for r in rows if r["alpha"] == alpha]
        plots(f"gfdit_qwen_alpha{alpha}", sub, "load", f"Qwen-Image S/M/L on 8xH20, alpha {alpha}")

    # C. Real arrivals: Azure (conversation, code) and Mooncake, replayed at a target load.
    rows = []
    for trace in ("AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv", "mooncake_conversation_trace.jsonl"):
        for load in ([0.7, 1.0] if QUICK else [0.5, 0.7, 1.0, 1.2]):
            wl = workload(f"trace_{trace}_{load}", ["--model", "flux-dev", "--mix", "skewed", "--arrivals",
                                                   "trace:" + os.path.join(TRACES, trace), "--requests", n, "--steps", "50",
                                                   "--slo-rule", f"alpha:{base_alpha * 1.5}", "--load", str(load), "--gpus", "8"])
            rows += [dict(r, trace=trace) for r in rows_of("trace", "load", load, simulate(wl, 8, "l20-inferred"))]
    write_csv("real_traces", rows)
    for trace in ("AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv", "mooncake_conversation_trace.jsonl"):
        plots("trace_" + trace.split(".")[0], [r for r in rows if r["trace"] == trace], "load", f"{trace}: FLUX skewed, 8 GPUs")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
