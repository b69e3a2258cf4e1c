"""paraflex.Scheduler: the client API, callbacks, the three executors, the ways to drive it, failures."""

import asyncio
import csv
import os
import subprocess
import sys
import textwrap
import threading
import time
import unittest

from support import DEFAULT_WORKLOAD, EXAMPLES, paraflex, without_host_timings

from python_executor import SleepExecutor


def workload_rows():
    with open(DEFAULT_WORKLOAD, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def submit_row(sched, r):
    return sched.submit(r["model"], int(r["height"]), int(r["width"]), int(r["steps"]),
                        slo_s=float(r["slo_s"]) if r["slo_s"] else None, priority=int(r["priority"] or 0),
                        class_label=r["class"], request_id=r["request_id"], arrival_s=float(r["arrival_s"]))


class ClientApi(unittest.TestCase):
    def test_the_client_path_on_the_simulated_executor_reproduces_simulate(self):
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        self.assertTrue(sched.virtual_time)
        ended = []
        sched.on_request_end(ended.append)
        for r in workload_rows():
            submit_row(sched, r)
        sched.run()
        self.assertEqual(len(ended), 300)
        self.assertEqual(len({s.id for s in ended}), 300)  # each ends exactly once
        self.assertTrue(sched.finished())
        self.assertEqual(without_host_timings(sched.metrics()), without_host_timings(paraflex.simulate(policy="slo-aware")))
        c = sched.counters()
        self.assertEqual((c["submitted"], c["completed"] + c["dropped"], c["waiting"], c["running"]), (300, 300, 0, 0))

    def test_a_degree_cap_gives_simulates_result_which_an_uncapped_run_does_not(self):
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred", gpus=16, gpus_per_node=8, max_degree=2)
        for r in workload_rows():
            submit_row(sched, r)
        sched.run()
        self.assertEqual(without_host_timings(sched.metrics()),
                         without_host_timings(paraflex.simulate(policy="slo-aware", gpus=16, gpus_per_node=8, max_degree=2)))
        self.assertNotEqual(without_host_timings(sched.metrics()),
                            without_host_timings(paraflex.simulate(policy="slo-aware", gpus=16, gpus_per_node=8)))
        with self.assertRaisesRegex(ValueError, "max_degree must be in"):
            paraflex.Scheduler(gpu="l20-inferred", max_degree=0)

    def test_a_decision_gap_gives_simulates_result_with_fewer_decisions(self):
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred", decision_gap_ms=50)
        for r in workload_rows():
            submit_row(sched, r)
        sched.run()
        gapped = without_host_timings(sched.metrics())
        self.assertEqual(gapped, without_host_timings(paraflex.simulate(policy="slo-aware", decision_gap_ms=50)))
        plain = paraflex.simulate(policy="slo-aware")
        self.assertLess(gapped["scheduler"]["decisions"], plain["scheduler"]["decisions"])
        with self.assertRaisesRegex(ValueError, "--decision-gap-ms: -2 is not a number of milliseconds"):
            paraflex.Scheduler(gpu="l20-inferred", decision_gap_ms=-2)

    def test_submit_status_and_cancel_by_id(self):
        sched = paraflex.Scheduler("edf-best-fit", gpu="l20-inferred")
        a = sched.submit("flux-dev", 1024, 1024, 28, slo_s=30.0)
        b = sched.submit("flux-dev", 512, 512, 28, request_id="mine", arrival_s=5.0)
        self.assertEqual((a, b), ("r1", "mine"))
        st = sched.status(a)
        self.assertEqual((st.id, st.state, st.steps_total, st.ended), ("r1", "waiting", 28, False))
        self.assertIsNone(sched.status("nobody"))
        self.assertEqual(sched.state(a), "waiting")
        self.assertIsNone(sched.state("nobody"))
        self.assertEqual(sched.cancel("mine", "changed_my_mind"), "accepted")
        self.assertEqual(sched.cancel("nobody"), "unknown_id")
        sched.run()
        self.assertEqual(sched.status(a).state, "completed")
        self.assertGreater(sched.status(a).latency_s, 0)
        self.assertEqual((sched.status("mine").state, sched.status("mine").reason), ("dropped", "changed_my_mind"))
        self.assertEqual(sched.cancel(a), "already_ended")

    def test_bad_submissions_raise_value_error_and_leave_the_scheduler_usable(self):
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4, request_id="x")
        for kwargs, pattern in [(dict(request_id="x"), "already in use"), (dict(slo_s=0.0), "slo_s must be > 0"),
                                (dict(arrival_s=-1.0), "arrival_s must be"), (dict(arrival_s=float("nan")), "arrival_s must be")]:
            with self.subTest(kwargs), self.assertRaisesRegex(ValueError, pattern):
                sched.submit("flux-dev", 256, 256, 4, **kwargs)
        with self.assertRaisesRegex(ValueError, "steps must be > 0"):
            sched.submit("flux-dev", 256, 256, 0)
        with self.assertRaisesRegex(ValueError, "unknown model 'no-such-model' \\(known on l20-inferred: "):
            sched.submit("no-such-model", 256, 256, 4)
        sched.run()
        self.assertEqual(sched.status("x").state, "completed")

    def test_bad_construction_raises_value_error(self):
        with self.assertRaisesRegex(ValueError, "--gpu: 'a100'"):
            paraflex.Scheduler(gpu="a100")
        with self.assertRaisesRegex(ValueError, "unknown policy"):
            paraflex.Scheduler("nope", gpu="l20-inferred")
        with self.assertRaisesRegex(ValueError, "not one of: simulated, threads"):
            paraflex.Scheduler(executor="gpu", gpu="l20-inferred")
        with self.assertRaisesRegex(TypeError, "has no launch"):
            paraflex.Scheduler(executor=object(), gpu="l20-inferred")
        with self.assertRaisesRegex(ValueError, "--gpus: Value 0"):
            paraflex.Scheduler(gpus=0, gpu="l20-inferred")

    def test_a_wrong_type_or_an_int_too_large_names_the_method_and_the_argument(self):
        # Regression: pybind11's "incompatible function arguments" (whole signature) or "Unable to cast
        # Python instance to C++ type" (no name at all).
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        cases = [(lambda: paraflex.Scheduler(gpus="8", gpu="l20-inferred"), TypeError, r"^Scheduler: gpus must be an int, got str$"),
                 (lambda: paraflex.Scheduler(gpu=5), TypeError, r"^Scheduler: gpu must be a str, got int$"),
                 (lambda: paraflex.Scheduler(gpus_per_node="4", gpu="l20-inferred"), TypeError, r"^Scheduler: gpus_per_node must be an int, got str$"),
                 (lambda: paraflex.Scheduler(max_failures=-1, gpu="l20-inferred"), ValueError, r"^Scheduler: max_failures -1 is out of range \[0, 4294967295\]$"),
                 (lambda: sched.submit("flux-dev", 2**40, 256, 4), ValueError, r"^Scheduler\.submit: height 1099511627776 is out of range \[-2147483648, 2147483647\]$"),
                 (lambda: sched.submit("flux-dev", "256", 256, 4), TypeError, r"^Scheduler\.submit: height must be an int, got str$"),
                 (lambda: sched.submit("flux-dev", 256, 256, 4, slo_s="5"), TypeError, r"^Scheduler\.submit: slo_s must be a number, got str$"),
                 (lambda: sched.submit("flux-dev", 256, 256, 4, request_id=7), TypeError, r"^Scheduler\.submit: request_id must be a str, got int$"),
                 (lambda: sched.cancel(5), TypeError, r"^Scheduler\.cancel: id must be a str, got int$"),
                 (lambda: sched.status(5), TypeError, r"^Scheduler\.status: id must be a str, got int$"),
                 (lambda: sched.turn_to(2**70), ValueError, r"^Scheduler\.turn_to: t 1180591620717411303424 is out of range"),
                 (lambda: sched.metrics(label=5), TypeError, r"^Scheduler\.metrics: label must be a str, got int$"),
                 (lambda: paraflex.SimulatedExecutor(fail_devices="3@1"), TypeError, r"^SimulatedExecutor: fail_devices must be a list of str, got str$"),
                 (lambda: paraflex.SimulatedExecutor(seed=-1), ValueError, r"^--seed: expected an integer in \[0, 18446744073709551615\], got '-1'$"),
                 (lambda: paraflex.ThreadExecutor(channels=-1), ValueError, r"^ThreadExecutor: channels -1 is out of range"),
                 # A flag is True or False: strict=None quietly turned strict mode off.
                 (lambda: paraflex.Scheduler(strict=None, gpu="l20-inferred"), TypeError, r"^Scheduler: strict must be True or False, got NoneType$"),
                 (lambda: paraflex.Scheduler(strict=0, gpu="l20-inferred"), TypeError, r"^Scheduler: strict must be True or False, got int$"),
                 (lambda: paraflex.ThreadExecutor(verify=2.5), TypeError, r"^ThreadExecutor: verify must be True or False, got float$"),
                 (lambda: paraflex.slo_aware(widen=None), TypeError, r"^ComposedPolicy: widen must be True or False, got NoneType$"),
                 (lambda: paraflex.slo_aware(hold=1), TypeError, r"^ComposedPolicy: hold must be True or False, got int$")]
        for f, exc, message in cases:
            with self.subTest(message=message), self.assertRaisesRegex(exc, message):
                f()
        self.assertIsNone(sched.error)  # refused at the call: the scheduler is still usable
        sched.submit("flux-dev", 256, 256, 4)
        sched.run()
        self.assertEqual(sched.state("r1"), "completed")

    def test_nul_or_a_lone_surrogate_in_an_id_or_class_is_a_value_error_naming_it(self):
        # Regression: NUL was accepted (a workload file or row refuses it); "\ud800" gave
        # "TypeError: request_id must be a str, got str".
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        for kwargs, message in [(dict(request_id="a\x00b"), r"^Scheduler\.submit: request_id must not contain NUL characters$"),
                                (dict(class_label="\x00"), r"^Scheduler\.submit: class_label must not contain NUL characters$"),
                                (dict(request_id="\ud800"), r"^Scheduler\.submit: request_id is not valid Unicode text \(it holds a lone surrogate\)$")]:
            with self.subTest(kwargs), self.assertRaisesRegex(ValueError, message):
                sched.submit("flux-dev", 256, 256, 4, **kwargs)
        self.assertEqual(sched.counters()["submitted"], 0)

    def test_a_cancel_reason_that_is_no_short_identifier_is_a_value_error(self):
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        rid = sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(ValueError, r"^Scheduler\.cancel: reason 'changed my\\x0Amind' is not a short identifier"):
            sched.cancel(rid, "changed my\nmind")
        self.assertEqual(sched.cancel(rid, "changed_my_mind"), "accepted")
        sched.run()
        self.assertEqual(sched.metrics()["dropped_by_reason"], {"changed_my_mind": 1})

    def test_an_empty_gpu_is_refused_not_taken_as_the_default(self):
        with self.assertRaisesRegex(ValueError, r"^--gpu: empty value$"):
            paraflex.Scheduler(gpu="")
        with self.assertRaisesRegex(ValueError, r"^--profile: empty value$"):
            paraflex.Scheduler(gpu="l20-inferred", profile="")

    def test_turn_to_a_time_before_now_or_past_the_next_event_is_a_value_error_that_leaves_the_scheduler_usable(self):
        # Regression: the runtime's logic_error surfaced as RuntimeError from inside the turn and
        # stopped the scheduler for good.
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4, arrival_s=1.0)
        with self.assertRaisesRegex(ValueError, r"^Scheduler\.turn_to: t -5 is before now\(\) = 0 \(time cannot go backwards\)$"):
            sched.turn_to(-5)
        with self.assertRaisesRegex(ValueError, r"^Scheduler\.turn_to: t 5 skips the event due at next_wakeup\(\) = 0$"):
            sched.turn_to(5)
        with self.assertRaisesRegex(RuntimeError, "virtual time"):
            sched.turn()
        self.assertIsNone(sched.error)
        self.assertEqual(sched.turn_to(0), 1_000_000)
        with self.assertRaisesRegex(ValueError, r"^Scheduler\.turn_to: t 2000000 skips the event due at next_wakeup\(\) = 1000000$"):
            sched.turn_to(2_000_000)
        sched.run()
        self.assertEqual(sched.state("r1"), "completed")

    def test_turn_to_drives_virtual_time_step_by_step(self):
        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        sched.submit("flux-dev", 1024, 1024, 10, slo_s=30.0, arrival_s=2.0)
        self.assertEqual(sched.next_wakeup(), 0)  # the submission waits in the client's inbox
        self.assertEqual(sched.turn_to(0), 2_000_000)  # picked up: it arrives at 2 s
        turns = 0
        while not sched.finished():
            t = sched.next_wakeup()
            self.assertNotEqual(t, paraflex.NEVER)
            sched.turn_to(t)
            turns += 1
        self.assertGreater(turns, 10)
        self.assertEqual(sched.status("r1").state, "completed")
        with self.assertRaisesRegex(RuntimeError, "virtual time"):
            sched.turn()


