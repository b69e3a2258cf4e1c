#!/usr/bin/env python3
"""Writes a workload CSV (formats.md section 1) of "wild" requests, for the scale measurements of
docs/performance.md ("Deep queues"): random models among flux-dev, sd3-medium, cogvideox and
hunyuanvideo, sides of 256-2,048 px in steps of 16, videos of 9-49 frames, 1-200 steps, SLOs
log-uniform from 1e-6 to 1e7 s (or none, for a share of best-effort rows), optional priority classes
and bursts, Poisson arrivals at a rate that makes the given load on the given number of GPUs under a
rough tokens^1.2 work estimate (the load is nominal: what a policy sees depends on the profile).

    python3 bench/perf/wild_workload.py 200000 --load 2 --gpus 8 --seed 6 --best-effort 0.3 -o be.csv

Same arguments, same file (Python's random with the seed)."""
import argparse
import random


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=int)
    ap.add_argument("--load", type=float, default=2.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--priority-span", type=int, default=0, help="priorities drawn from -N..N (0: all 0)")
    ap.add_argument("--best-effort", type=float, default=0.0, help="share of rows without an SLO")
    ap.add_argument("--burst", type=int, default=0, help="rows arriving together (0: one at a time)")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    if a.rows < 1 or a.load <= 0 or a.gpus < 1 or not 0 <= a.best_effort <= 1 or a.burst < 0 or a.priority_span < 0:
        ap.error("rows >= 1, load > 0, gpus >= 1, 0 <= best-effort <= 1, burst >= 0, priority-span >= 0")
    rng = random.Random(a.seed)
    models = ["flux-dev", "sd3-medium", "cogvideox", "hunyuanvideo"]
    rows = []
    for _ in range(a.rows):
        model = rng.choice(models)
        h, w = rng.randrange(16, 129) * 16, rng.randrange(16, 129) * 16
        frames = 1 if model in ("flux-dev", "sd3-medium") else rng.choice([9, 17, 33, 49])
        steps = rng.randint(1, 200)
        slo = "" if rng.random() < a.best_effort else "%.6g" % (10 ** rng.uniform(-6, 7))
        priority = rng.randint(-a.priority_span, a.priority_span) if a.priority_span else 0
        rows.append((model, h, w, frames, steps, slo, priority))

    def work(model, h, w, frames, steps):
        tokens = (h / 16) * (w / 16) * max(1, (frames + 3) // 4)
        return steps * 0.84 * (tokens / 4096) ** 1.2

    rate = a.load * a.gpus / (sum(work(*r[:5]) for r in rows) / a.rows)
    t = 0.0
    with open(a.output, "w") as f:
        f.write("arrival_s,request_id,model,height,width,frames,steps,slo_s,priority,class\n")
        for i, (model, h, w, frames, steps, slo, priority) in enumerate(rows):
            if not a.burst:
                t += rng.expovariate(rate)
            elif i % a.burst == 0:
                t += rng.expovariate(rate / a.burst)
            f.write(f"{t:.6f},{i + 1},{model},{h},{w},{frames},{steps},{slo},{priority},c{priority}\n")


if __name__ == "__main__":
    main()
