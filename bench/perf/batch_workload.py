#!/usr/bin/env python3
"""Writes a workload CSV (formats.md section 1) of a batch submission: every request arrives at time 0,
FLUX.1-dev images of 256, 512, 1024 or 2048 px (uniform), 50 steps, SLOs uniform between --slo-min
and --slo-max seconds, priorities uniform in 0..--classes - 1 and the class label "p<priority>", so
that paraflex-sim's per_class figures are per priority. For docs/results.md ("Order within the
admitted requests") and docs/performance.md ("A batch submitted at once").

    python3 bench/perf/batch_workload.py 40000 --slo-max 4e5 --seed 4 -o batch40k.csv

Standard library only; the same arguments write the same file.
"""
import argparse
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=int)
    ap.add_argument("--slo-min", type=float, default=5.0, help="shortest SLO, seconds (default 5)")
    ap.add_argument("--slo-max", type=float, required=True, help="longest SLO, seconds")
    ap.add_argument("--classes", type=int, default=3, help="priorities 0..N-1 (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    if a.rows < 1 or a.classes < 1 or not 0 < a.slo_min <= a.slo_max:
        ap.error("need rows >= 1, classes >= 1 and 0 < --slo-min <= --slo-max")
    rng = random.Random(a.seed)
    sides = (256, 512, 1024, 2048)
    with open(a.output, "w") as f:
        f.write("arrival_s,request_id,model,height,width,frames,steps,slo_s,priority,class\n")
        for i in range(a.rows):
            side = rng.choice(sides)
            slo = rng.uniform(a.slo_min, a.slo_max)
            priority = rng.randint(0, a.classes - 1)
            f.write(f"0,{i + 1},flux-dev,{side},{side},1,50,{slo:.3f},{priority},p{priority}\n")


if __name__ == "__main__":
    main()
