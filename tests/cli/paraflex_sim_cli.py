#!/usr/bin/python3
"""Command-line tests of paraflex-sim (docs/formats.md §3-§5), run by ctest in every build.

    paraflex_sim_cli.py PATH/TO/paraflex-sim PATH/TO/bench/data GROUP

GROUP is one of the names in GROUPS below (ctest runs each as its own test). Standard library only;
JSON and traces are parsed, never grepped. Each check prints FAIL: ... when it fails; the script
exits 1 if any did, 0 otherwise.
"""
import csv
import heapq
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile

from cli_checks import check, finish, run_command, write  # same directory


def run(args, timeout=300):
    return run_command([EXE, *args], timeout)


def strict_json(text):
    """JSON with NaN/Infinity refused (formats §5: a number is never NaN or infinite)."""
    def bad(c):
        raise ValueError(f"non-finite number {c}")
    return json.loads(text, parse_constant=bad)


def profile_rows():
    rows = {}
    with open(PROFILE, newline="") as f:
        for r in csv.DictReader(f):
            rows[(r["model"], r["gpu"], int(r["height"]), int(r["width"]), int(r["frames"]), int(r["degree"]))] = float(r["step_s"])
    return rows


def make_workload(path, n, seed):
    """flux-dev requests of profiled shapes only, arrivals with 6 decimals (exact microseconds)."""
    rng = random.Random(seed)
    t = 0.0
    rows = []
    for i in range(n):
        t += rng.expovariate(0.25)
        side = rng.choice([256, 512, 1024, 2048])
        steps = rng.choice([10, 20, 28])
        slo = rng.choice(["", "30", "60", "120.5"])
        rows.append((f"r{i}", f"{t:.6f}", "flux-dev", side, side, 1, steps, slo, f"{side}px"))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request_id", "arrival_s", "model", "height", "width", "frames", "steps", "slo_s", "class"])
        w.writerows(rows)
    return rows


