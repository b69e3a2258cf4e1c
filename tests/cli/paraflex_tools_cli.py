#!/usr/bin/python3
"""Command-line tests of paraflex-workload and paraflex-tune, run by ctest in every build.

    paraflex_tools_cli.py PATH/TO/paraflex-workload PATH/TO/paraflex-tune PATH/TO/paraflex-sim PATH/TO/bench/data GROUP

GROUP is one of the names in GROUPS below (ctest runs each as its own test). Standard library only.
Each check is a sentence that says what must hold; it prints FAIL: ... when it does not, and the script
exits 1 if any failed, 0 otherwise. Bad input must give exit status 2 and a message that names the flag
(and the file and line, for a file) - never a crash, a hang, or a silent default.
"""
import csv
import io
import json
import os
import random
import sys
import tempfile

from cli_checks import check, finish, run_command, write  # same directory


def run(exe, args, timeout=120, stdout=None):
    return run_command([exe, *args], timeout, stdout)


def gen(args, **kw):
    return run(WORKLOAD, args, **kw)


def tune(args, **kw):
    return run(TUNE, args, **kw)


def rows_of(text):
    """The data rows of a workload CSV (comment lines dropped), as dicts."""
    lines = [l for l in text.splitlines(keepends=True) if not l.startswith("#")]
    return list(csv.DictReader(io.StringIO("".join(lines))))


def expect_usage_error(what, rc, out, err, tool, words, stdout_empty=True):
    """Exit 2, one error line that starts with 'TOOL: error: ' and holds every word of `words`."""
    check(rc == 2, f"{what}: exit status 2 (got {rc}; stderr {err.strip()[-300:]!r})")
    check(err.startswith(f"{tool}: error: "), f"{what}: stderr starts with '{tool}: error: ' (got {err.strip()[:300]!r})")
    for w in words:
        check(w in err, f"{what}: the message contains {w!r} (got {err.strip()[:400]!r})")
    if stdout_empty:
        check(out == "", f"{what}: nothing on stdout (got {out[:200]!r})")


# ------------------------------------------------------------------------------------------------
# paraflex-workload


