"""How fast paraflex runs from Python (the figures of docs/python.md, "Speed").

Measures, on one workload file, the median over --repeat runs of:
  - simulate() with the Python EDF-with-drop policy of edf_drop_policy.py (target: <= 2.6 s for the
    797-request file, 10x GF-DiT's Python simulator);
  - simulate() with each built-in policy given, against paraflex-sim on the same input (target: within
    10 % of paraflex-sim's wall time). Two figures each: the run alone ("wall_s" of the JSON, the same
    clock in both) and the whole call (simulate() from Python; the paraflex-sim process).

    PYTHONPATH=<build>/examples/python python3 bench_python.py --workload w797.csv \\
        --paraflex-sim <build>/bench/paraflex-sim [--policy slo-aware --policy edf-best-fit] [--repeat 5]

The 797-request file of docs/python.md:
    <build>/bench/paraflex-workload --mix skewed --arrivals trace:bench/data/traces/AzureLLMInferenceTrace_conv.csv \\
        --requests 797 --steps 50 --slo-rule alpha:4 --load 1.0 --seed 1 -o w797.csv
"""

import argparse
import json
import statistics
import subprocess
import time

import paraflex
from edf_drop_policy import EdfWithDrop


def timed(f, repeat):
    walls, calls, result = [], [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = f()
        calls.append(time.perf_counter() - t0)
        walls.append(result["scheduler"]["wall_s"])
    return statistics.median(walls), statistics.median(calls), result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", help="workload CSV (default: the embedded default workload)")
    ap.add_argument("--paraflex-sim", help="paraflex-sim binary to compare with")
    ap.add_argument("--policy", action="append", help="built-in policy spec (repeatable; default: slo-aware, edf-best-fit)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    policies = args.policy or ["slo-aware", "edf-best-fit"]

    wall, call, r = timed(lambda: paraflex.simulate(workload=args.workload, policy=EdfWithDrop()), args.repeat)
    print(f"{'python edf-with-drop':<24} {r['requests']} requests, {r['scheduler']['decisions']} decisions: "
          f"run {wall:.3f} s, simulate() call {call:.3f} s")

    for spec in policies:
        wall, call, r = timed(lambda: paraflex.simulate(workload=args.workload, policy=spec), args.repeat)
        line = f"{spec:<24} simulate(): run {wall:.4f} s, call {call:.4f} s"
        if args.paraflex_sim:
            cmd = [args.paraflex_sim, "--policy", spec, "--format", "json", "--quiet"]
            if args.workload:
                cmd += ["--workload", args.workload]
            sim_walls, sim_calls = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                sim_calls.append(time.perf_counter() - t0)
                sim_walls.append(json.loads(out)["results"][0]["scheduler"]["wall_s"])
            sw, sc = statistics.median(sim_walls), statistics.median(sim_calls)
            line += f" | paraflex-sim: run {sw:.4f} s, process {sc:.4f} s | run ratio {wall / sw:.3f}, call ratio {call / sc:.3f}"
        print(line)


if __name__ == "__main__":
    main()
