#!/usr/bin/env python3
"""slo-aware against the fluid-LP upper bound on every setup of docs/results.md: the table of
docs/results.md "E. slo-aware against the bound under overload" and the before/after checks of policy changes.

    python3 bench/results/overload.py [BUILD_DIR] [--policy P[,P...]] [--setups over|light|all] [--csv]

Uses only the standard library and the built paraflex-sim and paraflex-workload (BUILD_DIR, default
./build). For every setup (A uniform and skewed at every load and SLO scale, B at every alpha and load,
C on the three traces, and the default run) it runs each policy (default: slo-aware) and prints, per
policy, SLO attainment, its ratio to the bound (`--bound`, solved once per workload and cached in
BUILD_DIR/results-work), the mean latency of the completed requests, the dropped requests and the mean
decision time. "over" = load >= 1.0 (the overloaded setups), "light" = load < 1.0. With --csv it also
writes docs/results/overload.csv.
"""
import csv, json, os, sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [a for i, a in enumerate(sys.argv[1:], 1) if not a.startswith("--") and sys.argv[i - 1] not in ("--policy", "--setups", "--only", "--runs", "--swaps")]
BUILD = ARGS[0] if ARGS else os.path.join(ROOT, "build")
POLICIES = sys.argv[sys.argv.index("--policy") + 1].split(",") if "--policy" in sys.argv else ["slo-aware"]
SETUPS = sys.argv[sys.argv.index("--setups") + 1] if "--setups" in sys.argv else "all"
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_paths import PROFILE, TRACES, sh, tool  # noqa: E402

SIM = tool(BUILD, "paraflex-sim")
GEN = tool(BUILD, "paraflex-workload")
OUT = os.path.join(ROOT, "docs", "results")
WORK = os.path.join(BUILD, "results-work")


def cases():
    """(name, load, workload args or None for the embedded workload, gpus, gpu): run_sweeps.py's setups."""
    out = []
    for mix in ("uniform", "skewed"):
        for load in (0.5, 0.7, 0.9, 1.0, 1.2, 1.5):
            out.append((f"A {mix} load {load}", load, ["--model", "flux-dev", "--mix", mix, "--arrivals", "poisson", "--requests", "400",
                                                       "--steps", "50", "--slo-rule", "alpha:2.0", "--load", str(load), "--gpus", "8",
                                                       "--seed", "1"], 8, "l20-inferred"))
        for scale in (1.1, 1.2, 1.3, 1.4, 1.5):
            out.append((f"A {mix} scale {scale}", 1.0, ["--model", "flux-dev", "--mix", mix, "--arrivals", "poisson", "--requests", "400",
                                                        "--steps", "50", "--slo-rule", f"alpha:{2.0 * scale}", "--load", "1.0", "--gpus", "8",
                                                        "--seed", "1"], 8, "l20-inferred"))
    for alpha in (1.5, 2.0, 6.0):
        for load in (0.5, 0.7, 1.0, 1.2):
            out.append((f"B alpha {alpha} load {load}", load, ["--model", "qwen-image", "--shapes", "512,1024,1536", "--mix", "uniform",
                                                               "--arrivals", "phases:1200@0.5,1200@1.5,1200@0.5", "--steps", "50",
                                                               "--slo-rule", f"alpha-deg1:{alpha}", "--labels", "size",
                                                               "--priority-weights", "3,1", "--load", str(load), "--gpus", "8",
                                                               "--gpu", "h20", "--seed", "2"], 8, "h20"))
    for trace in ("AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv", "mooncake_conversation_trace.jsonl"):
        for load in (0.5, 0.7, 1.0, 1.2):
            out.append((f"C {trace.split('.')[0]} load {load}", load, ["--model", "flux-dev", "--mix", "skewed", "--arrivals",
                                                                       "trace:" + os.path.join(TRACES, trace), "--requests", "400",
                                                                       "--steps", "50", "--slo-rule", "alpha:3.0", "--load", str(load),
                                                                       "--gpus", "8"], 8, "l20-inferred"))
    out.append(("default run", 1.0, None, 8, "l20-inferred"))
    return out


def run_case(i, case):
    name, load, args, gpus, gpu = case
    base = [SIM, "--format", "json", "--quiet"]
    if args is not None:
        wl = os.path.join(WORK, f"overload_{i}.csv")
        if not os.path.exists(wl):
            sh([GEN, *args, "--profile", PROFILE, "-o", wl])
        base += ["--workload", wl, "--profile", PROFILE, "--gpus", str(gpus), "--gpu", gpu]
    cache = os.path.join(WORK, f"overload_{i}.bound.json")
    if not os.path.exists(cache):  # the bound does not depend on the policy: solved once
        doc = json.loads(sh(base + ["--policy", "static:1", "--bound"]))
        with open(cache, "w") as f:
            json.dump(doc["results"][0]["upper_bound"], f)
    with open(cache) as f:
        bound = json.load(f)["slo_attainment"]
    doc = json.loads(sh(base + ["--policy", ",".join(POLICIES)]))
    return [{"setup": name, "load": load, "policy": r["policy"], "slo_attainment": r["slo_attainment"], "bound": bound,
             "ratio": r["slo_attainment"] / bound if bound else None, "mean_s": r["latency_s"]["mean"], "completed": r["completed"],
             "dropped": r["dropped"], "decision_us_mean": r["scheduler"]["decision_us_mean"]} for r in doc["results"]]


def main():
    os.makedirs(WORK, exist_ok=True)
    todo = [(i, c) for i, c in enumerate(cases()) if SETUPS == "all" or (SETUPS == "over") == (c[1] >= 1.0)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = [r for res in pool.map(lambda ic: run_case(*ic), todo) for r in res]
    if "--csv" in sys.argv:
        with open(os.path.join(OUT, "overload.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "decision_us_mean"])  # host timing: not in the CSV
            w.writeheader()
            w.writerows({k: v for k, v in r.items() if k != "decision_us_mean"} for r in rows)
    head = "| setup | bound % |" + "".join(f" {p} SLO % | x bound | mean s | dropped |" for p in POLICIES)
    print(head)
    print("|---|---:|" + "---:|---:|---:|---:|" * len(POLICIES))
    by_setup = {}
    for r in rows:
        by_setup.setdefault(r["setup"], {})[r["policy"]] = r
    for name, res in by_setup.items():
        first = next(iter(res.values()))
        line = f"| {name} | {100 * first['bound']:.1f} |"
        for p in POLICIES:
            r = res[p]
            line += f" {100 * r['slo_attainment']:.1f} | {r['ratio']:.3f} | {r['mean_s']:.1f} | {r['dropped']} |"
        print(line)
    print()
    for p in POLICIES:
        sub = [by_setup[s][p] for s in by_setup]
        worst = min(sub, key=lambda r: r["ratio"])
        at_target = sum(r["ratio"] >= 0.95 for r in sub)
        print(f"{p}: worst ratio {worst['ratio']:.3f} ({worst['setup']}), mean ratio {sum(r['ratio'] for r in sub) / len(sub):.3f}, "
              f">= 0.95 on {at_target} of {len(sub)}, "
              f"mean decision {sum(r['decision_us_mean'] for r in sub) / len(sub):.1f} us (host timing)")


if __name__ == "__main__":
    main()