def group_workload(d):
    # A default run: 300 Poisson requests, a comment line with the flags, then the formats §1 columns.
    rc, out, err = gen([])
    check(rc == 0, f"a run without flags exits 0 ({err.strip()[-300:]})")
    check(out.startswith("# paraflex-workload"), "the output starts with a comment line naming the tool and its flags")
    rows = rows_of(out)
    check(len(rows) == 300, f"a run without flags writes the default 300 requests (got {len(rows)})")
    check([r["request_id"] for r in rows] == [str(i) for i in range(1, 301)], "request ids are 1..n in arrival order")
    check(all(float(a["arrival_s"]) <= float(b["arrival_s"]) for a, b in zip(rows, rows[1:])), "arrivals are sorted")
    check("wrote 300 requests to stdout" in err, f"stderr says how many requests were written ({err.strip()!r})")

    # Determinism: same flags, same bytes; another seed, another workload; -o FILE = stdout.
    args = ["--requests", "200", "--mix", "skewed", "--slo-rule", "alpha:3", "--load", "0.9", "--seed", "7",
            "--profile", PROFILE]
    rc1, out1, _ = gen(args)
    rc2, out2, _ = gen(args)
    check(rc1 == 0 and out1 == out2, "the same flags write byte-identical output")
    _, out3, _ = gen(args[:-3] + ["8", "--profile", PROFILE])
    check(out3 != out1, "another seed writes another workload")
    path = os.path.join(d, "w.csv")
    rc, _, err = gen(args + ["-o", path])
    check(rc == 0 and open(path, newline="").read() == out1, "-o FILE writes the same bytes as stdout (the comment leaves -o out)")

    # The generated file is accepted by paraflex-sim and has every request.
    rc, sim_out, err = run(SIM, ["--workload", path, "--profile", PROFILE, "--policy", "rssp", "--format", "json", "--quiet"])
    check(rc == 0, f"paraflex-sim accepts the generated file ({err.strip()[-300:]})")
    try:
        n = json.loads(sim_out)["workload"]["requests"]
    except (ValueError, KeyError) as e:
        n = f"no JSON ({e})"
    check(n == 200, f"paraflex-sim reads all 200 generated requests (got {n})")

    # --load: the offered load of the file (formats §5) is the target.
    step1 = {}
    with open(PROFILE, newline="") as f:
        for r in csv.DictReader(f):
            if r["model"] == "flux-dev" and r["gpu"] == "l20-inferred" and r["degree"] == "1" and r["frames"] == "1":
                step1[(int(r["height"]), int(r["width"]))] = float(r["step_s"])
    rows = rows_of(out1)
    work = sum(int(r["steps"]) * step1[(int(r["height"]), int(r["width"]))] for r in rows)
    times = [float(r["arrival_s"]) for r in rows]
    load = work / (8 * (max(times) - min(times)))
    check(abs(load - 0.9) < 1e-3, f"--load 0.9 --gpus 8 (default) gives an offered load of 0.9 (got {load:.6f})")
    check(all(float(r["slo_s"]) > 0 for r in rows), "--slo-rule alpha:3 gives every request an SLO")

    # Fixed SLOs are TetriServe's 1.5/2/3/5 s by resolution.
    rc, out, err = gen(["--requests", "100", "--slo-rule", "fixed", "--seed", "3"])
    base = {"256": 1.5, "512": 2.0, "1024": 3.0, "2048": 5.0}
    check(rc == 0 and all(abs(float(r["slo_s"]) - base[r["height"]]) < 1e-9 for r in rows_of(out)),
          "--slo-rule fixed gives 1.5/2/3/5 s SLOs by resolution")

    # Other arrival processes.
    trace = write(os.path.join(d, "trace.txt"), "10\n12\n15\n15.5\n20\n")
    rc, out, err = gen(["--arrivals", "trace:" + trace])
    check(rc == 0 and [float(r["arrival_s"]) for r in rows_of(out)] == [0, 2, 5, 5.5, 10],
          f"--arrivals trace:FILE replays every arrival, shifted to start at 0 ({err.strip()[-200:]})")
    # A CSV service log (Alibaba GenAI-style: gmt_create, steps per request, an empty cell): arrivals and
    # each request's steps from it, the empty cell filled as asked and said so.
    log = write(os.path.join(d, "service.csv"), "gmt_create,status,num_inference_steps\n2024-11-15 16:57:50,SUCCEED,30.0\n"
                "2024-11-15 16:57:40,SUCCEED,40.0\n2024-11-15 16:57:45,PENDING,\n")
    rc, out, err = gen(["--arrivals", "trace:" + log, "--steps", "trace:num_inference_steps:25"])
    rows = rows_of(out)
    check(rc == 0 and [(float(r["arrival_s"]), int(r["steps"])) for r in rows] == [(0, 40), (5, 25), (10, 30)],
          f"--steps trace:COLUMN:N takes each request's steps from the trace, N for an empty cell ({err.strip()[-200:]})")
    check("1 row of" in err and "has no num_inference_steps" in err, f"the filled cells are reported ({err.strip()[-200:]})")
    sent = write(os.path.join(d, "sent.csv"), "id,Sent_At\n1,7.5\n2,2.5\n")
    rc, out, err = gen(["--arrivals", "trace:" + sent, "--trace-time", "sent_at"])
    check(rc == 0 and [float(r["arrival_s"]) for r in rows_of(out)] == [0, 5],
          f"--trace-time names the time column of a CSV trace, in any case ({err.strip()[-200:]})")
    rc, out, err = gen(["--arrivals", "phases:100@0.5,100@0", "--seed", "2"])
    ts = [float(r["arrival_s"]) for r in rows_of(out)]
    check(rc == 0 and ts and max(ts) < 100, "--arrivals phases: no arrival in a phase of rate 0")

    # A CR in a flag (a script saved with CRLF line ends) must not break the comment line.
    crlf = os.path.join(d, "crlf.csv")
    rc, _, err = gen(["--steps", "20\r", "--requests", "5", "-o", crlf])
    check(rc == 0, f"--steps '20<CR>' is accepted ({err.strip()})")
    rc, _, err = run(SIM, ["--workload", crlf, "--policy", "rssp", "--quiet"])
    check(rc == 0, f"paraflex-sim accepts a file generated with a CR in a flag ({err.strip()[-300:]})")

    # --quiet: nothing on stderr.
    rc, out, err = gen(["--requests", "5", "--quiet"])
    check(rc == 0 and err == "", f"--quiet writes nothing on stderr (got {err!r})")


def group_workload_large(d):
    # 300,000 rows: written in blocks, the header once, every row, and the same bytes to a file and stdout.
    n = 150_000
    args = ["--requests", str(n), "--steps", "20,50", "--slo-rule", "fixed:2", "--seed", "11", "--quiet"]
    path = os.path.join(d, "big.csv")
    rc, _, err = gen(args + ["-o", path], timeout=60)
    if not check(rc == 0 and err == "", f"{n} requests: exit 0, quiet ({err.strip()[-300:]})"):
        return
    text = open(path, newline="").read()
    check(text.count("arrival_s,request_id") == 1, "a large output has exactly one header row")
    rows = rows_of(text)
    check(len(rows) == n, f"a large output has every row (got {len(rows)})")
    check([r["request_id"] for r in rows[65530:65540]] == [str(i) for i in range(65531, 65541)],
          "rows run on across a block boundary without a gap or a repeat")
    rc, out, _ = gen(args, timeout=60)
    check(rc == 0 and out == text, "a large output is the same bytes on stdout and in a file")
    if os.path.exists("/dev/full"):
        rc, out, err = gen(["--requests", "10", "-o", "/dev/full"])
        expect_usage_error("-o /dev/full", rc, out, err, "paraflex-workload", ["--output", "/dev/full", "cannot write"])
        rc, out, err = gen(["--requests", "10"], stdout=open("/dev/full", "wb"))
        check(rc == 2 and "cannot write to stdout" in err, f"a full stdout is exit 2, not success ({rc}, {err.strip()!r})")


