"""paraflex.simulate() against paraflex-sim: same inputs, same result entry, same error messages."""

import csv
import json
import os
import tempfile
import unittest

from support import DEFAULT_WORKLOAD, PROFILE, paraflex, run_sim, sim_error, without_host_timings


def sim_results(*args):
    rc, out, err = run_sim("--format", "json", "--quiet", *args)
    if rc != 0:
        raise AssertionError(f"paraflex-sim {args} failed ({rc}): {err}")
    return [without_host_timings(r) for r in json.loads(out)["results"]]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def typed_rows(path):
    """The CSV's rows as dicts of Python values (empty optional fields left out)."""
    rows = []
    for r in read_rows(path):
        row = {"arrival_s": float(r["arrival_s"]), "request_id": r["request_id"], "model": r["model"],
               "height": int(r["height"]), "width": int(r["width"]), "steps": int(r["steps"])}
        if r.get("frames"):
            row["frames"] = int(r["frames"])
        if r.get("slo_s"):
            row["slo_s"] = float(r["slo_s"])
        if r.get("priority"):
            row["priority"] = int(r["priority"])
        if r.get("class"):
            row["class"] = r["class"]
        rows.append(row)
    return rows


class SimulateMatchesParaflexSim(unittest.TestCase):
    def assert_same(self, sim_args, **kwargs):
        expected = sim_results(*sim_args)
        self.assertEqual(len(expected), 1)
        got = paraflex.simulate(**kwargs)
        self.assertEqual(list(got.keys()), list(expected[0].keys()))
        self.assertEqual(without_host_timings(got), expected[0])
        for key in ("decision_us_mean", "decision_us_p99", "wall_s"):
            self.assertIn(key, got["scheduler"])

    def test_every_builtin_policy_on_the_embedded_workload_gives_paraflex_sims_entry(self):
        for spec in paraflex.default_policies(8):
            with self.subTest(policy=spec):
                self.assert_same(["--policy", spec], policy=spec)

    def test_a_workload_file_profile_and_gpu_type_give_paraflex_sims_entry(self):
        for spec in ("slo-aware:margin=0.1:admission=strict", "round-based:round_steps=5", "throughput-first"):
            with self.subTest(policy=spec):
                self.assert_same(["--workload", DEFAULT_WORKLOAD, "--profile", PROFILE, "--gpu", "l20-inferred", "--policy", spec],
                                 workload=DEFAULT_WORKLOAD, profile=PROFILE, gpu="l20-inferred", policy=spec)

    def test_several_nodes_faults_seed_and_bound_give_paraflex_sims_entry(self):
        self.assert_same(["--gpus", "8", "--gpus-per-node", "4", "--policy", "edf-best-fit", "--seed", "7", "--jitter", "0.2",
                          "--fail-rate", "0.05", "--fail-device", "3@100", "--straggler", "5@50:2.5", "--bound"],
                         gpus=8, gpus_per_node=4, policy="edf-best-fit", seed=7, jitter=0.2, fail_rate=0.05,
                         fail_devices=["3@100"], stragglers=["5@50:2.5"], bound=True)

    def test_a_smaller_cluster_gives_paraflex_sims_entry(self):
        self.assert_same(["--gpus", "4", "--policy", "static:2"], gpus=4, policy="static:2")

    def test_a_list_of_dicts_gives_the_same_result_as_the_file(self):
        from_file = without_host_timings(paraflex.simulate(workload=DEFAULT_WORKLOAD, policy="slo-aware"))
        from_rows = without_host_timings(paraflex.simulate(workload=typed_rows(DEFAULT_WORKLOAD), policy="slo-aware"))
        self.assertEqual(from_rows, from_file)

    def test_string_fields_are_read_like_the_csv_reader_reads_them(self):
        rows = [{k: v for k, v in r.items()} for r in read_rows(DEFAULT_WORKLOAD)]  # every value a str, as in the file
        from_file = without_host_timings(paraflex.simulate(workload=DEFAULT_WORKLOAD, policy="edf-best-fit"))
        self.assertEqual(without_host_timings(paraflex.simulate(workload=rows, policy="edf-best-fit")), from_file)

    def test_a_path_like_workload_is_accepted(self):
        import pathlib
        a = without_host_timings(paraflex.simulate(workload=pathlib.Path(DEFAULT_WORKLOAD), policy="rssp"))
        self.assertEqual(a, without_host_timings(paraflex.simulate(workload=DEFAULT_WORKLOAD, policy="rssp")))

    def test_a_bytes_workload_is_read_as_a_path(self):
        # Regression: bytes were read as a list of rows ("workload[0] must be a dict, got int").
        self.assertEqual(without_host_timings(paraflex.simulate(workload=os.fsencode(DEFAULT_WORKLOAD), policy="static:4")),
                         without_host_timings(paraflex.simulate(workload=DEFAULT_WORKLOAD, policy="static:4")))

    def test_cells_give_paraflex_sims_entry_whatever_the_threads(self):
        for threads in (1, 2):
            with self.subTest(threads=threads):
                self.assert_same(["--gpus", "8", "--gpus-per-node", "2", "--cells", "4", "--policy", "slo-aware", "--seed", "3",
                                  "--jitter", "0.1", "--fail-device", "5@40"],
                                 gpus=8, gpus_per_node=2, cells=4, threads=threads, policy="slo-aware", seed=3, jitter=0.1,
                                 fail_devices=["5@40"])

    def test_a_degree_cap_gives_paraflex_sims_entry(self):
        for spec in ("slo-aware", "round-based"):
            with self.subTest(policy=spec):
                self.assert_same(["--gpus", "16", "--gpus-per-node", "8", "--max-degree", "2", "--policy", spec],
                                 gpus=16, gpus_per_node=8, max_degree=2, policy=spec)

    def test_a_decision_gap_gives_paraflex_sims_entry(self):
        for spec in ("slo-aware", "round-based"):
            with self.subTest(policy=spec):
                self.assert_same(["--decision-gap-ms", "20", "--policy", spec], decision_gap_ms=20, policy=spec)

    def test_a_trace_is_written_when_asked(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "trace.json")
            paraflex.simulate(policy="static:8", trace_out=path)
            with open(path) as f:
                self.assertIn("traceEvents", json.load(f))

    def test_a_trace_that_cannot_be_written_fails_before_the_run(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "no", "trace.json")
            with self.assertRaises(ValueError) as e:
                paraflex.simulate(policy="static:8", trace_out=path)
            self.assertIn(f"trace_out '{path}': cannot open for writing", str(e.exception))

    def test_a_trace_over_the_workload_file_is_refused_and_the_file_kept(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "w.csv")
            text = "arrival_s,request_id,model,height,width,steps\n0,a,flux-dev,512,512,4\n"
            with open(path, "w") as f:
                f.write(text)
            with self.assertRaises(ValueError) as e:
                paraflex.simulate(workload=path, policy="static:8", trace_out=path)
            self.assertEqual(str(e.exception), f"trace_out '{path}' is the workload file: it would be overwritten")
            with open(path) as f:
                self.assertEqual(f.read(), text)

    def test_a_trace_of_cells_is_paraflex_sims_file(self):
        with tempfile.TemporaryDirectory() as d:
            mine, sims = os.path.join(d, "py.json"), os.path.join(d, "sim.json")
            paraflex.simulate(gpus=8, gpus_per_node=2, cells=4, threads=2, policy="slo-aware", trace_out=mine)
            rc, _, err = run_sim("--gpus", "8", "--gpus-per-node", "2", "--cells", "4", "--policy", "slo-aware", "--quiet",
                                 "--trace-out", sims)
            self.assertEqual(rc, 0, err)
            with open(mine, "rb") as a, open(sims, "rb") as b:
                self.assertEqual(a.read(), b.read())