class Executors(unittest.TestCase):
    def test_the_thread_executor_serves_requests_submitted_from_another_thread(self):
        sched = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.0005, verify=True), gpu="l20-inferred")
        self.assertFalse(sched.virtual_time)
        ended = []
        sched.on_request_end(ended.append)
        sched.open()
        server = threading.Thread(target=sched.run)
        server.start()
        ids = [sched.submit("flux-dev", 512, 512, 8, slo_s=60.0) for _ in range(6)]
        sched.close()
        server.join(60)
        self.assertFalse(server.is_alive())
        self.assertEqual(sorted(s.id for s in ended), sorted(ids))
        self.assertTrue(all(s.state == "completed" for s in ended))
        self.assertIsNone(sched.error)

    def test_a_python_executor_plugs_in_like_a_cpp_one(self):
        executor = SleepExecutor(devices=8, time_scale=0.0002)
        sched = paraflex.Scheduler("slo-aware", executor, gpu="l20-inferred")
        for i, size in enumerate([2048, 1024, 512, 256]):
            sched.submit("flux-dev", size, size, 12, slo_s=60.0, request_id=f"q{i}")
        sched.run()
        executor.close()
        self.assertEqual([sched.status(f"q{i}").state for i in range(4)], ["completed"] * 4)
        kinds = {k for k, _, _ in executor.launches}
        self.assertTrue({"encode", "step", "decode"} <= kinds)

    def test_a_python_executor_gets_release_for_a_dropped_request_and_task_attributes(self):
        seen = []

        class Recording(SleepExecutor):
            def launch(self, task):
                seen.append(task)
                super().launch(task)

        executor = Recording(devices=8, time_scale=0.0002)
        sched = paraflex.Scheduler("slo-aware", executor, gpu="l20-inferred")
        sched.submit("flux-dev", 1024, 1024, 40, slo_s=60.0, request_id="long")
        sched.open()
        server = threading.Thread(target=sched.run)
        server.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.001)
        self.assertEqual(sched.cancel("long"), "accepted")
        sched.close()
        server.join(30)
        executor.close()
        self.assertEqual((sched.status("long").state, sched.status("long").reason), ("dropped", "cancelled"))
        self.assertIn(0, executor.released)
        t = seen[0]
        self.assertEqual((t.request, t.request_id, t.kind, t.step, t.model, t.height, t.width, t.frames), (0, "long", "encode", -1, "flux-dev", 1024, 1024, 1))
        self.assertEqual(t.id, 1)
        self.assertEqual(t.source, [])
        self.assertTrue(t.group)
        steps = [x for x in seen if x.kind == "step"]
        self.assertEqual([x.step for x in steps], list(range(len(steps))))
        self.assertTrue(all(x.expected_duration_us > 0 for x in steps))

    def test_bad_events_from_a_python_executor_stop_the_scheduler_with_a_clear_error(self):
        class Liar(SleepExecutor):
            def poll(self):
                return [("task_done", 1)]

        sched = paraflex.Scheduler("slo-aware", Liar(devices=8), gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(ValueError, r"Liar.poll\(\) returned the event \('task_done', 1\)"):
            sched.run()

        class Floats(SleepExecutor):
            def poll(self):
                return [("task_done", 1.0, 0)]

        floats = paraflex.Scheduler("slo-aware", Floats(devices=8), gpu="l20-inferred")
        floats.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(ValueError, "ids must be ints"):
            floats.run()
        self.assertIn("Liar.poll()", sched.error)
        with self.assertRaisesRegex(RuntimeError, "stopped after an exception"):
            sched.run()
        with self.assertRaisesRegex(RuntimeError, "stopped after an exception"):
            sched.submit("flux-dev", 256, 256, 4)

    def test_a_thread_executor_refuses_a_time_scale_or_channel_count_it_cannot_run(self):
        # Regression: inf and 1e20 ran with no sleep at all (an undefined double -> int64 cast);
        # 2**40 channels failed every task later.
        for kwargs, message in [(dict(time_scale=float("inf")), r"^ThreadExecutor: time_scale must be in \[0, 1000\] \(got inf\)$"),
                                (dict(time_scale=1e20), r"^ThreadExecutor: time_scale must be in \[0, 1000\] \(got 1e\+20\)$"),
                                (dict(time_scale=float("nan")), r"^ThreadExecutor: time_scale must be in \[0, 1000\] \(got nan\)$"),
                                (dict(channels=2**40), r"^ThreadExecutor: channels must be in \[1, 1024\] \(got 1099511627776\)$"),
                                (dict(channels=0), r"^ThreadExecutor: channels must be in \[1, 1024\] \(got 0\)$")]:
            with self.subTest(kwargs), self.assertRaisesRegex(ValueError, message):
                paraflex.ThreadExecutor(**kwargs)
        paraflex.ThreadExecutor(time_scale=1000.0, channels=1024)

    def test_an_exception_in_a_python_policy_or_callback_stops_run_and_reaches_the_caller(self):
        class Boom:
            def decide(self, view, out):
                raise LookupError("from decide")

        sched = paraflex.Scheduler(Boom(), gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(LookupError, "from decide"):
            sched.run()

        sched = paraflex.Scheduler("slo-aware", gpu="l20-inferred")
        sched.on_request_end(lambda s: 1 / 0)
        sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaises(ZeroDivisionError):
            sched.run()
        self.assertIsNotNone(sched.error)


class Driving(unittest.TestCase):
    def test_run_is_refused_while_another_thread_drives(self):
        sched = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.0), gpu="l20-inferred")
        sched.open()
        server = threading.Thread(target=sched.run)
        server.start()
        # Until the thread is inside run() (next_wakeup only reads the flag run() sets): a fixed 50 ms
        # sleep was not always enough on a loaded 2-core machine, and run() here would then drive.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                sched.next_wakeup()
            except RuntimeError:
                break
            time.sleep(0.001)
        with self.assertRaisesRegex(RuntimeError, "already in progress"):
            sched.run()
        with self.assertRaisesRegex(RuntimeError, "next_wakeup: run\(\)/turn\(\) is in progress"):
            sched.next_wakeup()
        sched.close()
        server.join(30)
        self.assertFalse(server.is_alive())

    def test_on_wakeup_fires_on_submit_and_cancel_from_any_thread(self):
        sched = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.0), gpu="l20-inferred")
        calls = []
        sched.on_wakeup(lambda: calls.append(threading.get_ident()))
        t = threading.Thread(target=lambda: sched.submit("flux-dev", 256, 256, 2, request_id="w"))
        t.start()
        t.join()
        self.assertEqual(len(calls), 1)
        sched.cancel("w")
        self.assertEqual(len(calls), 2)
        while not sched.finished():
            t = sched.turn()
            time.sleep(0.001)
        self.assertEqual(sched.status("w").state, "dropped")