def group_workload_bad_input(d):
    W = "paraflex-workload"
    trace = write(os.path.join(d, "trace.txt"), "1\n2\n3\n")
    bad_trace = write(os.path.join(d, "bad_trace.txt"), "1\n2\nsoon\n")
    log = write(os.path.join(d, "service.csv"), "gmt_create,status,num_inference_steps\n2024-11-15 16:57:50,SUCCEED,30.0\n"
                "2024-11-15 16:57:45,PENDING,\n")
    bad_profile = write(os.path.join(d, "bad_profile.csv"), "model,gpu,height,width,frames,degree,step_s\nflux-dev,h100,256,256,1,1,fast\n")
    os.mkdir(os.path.join(d, "adir"))
    cases = [
        # what, flags, words the message must hold
        ("an empty --load", ["--load", ""], ["--load", "empty value"]),
        ("an empty --rate", ["--rate", ""], ["--rate", "empty value"]),
        ("an empty --requests", ["--requests", ""], ["--requests"]),
        ("an empty --priority-weights", ["--priority-weights", ""], ["--priority-weights", "empty value"]),
        ("an empty --model", ["--model", ""], ["--model"]),
        ("an empty --output", ["-o", ""], ["--output", "empty value"]),
        ("--requests -1", ["--requests", "-1"], ["--requests", "'-1'"]),
        ("--requests 0", ["--requests", "0"], ["--requests", ">= 1"]),
        ("--requests not a number", ["--requests", "many"], ["--requests"]),
        ("--requests beyond the generator's limit", ["--requests", "50000001"], ["--requests", "more than"]),
        ("--rate 0", ["--rate", "0"], ["--rate", "> 0"]),
        ("--rate nan", ["--rate", "nan"], ["--rate"]),
        ("--rate 0 for a trace", ["--arrivals", "trace:" + trace, "--rate", "0"], ["--rate", "> 0"]),
        ("--rate with --load", ["--rate", "0.5", "--load", "1"], ["--rate", "--load"]),
        ("--duration for phases", ["--arrivals", "phases:10@1", "--duration", "5"], ["--duration", "poisson"]),
        ("a negative --duration", ["--duration", "-5"], ["--duration", "> 0"]),
        ("--duration 0", ["--duration", "0"], ["--duration", "> 0"]),
        ("--requests in hexadecimal", ["--requests", "0x10"], ["--requests", "'0x10'"]),
        ("--load 0", ["--load", "0"], ["--load", "> 0"]),
        ("--load inf", ["--load", "inf"], ["--load"]),
        ("--gpus 0", ["--gpus", "0", "--load", "1"], ["--gpus"]),
        ("--gpus without a use", ["--gpus", "4"], ["--gpus", "--load"]),
        ("--gpu without a use", ["--gpu", "h20"], ["--gpu", "--load"]),
        ("--seed -1", ["--seed", "-1"], ["--seed", "'-1'"]),
        ("an unknown --mix", ["--mix", "Skewed"], ["--mix", "'Skewed'"]),
        ("--weights without --mix weighted", ["--weights", "1,1,1,1"], ["--weights", "--mix weighted"]),
        ("too few --weights", ["--mix", "weighted", "--weights", "1,2"], ["--weights", "one weight per shape"]),
        ("a negative weight", ["--mix", "weighted", "--weights", "1,-1,1,1"], ["--weights", "weight 2 of 4", ">= 0"]),
        ("every weight 0", ["--mix", "weighted", "--weights", "0,0,0,0"], ["--weights", "every weight is 0"]),
        ("an empty shape", ["--shapes", "256,,512"], ["--shapes", "empty shape"]),
        ("a shape without a width", ["--shapes", "256,1024x"], ["--shapes '1024x'"]),
        ("a shape of size 0", ["--shapes", "0"], ["--shapes '0'", "> 0"]),
        ("a shape with four sizes", ["--shapes", "2x2x2x2"], ["--shapes '2x2x2x2'"]),
        ("a shape with an empty model", ["--shapes", ":256"], ["--shapes ':256'", "empty model"]),
        ("a model name with blanks", ["--model", " flux-dev"], ["--model", "blank"]),
        ("a model name with a newline", ["--model", "flux\ndev"], ["--model", "control character"]),
        ("zero steps", ["--steps", "0"], ["--steps", "> 0"]),
        ("more steps than a workload may have", ["--steps", "100001"], ["--steps", "at most 100000"]),
        ("a trace's steps above the limit", ["--arrivals", "trace:" + write(os.path.join(d, "big_steps.csv"), "arrival_s,steps\n0,10\n1,1e6\n"),
                                             "--steps", "trace:steps"], ["big_steps.csv:3:", "from 1 to 100000"]),
        ("steps that are not a number", ["--steps", "20,lots"], ["--steps", "'lots'"]),
        ("an unknown SLO rule", ["--slo-rule", "tight"], ["--slo-rule", "'tight'"]),
        ("fixed: without a scale", ["--slo-rule", "fixed:"], ["--slo-rule", "fixed:"]),
        ("alpha without a multiple", ["--slo-rule", "alpha"], ["--slo-rule", "alpha:3"]),
        ("a zero SLO scale", ["--slo-rule", "fixed:0"], ["--slo-rule", "> 0"]),
        ("--base-slo without fixed", ["--base-slo", "1,2,3,4"], ["--base-slo", "fixed"]),
        ("a zero base SLO", ["--slo-rule", "fixed", "--base-slo", "0,2,3,4"], ["--base-slo", "value 1 of 4", "> 0"]),
        ("a shape without a default base SLO", ["--slo-rule", "fixed", "--shapes", "300"], ["--base-slo", "300px"]),
        ("an unknown --labels", ["--labels", "tiers"], ["--labels", "'tiers'"]),
        ("a negative priority weight", ["--priority-weights", "1,-1"], ["--priority-weights"]),
        ("an unknown arrival process", ["--arrivals", "uniform"], ["--arrivals", "'uniform'"]),
        ("a phase without a rate", ["--arrivals", "phases:10"], ["--arrivals", "DURATION@RATE"]),
        ("phases of rate 0 only", ["--arrivals", "phases:10@0"], ["--arrivals", "rate 0"]),
        ("trace: without a file", ["--arrivals", "trace:"], ["--arrivals", "trace:FILE"]),
        ("a missing trace file", ["--arrivals", "trace:" + os.path.join(d, "no.txt")], [os.path.join(d, "no.txt"), "cannot open"]),
        ("a directory as trace", ["--arrivals", "trace:" + os.path.join(d, "adir")], ["adir", "directory"]),
        ("a bad trace line", ["--arrivals", "trace:" + bad_trace], [bad_trace + ":3:", "'soon'"]),
        ("more requests than the trace has", ["--arrivals", "trace:" + trace, "--requests", "5"], ["--requests", "only 3"]),
        ("--steps trace: without a trace", ["--steps", "trace:steps"], ["--steps", "--arrivals trace:FILE"]),
        ("--steps trace: without a column", ["--arrivals", "trace:" + log, "--steps", "trace:"], ["--steps", "trace:COLUMN"]),
        ("--steps trace: for a plain trace", ["--arrivals", "trace:" + trace, "--steps", "trace:steps"], ["steps", "only in a CSV trace"]),
        ("--steps trace: with an empty cell", ["--arrivals", "trace:" + log, "--steps", "trace:num_inference_steps"],
         [log + ":3:", "num_inference_steps", "whole number of steps"]),
        ("--steps trace: with 0 for empty cells", ["--arrivals", "trace:" + log, "--steps", "trace:num_inference_steps:0"], ["--steps", ">= 1"]),
        ("--steps trace: of a missing column", ["--arrivals", "trace:" + log, "--steps", "trace:steps"], [log + ":1:", "'steps'", "the header has"]),
        ("--trace-time without a trace", ["--trace-time", "t"], ["--trace-time", "--arrivals trace:FILE"]),
        ("--trace-time of a missing column", ["--arrivals", "trace:" + log, "--trace-time", "when"], [log + ":1:", "'when'", "missing time column"]),
        ("a trace time of the wrong kind", ["--arrivals", "trace:" + write(os.path.join(d, "mixed.csv"), "arrival_s\n1\n2024-01-01 00:00:00\n")],
         ["mixed.csv:3:", "arrival_s", "number of seconds"]),
        ("a missing profile", ["--load", "1", "--profile", os.path.join(d, "no.csv")], [os.path.join(d, "no.csv"), "cannot open"]),
        ("a bad profile line", ["--load", "1", "--profile", bad_profile], [bad_profile + ":2:", "step_s"]),
        ("a model the profile lacks", ["--load", "1", "--model", "no-such-model", "--profile", PROFILE], ["no-such-model"]),
        ("an unknown flag", ["--sead", "1"], ["--sead"]),
        ("an output in a missing folder", ["-o", os.path.join(d, "no", "w.csv")], ["--output", "cannot open"]),
    ]
    for what, args, words in cases:
        rc, out, err = gen(args)
        expect_usage_error(what, rc, out, err, W, words)
    # An output over an input is refused before the input is read, and the input stays as it was.
    profile_copy = write(os.path.join(d, "profile_copy.csv"), open(PROFILE, encoding="utf-8").read())
    for what, args, words, kept in (
            ("the output over the profile", ["--load", "1", "--profile", profile_copy, "-o", profile_copy],
             ["--output", "is the --profile file"], profile_copy),
            ("the output over the arrival trace", ["--arrivals", "trace:" + trace, "-o", trace], ["--output", "is the --arrivals file"], trace)):
        before = open(kept, encoding="utf-8").read()
        rc, out, err = gen(args)
        expect_usage_error(what, rc, out, err, W, words)
        check(open(kept, encoding="utf-8").read() == before, f"{what}: the input is left as it was")
    rc, out, err = gen(["--help"])
    check(rc == 0 and "--quiet" in out and "--requests" in out, "--help exits 0 and lists the flags")
    # Integers are decimal (CLI11 alone reads a leading 0 as octal), and huge weights do not overflow.
    rc, out, err = gen(["--requests", "010"])
    check(rc == 0 and len(rows_of(out)) == 10, f"--requests 010 writes 10 requests (got {rc}: {err.strip()!r})")
    rc, out, err = gen(["--mix", "weighted", "--weights", "1e308,1e308,1e308,1e308", "--requests", "20"])
    check(rc == 0, f"weights near the largest double are weights (got {rc}: {err.strip()!r})")


