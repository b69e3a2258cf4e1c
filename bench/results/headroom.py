#!/usr/bin/env python3
"""How much of the devices a policy's on-time requests need, against what the bound's count needs:
docs/results.md "Where the gap to the bound is" (session 10 table).

    python3 bench/results/headroom.py [BUILD_DIR] [--policy P] [--setups over|all] [--only I[,I...]]

Run bench/results/overload.py first (it writes the workloads and caches the bounds in
BUILD_DIR/results-work). --only takes setup indices in overload.py's order (0 = A uniform load 0.5).
For each setup it prints, in requests, the bound and the policy's on-time count, then the least
device-time (each request at the cheapest mix of degrees that meets its SLO from its arrival, as
gap.py prices it) as a share of G x span, span = first arrival to last deadline:
- of the policy's on-time requests;
- of the cheapest round(0.95 x bound) requests, and of the cheapest round(bound) requests: what a
  schedule with that many on time must fit at the very least, with no idle device and no step
  above its cheapest mix (the windows make it more, never less);
and "foresight": the policy run again without the requests it dropped after they had run some steps,
as if it had known in advance which would fail, and its on-time count then (same denominator).
"""
import csv, json, os, sys

import gap  # noqa: E402  (same directory; imports overload: the setups, the workloads, the bounds)
import overload  # noqa: E402

ONLY = {int(x) for x in sys.argv[sys.argv.index("--only") + 1].split(",")} if "--only" in sys.argv else None


def least_needs(reqs, times):
    """Least GPU seconds per request with a deadline (steps at the cheapest mix; degrees seen in the run)."""
    return {rid: gap.least_need(times[r["h"]], int(r["row"]["steps"]), r["deadline"] - r["arrival"])
            for rid, r in reqs.items() if r["deadline"] is not None}


def headroom(i, case):
    gpus = case[3]
    res, reqs, step_slices, step_dur = gap.traced_run(i, case, tag="headroom")
    times = {}
    for key, k in step_slices.items():
        times.setdefault(reqs[key[0]]["h"], {})[k] = step_dur[key]
    with open(os.path.join(overload.WORK, f"overload_{i}.bound.json")) as f:
        n = sum(1 for r in reqs.values() if r["deadline"] is not None)
        bound = json.load(f)["slo_attainment"] * n
    need = least_needs(reqs, times)
    on_time = [rid for rid, r in reqs.items() if gap.outcome(r) == "on time"]
    span = max(r["deadline"] for r in reqs.values() if r["deadline"] is not None) - min(r["arrival"] for r in reqs.values())
    capacity = gpus * span
    cheapest = sorted(need.values())
    share = lambda total: total / capacity
    # Foresight: the same run without the requests dropped after running.
    wasted = {rid for rid, r in reqs.items() if gap.outcome(r) == "dropped after running"}
    kept = os.path.join(overload.WORK, f"headroom_{i}.csv")
    with open(kept, "w", newline="") as f:
        rows = [r["row"] for rid, r in reqs.items() if rid not in wasted]
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    _, again, _, _ = gap.traced_run(i, case, workload=kept, tag="headroom")
    on_again = sum(1 for r in again.values() if gap.outcome(r) == "on time")
    return (f"| {case[0]} | {bound:.0f} | {len(on_time)} | {share(sum(need[r] for r in on_time)):.2f} | "
            f"{share(sum(cheapest[:round(0.95 * bound)])):.2f} | {share(sum(cheapest[:round(bound)])):.2f} | "
            f"{len(wasted)} | {on_again} ({on_again - len(on_time):+d}) |")


def main():
    todo = gap.selected_setups(ONLY)
    print(f"policy {gap.POLICY}; least device-time as a share of G x (first arrival to last deadline)\n")
    print("| setup | bound (req) | on time | its on-time set | cheapest 0.95 x bound | cheapest bound | dropped after running | foresight: on time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, c in todo:
        print(headroom(i, c))


if __name__ == "__main__":
    main()
