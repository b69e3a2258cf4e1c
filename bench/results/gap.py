#!/usr/bin/env python3
"""Where a policy loses against the fluid-LP bound: docs/results.md "Where the gap to the bound is".

    python3 bench/results/gap.py [BUILD_DIR] [--policy P] [--setups over|all]

Run bench/results/overload.py first (it writes the workloads and caches the bounds in
BUILD_DIR/results-work). For each setup this runs the policy (default slo-aware) with --trace-out and
splits its requests into: on time, completed late (admitted, then missed), dropped after running some
steps, dropped without running. GPU time (device-seconds, from the trace) is split the same way, and
each on-time request's step GPU time is compared with the least GPU time that meets its SLO from
its arrival (the cheapest mix of the degrees seen in the run, as slo_admission::demand prices it;
no schedule, the bound's included, spends less), so "overspend" is GPU time spent above that. "gap" = bound - on time, in
requests; "idle" = device-seconds no task used between the first arrival and the last completion.
Per shape (height) it prints attainment, to see whether large requests starve.
"""
import csv, json, os, sys
from collections import defaultdict

sys.argv += [] if "--setups" in sys.argv else ["--setups", "over"]
import overload  # noqa: E402  (same directory: the setups, the workloads and the cached bounds)

POLICY = sys.argv[sys.argv.index("--policy") + 1] if "--policy" in sys.argv else "slo-aware"


def least_need(times, steps, slo):
    """The least GPU time (device-seconds) that runs `steps` steps within `slo` seconds, mixing the
    degrees seen (lower convex hull of k x time against time), as slo_admission::demand does from
    the arrival: what any schedule, the bound's included, spends at least on that request."""
    pts = sorted((k * t, t) for k, t in times.items())
    hull = []
    for c, t in pts:  # by cost; keep only faster points, then convexity
        if hull and t >= hull[-1][1]:
            continue
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (c - hull[-2][0]) - (hull[-1][0] - hull[-2][0]) * (t - hull[-2][1]) >= 0:
            hull.pop()
        hull.append((c, t))
    per = slo / steps
    if per >= hull[0][1]:
        return steps * hull[0][0]
    for (c0, t0), (c1, t1) in zip(hull, hull[1:]):
        if t1 <= per:
            x = (per - t1) / (t0 - t1)
            return steps * (x * c0 + (1 - x) * c1)
    return steps * hull[-1][0]


def workload_of(i, case):
    """The workload file of setup i and the paraflex-sim arguments that run it."""
    name, load, args, gpus, gpu = case
    if args is None:
        wl = os.path.join(overload.ROOT, "bench", "data", "default_workload.csv")
        return wl, ["--workload", wl]
    wl = os.path.join(overload.WORK, f"overload_{i}.csv")
    return wl, ["--workload", wl, "--profile", overload.PROFILE, "--gpus", str(gpus), "--gpu", gpu]


def traced_run(i, case, policy=POLICY, workload=None, tag="gap"):
    """Runs `policy` on setup i (or on `workload`, a CSV of the same columns, on the same cluster)
    with --trace-out. Returns (result JSON, requests by id: arrival, deadline, height, GPU seconds,
    end of its decode or None; step slices (request, task, start) -> devices; their durations)."""
    wl, base = workload_of(i, case)
    if workload is not None:
        base = [workload if a == wl else a for a in base]
        wl = workload
    trace = os.path.join(overload.WORK, f"{tag}_{i}.trace.json")
    doc = json.loads(overload.sh([overload.SIM, *base, "--policy", policy, "--format", "json", "--quiet", "--trace-out", trace]))
    reqs = {}
    with open(wl) as f:
        rows = [l for l in f if not l.startswith("#")]
    for n, r in enumerate(csv.DictReader(rows), 1):
        rid = r.get("request_id") or str(n)
        arr = float(r["arrival_s"])
        reqs[rid] = {"arrival": arr, "deadline": arr + float(r["slo_s"]) if r.get("slo_s") else None, "h": int(r["height"]),
                     "gpu_s": 0.0, "end": None, "row": r}
    with open(trace) as f:
        ev = json.load(f)
    ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    step_slices = defaultdict(int)  # (request, step, ts) -> devices
    step_dur = {}
    for e in ev:
        if e.get("ph") != "X":
            continue
        r = reqs[e["args"]["request"]]
        d = e["dur"] / 1e6
        r["gpu_s"] += d
        if e["cat"] == "decode":
            r["end"] = max(r["end"] or 0, (e["ts"] + e["dur"]) / 1e6)
        if e["cat"] == "step":
            key = (e["args"]["request"], e["args"]["task"], e["ts"])
            step_slices[key] += 1
            step_dur[key] = d
    return doc["results"][0], reqs, step_slices, step_dur


