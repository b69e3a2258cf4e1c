"""paraflex.Scheduler: the client API, callbacks, the three executors, the ways to drive it, failures."""

import csv
import threading
import time
import unittest

from support import DEFAULT_WORKLOAD, paraflex, without_host_timings

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
        time.sleep(0.05)
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


if __name__ == "__main__":
    unittest.main()
