#!/usr/bin/env python3
"""How far below the bound is the optimum? A schedule found offline, for docs/results.md section E.

    python3 bench/results/best_known.py [BUILD_DIR] [--only I,J] [--runs N] [--swaps N]

Run bench/results/overload.py first (it writes the workloads and caches the bounds). The fluid LP
bound is above every schedule; how far above the best one is unknown. This script brackets it from
below: it searches, with hindsight, for the set of requests to serve, and every set is checked by
running a policy on it in the simulator (on-time counts from `--trace-out`), so each figure it prints
is a real schedule of the whole workload (the requests left out are simply never run). The optimum
then lies between the best count found and the bound.

Search, per setup and per policy of POLICIES (deterministic; no random draws):
  1. seeds: the requests the policy finishes on time on the whole file, and on the LP's set (the
     requests the fluid LP serves at least half of, `--bound-out`, as oracle.py);
  2. greedy additions: every request not in the best set, by the LP's share (largest first), then by
     arrival, is added to the best set and the policy run on that set; when more requests end on time
     than before, the on-time set of that run becomes the best set. Passes repeat until one adds
     nothing or --runs simulations (per setup and policy, default 400) are spent;
  3. with --swaps N (default 0), on the best policy's set: up to N times, one of its requests, the
     largest first (pixels x frames, then arrival), is taken out and greedy additions (at most 60 runs)
     start again from what is then on time; a larger set is kept and the largest-first list starts
     over. Slow (about a minute per 20 swaps on a 400-request setup) and it finds little: on A uniform
     load 1.5, 600 s of swaps went from 322 to 324.
The bound counts requests of any class, so on a file with priority classes (B) every run is made
with all priorities set to 0 (the same requests and deadlines: a schedule of the same workload).
B's LPs take minutes each, so above 1,000 requests the LP is not asked: no LP's-set seed, and the
additions go by arrival. --only picks setups by their overload.py index.
"""
import csv, json, math, os, sys, tempfile
from concurrent.futures import ThreadPoolExecutor

sys.argv += [] if "--setups" in sys.argv else ["--setups", "over"]
import overload  # noqa: E402  (same directory: the setups, the workloads and the cached bounds)
from gap import workload_of  # noqa: E402
from oracle import lp_set  # noqa: E402

ONLY = {int(x) for x in sys.argv[sys.argv.index("--only") + 1].split(",")} if "--only" in sys.argv else None
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 400
SWAPS = int(sys.argv[sys.argv.index("--swaps") + 1]) if "--swaps" in sys.argv else 0
POLICIES = ["slo-aware", "slo-aware:capacity=1.0", "slo-aware:admission=off"]