def run_script(code, timeout=60):
    """Runs code in a fresh interpreter (a hang or a crash must not take the test run with it);
    returns (exit status or 'timeout', output)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), EXAMPLES) if p))
    try:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return p.returncode, p.stdout + p.stderr


class InstantExecutor:
    """Completes every task at once on a clock that jumps by its expected duration."""

    def __init__(self):
        self.t, self.q = 0, []

    def launch(self, task):
        self.q.append(("task_done", task.id, task.request))
        self.t += task.expected_duration_us

    def poll(self):
        q, self.q = self.q, []
        return q

    def now(self):
        return self.t

    def wait_until(self, t):
        pass


class Teardown(unittest.TestCase):
    def test_dropping_a_scheduler_while_a_worker_is_in_on_wakeup_does_not_deadlock(self):
        # Regression: the destructor held the GIL while ~scheduler waited for a worker thread that
        # was waiting for the GIL in the on_wakeup callback.
        rc, out = run_script("""
            import threading, time, paraflex
            in_cb = threading.Event()
            def wake():
                in_cb.set()
                time.sleep(0.2)  # releases the GIL, still inside the callback
            sched = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.0), gpu="l20-inferred")
            sched.on_wakeup(wake)
            sched.submit("flux-dev", 256, 256, 2)
            in_cb.wait(); in_cb.clear()  # the submit's own wake-up, on this thread
            for _ in range(500):
                sched.turn()
                if in_cb.wait(0.01):  # a completion signalled from a worker thread
                    break
            else:
                raise SystemExit("no wake-up from a worker")
            del sched
            for i in range(5):  # tasks still in flight when the scheduler goes
                calls = []
                sched = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.00002, work=0), gpu="l20-inferred")
                sched.on_wakeup(lambda: calls.append(1))
                for _ in range(16):
                    sched.submit("flux-dev", 256, 256, 50)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 0.02:
                    sched.turn()
                del sched
            print("deleted")
            """)
        self.assertEqual(rc, 0, out)
        self.assertIn("deleted", out)

    def test_a_python_executor_on_ready_is_called_once_and_never_from_the_destructor(self):
        # Regression: ~scheduler called the Python on_ready() again; an exception there escaped a
        # destructor (abort), and SleepExecutor started a thread in it during finalization (hang).
        rc, out = run_script("""
            import paraflex
            class Exec:
                def __init__(self): self.t, self.q, self.calls = 0, [], 0
                def launch(self, task): self.q.append(("task_done", task.id, task.request)); self.t += task.expected_duration_us
                def poll(self): q, self.q = self.q, []; return q
                def now(self): return self.t
                def wait_until(self, t): pass
                def on_ready(self, callback):
                    self.calls += 1
                    if self.calls > 1:
                        raise RuntimeError("on_ready may be called once")
                    self.callback = callback
            ex = Exec()
            sched = paraflex.Scheduler("slo-aware", ex, gpu="l20-inferred")
            sched.submit("flux-dev", 256, 256, 2)
            sched.run()
            del sched
            ex.callback()  # the scheduler is gone: a no-op
            print("deleted", ex.calls)
            """)
        self.assertEqual((rc, out.strip()), (0, "deleted 1"))
        # The documented example executor, the Scheduler still alive when the script ends.
        rc, out = run_script("""
            import paraflex
            from python_executor import SleepExecutor
            ex = SleepExecutor(devices=8, time_scale=0.0002)
            sched = paraflex.Scheduler("slo-aware", ex, gpu="l20-inferred")
            sched.submit("flux-dev", 256, 256, 2)
            sched.run()
            ex.close()
            print("exiting", sched.state("r1"))
            """, timeout=30)
        self.assertEqual((rc, out.strip()), (0, "exiting completed"))


    def test_a_program_that_exits_with_a_daemon_thread_still_in_a_run_exits_cleanly(self):
        # Regression: Python ends such a thread when it takes the GIL back at shutdown; the unwinding
        # met a C++ destructor and aborted the process (exit 134), in all three ways of running.
        policy = """
            class Greedy:
                def decide(self, view, out):
                    free = view.free_devices().to_list()
                    for h in view.waiting():
                        if free:
                            out.assign(h, [free.pop()])
            """
        cases = {
            "simulate() with a Python policy": """
                rows = [dict(arrival_s=i * 0.05, model="flux-dev", height=512, width=512, steps=28) for i in range(20000)]
                threading.Thread(target=lambda: paraflex.simulate(workload=rows, policy=Greedy()), daemon=True).start()
                """,
            "run() with a Python executor that sleeps in Python": """
                class NeverDone:
                    def launch(self, task): pass
                    def poll(self): return []
                    def now(self): return time.monotonic_ns() // 1000
                    def wait_until(self, t): time.sleep(0.001)
                sched = paraflex.Scheduler("slo-aware", NeverDone(), gpus=8, gpu="l20-inferred")
                sched.submit("flux-dev", 1024, 1024, 28, slo_s=600.0)
                threading.Thread(target=sched.run, daemon=True).start()
                """,
            "run() on the thread executor with a Python policy": """
                sched = paraflex.Scheduler(Greedy(), paraflex.ThreadExecutor(time_scale=0.0), gpus=8, gpu="l20-inferred")
                sched.open()
                threading.Thread(target=sched.run, daemon=True).start()
                for i in range(3000):
                    sched.submit("flux-dev", 256, 256, 28)
                """,
        }
        for name, body in cases.items():
            with self.subTest(name):
                code = "import threading, time, paraflex\n" + textwrap.dedent(policy) + textwrap.dedent(body) + "time.sleep(0.5)\nprint('main exits')\n"
                rc, out = run_script(code, timeout=60)
                self.assertEqual((rc, out.strip()), (0, "main exits"))

    def test_dropping_a_scheduler_inside_its_own_on_wakeup_on_a_worker_thread_does_not_deadlock(self):
        # Regression: ~scheduler, on the worker thread running the callback, waited for that very
        # callback to return: the thread hung and the Scheduler was never freed. Both ways: the last
        # reference dropped in the callback, and a collection there that frees a Scheduler in a cycle.
        rc, out = run_script("""
            import gc, os, threading, time, paraflex
            def say(word):  # one write per line: print() writes the word and the newline apart, so
                os.write(1, (word + "\\n").encode())  # two threads could interleave "freedcollected"
            freed = threading.Semaphore(0)
            class Marker:
                def __call__(self, status): pass
                def __del__(self):
                    say("freed")
                    freed.release()
            class Sched(paraflex.Scheduler):
                pass
            holder, armed, done = {}, threading.Event(), threading.Event()
            def drop_it():
                if threading.current_thread() is not threading.main_thread() and not done.is_set():
                    armed.wait(20)  # until the main thread has let go: this drops the last reference
                    del holder["s"]
                    say("dropped")
                    done.set()
            s = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.01), gpus=2, gpu="l20-inferred")
            s.on_wakeup(drop_it)
            s.on_request_end(Marker())
            s.submit("flux-dev", 256, 256, 2, slo_s=100.0)
            s.turn()  # launches the encode: its completion wakes drop_it on a worker thread
            holder["s"] = s
            del s
            armed.set()
            assert done.wait(20), "no wake-up from a worker"
            armed2, collected = threading.Event(), threading.Event()
            def collect():
                if threading.current_thread() is not threading.main_thread() and not collected.is_set():
                    armed2.wait(20)  # until make() has returned: only the cycle holds the Scheduler
                    gc.collect()
                    say("collected")
                    collected.set()
            def make():
                s = Sched("slo-aware", paraflex.ThreadExecutor(time_scale=0.01), gpus=2, gpu="l20-inferred")
                s.me = s  # a cycle: only the collector frees it
                s.on_wakeup(collect)
                s.on_request_end(Marker())
                s.submit("flux-dev", 256, 256, 2, slo_s=100.0)
                s.turn()
            make()
            armed2.set()
            assert collected.wait(20), "no wake-up from a worker"
            for _ in range(2):  # the hand-off threads free them once the callbacks returned
                assert freed.acquire(timeout=20), "a Scheduler was never freed"
            say("end")
            """, timeout=60)
        self.assertEqual((rc, sorted(out.split())), (0, ["collected", "dropped", "end", "freed", "freed"]), out)


class ExecutorContract(unittest.TestCase):
    def drive(self, sched):
        """turn() for up to 5 s (run() would wait forever for a request the runtime lost)."""
        t0 = time.monotonic()
        while not sched.finished() and time.monotonic() - t0 < 5:
            sched.turn()
        self.fail(f"nothing raised; states {[sched.state(i) for i in ('r1', 'r2')]}")

    def test_a_completion_with_the_wrong_request_or_an_unknown_launch_raises(self):
        # Regression: the runtime dropped such events as stale; the requests ran forever.
        class Swapped(InstantExecutor):
            def poll(self):
                return [(k, i, (h + 1) % 2) for k, i, h in super().poll()]

        class Unknown(InstantExecutor):
            def poll(self):
                return super().poll() + [("task_done", 999, 0)]

        for ex, message in [(Swapped(), r"Swapped.poll\(\) returned the event \('task_done', 1, 1\): launch 1 ran request 0, not 1"),
                            (Unknown(), r"Unknown.poll\(\) returned the event \('task_done', 999, 0\): no such launch id")]:
            sched = paraflex.Scheduler("slo-aware", ex, gpu="l20-inferred")
            for size in (1024, 512):
                sched.submit("flux-dev", size, size, 4, slo_s=60.0)
            with self.subTest(message=message), self.assertRaisesRegex(ValueError, message):
                self.drive(sched)
        # A report repeated later naming another request (the launch was checked the first time).
        class Repeats(InstantExecutor):
            def __init__(self):
                super().__init__()
                self.again = []

            def poll(self):
                q = super().poll()
                out, self.again = q + self.again, [(k, i, 1 - h) for k, i, h in q]
                return out

        sched = paraflex.Scheduler("slo-aware", Repeats(), gpu="l20-inferred")
        for size in (1024, 512):
            sched.submit("flux-dev", size, size, 4, slo_s=60.0)
        with self.assertRaisesRegex(ValueError, r"Repeats.poll\(\) returned the event \('task_done', 1, 1\): launch 1 ran request 0, not 1"):
            self.drive(sched)
        # A completion reported twice is still a harmless stale event.
        class Twice(InstantExecutor):
            def poll(self):
                q = super().poll()
                return q + q

        sched = paraflex.Scheduler("slo-aware", Twice(), gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4)
        sched.run()
        self.assertEqual(sched.state("r1"), "completed")

    def test_a_device_lost_before_its_launches_are_reported_failed_raises(self):
        # Regression: the runtime waits for those reports (the Executor contract puts them first):
        # without them run() waited for ever, silently.
        class LosesAll(InstantExecutor):
            def launch(self, task):
                self.t += 1

            def poll(self):
                return [("device_lost", d) for d in range(4)] if self.t >= 1 else []

        sched = paraflex.Scheduler("slo-aware", LosesAll(), gpus=4, gpu="l20-inferred")
        sched.submit("flux-dev", 512, 512, 4, slo_s=60.0)
        with self.assertRaisesRegex(ValueError, r"LosesAll.poll\(\) returned the event \('device_lost', \d\): launch 1 on device \d "
                                                r"has not been reported; report each launch on a lost device as task_failed before the loss"):
            self.drive(sched)
        # Failing them first is the contract: the request is dropped, nothing raises.
        class FailsFirst(InstantExecutor):
            def __init__(self):
                super().__init__()
                self.failed = []

            def launch(self, task):
                self.failed.append(("task_failed", task.id, task.request))

            def poll(self):
                q, self.failed = self.failed, []
                return q + [("device_lost", d) for d in range(4)] if q else []

        sched = paraflex.Scheduler("slo-aware", FailsFirst(), gpus=4, gpu="l20-inferred")
        sched.submit("flux-dev", 512, 512, 4, slo_s=60.0)
        sched.run()
        self.assertEqual((sched.status("r1").state, sched.status("r1").reason), ("dropped", "device_lost_no_capacity"))

    def test_a_huge_clock_or_id_is_a_value_error_naming_the_method(self):
        class Huge(InstantExecutor):
            def now(self):
                return 2**70

        with self.assertRaisesRegex(ValueError, r"Huge.now\(\) returned 1180591620717411303424; expected an int of microseconds "
                                                r"in \[0, 9223372036854775807\]"):
            paraflex.Scheduler("slo-aware", Huge(), gpu="l20-inferred")

        class HugeId(InstantExecutor):
            def poll(self):
                return super().poll() + [("task_done", 2**70, 0)]

        sched = paraflex.Scheduler("slo-aware", HugeId(), gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(ValueError, r"HugeId.poll\(\) returned the event .*: an id is out of range"):
            sched.run()

    def test_a_negative_clock_is_a_value_error_naming_the_method(self):
        # Regression: run() spun forever on a clock that never reached the runtime's times.
        class Negative(InstantExecutor):
            def now(self):
                return -5

        with self.assertRaisesRegex(ValueError, r"^executor Negative\.now\(\) returned -5; expected an int of microseconds in \[0, 9223372036854775807\]$"):
            paraflex.Scheduler("slo-aware", Negative(), gpu="l20-inferred")

    def test_a_clock_that_goes_backwards_stops_the_run_with_a_value_error(self):
        class Backwards(InstantExecutor):
            def launch(self, task):
                super().launch(task)
                if task.id == 3:
                    self.t = 7  # one step back, once

        sched = paraflex.Scheduler("slo-aware", Backwards(), gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(ValueError, r"^executor Backwards\.now\(\) returned 7 after \d+; expected a monotonic clock"):
            sched.run()
        self.assertIn("Backwards.now()", sched.error)

    def test_poll_returning_none_or_a_dict_is_a_type_error_naming_the_method(self):
        # Regression: both read as "no events" (a dict's keys, even, as events): a forgotten return hung run().
        class AsDict(InstantExecutor):
            def poll(self):
                return dict.fromkeys(super().poll())

        sched = paraflex.Scheduler("slo-aware", AsDict(), gpu="l20-inferred")
        sched.submit("flux-dev", 256, 256, 4)
        with self.assertRaisesRegex(TypeError, r"^executor AsDict\.poll\(\) returned a dict; expected a list of events \(an empty list when there are none\)$"):
            sched.run()
        rc, out = run_script("""
            import paraflex
            class Forgot:
                def launch(self, task): pass
                def poll(self): pass  # the events list is never returned
                def now(self): return 0
                def wait_until(self, t): pass
            sched = paraflex.Scheduler("slo-aware", Forgot(), gpu="l20-inferred")
            sched.submit("flux-dev", 256, 256, 4)
            try:
                sched.run()
            except TypeError as e:
                print(e)
        """, timeout=20)
        self.assertEqual((rc, out.strip()), (0, "executor Forgot.poll() returned None; expected a list of events (an empty list when there are none)"))

    def test_a_failing_notify_does_not_fail_a_submit_that_was_queued(self):
        # Regression: submit() raised notify()'s error after queueing the request; a retry ran it twice.
        class NotifyRaises(InstantExecutor):
            def notify(self):
                raise ConnectionError("worker pool unreachable")

        reported = []
        old_hook = sys.unraisablehook
        sys.unraisablehook = lambda u: reported.append((u.exc_type, str(u.err_msg) + str(u.object)))
        try:
            sched = paraflex.Scheduler("slo-aware", NotifyRaises(), gpu="l20-inferred")
            rid = sched.submit("flux-dev", 256, 256, 2)
        finally:
            sys.unraisablehook = old_hook
        self.assertEqual(rid, "r1")
        self.assertEqual(sched.counters()["submitted"], 1)
        self.assertEqual(len(reported), 1)
        self.assertIs(reported[0][0], ConnectionError)
        self.assertIn("NotifyRaises.notify()", reported[0][1])
        sched.run()
        self.assertEqual(sched.state("r1"), "completed")

    def test_the_example_executor_waits_for_never_without_overflow(self):
        # Regression: Condition.wait((NEVER - now) / 1e6) raised OverflowError (an idle open server).
        ex = SleepExecutor(devices=8)
        threading.Timer(0.05, ex.notify).start()
        t0 = time.monotonic()
        ex.wait_until(paraflex.NEVER)
        self.assertLess(time.monotonic() - t0, 5)
        ex.close()


class AsyncioFailure(unittest.TestCase):
    def test_a_failed_turn_resolves_every_waiting_client(self):
        # Regression: serve() died with the exception but generate() awaited its future forever.
        import asyncio_serving

        class FailsLater:
            def __init__(self):
                self.calls = 0

            def decide(self, view, out):
                self.calls += 1
                if self.calls == 3:
                    raise LookupError("policy bug")
                free = view.free_devices().to_list()
                for h in view.waiting():
                    if free:
                        out.assign(h, free[:1])
                        free = free[1:]

        async def scenario():
            sched = paraflex.Scheduler(FailsLater(), paraflex.ThreadExecutor(time_scale=0.001, verify=False), gpu="l20-inferred")
            server = asyncio_serving.AsyncScheduler(sched, poll_interval=0.005)
            serving = asyncio.create_task(server.serve())
            clients = [asyncio.create_task(server.generate("flux-dev", 512, 512, 8, request_id=f"u{i}")) for i in range(4)]
            results = await asyncio.wait_for(asyncio.gather(*clients, serving, return_exceptions=True), 20)
            return results, sched

        results, sched = asyncio.run(scenario())
        self.assertIsInstance(results[-1], LookupError)
        for r in results[:-1]:
            self.assertIsInstance(r, RuntimeError)
            self.assertIn("policy bug", str(r))
        del sched


if __name__ == "__main__":
    unittest.main()
