#!/usr/bin/env python3
"""Batching of identical requests (TetriServe's selective batching) on the simulator: the figures of
docs/results.md "D. Batching small images".

    python3 bench/results/batching.py [BUILD_DIR] [--part small|measured|defaults|all]

Uses only the standard library and the built paraflex-sim and paraflex-workload (BUILD_DIR, default
./build). Prints markdown tables; writes docs/results/batching_*.csv.

  small     FLUX.1-dev, 60% 256 px / 30% 512 px / 10% 1024 px, Poisson, 50 steps, 8 x L20 (the published
            profile: batched steps estimated from its fit, cost-model.md "Batched steps"), loads 0.9-2.0,
            round-based and slo-aware, each with max_batch 1 / 4 / 8
  measured  the tiny DiT on one CPU core per device (bench/data/profiles/tiny_dit_cpu_batch.csv: batched
            steps measured), 70% 128 px / 30% 256 px, 20 steps, 4 devices, loads 1.0-2.0
  defaults  round-based vs round-based:max_batch=8, and slo-aware vs slo-aware:max_batch=8, on every
            setup of docs/results.md (A, B, C and the default run): does batching by default ever make
            things worse?
"""
import csv, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
BUILD = ARGS[0] if ARGS else os.path.join(ROOT, "build")
PART = sys.argv[sys.argv.index("--part") + 1] if "--part" in sys.argv else "all"
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_paths import PROFILE, PROFILES, TRACES, sh, tool  # noqa: E402

SIM = tool(BUILD, "paraflex-sim")
GEN = tool(BUILD, "paraflex-workload")
MEASURED = os.path.join(PROFILES, "tiny_dit_cpu_batch.csv")
OUT = os.path.join(ROOT, "docs", "results")
WORK = os.path.join(BUILD, "results-work")


def workload(name, args, profile=PROFILE):
    path = os.path.join(WORK, name + ".csv")
    sh([GEN, *args, "--profile", profile, "-o", path])
    return path


def simulate(wl, gpus, gpu, policies, profile=PROFILE):
    doc = json.loads(sh([SIM, "--workload", wl, "--profile", profile, "--gpus", str(gpus), "--gpu", gpu, "--policy", ",".join(policies),
                         "--format", "json", "--quiet"]))
    return doc["results"]


def row(setup, x, r):
    return {"setup": setup, "x": x, "policy": r["policy"], "slo_attainment": r["slo_attainment"], "completed": r["completed"],
            "dropped": r["dropped"], "throughput_rps": r["throughput_rps"], "goodput_rps": r["goodput_rps"],
            "makespan_s": r["makespan_s"], "gpu_busy_s": r["gpu_busy_s"], "mean_s": r["latency_s"]["mean"]}


def write_csv(name, rows):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