# ------------------------------------------------------------------------------------------------
# paraflex-tune


def group_tune(d):
    args = ["--policy", "round-based", "--param", "round_steps=1,5", "--param", "mid_round=wait,admit", "--seed", "3"]
    rc, out, err = tune(args)
    check(rc == 0, f"a grid on the embedded workload exits 0 ({err.strip()[-300:]})")
    lines = out.splitlines()
    check(lines and lines[0].startswith("workload <embedded workload> (300 requests), 8 x"), f"the first line names the input ({lines[:1]})")
    runs = [l.split()[0] for l in lines if l.startswith("round-based")]
    check(runs == ["round-based", "round-based:round_steps=1:mid_round=wait", "round-based:round_steps=5:mid_round=wait",
                   "round-based:round_steps=1:mid_round=admit", "round-based:round_steps=5:mid_round=admit"],
          f"the defaults run first, then every setting of the grid (got {runs})")
    check(any(l.startswith("best: round-based") for l in lines), "the best setting is reported")
    check(any(l.startswith("gain over the defaults: ") and "points of SLO attainment" in l for l in lines),
          "the gain over the defaults is reported")
    rc2, out2, _ = tune(args)
    check(rc2 == 0 and out2 == out, "the same flags print byte-identical output")
    rc, out, err = tune(["--policy", "round-based", "--param", "round_steps=1, 2", "--objective", "latency", "--quiet"])
    check(rc == 0 and err == "", f"--quiet: nothing on stderr; blanks around values are dropped ({err.strip()[-300:]})")
    check("s less mean latency" in out, "--objective latency reports the gain as less mean latency")
    # A policy that needs the searched parameter has no baseline.
    rc, out, err = tune(["--policy", "static", "--param", "degree=1,2"])
    check(rc == 0 and "(no baseline: 'static'" in out, f"static --param degree=...: runs without a baseline ({err.strip()[-300:]})")
    rc, out, err = tune(["--help"])
    check(rc == 0 and "paraflex-tune" in out and "--quiet" in out and "=slo" in out, "--help names the tool, its flags and defaults")
    # --cells: every setting runs as paraflex-sim --cells runs it (same attainment), on any thread count.
    cells_args = ["--policy", "slo-aware", "--param", "margin=0.1,0.3", "--cells", "2", "--quiet"]
    rc, out, err = tune(cells_args + ["--threads", "2"])
    check(rc == 0 and "8 x l20-inferred in 2 cells of 4" in out, f"--cells 2: the first line says so ({err.strip()[-300:]})")
    rc1, out1, _ = tune(cells_args + ["--threads", "1"])
    check(rc1 == 0 and out1 == out, "--cells 2: the same output whatever --threads")
    rc, out, err = tune(["--policy", "slo-aware", "--param", "margin=0.1,0.3", "--threads", "2"])
    check(rc == 2 and "--threads requires --cells" in err, f"--threads without --cells: exit 2 (got {rc}: {err.strip()[-200:]})")
    src, sout, serr = run_command([SIM, "--policy", "slo-aware:margin=0.3", "--cells", "2", "--format", "json", "--quiet"], 300)
    check(src == 0, f"paraflex-sim --cells 2 runs ({serr.strip()[-200:]})")
    if src == 0:
        slo = json.loads(sout)["results"][0]["slo_attainment"]
        line = next((l for l in out1.splitlines() if l.startswith("slo-aware:margin=0.3 ")), "")
        check(f"{100 * slo:.1f}%" in line, f"--cells 2: a setting reads what paraflex-sim --cells 2 gives ({100 * slo:.1f}%: {line!r})")
    rc, out, err = tune(["--policy", "static", "--param", "degree=2,8", "--cells", "2"])
    check(rc == 2 and "--param 'degree=2,8'" in err and "cells of 4 GPUs" in err, f"--cells 2: static:8 is refused naming the cell size ({err.strip()[-300:]})")
    rc, out, err = tune(["--policy", "slo-aware", "--param", "margin=0.1", "--cells", "3"])
    check(rc == 2 and "--cells" in err and "3 equal cells" in err, f"--cells 3 on 8 GPUs: exit 2 ({err.strip()[-300:]})")
    def runs_as_sim(flag, says):
        """Every setting runs as paraflex-sim runs it with the same flag, and the first line says so."""
        rc, out, err = tune(["--policy", "slo-aware", "--param", "margin=0.1,0.3", *flag, "--quiet"])
        check(rc == 0 and says in out, f"{' '.join(flag)}: the first line says {says!r} ({err.strip()[-300:]})")
        src, sout, serr = run_command([SIM, "--policy", "slo-aware:margin=0.3", *flag, "--format", "json", "--quiet"], 300)
        if rc == 0 and src == 0:
            slo = json.loads(sout)["results"][0]["slo_attainment"]
            line = next((l for l in out.splitlines() if l.startswith("slo-aware:margin=0.3 ")), "")
            check(f"{100 * slo:.1f}%" in line, f"{' '.join(flag)}: a setting reads what paraflex-sim gives ({100 * slo:.1f}%: {line!r})")

    runs_as_sim(["--max-degree", "2"], "groups of at most 2")
    rc, out, err = tune(["--policy", "static", "--param", "degree=2,4", "--max-degree", "2"])
    check(rc == 2 and "--param 'degree=2,4'" in err and "degree cap" in err, f"--max-degree 2: static:4 is refused naming the cap ({err.strip()[-300:]})")
    runs_as_sim(["--decision-gap-ms", "30"], "decisions at least 30 ms apart")
    rc, out, err = tune(["--policy", "slo-aware", "--param", "margin=0.1", "--decision-gap-ms", "-3"])
    check(rc == 2 and "--decision-gap-ms" in err, f"--decision-gap-ms -3: exit 2 naming the flag ({err.strip()[-300:]})")