class InputErrorsCarryParaflexSimsMessage(unittest.TestCase):
    def assert_message(self, sim_args, **kwargs):
        expected = sim_error(*sim_args)
        with self.assertRaises(ValueError) as e:
            paraflex.simulate(**kwargs)
        self.assertEqual(str(e.exception), expected)

    def test_a_missing_workload_file(self):
        self.assert_message(["--workload", "/nonexistent/w.csv"], workload="/nonexistent/w.csv")

    def test_a_bad_row_in_a_workload_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.csv")
            with open(path, "w") as f:
                f.write("arrival_s,model,height,width,steps\n0,flux-dev,1024,1024,28\n1.5,flux-dev,-3,1024,28\n")
            self.assert_message(["--workload", path], workload=path)

    def test_an_unknown_model(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.csv")
            with open(path, "w") as f:
                f.write("arrival_s,model,height,width,steps\n0,no-such-model,1024,1024,28\n")
            self.assert_message(["--workload", path], workload=path)

    def test_cells_that_do_not_cut_the_cluster_evenly_or_fit_the_policy(self):
        self.assert_message(["--cells", "3"], cells=3)
        self.assert_message(["--gpus", "12", "--gpus-per-node", "6", "--cells", "3"], gpus=12, gpus_per_node=6, cells=3)
        self.assert_message(["--cells", "4", "--policy", "static:4"], cells=4, policy="static:4")
        with self.assertRaises(ValueError) as e:
            paraflex.simulate(cells=2, policy=type("Idle", (), {"decide": lambda self, view, out: None})())
        self.assertIn("built-in policy spec", str(e.exception))

    def test_a_degree_cap_out_of_range_or_below_a_static_degree(self):
        self.assert_message(["--max-degree", "0"], max_degree=0)
        self.assert_message(["--max-degree", "4", "--policy", "static:8"], max_degree=4, policy="static:8")
        with self.assertRaises(TypeError):
            paraflex.simulate(max_degree="4")

    def test_a_decision_gap_out_of_range_or_below_a_microsecond(self):
        self.assert_message(["--decision-gap-ms", "-1"], decision_gap_ms=-1)
        self.assert_message(["--decision-gap-ms", "0.0001"], decision_gap_ms=0.0001)
        with self.assertRaises(TypeError):
            paraflex.simulate(decision_gap_ms="20")

    def test_an_unknown_gpu_type(self):
        self.assert_message(["--gpu", "a100"], gpu="a100")

    def test_an_unknown_policy_and_a_bad_parameter(self):
        self.assert_message(["--policy", "nope"], policy="nope")
        self.assert_message(["--policy", "slo-aware:margin=2"], policy="slo-aware:margin=2")
        self.assert_message(["--policy", "static:16"], policy="static:16")

    def test_cluster_flags_out_of_range(self):
        self.assert_message(["--gpus", "0"], gpus=0)
        self.assert_message(["--gpus", "4", "--gpus-per-node", "8"], gpus=4, gpus_per_node=8)

    def test_bad_fault_flags(self):
        self.assert_message(["--fail-device", "9@1"], fail_devices=["9@1"])
        self.assert_message(["--straggler", "2@1"], stragglers=["2@1"])
        self.assert_message(["--fail-device", "1@nan"], fail_devices=["1@nan"])

    def test_a_missing_bytes_workload_path(self):
        self.assert_message(["--workload", "/no/such.csv"], workload=b"/no/such.csv")

    def test_a_negative_or_too_large_seed(self):
        # Regression: pybind11's "incompatible function arguments"; paraflex-sim refuses these seeds too.
        self.assert_message(["--seed", "-1"], seed=-1)
        self.assert_message(["--seed", str(2**64)], seed=2**64)

    def test_bad_rows_name_the_row_and_column(self):
        rows = [{"arrival_s": 0, "model": "flux-dev", "height": 1024, "width": 1024, "steps": 28},
                {"arrival_s": 1, "model": "flux-dev", "height": 0, "width": 1024, "steps": 28}]
        with self.assertRaisesRegex(ValueError, r"^workload\[1\]: column 'height': must be > 0"):
            paraflex.simulate(workload=rows)
        with self.assertRaisesRegex(ValueError, r"^workload\[0\]: unknown column 'slo'"):
            paraflex.simulate(workload=[{"arrival_s": 0, "model": "flux-dev", "height": 8, "width": 8, "steps": 2, "slo": 3}])
        with self.assertRaisesRegex(ValueError, r"^workload\[1\]: column 'request_id': duplicate request_id 'a' \(first used in workload\[0\]\)"):
            paraflex.simulate(workload=[dict(rows[0], request_id="a"), dict(rows[0], request_id="a")])
        with self.assertRaisesRegex(ValueError, r"^workload: no requests"):
            paraflex.simulate(workload=[])
        with self.assertRaisesRegex(ValueError, r"^workload\[0\]: column 'model': unknown model 'sdxl'"):
            paraflex.simulate(workload=[dict(rows[0], model="sdxl")])
        with self.assertRaisesRegex(ValueError, r"^workload\[0\]: column 'steps'"):
            paraflex.simulate(workload=[dict(rows[0], steps=2.5)])

    def test_nul_or_a_lone_surrogate_in_a_row_names_the_row_and_column(self):
        # Regression: NUL got the CSV reader's "UTF-16 or UTF-32" message, a surrogate a bare UnicodeEncodeError.
        row = {"arrival_s": 0, "model": "flux-dev", "height": 256, "width": 256, "steps": 2}
        with self.assertRaisesRegex(ValueError, r"^workload\[0\]: column 'request_id': NUL characters are not allowed$"):
            paraflex.simulate(workload=[dict(row, request_id="a\x00b")])
        with self.assertRaisesRegex(ValueError, r"^workload\[1\]: column 'class': NUL characters are not allowed$"):
            paraflex.simulate(workload=[row, dict(row, **{"class": "a\x00"})])
        with self.assertRaisesRegex(ValueError, r"^workload\[0\]: column 'request_id' is not valid Unicode text \(it holds a lone surrogate\)$"):
            paraflex.simulate(workload=[dict(row, request_id="\ud800")])

    def test_an_empty_gpu_or_path_is_paraflex_sims_empty_value_not_the_default(self):
        # Regression: "" ran on the default GPU type, file or no trace; paraflex-sim refuses an empty flag.
        for kwargs, message in [(dict(gpu=""), "--gpu: empty value"), (dict(trace_out=""), "--trace-out: empty value"),
                                (dict(workload=""), "--workload: empty value"), (dict(profile=b""), "--profile: empty value")]:
            with self.subTest(kwargs), self.assertRaisesRegex(ValueError, f"^{message}$"):
                paraflex.simulate(**kwargs)
        self.assert_message(["--gpu", ""], gpu="")

    def test_more_threads_than_paraflex_sim_allows(self):
        # Regression: threads=10**6 was accepted (paraflex-sim --threads takes 0 to 1024).
        with self.assertRaisesRegex(ValueError, r"^--threads: Value 1000000 not in range 0 to 1024$"):
            paraflex.simulate(cells=2, threads=10**6)
        self.assert_message(["--cells", "2", "--threads", "1025"], cells=2, threads=1025)

    def test_threads_without_cells_is_an_error_as_in_paraflex_sim(self):
        # Regression: threads=2 without cells was silently ignored (paraflex-sim exits 2).
        self.assert_message(["--threads", "2"], threads=2)
        self.assert_message(["--threads", "0"], threads=0)
        self.assertEqual(paraflex.simulate(cells=1, threads=2, policy="static:2")["requests"],
                         paraflex.simulate(policy="static:2")["requests"])

    def test_wrong_types_raise_type_error(self):
        with self.assertRaises(TypeError):
            paraflex.simulate(workload=42)
        with self.assertRaises(TypeError):
            paraflex.simulate(workload=[1, 2])
        with self.assertRaises(TypeError):
            paraflex.simulate(policy=object())

    def test_a_wrong_type_names_the_argument(self):
        # Regression: pybind11's "incompatible function arguments" with the whole signature.
        for kwargs, message in [(dict(fail_devices="3@1"), r"^simulate: fail_devices must be a list of str, got str$"),
                                (dict(stragglers=[3]), r"^simulate: stragglers\[0\] must be a str, got int$"),
                                (dict(seed="1"), r"^simulate: seed must be an int, got str$"),
                                (dict(gpus=8.0), r"^simulate: gpus must be an int, got float$"),
                                (dict(gpus_per_node="4"), r"^simulate: gpus_per_node must be an int, got str$"),
                                (dict(gpu=5), r"^simulate: gpu must be a str, got int$"),
                                (dict(jitter="0.1"), r"^simulate: jitter must be a number, got str$"),
                                (dict(bound="yes"), r"^simulate: bound must be True or False, got str$"),
                                # a flag is True or False: None, 0 or 2.5 would pass for one
                                (dict(bound=None), r"^simulate: bound must be True or False, got NoneType$"),
                                (dict(bound=1), r"^simulate: bound must be True or False, got int$"),
                                (dict(bound=2.5), r"^simulate: bound must be True or False, got float$"),
                                # a dict iterates over its keys; True would run on 1 GPU
                                (dict(stragglers={"0@1:2": 1}), r"^simulate: stragglers must be a list of str, got dict$"),
                                (dict(fail_devices={"0@1": 1}), r"^simulate: fail_devices must be a list of str, got dict$"),
                                (dict(gpus=True), r"^simulate: gpus must be an int, got bool$"),
                                (dict(cells=True), r"^simulate: cells must be an int, got bool$")]:
            with self.subTest(kwargs), self.assertRaisesRegex(TypeError, message):
                paraflex.simulate(**kwargs)
        # An int too large for the flag gets paraflex-sim's range message, not pybind11's.
        with self.assertRaisesRegex(ValueError, r"^--gpus: Value 1099511627776 not in range 1 to 65536$"):
            paraflex.simulate(gpus=2**40)


class ReadTraceReadsWhatParaflexWorkloadReplays(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.log = os.path.join(self.dir.name, "service.csv")
        with open(self.log, "w") as f:
            f.write("gmt_create,num_inference_steps\n2024-11-15 16:57:50,30.0\n2024-11-15 16:57:40,40\n2024-11-15 16:57:45,\n")

    def test_arrivals_come_sorted_from_zero_with_their_steps(self):
        t = paraflex.read_trace(self.log, steps_column="num_inference_steps", missing_steps=20)
        self.assertEqual(t, {"times_s": [0.0, 5.0, 10.0], "steps": [40, 20, 30], "filled_steps": 1})
        self.assertEqual(paraflex.read_trace(self.log)["steps"], None)

    def test_a_replayed_trace_simulates_as_a_list_of_dicts(self):
        t = paraflex.read_trace(self.log, steps_column="num_inference_steps", missing_steps=20)
        rows = [dict(arrival_s=a, model="flux-dev", height=512, width=512, steps=s) for a, s in zip(t["times_s"], t["steps"])]
        r = paraflex.simulate(workload=rows, policy="edf-best-fit")
        self.assertEqual(r["completed"], 3)

    def test_bad_input_names_the_file_line_and_column(self):
        with self.assertRaisesRegex(ValueError, r"service\.csv:4: column 'num_inference_steps'"):
            paraflex.read_trace(self.log, steps_column="num_inference_steps")
        with self.assertRaisesRegex(ValueError, r"service\.csv:1: column 'when': missing time column"):
            paraflex.read_trace(self.log, time_column="when")
        with self.assertRaisesRegex(ValueError, r"^read_trace: missing_steps is for the empty cells of steps_column"):
            paraflex.read_trace(self.log, missing_steps=3)
        with self.assertRaisesRegex(TypeError, r"^read_trace: steps_column must be a str, got int$"):
            paraflex.read_trace(self.log, steps_column=5)
        with self.assertRaises(TypeError):
            paraflex.read_trace(None)


if __name__ == "__main__":
    unittest.main()