def outcome(r):
    """on time, late, dropped after running or dropped unstarted (None: no deadline)."""
    if r["deadline"] is None:
        return None
    if r["end"] is not None:
        return "on time" if r["end"] <= r["deadline"] + 1e-6 else "late"
    return "dropped after running" if r["gpu_s"] > 0 else "dropped unstarted"


def analyse(i, case):
    name, load, args, gpus, gpu = case
    res, reqs, step_slices, step_dur = traced_run(i, case)
    with open(os.path.join(overload.WORK, f"overload_{i}.bound.json")) as f:
        bound = json.load(f)["slo_attainment"]
    busy = sum(r["gpu_s"] for r in reqs.values())
    times = defaultdict(dict)  # height -> degree -> step time seen
    by_req_steps = defaultdict(list)
    for key, k in step_slices.items():
        h = reqs[key[0]]["h"]
        times[h][k] = step_dur[key]
        by_req_steps[key[0]].append(k * step_dur[key])
    cat = defaultdict(lambda: {"n": 0, "gpu_s": 0.0})
    per_h = defaultdict(lambda: [0, 0])
    over = 0.0
    deg_gpu_s = defaultdict(float)
    for key, k in step_slices.items():
        deg_gpu_s[k] += k * step_dur[key]
    for rid, r in reqs.items():
        c = outcome(r)
        if c is None:
            continue
        cat[c]["n"] += 1
        cat[c]["gpu_s"] += r["gpu_s"]
        per_h[r["h"]][1] += 1
        if c == "on time":
            per_h[r["h"]][0] += 1
            over += sum(by_req_steps[rid]) - least_need(times[r["h"]], len(by_req_steps[rid]), r["deadline"] - r["arrival"])
    n = sum(v["n"] for v in cat.values())
    span = max(r["end"] or 0 for r in reqs.values()) - min(r["arrival"] for r in reqs.values())
    idle = gpus * span - busy
    ontime_cost = cat["on time"]["gpu_s"] / max(cat["on time"]["n"], 1)
    return {"setup": name, "n": n, "bound": bound, "att": res["slo_attainment"], "gap": bound * n - cat["on time"]["n"],
            "cat": dict(cat), "over": over, "idle": idle, "busy": busy, "ontime_cost": ontime_cost, "per_h": dict(per_h),
            "deg": dict(deg_gpu_s), "migrations": res["migrations"], "mean_s": res["latency_s"]["mean"]}


def selected_setups(only=None):
    """(index, case) of the setups --setups picks (and `only`, a set of indices, if given), with
    their workloads written and bounds cached first."""
    todo = [(i, c) for i, c in enumerate(overload.cases())
            if (only is None or i in only) and (overload.SETUPS == "all" or (overload.SETUPS == "over") == (c[1] >= 1.0))]
    for i, c in todo:
        if not os.path.exists(os.path.join(overload.WORK, f"overload_{i}.bound.json")):
            overload.run_case(i, c)
    return todo


def main():
    todo = selected_setups()
    print(f"policy {POLICY}; GPU time in device-hours; 'x req' = divided by the mean GPU time of an on-time request\n")
    print("| setup | bound % | SLO % | gap (req) | late: n, GPU h | dropped after running: n, GPU h | dropped unstarted | overspend GPU h (x req) | idle GPU h (x req) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    shapes = []
    for i, c in todo:
        a = analyse(i, c)
        g = lambda k: a["cat"].get(k, {"n": 0, "gpu_s": 0.0})
        req = a["ontime_cost"]
        print(f"| {a['setup']} | {100 * a['bound']:.1f} | {100 * a['att']:.1f} | {a['gap']:.0f} | {g('late')['n']}, {g('late')['gpu_s'] / 3600:.2f} | "
              f"{g('dropped after running')['n']}, {g('dropped after running')['gpu_s'] / 3600:.2f} | {g('dropped unstarted')['n']} | "
              f"{a['over'] / 3600:.2f} ({a['over'] / req:.0f}) | {a['idle'] / 3600:.2f} ({a['idle'] / req:.0f}) |")
        shapes.append(a)
    print("\nattainment by height (on time / requests), and the share of step GPU time by degree:\n")
    for a in shapes:
        ph = " ".join(f"{h}:{v[0]}/{v[1]}" for h, v in sorted(a["per_h"].items()))
        tot = sum(a["deg"].values())
        dg = " ".join(f"k{k}:{100 * v / tot:.0f}%" for k, v in sorted(a["deg"].items()))
        print(f"- {a['setup']}: {ph}; {dg}")


if __name__ == "__main__":
    main()
