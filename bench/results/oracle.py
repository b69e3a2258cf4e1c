#!/usr/bin/env python3
"""Is the gap to the bound in choosing requests or in running them? docs/results.md, section E.

    python3 bench/results/oracle.py [BUILD_DIR] [--policy P[,P...]] [--setups over|all] [--only I,J]

Run bench/results/overload.py first (it writes the workloads). For each setup this asks the fluid LP
which requests it serves (`paraflex-sim --bound --bound-out`, cached in BUILD_DIR/results-work),
writes the workload again with only the requests the LP serves at least half of ("the LP's set": an
admission oracle that knows the future), and runs the policies (default slo-aware) on the full file
and on the LP's set. If a policy on the LP's set came close to the bound's count, the loss would be in
whom it admits; if it stays where it is on the full file, the loss is in running the admitted set
(sizing, placement, timing of steps). The bound's count is the denominator in both columns.
B's bounds take minutes each (--only picks setups by their overload.py index).
"""
import csv, json, os, sys

sys.argv += [] if "--setups" in sys.argv else ["--setups", "over"]
import overload  # noqa: E402  (same directory: the setups, the workloads and the cached bounds)
from gap import workload_of  # noqa: E402

ONLY = {int(x) for x in sys.argv[sys.argv.index("--only") + 1].split(",")} if "--only" in sys.argv else None


def lp_set(i, case):
    """(requests with a deadline, the LP's x by request id), from paraflex-sim --bound-out (cached)."""
    wl, args = workload_of(i, case)
    served = os.path.join(overload.WORK, f"oracle_{i}.served.csv")
    if not os.path.exists(served):
        overload.sh([overload.SIM, *args, "--policy", "static:1", "--bound", "--bound-out", served + ".tmp", "--quiet", "--format", "json"])
        os.replace(served + ".tmp", served)
    with open(served, newline="") as f:
        x = {r["request_id"]: float(r["served"]) for r in csv.DictReader(f)}
    return x


def restricted(wl, x, out):
    """`wl` with only the rows whose request the LP serves at least half of (comments and header kept)."""
    with open(wl, newline="") as f:
        lines = f.read().splitlines()
    body = [j for j, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    header = next(csv.reader([lines[body[0]]]))
    column = header.index("request_id")
    kept = [lines[j] for j in body[1:] if x.get(next(csv.reader([lines[j]]))[column], 0.0) >= 0.5]
    with open(out, "w") as f:
        f.write("\n".join(lines[:body[0] + 1] + kept) + "\n")
    return len(kept)


def on_time(args, policies):
    doc = json.loads(overload.sh([overload.SIM, *args, "--policy", ",".join(policies), "--format", "json", "--quiet"]))
    return {r["policy"]: r["slo_attainment"] for r in doc["results"]}


def main():
    os.makedirs(overload.WORK, exist_ok=True)
    print("| setup | bound (requests) | LP's set | " + " | ".join(f"{p}: full file | on the LP's set" for p in overload.POLICIES) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(overload.POLICIES))
    ratios = {p: ([], []) for p in overload.POLICIES}
    for i, case in enumerate(overload.cases()):
        if (overload.SETUPS != "all" and (overload.SETUPS == "over") != (case[1] >= 1.0)) or (ONLY is not None and i not in ONLY):
            continue
        wl, args = workload_of(i, case)
        x = lp_set(i, case)
        lp_count = sum(x.values())  # with a deadline: the bound's requests (before rounding down)
        sub = os.path.join(overload.WORK, f"oracle_{i}.csv")
        kept = restricted(wl, x, sub)
        full = on_time(args, overload.POLICIES)
        oracle = on_time([a if a != wl else sub for a in args], overload.POLICIES)
        line = f"| {case[0]} | {lp_count:.1f} | {kept} |"
        for p in overload.POLICIES:
            a, b = full[p] * len(x) / lp_count, oracle[p] * kept / lp_count
            ratios[p][0].append(a), ratios[p][1].append(b)
            line += f" {a:.3f} | {b:.3f} |"
        print(line, flush=True)
    for p, (a, b) in ratios.items():
        if a:
            print(f"{p}: on time / bound's count, full file: worst {min(a):.3f}, mean {sum(a) / len(a):.3f}; "
                  f"on the LP's set: worst {min(b):.3f}, mean {sum(b) / len(b):.3f}")


if __name__ == "__main__":
    main()