def fcfs_mean_latency(rows, k, gpus=8):
    """static:K with FCFS is a queue with G/K identical servers (formats §5): its latencies in closed form,
    with the runtime's rounding (arrival and step time each to the nearest microsecond)."""
    prof = profile_rows()
    free = [0] * (gpus // k)
    heapq.heapify(free)
    total = 0
    for _, a, model, h, w, fr, steps, _, _ in sorted(rows, key=lambda r: float(r[1])):
        arrival = round(float(a) * 1e6)
        step = round(prof[(model, "l20-inferred", h, w, fr, k)] * 1e6)
        start = max(arrival, heapq.heappop(free))
        end = start + steps * step
        heapq.heappush(free, end)
        total += end - arrival
    return total / len(rows) / 1e6


RESULT_KEYS = {"policy", "requests", "completed", "dropped", "slo_attainment", "latency_s", "throughput_rps", "goodput_rps",
               "makespan_s", "gpu_busy_s", "utilization", "migrations", "per_class", "scheduler", "dropped_by_reason"}
LATENCY_KEYS = {"mean", "p50", "p90", "p95", "p99", "max"}
SCHEDULER_KEYS = {"decisions", "decision_us_mean", "decision_us_p99", "wall_s"}
HOST_TIMINGS = {"decision_us_mean", "decision_us_p99", "wall_s"}
DEFAULT_POLICIES = ["static:1", "static:2", "static:4", "static:8", "rssp", "round-based", "edf-best-fit", "slo-aware",
                    "throughput-first"]


def check_result_shape(doc, what):
    check(set(doc) >= {"workload", "cluster", "results"}, f"{what}: top-level keys workload, cluster, results")
    check(set(doc.get("workload", {})) >= {"file", "requests"}, f"{what}: workload has file and requests")
    check(set(doc.get("cluster", {})) >= {"gpus", "gpus_per_node", "gpu"}, f"{what}: cluster has gpus, gpus_per_node, gpu")
    for r in doc.get("results", []):
        name = r.get("policy")
        check(RESULT_KEYS <= set(r), f"{what}: {name}: missing keys {sorted(RESULT_KEYS - set(r))}")
        check(r.get("completed", -1) + r.get("dropped", -1) == r.get("requests"), f"{what}: {name}: completed + dropped = requests")
        check(r.get("requests") == doc["workload"]["requests"], f"{what}: {name}: requests = the workload's")
        lat = r.get("latency_s", {})
        check(set(lat) == LATENCY_KEYS, f"{what}: {name}: latency_s keys {sorted(lat)}")
        if r.get("completed", 0) > 0:
            check(all(isinstance(lat[k], (int, float)) for k in LATENCY_KEYS), f"{what}: {name}: latencies are numbers")
            check(lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"], f"{what}: {name}: percentiles in order")
        sa = r.get("slo_attainment")
        check(sa is None or 0.0 <= sa <= 1.0, f"{what}: {name}: slo_attainment in [0, 1] or null")
        check(set(r.get("scheduler", {})) >= SCHEDULER_KEYS, f"{what}: {name}: scheduler keys")
        check(isinstance(r.get("dropped_by_reason"), dict) and sum(r["dropped_by_reason"].values()) == r.get("dropped"),
              f"{what}: {name}: dropped_by_reason adds up to dropped")
        for label, c in r.get("per_class", {}).items():
            check(set(c) >= {"requests", "slo_attainment", "latency_s"} and set(c["latency_s"]) >= {"mean", "p95"},
                  f"{what}: {name}: per_class[{label}] keys")
        if r.get("makespan_s", 0) > 0:
            m = r["makespan_s"]
            check(abs(r["throughput_rps"] - r["completed"] / m) <= 1e-9 * max(1.0, r["throughput_rps"]), f"{what}: {name}: throughput = completed / makespan")
            check(abs(r["utilization"] - r["gpu_busy_s"] / (doc["cluster"]["gpus"] * m)) <= 1e-9, f"{what}: {name}: utilization definition")


# ------------------------------------------------------------------------------------------------------
# Groups


def group_default(d):
    rc, out, err = run([])
    check(rc == 0, f"no arguments: exit 0 (got {rc}: {err[-300:]})")
    check("<embedded workload> (300 requests)" in out, "no arguments: the table names the embedded workload")
    for p in DEFAULT_POLICIES:
        check(re.search(rf"^{re.escape(p)}\s", out, re.M) is not None, f"no arguments: the table has a row for {p}")
    check("error" not in err, "no arguments: no error on stderr")
    rc, out, err = run(["--quiet", "--policy", "rssp"])
    check(rc == 0 and err == "", f"--quiet: nothing on stderr (got {err!r})")
    rc, out, _ = run(["--help"])
    check(rc == 0 and "--workload" in out and "--trace-out" in out, "--help: exit 0, lists the options")


def group_json(d):
    rc, out, err = run(["--format", "json"])
    check(rc == 0, f"--format json: exit 0 ({err[-300:]})")
    doc = strict_json(out)  # exactly one JSON document on stdout
    check_result_shape(doc, "default --format json")
    check([r["policy"] for r in doc["results"]] == DEFAULT_POLICIES, "default: every built-in policy, in order")
    check(doc["cluster"] == {"gpus": 8, "gpus_per_node": 8, "gpu": "l20-inferred"}, f"default cluster {doc['cluster']}")
    check(doc["workload"] == {"file": "<embedded workload>", "requests": 300}, f"default workload {doc['workload']}")
    # static:K against its closed form, on a workload of profiled shapes.
    wl = os.path.join(d, "w.csv")
    rows = make_workload(wl, 120, seed=5)
    rc, out, err = run(["--workload", wl, "--profile", PROFILE, "--policy", "static:1,static:2,static:4,static:8", "--format", "json"])
    check(rc == 0, f"static policies: exit 0 ({err[-300:]})")
    doc = strict_json(out)
    check_result_shape(doc, "static policies")
    check(doc["workload"] == {"file": wl, "requests": 120}, "workload file and count")
    for r in doc["results"]:
        k = int(r["policy"].split(":")[1])
        exact = fcfs_mean_latency(rows, k)
        check(abs(r["latency_s"]["mean"] - exact) <= 1e-6, f"{r['policy']}: mean latency {r['latency_s']['mean']} = FCFS closed form {exact}")
        check(r["dropped"] == 0 and r["migrations"] == 0, f"{r['policy']}: no drops, no migrations")
        check(set(r["per_class"]) == {"256px", "512px", "1024px", "2048px"}, f"{r['policy']}: per_class labels")
        check(sum(c["requests"] for c in r["per_class"].values()) == 120, f"{r['policy']}: per_class counts add up")
    # No request has a deadline: slo_attainment is null, and so is every per-class attainment.
    nodl = os.path.join(d, "nodl.csv")
    write(nodl, "arrival_s,model,height,width,steps,class\n0,flux-dev,512,512,5,a\n1,flux-dev,256,256,5,b\n")
    rc, out, err = run(["--workload", nodl, "--policy", "rssp", "--format", "json"])
    r = strict_json(out)["results"][0]
    check(rc == 0 and r["slo_attainment"] is None and all(c["slo_attainment"] is None for c in r["per_class"].values()),
          "no deadlines: slo_attainment is null")


def group_bad_input(d):
    prof = PROFILE
    header = "arrival_s,model,height,width,steps"
    cases = [
        # name, file bytes, expected line, expected column (None: not about one column), words in the message
        ("missing column", f"arrival_s,model,height,width\n0,flux-dev,512,512\n", 1, "steps", ["missing required column"]),
        ("negative steps", f"{header}\n0,flux-dev,512,512,-3\n", 2, "steps", ["must be > 0"]),
        ("unknown model", f"{header}\n0,no-such-model,512,512,20\n", 2, "model", ["unknown model", "flux-dev"]),
        ("text in number", f"{header}\nsoon,flux-dev,512,512,20\n", 2, "arrival_s", ["expected a number"]),
        ("infinite number", f"{header}\n1e999,flux-dev,512,512,20\n", 2, "arrival_s", ["finite"]),
        ("huge time", f"{header}\n1e300,flux-dev,512,512,20\n", 2, "arrival_s", ["does not fit"]),
        ("duplicate id", f"{header},request_id\n0,flux-dev,512,512,20,a\n1,flux-dev,512,512,20,a\n", 3, "request_id", ["duplicate", "line 2"]),
        ("short row", f"{header}\n0,flux-dev,512,512\n", 2, None, ["expected 5 fields"]),
        ("unterminated quote", f"{header},class\n0,flux-dev,512,512,20,\"oops\n", 2, None, ["unterminated quoted field"]),
        ("no rows", f"{header}\n", 0, None, ["no requests"]),
        ("invalid UTF-8 class", (f"{header},class\n0,flux-dev,512,512,20,ok\n0,flux-dev,512,512,20,caf\xe9\n").encode("latin-1"), 3, "class",
         ["not valid UTF-8", "0xE9"]),
        ("invalid UTF-8 id", (f"{header},request_id\n0,flux-dev,512,512,20,\xff\xfe\n").encode("latin-1"), 2, "request_id", ["not valid UTF-8"]),
        ("UTF-16", f"{header}\n0,flux-dev,512,512,20\n".encode("utf-16"), 1, None, ["UTF-16", "save it as UTF-8"]),
        ("UTF-16 without a mark", f"{header}\n0,flux-dev,512,512,20\n".encode("utf-16-le"), 1, None, ["NUL byte", "UTF-16"]),
        ("NUL byte", f"{header}\n0,flux-dev,512,512,2\x000\n".encode(), 2, None, ["NUL byte"]),
        ("CR-only line ends", f"{header}\r0,flux-dev,512,512,20\r", 1, None, ["CR-only", "LF or CRLF"]),
        ("a column read twice", f"{header},steps\n0,flux-dev,512,512,20,30\n", 1, "steps", ["duplicate column name", "columns 5 and 6"]),
        # Invisible characters are named in the message: the quoted field would look right otherwise.
        ("a byte-order mark inside", f"{header}\n\ufeff0,flux-dev,512,512,20\n".encode(), 2, "arrival_s", ["got '<U+FEFF>0'"]),
        ("a second byte-order mark", f"\ufeff\ufeff{header}\n0,flux-dev,512,512,20\n".encode(), 1, "arrival_s", ["<U+FEFF>arrival_s"]),
    ]
    for name, text, line, column, words in cases:
        path = os.path.join(d, "bad.csv")
        write(path, text, "wb" if isinstance(text, bytes) else "w")
        rc, out, err = run(["--workload", path, "--profile", prof, "--policy", "static:1", "--format", "json"])
        where = f"{path}:{line}:" if line > 0 else f"{path}:"
        ok = check(rc == 2, f"{name}: exit 2 (got {rc})")
        ok &= check(err.startswith("paraflex-sim: error: " + where), f"{name}: stderr names file and line {where!r} (got {err.strip()!r})")
        if column:
            ok &= check(f"column '{column}'" in err, f"{name}: stderr names column {column} (got {err.strip()!r})")
        for w in words:
            ok &= check(w in err, f"{name}: stderr says {w!r} (got {err.strip()!r})")
        check(out == "", f"{name}: nothing on stdout")
        check("\ufffd" not in err, f"{name}: no raw bytes in the message")
    # Profile errors name the profile file.
    bad_prof = write(os.path.join(d, "p.csv"), "model,gpu,height,width,frames,degree,step_s\nflux-dev,g,512,512,1,1,nan\n")
    rc, _, err = run(["--profile", bad_prof, "--policy", "rssp"])
    check(rc == 2 and f"{bad_prof}:2: column 'step_s'" in err, f"bad profile: exit 2 naming file, line, column (got {rc}: {err.strip()})")
    bad_prof = write(os.path.join(d, "p2.csv"), b"model,gpu,height,width,frames,degree,step_s\nflux\xff,g,512,512,1,1,0.5\n", "wb")
    rc, _, err = run(["--profile", bad_prof, "--policy", "rssp"])
    check(rc == 2 and f"{bad_prof}:2: column 'model'" in err and "UTF-8" in err, f"profile with invalid UTF-8: exit 2 ({err.strip()})")
    # Columns nobody reads are ignored whatever their names (formats.md §1): a spreadsheet export's
    # trailing comma (an unnamed column) and a repeated note column.
    sheet = write(os.path.join(d, "sheet.csv"), f"{header},note,note,\n0,flux-dev,512,512,20,a,b,\n")
    rc, out, err = run(["--workload", sheet, "--profile", prof, "--policy", "static:1", "--format", "json"])
    check(rc == 0 and strict_json(out)["results"][0]["completed"] == 1, f"unnamed and repeated unknown columns are ignored (got {rc}: {err.strip()!r})")
    rc, _, err = run(["--workload", d])
    check(rc == 2 and "is a directory, not a workload file" in err, f"a directory as the workload: exit 2 saying so ({err.strip()})")
    rc, _, err = run(["--workload", os.path.join(d, "missing.csv")])
    check(rc == 2 and "missing.csv" in err and "cannot open" in err, f"missing file: exit 2 ({err.strip()})")
    # Usage errors.
    usage = [
        (["--policy", ""], "empty policy list"),
        (["--policy", ",,"], "is empty"),
        (["--policy", "rssp,"], "is empty"),
        (["--policy", "static:9"], "out of range"),
        (["--policy", "nope"], "unknown policy 'nope'"),
        (["--policy", "round-based:speed=2"], "unknown parameter 'speed'"),
        (["--gpus", "8", "--gpus-per-node", "3"], "not a multiple of --gpus-per-node 3"),
        (["--gpus", "4", "--gpus-per-node", "8"], "exceeds"),
        (["--gpus", "0"], "--gpus"),
        (["--format", "xml"], "--format"),
        (["--fail-device", "9@1"], "device ID 9 is not in [0, 7]"),
        (["--fail-device", "3@soon"], "SECONDS"),
        (["--straggler", "1@2"], "expected ID@SECONDS:FACTOR"),
        (["--fail-rate", "2"], "--fail-rate"),
        (["--gpu", "a100"], "a100"),
        (["--gpu", "8"], "--gpu names the GPU type, --gpus 8 sets the count"),
        (["--threads", "4"], "--threads requires --cells"),  # it would do nothing: one policy, one thread
        (["--policy", "round-based:round_s=4e-7"], "shorter than the clock's 1 us"),
        (["--no-such-flag"], "no-such-flag"),
        # An empty value is a mistake (an unset shell variable), never a request for the default.
        (["--workload", ""], "--workload: empty value"),
        (["--profile", ""], "--profile: empty value"),
        (["--trace-out", ""], "--trace-out: empty value"),
        (["--gpu", ""], "--gpu: empty value"),
        # NaN passes every range comparison; seeds out of 64 bits must not wrap or clamp.
        (["--jitter", "nan"], "--jitter: expected a finite number"),
        (["--fail-rate", "nan"], "--fail-rate: expected a finite number"),
        (["--seed", "-1"], "--seed: expected an integer"),
        (["--seed", "18446744073709551616"], "--seed: expected an integer"),
        # Integers are decimal: CLI11 alone reads "0x10" as 16 and "010" as 8.
        (["--gpus", "0x10"], "--gpus: expected a decimal integer"),
        (["--gpus", "8.0"], "--gpus: expected a decimal integer"),
        (["--policy", "round-based:round_quantile=1e400"], "1e400 is out of range"),
        (["--policy", "slo-aware:backfill_max_gpus=-1"], "parameter 'backfill_max_gpus': -1 is out of range [0, 1000000000]"),
    ]
    for args, words in usage:
        rc, out, err = run(args)
        check(rc == 2 and err.startswith("paraflex-sim: error: ") and words in err, f"{args}: exit 2 saying {words!r} (got {rc}: {err.strip()!r})")
    # A leading zero is decimal, not octal: --gpus 010 is 10 GPUs, --seed 010 is seed 10.
    rc, out, err = run(["--gpus", "010", "--policy", "static:1", "--format", "json", "--quiet"])
    check(rc == 0 and strict_json(out)["cluster"]["gpus"] == 10, f"--gpus 010: 10 GPUs (got {rc}: {out[:200]!r} {err.strip()!r})")
    seeded = [run(["--seed", s, "--jitter", "0.3", "--policy", "slo-aware", "--format", "json", "--quiet"]) for s in ("010", "10", "8")]
    same = [strip_host_timings(strict_json(o)) if rc == 0 else None for rc, o, _ in seeded]
    check(same[0] is not None and same[0] == same[1] and same[0] != same[2], "--seed 010 runs seed 10, not the octal 8")
    # Requests that each fit the clock but not one after another: exit 2 naming the row it stopped at,
    # never results saturated at the 64-bit limit.
    long_rows = write(os.path.join(d, "long.csv"), "arrival_s,model,height,width,steps,frames\n" + "0,flux-dev,2048,2048,100000,10000\n" * 9)
    rc, out, err = run(["--workload", long_rows, "--profile", prof, "--gpus", "1", "--policy", "static:1", "--format", "json"])
    check(rc == 2 and out == "" and f"{long_rows}:" in err and "clock's limit" in err and "request '" in err,
          f"a run past the clock's limit: exit 2 naming file and request (got {rc}: {err.strip()!r})")
    # static:K where a model's heads do not allow K: refused, naming the model and its degrees.
    p24 = write(os.path.join(d, "p24.csv"), "model,gpu,height,width,frames,degree,step_s,heads\nm24,g,512,512,1,1,0.5,24\nm24,g,512,512,1,2,0.3,24\n")
    w24 = write(os.path.join(d, "w24.csv"), "arrival_s,model,height,width,steps\n0,m24,512,512,20\n")
    rc, out, err = run(["--workload", w24, "--profile", p24, "--policy", "static:1,static:5"])
    check(rc == 2 and "static:5" in err and "model 'm24'" in err and "allows 1..4, 6, 8" in err and out == "",
          f"static:5 with 24 heads: exit 2 naming the model and its degrees (got {rc}: {err.strip()!r})")
    rc, out, err = run(["--workload", w24, "--profile", p24, "--policy", "static:4", "--format", "json"])
    check(rc == 0 and strict_json(out)["results"][0]["dropped"] == 0, "static:4 with 24 heads runs and drops nothing")
    # Without --policy, a static:K the user did not name and the heads forbid is left out, with a note.
    p12 = write(os.path.join(d, "p12.csv"), "model,gpu,height,width,frames,degree,step_s,heads\nm24,g,512,512,1,1,0.5,12\nm24,g,512,512,1,2,0.3,12\n")
    rc, out, err = run(["--workload", w24, "--profile", p12, "--format", "json"])
    names = [r["policy"] for r in strict_json(out)["results"]] if rc == 0 else []
    check(rc == 0 and "static:8" not in names and "static:4" in names and "static:8 is left out" in err,
          f"default list with 12 heads: runs without static:8, saying so (got {rc}: {names} {err.strip()[-200:]!r})")
    # A result that cannot be written is an error, not a silent exit 0.
    if os.path.exists("/dev/full"):
        for args in (["--workload", w24, "--profile", p24, "--policy", "static:1", "--quiet"], ["--list-policies"]):
            with open("/dev/full", "w") as full:
                p = subprocess.run([EXE, *args], stdout=full, stderr=subprocess.PIPE, timeout=60)
            check(p.returncode == 2 and b"cannot write to stdout" in p.stderr, f"{args} > /dev/full: exit 2 ({p.returncode}: {p.stderr!r})")


def strip_host_timings(doc):
    for r in doc["results"]:
        for k in HOST_TIMINGS:
            r["scheduler"].pop(k, None)
    return doc


def group_determinism(d):
    wl = os.path.join(d, "w.csv")
    make_workload(wl, 150, seed=9)
    common = ["--workload", wl, "--format", "json", "--jitter", "0.2", "--fail-rate", "0.02", "--policy",
              "rssp,round-based,slo-aware,throughput-first"]
    args = common + ["--seed", "7"]
    runs = [run(args) for _ in range(2)]
    check(all(rc == 0 for rc, _, _ in runs), "determinism: both runs exit 0")
    a, b = (strict_json(out) for _, out, _ in runs)
    check(strip_host_timings(a) == strip_host_timings(b), "same input and seed: same JSON apart from host timings")
    # Byte for byte, once the three host-timing values are masked.
    mask = lambda s: re.sub(r'("(?:decision_us_mean|decision_us_p99|wall_s)": )[^,\n}]+', r"\1X", s)
    check(mask(runs[0][1]) == mask(runs[1][1]), "same input and seed: byte-identical output apart from host timings")
    rc, out, err = run(common + ["--seed", "8"])
    check(rc == 0 and strip_host_timings(strict_json(out)) != a, f"another seed changes the jittered run ({err[-200:]})")


def group_trace(d):
    wl = os.path.join(d, "w.csv")
    text = ("arrival_s,request_id,model,height,width,steps\n"
            "0,\"quote\"\"d, and comma\",flux-dev,1024,1024,4\n"
            "0.1,caf\u00e9 \u2713,flux-dev,512,512,3\n"
            "0.2,back\\slash,flux-dev,256,256,2\n"
            "0.3,plain,flux-dev,2048,2048,2\n")
    write(wl, text)
    ids = {"quote\"d, and comma", "caf\u00e9 \u2713", "back\\slash", "plain"}
    for gpus, policy in ((8, "slo-aware"), (4, "static:2")):
        trace = os.path.join(d, f"t{gpus}.json")
        rc, out, err = run(["--workload", wl, "--gpus", str(gpus), "--policy", policy, "--trace-out", trace])
        if not check(rc == 0 and os.path.exists(trace), f"--trace-out {policy}: exit 0 and a file ({err.strip()})"):
            continue
        with open(trace, encoding="utf-8") as f:
            doc = strict_json(f.read())
        ev = doc["traceEvents"]
        tracks = {e["tid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "thread_name"}
        check(tracks == {g: f"GPU {g}" for g in range(gpus)}, f"{policy}: one named track per GPU ({sorted(tracks)})")
        slices = [e for e in ev if e.get("ph") == "X"]
        check(len(slices) > 0, f"{policy}: the trace has slices")
        check(all(0 <= e["tid"] < gpus and e["dur"] >= 0 and e["ts"] >= 0 for e in slices), f"{policy}: slices on valid tracks")
        check({e["name"] for e in slices} == ids, f"{policy}: slices named by request ({sorted({e['name'] for e in slices})})")
        check(all(e["args"]["request"] == e["name"] for e in slices), f"{policy}: args.request is the request")
        steps = {}
        for e in slices:
            if e["args"]["task"].startswith("step "):
                steps[e["name"]] = steps.get(e["name"], 0) + 1
        check(min(steps.values()) > 0, f"{policy}: every request has step slices")
        by_track = {}
        for e in slices:
            by_track.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
        overlap = any(a[1] > b[0] for v in by_track.values() for a, b in zip(sorted(v), sorted(v)[1:]))
        check(not overlap, f"{policy}: one slice at a time per GPU")
    # An output that is an input (or the other output) is refused, and the input is left as it was.
    for args, what in ((["--trace-out", wl], "--trace-out '%s' is the --workload file" % wl),
                       (["--trace-out", os.path.join(d, ".", "w.csv")], "is the --workload file"),
                       (["--bound", "--bound-out", wl], "--bound-out '%s' is the --workload file" % wl),
                       (["--bound", "--trace-out", os.path.join(d, "same.json"), "--bound-out", os.path.join(d, "same.json")],
                        "is the --bound-out file")):
        rc, out, err = run(["--workload", wl, "--gpus", "4", "--policy", "static:2"] + args)
        with open(wl, encoding="utf-8") as f:
            intact = f.read() == text
        check(rc == 2 and what in err and intact, f"{' '.join(args)}: exit 2, '{what}', the workload intact (got {rc}: {err.strip()!r})")
    # A trace that cannot be written fails before the run (no line about a finished run), exit 2.
    missing = os.path.join(d, "no", "t.json")
    rc, out, err = run(["--workload", wl, "--gpus", "4", "--policy", "static:2", "--trace-out", missing])
    check(rc == 2 and f"--trace-out '{missing}': cannot open for writing" in err and "decisions" not in err and out == "",
          f"--trace-out to a missing folder: exit 2 before the run (got {rc}: {err.strip()!r})")

    check_bound_out(d)


def check_bound_out(d):
    """--bound-out: the share of each request with a deadline that the fluid LP serves, in workload order."""
    wl = os.path.join(d, "b.csv")
    write(wl, "arrival_s,request_id,model,height,width,steps,slo_s\n"
              "0,\"a, quoted\",flux-dev,1024,1024,20,30\n"
              "0,no deadline,flux-dev,256,256,5,\n"
              "0.5,impossible,flux-dev,2048,2048,50,1\n"
              + "".join(f"1,r{i},flux-dev,2048,2048,50,120\n" for i in range(6)))
    out_csv = os.path.join(d, "served.csv")
    rc, out, err = run(["--workload", wl, "--gpus", "4", "--policy", "rssp", "--bound", "--bound-out", out_csv, "--format", "json"])
    if "without COIN-OR Clp" in err:  # no LP, nothing to write: refused, not skipped silently
        check(rc == 2 and "--bound-out needs the fluid LP" in err, f"--bound-out without Clp: exit 2 and why ({err.strip()})")
        return
    if not check(rc == 0 and os.path.exists(out_csv), f"--bound-out: exit 0 and a file ({err.strip()[-300:]})"):
        return
    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    check([r["request_id"] for r in rows] == ["a, quoted", "impossible"] + [f"r{i}" for i in range(6)],
          f"--bound-out: one row per request with a deadline, in workload order, ids as written ({[r['request_id'] for r in rows]})")
    served = {r["request_id"]: float(r["served"]) for r in rows}
    check(all(0 <= v <= 1 for v in served.values()), "--bound-out: every share in [0, 1]")
    check(served["impossible"] == 0, "--bound-out: a request that cannot meet its deadline alone is served 0")
    check(rows[0]["arrival_s"] == "0.000000" and rows[0]["deadline_s"] == "30.000000", f"--bound-out: arrival and deadline ({rows[0]})")
    bound = strict_json(out)["results"][0]["upper_bound"]["slo_attainment"]
    # The bound's count is the LP's value rounded down (or less): never above what the shares add up to.
    check(bound * len(rows) <= sum(served.values()) + 1e-6, f"--bound-out: shares add up to at least the bound's count ({bound} x {len(rows)})")
    check(sum(served.values()) < len(rows) - 1, "--bound-out: four GPUs cannot serve all six large requests in full")
    rc, out, err = run(["--workload", wl, "--gpus", "4", "--policy", "rssp", "--bound-out", out_csv])
    check(rc == 2 and "--bound-out requires --bound" in err, f"--bound-out without --bound: exit 2 ({err.strip()})")
    rc, out, err = run(["--workload", wl, "--gpus", "4", "--policy", "rssp", "--bound", "--bound-out", os.path.join(d, "no", "x.csv")])
    check(rc == 2 and "cannot open for writing" in err, f"--bound-out to a missing folder: exit 2 ({err.strip()})")
    # --priority-bound: one GPU; the high-priority request (16.8 s of steps) and any short one (4.2 s)
    # do not both fit in 20 s, the three short ones do. Serving the high one leaves 1 of 4 on time.
    pb = os.path.join(d, "p.csv")
    write(pb, "arrival_s,request_id,model,height,width,steps,slo_s,priority\n0,long,flux-dev,1024,1024,20,20,1\n"
              + "".join(f"0,s{i},flux-dev,1024,1024,5,20,0\n" for i in range(3)))
    rc, out, err = run(["--workload", pb, "--gpus", "1", "--policy", "slo-aware,static:1", "--bound", "--priority-bound", "--format", "json"])
    if check(rc == 0, f"--priority-bound: exit 0 ({err.strip()[-300:]})"):
        for r in strict_json(out)["results"]:
            ub = r["upper_bound"]
            check(ub["slo_attainment"] == 0.75, f"{r['policy']}: the bound serves the three short requests ({ub})")
            check(r["slo_attainment"] == 0.25 and ub.get("given_priorities") == 0.25,
                  f"{r['policy']}: served the high-priority request, so 1 of 4 is all it could have ({r['slo_attainment']}, {ub})")
    rc, out, err = run(["--workload", wl, "--gpus", "4", "--policy", "rssp", "--bound", "--priority-bound", "--format", "json"])
    check(rc == 0 and "given_priorities" not in strict_json(out)["results"][0]["upper_bound"] and "one priority level" in err,
          f"--priority-bound with one priority level: a note, no figure ({err.strip()[-200:]})")
    rc, out, err = run(["--workload", pb, "--gpus", "1", "--policy", "rssp", "--priority-bound"])
    check(rc == 2 and "--priority-bound requires --bound" in err, f"--priority-bound without --bound: exit 2 ({err.strip()})")
    rc, out, err = run(["--workload", pb, "--gpus", "1", "--policy", "rssp", "--bound", "--priority-bound"])
    check(rc == 0 and "prio bound %" in out and out.count(" 25.0 ") >= 1, f"--priority-bound: the table's prio bound column ({out})")

def group_faults(d):
    wl = os.path.join(d, "w.csv")
    make_workload(wl, 100, seed=3)
    base = ["--workload", wl, "--format", "json", "--policy", "static:2,rssp,slo-aware,throughput-first"]
    rc, out, err = run(base)
    clean = strict_json(out)
    rc, out, err = run(base + ["--fail-device", "3@20", "--fail-device", "6@40.5", "--straggler", "5@2:3", "--fail-rate", "0.05",
                               "--seed", "4"])
    check(rc == 0, f"fault flags: exit 0 ({err[-300:]})")
    doc = strict_json(out)
    check_result_shape(doc, "faults")
    strip_host_timings(clean)
    strip_host_timings(doc)
    for a, b in zip(clean["results"], doc["results"]):
        check(a != b, f"{a['policy']}: faults change the run")
    # A task runs at its slowest device's pace: two stragglers (x2, x3) on static:2's group slow
    # each request by 3, not by their product 6 (which also wrapped around for large factors).
    one = write(os.path.join(d, "one.csv"), "arrival_s,model,height,width,steps\n0,flux-dev,1024,1024,20\n")
    lat = {}
    for extra in ([], ["--straggler", "0@0:2", "--straggler", "1@0:3"]):
        rc, out, err = run(["--workload", one, "--gpus", "2", "--policy", "static:2", "--format", "json", "--quiet"] + extra)
        lat[len(extra)] = strict_json(out)["results"][0]["latency_s"]["max"] if rc == 0 else None
    check(lat[0] and lat[4] and abs(lat[4] - 3 * lat[0]) < 1e-3, f"stragglers x2 and x3 on one group: 3x the latency ({lat})")
    # Every device lost at once: nothing can run, every request ends with a reason.
    lose_all = [x for g in range(8) for x in ("--fail-device", f"{g}@0")]
    rc, out, err = run(["--workload", wl, "--format", "json", "--policy", "rssp,slo-aware"] + lose_all)
    check(rc == 0, f"all devices lost: exit 0 ({err[-300:]})")
    for r in strict_json(out)["results"]:
        check(r["dropped"] == 100 and r["dropped_by_reason"] == {"device_lost_no_capacity": 100},
              f"{r['policy']}: all devices lost: every request dropped as device_lost_no_capacity ({r['dropped_by_reason']})")


def group_list(d):
    rc, out, err = run(["--list-policies"])
    check(rc == 0, f"--list-policies: exit 0 ({err})")
    lines = out.splitlines()
    names = [line.split()[0] for line in lines if line.strip() and not line.startswith(" ")]
    check(names == ["edf-best-fit", "round-based", "rssp", "slo-aware", "static", "throughput-first"], f"--list-policies names {names}")
    check(all(len(line.split(None, 1)) == 2 for line in lines if not line.startswith(" ")), "--list-policies: each name has a summary")
    # Under each name, an indented KEY=DEFAULT per parameter, and what it accepts; every default runs.
    params, current = {}, None
    for line in lines:
        if not line.startswith(" "):
            current = line.split()[0]
            params[current] = []
        elif current:
            params[current].append(line.split()[0])
    check(params.get("rssp") == [] and params.get("edf-best-fit") == [], f"--list-policies: rssp and edf-best-fit take no parameters ({params})")
    check(params.get("static") == ["degree=required"], f"--list-policies: static's degree is required ({params.get('static')})")
    check("exact_limit=4096" in params.get("slo-aware", []) and "capacity=0.9" in params.get("slo-aware", []),
          f"--list-policies: slo-aware's defaults ({params.get('slo-aware')})")
    check("[1, 8]" in out and "relaxed|strict|off" in out, "--list-policies: ranges and choices")
    wl = os.path.join(d, "w.csv")
    make_workload(wl, 30, seed=2)
    for name, settings in params.items():
        for setting in settings:
            if setting.endswith("=required"):
                continue
            rc, _, err = run(["--workload", wl, "--policy", f"{name}:{setting}", "--quiet", "--format", "json"])
            check(rc == 0, f"--policy {name}:{setting} (a listed default) runs (got {rc}: {err.strip()[-200:]})")
    rc, out, err = run(["--policy", "round-based:speed=2"])
    check(rc == 2 and "(it takes: round_steps, round_s," in err, f"an unknown parameter: the error names the known ones ({err.strip()})")


def group_scale(d):
    # issue 12: 65,536 GPUs on a few requests printed 524,000 extrapolation notes; one per cause now.
    wl = os.path.join(d, "w.csv")
    make_workload(wl, 12, seed=1)
    rc, out, err = run(["--workload", wl, "--gpus", "65536", "--policy", "static:1,rssp", "--format", "json"])
    check(rc == 0, f"--gpus 65536: exit 0 ({err[-300:]})")
    notes = [l for l in err.splitlines() if "note:" in l]
    check(0 < len(notes) <= 5, f"--gpus 65536: a few notes, one per cause ({len(notes)} lines, {len(err)} bytes)")
    check(any("more (shape, degree) pairs" in n for n in notes), "--gpus 65536: a note counts the pairs it stands for")
    check(strict_json(out)["cluster"]["gpus"] == 65536, "--gpus 65536 in the JSON")
    # --max-degree K: no request on more than K GPUs (formats §6); K at or above --gpus changes nothing.
    base = ["--workload", wl, "--gpus", "8", "--format", "json", "--quiet", "--policy", "slo-aware,round-based"]
    mask = lambda s: re.sub(r'("(?:decision_us_mean|decision_us_p99|wall_s)": )[^,\n}]+', r"\1X", s)
    rc, plain, err = run(base)
    rc8, capped8, err8 = run(base + ["--max-degree", "8"])
    check(rc == 0 and rc8 == 0 and "max_degree" not in strict_json(plain)["cluster"], f"without --max-degree: no max_degree key ({err[-200:]})")
    if rc == 0 and rc8 == 0:
        a, b = strict_json(plain), strict_json(capped8)
        check(b["cluster"].get("max_degree") == 8, f"--max-degree 8: in the JSON cluster ({b['cluster']})")
        del b["cluster"]["max_degree"]
        check(mask(json.dumps(a)) == mask(json.dumps(b)), "--max-degree 8 on 8 GPUs: the same run as without it")
    rc, out, err = run(["--max-degree", "2", "--policy", "slo-aware"])
    check(rc == 0 and "groups of at most 2" in out, f"--max-degree 2: the table says so (got {rc}: {err[-200:]})")
    rc, out, err = run(["--max-degree", "4", "--format", "json"])
    names = [r["policy"] for r in strict_json(out)["results"]] if rc == 0 else []
    check(rc == 0 and "static:8" not in names and "static:4" in names and "static:8 is left out" in err,
          f"--max-degree 4, default list: runs without static:8, saying so (got {rc}: {names} {err.strip()[-200:]!r})")
    for args, says in ((["--max-degree", "4", "--policy", "static:8"], "degree cap"), (["--max-degree", "0"], "--max-degree"),
                       (["--max-degree", "x"], "--max-degree"), (["--max-degree", "70000"], "--max-degree")):
        rc, out, err = run(args + ["--quiet"])
        check(rc == 2 and says in err and out == "", f"{' '.join(args)}: exit 2 saying {says!r} (got {rc}: {err.strip()[-300:]})")
    # --decision-gap-ms G: each policy called at most once per G ms (formats §6); 0 is the run without it.
    rc0, gap0, err0 = run(base + ["--decision-gap-ms", "0"])
    check(rc0 == 0 and mask(gap0) == mask(plain), f"--decision-gap-ms 0: the run without the flag, byte for byte ({err0[-200:]})")
    rc, gapped, err = run(base + ["--decision-gap-ms", "250"])
    if rc == 0 and rc0 == 0:
        a, b = strict_json(plain), strict_json(gapped)
        check(b["cluster"].get("decision_gap_ms") == 250, f"--decision-gap-ms 250: in the JSON cluster ({b['cluster']})")
        # slo-aware decides at every step boundary: step ends within 250 ms of a call share the next one.
        check(b["results"][0]["scheduler"]["decisions"] < a["results"][0]["scheduler"]["decisions"], "--decision-gap-ms 250: slo-aware decides less often")
        check(all(r["completed"] + r["dropped"] == r["requests"] for r in b["results"]), "--decision-gap-ms 250: every request ends")
    else:
        check(False, f"--decision-gap-ms 250: exit 0 (got {rc}: {err[-200:]})")
    rc, out, err = run(["--decision-gap-ms", "2.5", "--policy", "slo-aware"])
    check(rc == 0 and "decisions at least 2.5 ms apart" in out, f"--decision-gap-ms 2.5: the table says so (got {rc}: {err[-200:]})")
    for args, says in ((["--decision-gap-ms", "-1"], "--decision-gap-ms"), (["--decision-gap-ms", "nan"], "--decision-gap-ms"),
                       (["--decision-gap-ms", "1e9"], "--decision-gap-ms"), (["--decision-gap-ms", "0.0001"], "rounds to 0 microseconds")):
        rc, out, err = run(args + ["--quiet"])
        check(rc == 2 and says in err and out == "", f"{' '.join(args)}: exit 2 saying {says!r} (got {rc}: {err.strip()[-300:]})")


def group_cells(d):
    # --cells C: C independent cells, one policy each, requests round robin in arrival order (formats §6).
    wl = os.path.join(d, "w.csv")
    make_workload(wl, 120, seed=4)
    base = ["--workload", wl, "--gpus", "8", "--gpus-per-node", "2", "--format", "json", "--quiet", "--seed", "3", "--jitter", "0.1",
            "--fail-rate", "0.02", "--fail-device", "5@40", "--policy", "slo-aware,round-based,static:2"]
    rc, plain, err = run(base)
    check(rc == 0, f"without --cells: exit 0 ({err[-300:]})")
    rc, one, err = run(base + ["--cells", "1"])
    mask = lambda s: re.sub(r'("(?:decision_us_mean|decision_us_p99|wall_s)": )[^,\n}]+', r"\1X", s)
    check(rc == 0 and mask(one) == mask(plain), f"--cells 1: the run without the flag, byte for byte ({err[-300:]})")
    # Several threads in a statically linked tool: every exit path must survive them (a missing weak
    # pthread symbol once crashed the process at exit).
    outs = {}
    for threads in ("1", "2", "4"):
        rc, out, err = run(base + ["--cells", "4", "--threads", threads])
        check(rc == 0, f"--cells 4 --threads {threads}: exit 0 (got {rc}: {err[-300:]})")
        outs[threads] = out if rc == 0 else None
    check(outs["1"] is not None and outs["1"] and mask(outs["1"]) == mask(outs["2"]) == mask(outs["4"]),
          "--cells 4: the same output whatever --threads")
    if outs["2"]:
        doc = strict_json(outs["2"])
        check_result_shape(doc, "--cells 4")
        check(doc["cluster"] == {"gpus": 8, "gpus_per_node": 2, "gpu": "l20-inferred", "cells": 4}, f"--cells 4: cluster {doc['cluster']}")
        for r in doc["results"]:
            check(r["completed"] + r["dropped"] == 120, f"--cells 4: {r['policy']}: every request ends once")
        check("cells" not in strict_json(plain)["cluster"], "without --cells: no cells key")
    # --trace-out over cells: every cell's tasks in one file, on the cell's own GPU tracks; the same
    # file whatever --threads; --cells 1 traces what the run without the flag traces.
    traces = {}
    for name, extra in (("plain", []), ("one", ["--cells", "1"]), ("t1", ["--cells", "4", "--threads", "1"]), ("t2", ["--cells", "4", "--threads", "2"])):
        path = os.path.join(d, f"trace_{name}.json")
        rc, out, err = run(base[:-1] + ["slo-aware", "--trace-out", path] + extra)
        check(rc == 0 and os.path.exists(path), f"--trace-out {' '.join(extra)}: exit 0 and a file (got {rc}: {err[-300:]})")
        traces[name] = open(path, "rb").read() if rc == 0 and os.path.exists(path) else None
    check(traces["one"] is not None and traces["one"] == traces["plain"], "--trace-out --cells 1: the trace without the flag, byte for byte")
    check(traces["t1"] is not None and traces["t1"] == traces["t2"], "--trace-out --cells 4: the same file whatever --threads")
    if traces["t2"]:
        cell_of = {}  # request id -> cells whose GPUs its slices are on (cells of 2 GPUs)
        gpus = set()
        for e in json.loads(traces["t2"])["traceEvents"]:
            if e["ph"] == "X":
                gpus.add(e["tid"])
                cell_of.setdefault(e["args"]["request"], set()).add(e["tid"] // 2)
        check(gpus == set(range(8)), f"--trace-out --cells 4: slices on all 8 GPUs (got {sorted(gpus)})")
        check(cell_of and all(len(c) == 1 for c in cell_of.values()), "--trace-out --cells 4: each request's slices on one cell's GPUs")
        check(len({next(iter(c)) for c in cell_of.values()}) == 4, "--trace-out --cells 4: requests in every cell")
    rc, out, err = run(["--cells", "2"])
    check(rc == 0 and "8 cells" not in out and "2 cells of 4" in out, f"--cells 2 on the default run: the table says so (got {rc}: {err[-200:]})")
    for args, says in ((["--cells", "3"], "do not split into 3 equal cells"),
                       (["--gpus", "8", "--gpus-per-node", "4", "--cells", "4", "--policy", "slo-aware"], None),
                       (["--gpus", "12", "--gpus-per-node", "6", "--cells", "3"], "cut nodes of 6 unevenly"),
                       (["--cells", "0"], "--cells"),
                       (["--cells", "4", "--policy", "static:4"], "cells of 2 GPUs")):
        rc, out, err = run(args + ["--quiet"])
        if says is None:
            check(rc == 0, f"{' '.join(args)}: a node of 4 in two cells of 2 runs ({err.strip()[-200:]})")
        else:
            check(rc == 2 and says in err and "error" in err and out == "", f"{' '.join(args)}: exit 2 saying {says!r} (got {rc}: {err.strip()[-300:]})")


GROUPS = {"default": group_default, "json": group_json, "bad_input": group_bad_input, "determinism": group_determinism,
          "trace": group_trace, "faults": group_faults, "list": group_list, "scale": group_scale, "cells": group_cells}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in GROUPS:
        sys.exit(f"usage: {sys.argv[0]} PARAFLEX_SIM DATA_DIR {{{'|'.join(GROUPS)}}}")
    EXE = os.path.abspath(sys.argv[1])
    PROFILE = os.path.join(sys.argv[2], "profiles", "step_latency.csv")
    with tempfile.TemporaryDirectory(prefix="paraflex-cli-") as tmp:
        GROUPS[sys.argv[3]](tmp)
    finish(sys.argv[3])