def group_tune_bad_input(d):
    T = "paraflex-tune"
    bad_workload = write(os.path.join(d, "bad.csv"), "arrival_s,model,height,width,steps\n0,flux-dev,256,256,many\n")
    no_slo = write(os.path.join(d, "no_slo.csv"), "arrival_s,model,height,width,steps\n0,flux-dev,256,256,20\n1,flux-dev,512,512,20\n")
    heads = os.path.join(d, "heads.csv")
    with open(PROFILE, newline="") as f, open(heads, "w", newline="") as g:
        for i, line in enumerate(f.read().splitlines()):
            g.write(line + (",heads\n" if i == 0 else ",24\n"))
    os.mkdir(os.path.join(d, "adir"))
    grid = ["--policy", "round-based", "--param", "round_steps=1,2"]
    cases = [
        # what, flags, words the message must hold. Every one fails before the first run: nothing on stdout.
        ("no --param", ["--policy", "rssp"], ["--param"]),
        ("no --policy", ["--param", "x=1"], ["--policy"]),
        ("an empty --policy", ["--policy", "", "--param", "x=1"], ["--policy", "empty value"]),
        ("an unknown policy", ["--policy", "nosuch", "--param", "x=1"], ["--policy 'nosuch'", "unknown policy", "round-based"]),
        ("a list of policies", ["--policy", "rssp,slo-aware", "--param", "x=1"], ["--policy 'rssp,slo-aware'", "one policy"]),
        ("a bad parameter in --policy", ["--policy", "round-based:foo=1", "--param", "round_steps=1,2"], ["--policy 'round-based:foo=1'", "'foo'"]),
        ("--param without =", ["--policy", "round-based", "--param", "round_steps"], ["--param 'round_steps'", "KEY=V1,V2"]),
        ("--param without a name", ["--policy", "round-based", "--param", "=1"], ["--param '=1'", "empty parameter name"]),
        ("--param with an empty value", ["--policy", "round-based", "--param", "round_steps=1,,2"], ["--param 'round_steps=1,,2'", "value 2 of 3 is empty"]),
        ("--param with a repeated value", ["--policy", "round-based", "--param", "round_steps=1,1"], ["--param 'round_steps=1,1'", "twice"]),
        ("--param smuggling a second parameter", ["--policy", "round-based", "--param", "round_steps=1:mid_round=admit"],
         ["--param 'round_steps=1:mid_round=admit'", "':'"]),
        ("a parameter the policy does not have", ["--policy", "round-based", "--param", "foo=1,2"], ["--param 'foo=1,2'", "unknown parameter 'foo'"]),
        ("a parameter rssp does not have", ["--policy", "rssp", "--param", "x=1"], ["--param 'x=1'", "unknown parameter 'x'"]),
        ("a bad value after a good one", ["--policy", "round-based", "--param", "round_steps=1,abc"], ["--param 'round_steps=1,abc'", "'abc'"]),
        ("a value out of range", ["--policy", "round-based", "--param", "round_steps=1,0"], ["--param 'round_steps=1,0'", "out of range"]),
        ("a bad value of the second --param", grid + ["--param", "mid_round=wait,later"], ["--param 'mid_round=wait,later'", "'later'"]),
        ("the same key in two --param", ["--policy", "round-based", "--param", "round_steps=1", "--param", "round_steps=2"],
         ["--param 'round_steps=2'", "already searched"]),
        ("a key set in --policy", ["--policy", "round-based:round_steps=5", "--param", "round_steps=1,2"], ["--param 'round_steps=1,2'", "already set in --policy"]),
        ("a key set by --policy's positional value", ["--policy", "static:4", "--param", "degree=1,2"], ["--param 'degree=1,2'", "already set in --policy"]),
        ("a --policy with a bare value where a KEY=VALUE goes", ["--policy", "slo-aware:margin", "--param", "capacity=0.8"], ["--policy 'slo-aware:margin'", "expected KEY=VALUE"]),
        ("a degree beyond --gpus", ["--policy", "static", "--param", "degree=1,16"], ["--param 'degree=1,16'", "out of range"]),
        ("a degree the model's heads do not allow", ["--policy", "static", "--param", "degree=1,5", "--profile", heads],
         ["--param 'degree=1,5'", "does not allow degree 5"]),
        ("more than 10,000 settings", ["--policy", "slo-aware", "--param", "margin=" + ",".join(f"0.{i:03d}" for i in range(101)),
                                       "--param", "capacity=" + ",".join(f"0.{i:03d}" for i in range(1, 101))], ["--param", "10,000"]),
        ("an objective no request can score", grid + ["--workload", no_slo], ["--objective slo", "no request", "deadline"]),
        ("goodput with no deadline", grid + ["--workload", no_slo, "--objective", "goodput"], ["--objective goodput", "deadline"]),
        ("an unknown objective", grid + ["--objective", "fast"], ["--objective"]),
        ("a missing workload", grid + ["--workload", os.path.join(d, "no.csv")], [os.path.join(d, "no.csv"), "cannot open"]),
        ("a directory as workload", grid + ["--workload", os.path.join(d, "adir")], ["adir", "directory"]),
        ("a bad workload line", grid + ["--workload", bad_workload], [bad_workload + ":2:", "steps"]),
        ("an empty --workload", grid + ["--workload", ""], ["--workload", "empty value"]),
        ("a missing profile", grid + ["--profile", os.path.join(d, "no.csv")], [os.path.join(d, "no.csv"), "cannot open"]),
        ("an unknown GPU type", grid + ["--gpu", "tpu"], ["--gpu", "'tpu'"]),
        ("--gpus 0", grid + ["--gpus", "0"], ["--gpus"]),
        ("--gpus-per-node above --gpus", grid + ["--gpus-per-node", "16"], ["--gpus-per-node 16", "--gpus 8"]),
        ("partial nodes", grid + ["--gpus", "8", "--gpus-per-node", "3"], ["--gpus 8", "--gpus-per-node 3"]),
        ("--seed -1", grid + ["--seed", "-1"], ["--seed", "'-1'"]),
    ]
    for what, args, words in cases:
        rc, out, err = tune(args)
        expect_usage_error(what, rc, out, err, T, words)
    if os.path.exists("/dev/full"):
        rc, _, err = tune(grid, stdout=open("/dev/full", "wb"))
        check(rc == 2 and "cannot write to stdout" in err, f"a full stdout is exit 2, not success ({rc}, {err.strip()!r})")