class Workload:
    """A workload file's rows by request id, in file order, and a way to write any subset of them."""

    def __init__(self, path):
        with open(path, newline="") as f:
            lines = f.read().splitlines()
        body = [j for j, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
        self.header = lines[body[0]]
        names = next(csv.reader([self.header]))
        self.rows = {}  # id -> (line, deadline in microseconds, or None)
        for j in body[1:]:
            cells = dict(zip(names, next(csv.reader([lines[j]]))))
            slo = cells.get("slo_s", "")
            due = round((float(cells["arrival_s"]) + float(slo)) * 1e6) if slo.strip() else None
            self.rows[cells["request_id"]] = (lines[j], due, cells)
        self.order = {rid: n for n, rid in enumerate(self.rows)}
        self.names = names

    def write(self, ids, path, zero_priority=False):
        with open(path, "w") as f:
            f.write(self.header + "\n")
            for rid in sorted(ids, key=self.order.__getitem__):
                line, _, cells = self.rows[rid]
                if zero_priority and "priority" in cells:
                    line = ",".join(csv_cell("0" if n == "priority" else cells[n]) for n in self.names)
                f.write(line + "\n")


def csv_cell(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def on_time(sim_args, w, ids, policy, scratch, zero_priority=False):
    """The requests of `ids` that end by their deadline when `policy` runs on them alone."""
    wl, trace = os.path.join(scratch, "w.csv"), os.path.join(scratch, "t.json")
    w.write(ids, wl, zero_priority)
    result = json.loads(overload.sh([overload.SIM, *sim_args, "--workload", wl, "--policy", policy, "--trace-out", trace, "--quiet",
                                     "--format", "json"]))["results"][0]
    end = {}
    with open(trace) as f:
        for line in f:  # one event per line (sim/chrome_trace.hpp)
            if '"cat":"decode"' in line:
                e = json.loads(line.rstrip().rstrip(","))
                rid = e["args"]["request"]
                end[rid] = max(end.get(rid, 0), e["ts"] + e["dur"])
    met = {rid for rid in ids if rid in end and w.rows[rid][1] is not None and end[rid] <= w.rows[rid][1]}
    with_deadline = sum(w.rows[rid][1] is not None for rid in ids)
    if round(result["slo_attainment"] * with_deadline) != len(met):  # the trace and the run's own count agree
        sys.exit(f"on-time count from the trace ({len(met)}) differs from the run's ({result['slo_attainment']} x {with_deadline})")
    return met


def greedy(cur, budget, run, candidates):
    """Step 2: each candidate not in `cur` added in turn; a run with more on time replaces `cur`."""
    grown = True
    while grown and budget > 0:
        grown = False
        for rid in candidates:
            if rid in cur or budget <= 0:
                continue
            budget -= 1
            t = run(cur | {rid})
            if len(t) > len(cur):
                cur, grown = t, True
    return cur


def search(i, case):
    wl, args = workload_of(i, case)
    sim_args = [a for a in args if a != wl and a != "--workload"]  # profile, cluster: as the setup runs
    w = Workload(wl)
    x = lp_set(i, case) if len(w.rows) <= 1000 else {}
    zero = any(c[2].get("priority", "0").strip() not in ("", "0") for c in w.rows.values())
    candidates = sorted((rid for rid in w.rows if w.rows[rid][1] is not None), key=lambda rid: (-x.get(rid, 0.0), w.order[rid]))
    best, best_by = set(), None
    with tempfile.TemporaryDirectory() as scratch:
        for policy in POLICIES:
            seeds = [on_time(sim_args, w, set(w.rows), policy, scratch, zero)]
            if x:
                seeds.append(on_time(sim_args, w, {r for r in w.rows if x.get(r, 0) >= 0.5}, policy, scratch, zero))
            cur = greedy(max(seeds, key=len), RUNS - len(seeds), lambda ids: on_time(sim_args, w, ids, policy, scratch, zero), candidates)
            if len(cur) > len(best):
                best, best_by = cur, policy
        if SWAPS > 0:
            run = lambda ids: on_time(sim_args, w, ids, best_by, scratch, zero)
            size = lambda rid: (-int(w.rows[rid][2]["height"]) * int(w.rows[rid][2]["width"]) * int(w.rows[rid][2].get("frames") or 1), w.order[rid])
            tries, grown = 0, True
            while grown and tries < SWAPS:
                grown = False
                for rid in sorted(best, key=size):
                    if tries >= SWAPS:
                        break
                    tries += 1
                    t = greedy(run(best - {rid}), 60, run, candidates)
                    if len(t) > len(best):
                        best, grown = t, True
                        break
    # Check the winner once more from scratch: the count printed is a run, not a sum of moves.
    with tempfile.TemporaryDirectory() as scratch:
        check = on_time(sim_args, w, best, best_by, scratch, zero)
    return case[0], len(check), best_by, sum(r[1] is not None for r in w.rows.values())


def down(ratio):
    """Three decimals, rounded down: 340 of 358 reads 0.949, not a 0.950 that looks like the target."""
    return f"{math.floor(ratio * 1000) / 1000:.3f}"


def main():
    todo = [(i, c) for i, c in enumerate(overload.cases()) if c[1] >= 1.0 and (ONLY is None or i in ONLY)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(lambda ic: search(*ic), todo))
    print("| setup | bound (requests) | best schedule found | x bound | found with | slo-aware | x best found |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for (i, case), (name, count, by, n) in zip(todo, found):
        row = overload.run_case(i, case)[0]  # cached bound, slo-aware on the whole file
        bound, mine = round(row["bound"] * n), round(row["slo_attainment"] * n)
        print(f"| {name} | {bound} | {count} | {down(count / bound)} | `{by}` | {mine} | {down(mine / count)} |")


if __name__ == "__main__":
    main()