def table(rows, x_name):
    print(f"| {x_name} | policy | SLO % | done/s | goodput/s | GPU busy s | mean s | dropped |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        att = "-" if r["slo_attainment"] is None else f"{100 * r['slo_attainment']:.1f}"
        mean = "-" if r["mean_s"] is None else f"{r['mean_s']:.1f}"
        print(f"| {r['x']} | {r['policy']} | {att} | {r['throughput_rps']:.4f} | {r['goodput_rps']:.4f} | {r['gpu_busy_s']:.0f} | {mean} | {r['dropped']} |")
    print()


BATCHING = ["round-based", "round-based:max_batch=4", "round-based:max_batch=8",
            "slo-aware", "slo-aware:max_batch=4", "slo-aware:max_batch=8"]


def part_small():
    rows = []
    for load in (0.9, 1.2, 1.5, 2.0):
        wl = workload(f"batch_small_load{load}", ["--model", "flux-dev", "--shapes", "256,512,1024", "--mix", "weighted", "--weights", "6,3,1",
                                                  "--arrivals", "poisson", "--requests", "400", "--steps", "50", "--slo-rule", "alpha:2.0",
                                                  "--load", str(load), "--gpus", "8", "--seed", "3"])
        rows += [row("small", load, r) for r in simulate(wl, 8, "l20-inferred", BATCHING)]
    write_csv("batching_small", rows)
    print("### small images, FLUX on 8 x L20 (batched steps estimated from the fit)\n")
    table(rows, "load")


def part_measured():
    rows = []
    for load in (1.0, 1.5, 2.0):
        wl = workload(f"batch_measured_load{load}", ["--model", "tiny-dit", "--shapes", "128,256", "--mix", "weighted", "--weights", "7,3",
                                                     "--arrivals", "poisson", "--requests", "400", "--steps", "20", "--slo-rule", "alpha:2.0",
                                                     "--load", str(load), "--gpus", "4", "--gpu", "cpu-1t", "--seed", "4"], MEASURED)
        rows += [row("measured", load, r) for r in simulate(wl, 4, "cpu-1t", BATCHING, MEASURED)]
    write_csv("batching_measured", rows)
    print("### tiny DiT on 4 CPU cores (batched steps measured)\n")
    table(rows, "load")


def part_defaults():
    cases = []  # (name, workload args, gpus, gpu)
    for mix in ("uniform", "skewed"):
        for load in (0.5, 0.7, 0.9, 1.0, 1.2, 1.5):
            cases.append((f"A {mix} load {load}", ["--model", "flux-dev", "--mix", mix, "--arrivals", "poisson", "--requests", "400", "--steps", "50",
                                                   "--slo-rule", "alpha:2.0", "--load", str(load), "--gpus", "8", "--seed", "1"], 8, "l20-inferred"))
        for scale in (1.1, 1.2, 1.3, 1.4, 1.5):
            cases.append((f"A {mix} scale {scale}", ["--model", "flux-dev", "--mix", mix, "--arrivals", "poisson", "--requests", "400", "--steps", "50",
                                                     "--slo-rule", f"alpha:{2.0 * scale}", "--load", "1.0", "--gpus", "8", "--seed", "1"], 8, "l20-inferred"))
    for alpha in (1.5, 2.0, 6.0):
        for load in (0.5, 0.7, 1.0, 1.2):
            cases.append((f"B alpha {alpha} load {load}", ["--model", "qwen-image", "--shapes", "512,1024,1536", "--mix", "uniform",
                                                           "--arrivals", "phases:1200@0.5,1200@1.5,1200@0.5", "--steps", "50",
                                                           "--slo-rule", f"alpha-deg1:{alpha}", "--labels", "size", "--priority-weights", "3,1",
                                                           "--load", str(load), "--gpus", "8", "--gpu", "h20", "--seed", "2"], 8, "h20"))
    for trace in ("AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv", "mooncake_conversation_trace.jsonl"):
        for load in (0.5, 0.7, 1.0, 1.2):
            cases.append((f"C {trace.split('.')[0]} load {load}", ["--model", "flux-dev", "--mix", "skewed", "--arrivals", "trace:" + os.path.join(TRACES, trace),
                                                                   "--requests", "400", "--steps", "50", "--slo-rule", "alpha:3.0", "--load", str(load),
                                                                   "--gpus", "8"], 8, "l20-inferred"))
    paths = [workload(f"batch_default_{i}", args) for i, (name, args, gpus, gpu) in enumerate(cases)]
    for policy, csv_name in (("round-based", "batching_defaults"), ("slo-aware", "batching_defaults_slo_aware")):
        defaults_of(policy, csv_name, cases, paths)


def defaults_of(policy, csv_name, cases, paths):
    pair = [policy, policy + ":max_batch=8"]
    rows, worse = [], []
    for (name, args, gpus, gpu), wl in zip(cases, paths):
        res = {r["policy"]: r for r in simulate(wl, gpus, gpu, pair)}
        a, b = res[pair[0]], res[pair[1]]
        rows.append({"setup": name, "slo_1": a["slo_attainment"], "slo_8": b["slo_attainment"], "done_1": a["completed"], "done_8": b["completed"],
                     "busy_1": a["gpu_busy_s"], "busy_8": b["gpu_busy_s"]})
        if b["slo_attainment"] < a["slo_attainment"] or b["completed"] < a["completed"]:
            worse.append(name)
    # the default run: the embedded workload
    doc = json.loads(sh([SIM, "--policy", ",".join(pair), "--format", "json", "--quiet"]))
    a, b = doc["results"]
    rows.append({"setup": "default run", "slo_1": a["slo_attainment"], "slo_8": b["slo_attainment"], "done_1": a["completed"],
                 "done_8": b["completed"], "busy_1": a["gpu_busy_s"], "busy_8": b["gpu_busy_s"]})
    if b["slo_attainment"] < a["slo_attainment"] or b["completed"] < a["completed"]:
        worse.append("default run")
    write_csv(csv_name, rows)
    print(f"### {pair[0]} vs {pair[1]} on the setups of this page\n")
    print("| setup | SLO % (max_batch 1) | SLO % (8) | GPU busy s (1) | GPU busy s (8) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {100 * r['slo_1']:.1f} | {100 * r['slo_8']:.1f} | {r['busy_1']:.0f} | {r['busy_8']:.0f} |")
    print(f"\nworse with max_batch=8 (attainment or completions): {', '.join(worse) if worse else 'none'}\n")


def main():
    os.makedirs(WORK, exist_ok=True)
    if PART in ("small", "all"):
        part_small()
    if PART in ("measured", "all"):
        part_measured()
    if PART in ("defaults", "all"):
        part_defaults()


if __name__ == "__main__":
    main()