# ------------------------------------------------------------------------------------------------
# Random configurations, end to end


def sweep_policy(rng, gpus):
    """A built-in policy with a random subset of its parameters (each value a legal one)."""
    name = rng.choice(["slo-aware", "round-based", "edf-best-fit", "throughput-first", "rssp", "static"])
    if name == "static":
        return f"static:{rng.choice([k for k in (1, 2, 4, 8) if k <= gpus])}"
    options = {
        "slo-aware": {"admission": ["relaxed", "strict", "off"], "max_batch": [1, 2, 8], "capacity": [0.5, 1.0, 2.0],
                      "reserve": [0, 0.2], "margin": [0, 0.3], "hold": [0, 1], "widen": [0, 1], "chunk": [1, 3],
                      "best_effort_age": [0, 5]},
        "round-based": {"round_steps": [1, 5, 20], "mid_round": ["wait", "admit"], "max_batch": [1, 4], "round_s": [0, 0.5, 3]},
    }.get(name, {})
    return ":".join([name] + [f"{k}={rng.choice(v)}" for k, v in options.items() if rng.random() < 0.3])


def group_sweep(d):
    """Random configurations (seeded, so every run tries the same ones): paraflex-workload generates a file
    of a random model, shape mix, step counts, SLO rule, priorities and load; paraflex-sim runs two
    random policies on a random cluster, with random faults, jitter, stragglers, the bound or a trace. Each
    run exits 0, ends every request exactly once (completed or dropped with a reason), and runs the same
    twice."""
    models = [("flux-dev", "l20-inferred", "128,256,512,1024,2048"), ("qwen-image", "h20", "512,1024,1536"),
              ("sd3-medium", "l20-inferred", "128,256,1024"), ("cogvideox", "l20-inferred", "768x1360x81"),
              ("hunyuanvideo", "l20-inferred", "720x1280x129")]
    for seed in range(SWEEP_CONFIGURATIONS):
        rng = random.Random(seed)
        model, gpu, shapes = rng.choice(models)
        gpus = rng.choice([5, 7, 16, 64, 128, 512])
        per_node = rng.choice([k for k in range(1, gpus + 1) if gpus % k == 0])
        slo = rng.choice(["none", "alpha:1.5", "alpha:3", "alpha-deg1:2"])
        wl = os.path.join(d, f"sweep{seed}.csv")
        requests = rng.choice([3, 60, 300])
        args = ["--model", model, "--shapes", shapes, "--mix", rng.choice(["uniform", "skewed"]),
                "--requests", str(requests), "--steps", rng.choice(["50", "10,20,30", "1,2"]),
                "--slo-rule", slo, "--gpus", str(gpus), "--gpu", gpu, "--load", str(rng.choice([0.3, 0.9, 1.5, 5])),
                "--seed", str(seed), "-o", wl, "--quiet"]
        if rng.random() < 0.3:
            args += ["--priority-weights", "3,1"]
        rc, _, err = gen(args)
        if not check(rc == 0, f"sweep {seed}: paraflex-workload {' '.join(args)} exits 0 ({err.strip()[-300:]})"):
            continue
        policies = ",".join(sweep_policy(rng, gpus) for _ in range(2))
        sim = ["--workload", wl, "--gpus", str(gpus), "--gpus-per-node", str(per_node), "--gpu", gpu, "--policy", policies,
               "--format", "json", "--quiet", "--seed", str(seed)]
        if rng.random() < 0.3:
            sim += ["--fail-rate", str(rng.choice([0.01, 0.2, 0.6]))]
        if rng.random() < 0.3:
            sim += ["--jitter", "0.2"]
        if rng.random() < 0.2:
            sim += ["--fail-device", f"{rng.randrange(gpus)}@{rng.choice([0, 5, 60])}"]
        if rng.random() < 0.2:
            sim += ["--straggler", f"{rng.randrange(gpus)}@10:3"]
        if rng.random() < 0.15 and requests <= 60:  # one LP per run: kept small
            sim += ["--bound"]
        trace = os.path.join(d, f"sweep{seed}.trace.json")
        if rng.random() < 0.2:
            sim += ["--trace-out", trace]
        what = f"sweep {seed}: paraflex-sim {' '.join(sim)}"
        docs = []
        for _ in range(2):
            rc, out, err = run(SIM, sim, timeout=300)
            if not check(rc == 0, f"{what}: exit 0 (got {rc}: {err.strip()[-400:]})"):
                break
            doc = json.loads(out)
            for r in doc["results"]:
                check(r["completed"] + r["dropped"] == r["requests"] == doc["workload"]["requests"] and
                      sum(r["dropped_by_reason"].values()) == r["dropped"],
                      f"{what}: {r['policy']}: every request ends once, each drop with a reason ({r['requests']} requests, "
                      f"{r['completed']} completed, {r['dropped']} dropped: {r['dropped_by_reason']})")
                for k in ("decision_us_mean", "decision_us_p99", "wall_s"):  # host timings
                    r["scheduler"].pop(k, None)
            docs.append(doc)
        if len(docs) == 2:
            check(docs[0] == docs[1], f"{what}: same input and seed, same results")
        if "--trace-out" in sim and docs:
            with open(trace) as f:
                check(isinstance(json.load(f).get("traceEvents"), list), f"{what}: the trace is JSON with traceEvents")


SWEEP_CONFIGURATIONS = 60

GROUPS = {"workload": group_workload, "workload_large": group_workload_large, "workload_bad_input": group_workload_bad_input,
          "tune": group_tune, "tune_bad_input": group_tune_bad_input, "sweep": group_sweep}

if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[5] not in GROUPS:
        sys.exit(f"usage: {sys.argv[0]} PARAFLEX_WORKLOAD PARAFLEX_TUNE PARAFLEX_SIM DATA_DIR {{{'|'.join(GROUPS)}}}")
    WORKLOAD, TUNE, SIM = (os.path.abspath(p) for p in sys.argv[1:4])
    PROFILE = os.path.join(sys.argv[4], "profiles", "step_latency.csv")
    with tempfile.TemporaryDirectory(prefix="paraflex-tools-cli-") as tmp:
        GROUPS[sys.argv[5]](tmp)
    finish(sys.argv[5])
