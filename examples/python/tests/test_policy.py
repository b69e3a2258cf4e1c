"""Policies and policy parts written in Python: what they see, what they may ask, how errors surface."""

import os
import subprocess
import sys
import textwrap
import traceback
import unittest

from support import DEFAULT_WORKLOAD, EXAMPLES, paraflex, without_host_timings

import edf_drop_policy

SMALL = [
    {"arrival_s": 0.0, "request_id": "a", "model": "flux-dev", "height": 1024, "width": 1024, "steps": 4, "slo_s": 30.0,
     "priority": 1, "class": "big"},
    {"arrival_s": 0.5, "request_id": "b", "model": "flux-dev", "height": 256, "width": 256, "steps": 3},
    {"arrival_s": 1.0, "request_id": "c", "model": "flux-dev", "height": 512, "width": 512, "steps": 2, "slo_s": 0.001},
]


class Fcfs:
    """Every waiting request on the lowest free devices, one at a time, at its smallest degree."""

    def decide(self, view, out):
        free = view.free_devices().to_list()
        for h in view.waiting():
            k = view.allowed_degrees(h)[0]
            if k > len(free):
                break
            out.assign(h, free[:k])
            free = free[k:]


class PythonPolicies(unittest.TestCase):
    def test_a_python_policy_runs_every_request_to_its_end(self):
        r = paraflex.simulate(workload=SMALL, policy=Fcfs())
        self.assertEqual(r["policy"], "Fcfs")  # no name: the class name
        self.assertEqual(r["requests"], 3)
        self.assertEqual(r["completed"] + r["dropped"], 3)
        self.assertEqual(r["completed"], 3)

    def test_state_holding_devices_are_the_devices_with_state_holders(self):
        checked = []

        class Probe(Fcfs):
            name = "probe"

            def decide(self, view, out):
                holding = view.state_holding_devices().to_list()
                self.assert_equal(holding, [d for d in range(view.device_count()) if view.state_holders(d)])
                checked.append(len(holding))
                super().decide(view, out)

        probe = Probe()
        probe.assert_equal = self.assertEqual
        r = paraflex.simulate(workload=SMALL, policy=probe)
        self.assertEqual(r["completed"], 3)
        self.assertGreater(len(checked), 3)
        self.assertGreater(max(checked), 0)  # some decision saw state on a device

    def test_the_view_mirrors_scheduler_view(self):
        seen = {}

        class Probe(Fcfs):
            name = "probe"

            def decide(self, view, out):
                if "now" not in seen:
                    h = view.waiting()[0]
                    r = view.request(h)
                    seen.update(
                        now=view.now(), devices=view.device_count(), usable=view.usable_device_count(),
                        free=len(view.free_devices()), lost=view.lost_devices().count(), topology=view.topology().gpus,
                        running=view.running(), id=r.id, handle=r.handle, deadline=r.deadline, has_deadline=r.has_deadline,
                        slo=r.slo, priority=r.priority, class_label=r.class_label, model=r.model, shape=(r.height, r.width, r.frames),
                        steps=r.steps, phase=r.phase, position=r.position, state_group=r.state_group, next_task=r.next_task,
                        tasks_total=r.tasks_total, steps_remaining=r.steps_remaining, ended=r.ended,
                        allowed=view.allowed_degrees(h), allows1=view.allows_degree(h, 1), allows3=view.allows_degree(h, 3),
                        step1=view.step_time(h, 1), remaining1=view.remaining_time(h, 1), tasks1=view.tasks_time(h, 1, 6),
                        work1=view.remaining_work(h, 1), work=view.remaining_work(h), costs=view.costs(h),
                        migration=view.migration_time(h, [0]), needs=view.needs_migration(h, [0]),
                        placeable=view.placeable([0, 1], view.free_devices()), busy=view.busy_until(0))
                super().decide(view, out)

        r = paraflex.simulate(workload=SMALL, policy=Probe())
        self.assertEqual(r["policy"], "probe")
        self.assertEqual(seen["now"], 0)
        self.assertEqual((seen["devices"], seen["usable"], seen["free"], seen["lost"], seen["topology"]), (8, 8, 8, 0, 8))
        self.assertEqual(seen["running"], [])
        self.assertEqual((seen["id"], seen["handle"], seen["priority"], seen["class_label"], seen["model"]), ("a", 0, 1, "big", "flux-dev"))
        self.assertEqual(seen["shape"], (1024, 1024, 1))
        self.assertTrue(seen["has_deadline"])
        self.assertEqual(seen["slo"], 30_000_000)
        self.assertEqual(seen["deadline"], 30_000_000)
        self.assertEqual((seen["phase"], seen["position"], seen["state_group"], seen["next_task"]), ("waiting", 0, [], ("encode", -1)))
        self.assertEqual((seen["tasks_total"], seen["steps_remaining"], seen["ended"]), (6, 4, False))
        self.assertEqual(seen["allowed"][0], 1)
        self.assertTrue(seen["allows1"])
        self.assertEqual(seen["allows3"], 3 in seen["allowed"])
        costs = seen["costs"]
        self.assertEqual(seen["step1"], costs.step[1])
        self.assertEqual(seen["remaining1"], costs.encode[1] + 4 * costs.step[1] + costs.decode[1])
        self.assertEqual(seen["tasks1"], seen["remaining1"])
        self.assertEqual(seen["work1"], seen["remaining1"])
        self.assertEqual(seen["work"], costs.efficient_degree * (costs.encode[costs.efficient_degree] + 4 * costs.step[costs.efficient_degree]
                                                                 + costs.decode[costs.efficient_degree]))
        self.assertEqual((seen["migration"], seen["needs"], seen["placeable"], seen["busy"]), (0, False, True, 0))

    def test_every_hook_is_called_under_its_cpp_name(self):
        class Hooks(Fcfs):
            def __init__(self):
                self.arrived, self.ended, self.tasks, self.ticks, self.decisions = [], [], 0, 0, 0

            def name(self):
                return "hooks"

            def tick_period(self):
                return 500_000  # 0.5 s

            def on_tick(self, view):
                self.ticks += 1

            def on_arrival(self, view, h):
                self.arrived.append(view.request(h).id)

            def on_request_end(self, view, h):
                self.ended.append((view.request(h).id, view.request(h).phase))

            def on_task_end(self, view, h, ok):
                self.tasks += ok

            def decide(self, view, out):
                self.decisions += 1
                super().decide(view, out)

        p = Hooks()
        r = paraflex.simulate(workload=SMALL, policy=p)
        self.assertEqual(r["policy"], "hooks")
        self.assertEqual(p.arrived, ["a", "b", "c"])
        self.assertEqual(sorted(i for i, _ in p.ended), ["a", "b", "c"])
        self.assertTrue(all(phase == "completed" for _, phase in p.ended))
        self.assertEqual(p.tasks, 6 + 5 + 4)  # encode + steps + decode of each
        self.assertGreater(p.ticks, 0)
        self.assertEqual(r["scheduler"]["decisions"], p.decisions)

    def test_drop_and_wake_at_reach_the_runtime(self):
        class Dropper:
            name = "dropper"

            def __init__(self):
                self.woken = []

            def decide(self, view, out):
                self.woken.append(view.now())
                if view.now() < 250_000:  # hold everything until then
                    out.wake_at(250_000)
                    self.wake_time = out.wake_time()
                    self.drops = out.drops()
                    return
                free = view.free_devices().to_list()
                for h in view.waiting():
                    if view.request(h).id == "c":
                        out.drop(h, "not_today")
                    elif free:
                        out.assign(h, free[:1])
                        free = free[1:]

        p = Dropper()
        r = paraflex.simulate(workload=SMALL, policy=p)
        self.assertEqual(r["dropped_by_reason"], {"not_today": 1})
        self.assertEqual(p.wake_time, 250_000)
        self.assertEqual(p.drops, [])
        self.assertEqual(p.woken[:2], [0, 250_000])

    def test_the_edf_with_drop_example_runs_and_drops_only_the_unreachable(self):
        r = paraflex.simulate(workload=DEFAULT_WORKLOAD, policy=edf_drop_policy.EdfWithDrop())
        self.assertEqual(r["policy"], "py-edf-drop")
        self.assertEqual(r["completed"] + r["dropped"], r["requests"])
        self.assertEqual(set(r["dropped_by_reason"]), {"deadline_unreachable"})
        self.assertGreater(r["slo_attainment"], 0.5)


class InvalidDecisionsAndExceptions(unittest.TestCase):
    def test_an_invalid_decision_raises_policy_error_naming_the_request_and_the_rule(self):
        class Twice:
            def decide(self, view, out):
                for h in view.waiting():
                    out.assign(h, [0, 0])

        with self.assertRaises(paraflex.PolicyError) as e:
            paraflex.simulate(workload=SMALL, policy=Twice())
        self.assertIn("request 'a'", str(e.exception))
        self.assertIn("busy or used twice", str(e.exception))
        self.assertIsInstance(e.exception, RuntimeError)

    def test_a_disallowed_degree_and_an_unknown_request_are_policy_errors(self):
        class Disallowed:
            def decide(self, view, out):
                h = view.waiting()[0]
                out.assign(h, list(range(9)))

        with self.assertRaisesRegex(paraflex.PolicyError, r"request 'a': degree 9 is not allowed for flux-dev"):
            paraflex.simulate(workload=SMALL, policy=Disallowed())

        class Ghost:
            def decide(self, view, out):
                out.assign(99, [0])

        with self.assertRaisesRegex(paraflex.PolicyError, "unknown request 99"):
            paraflex.simulate(workload=SMALL, policy=Ghost())

        class AskBad:
            def decide(self, view, out):
                view.step_time(view.waiting()[0], 0)

        with self.assertRaisesRegex(paraflex.PolicyError, "degree 0 is not allowed for flux-dev"):
            paraflex.simulate(workload=SMALL, policy=AskBad())

    def test_bad_arguments_from_python_raise_at_the_call(self):
        cases = {
            "negative handle": (lambda v, o: o.assign(-1, [0]), ValueError),
            "negative device": (lambda v, o: o.assign(v.waiting()[0], [0, -2]), ValueError),
            "group not a list": (lambda v, o: o.assign(v.waiting()[0], "01"), TypeError),
            "unknown handle in view": (lambda v, o: v.request(1000), IndexError),
            "device out of range": (lambda v, o: v.busy_until(8), IndexError),
        }
        for what, (body, exc) in cases.items():
            with self.subTest(what):
                class P:
                    def decide(self, view, out):
                        body(view, out)

                with self.assertRaises(exc):
                    paraflex.simulate(workload=SMALL, policy=P())

    def test_a_wrong_type_or_an_int_too_large_names_the_method_and_the_argument(self):
        # Regression: pybind11's "incompatible function arguments" with the whole signature, naming no argument.
        cases = [(lambda v, h: v.step_time(h, 2**40), ValueError, r"^View\.step_time: k 1099511627776 is out of range \[-2147483648, 2147483647\]$"),
                 (lambda v, h: v.tasks_time(h, 1, -1), ValueError, r"^View\.tasks_time: n -1 is out of range \[0, 4294967295\]$"),
                 (lambda v, h: v.remaining_work(h, "2"), TypeError, r"^View\.remaining_work: k must be an int, got str$"),
                 (lambda v, h: v.busy_until(2**70), IndexError, r"^View\.busy_until: device 1180591620717411303424 out of range \[0, 8\)$"),
                 (lambda v, h: v.costs(h).step_time(1.0), TypeError, r"^ShapeCosts\.step_time: k must be an int, got float$"),
                 (lambda v, h: paraflex.place(v, h, "1", v.free_devices()), TypeError, r"^place: k must be an int, got str$")]
        for body, exc, message in cases:
            seen = []

            class P:
                def decide(self, view, out):
                    if not seen:
                        try:
                            body(view, view.waiting()[0])
                        except Exception as e:  # noqa: BLE001 - the test looks at what was raised
                            seen.append(e)
                    Fcfs().decide(view, out)

            paraflex.simulate(workload=SMALL[:1], policy=P())
            with self.subTest(message=message):
                self.assertEqual(len(seen), 1)
                self.assertIsInstance(seen[0], exc)
                self.assertRegex(str(seen[0]), message)

    def test_an_exception_in_decide_propagates_with_its_traceback(self):
        class Boom:
            def decide(self, view, out):
                self.helper()

            def helper(self):
                raise KeyError("boom")

        try:  # not assertRaises: it clears the traceback
            paraflex.simulate(workload=SMALL, policy=Boom())
            self.fail("no exception")
        except KeyError as e:
            names = [f.name for f in traceback.extract_tb(e.__traceback__)]
        self.assertIn("decide", names)
        self.assertIn("helper", names)

    def test_an_exception_in_a_hook_propagates(self):
        class Bad(Fcfs):
            def on_task_end(self, view, h, ok):
                raise ZeroDivisionError("in a hook")

        with self.assertRaisesRegex(ZeroDivisionError, "in a hook"):
            paraflex.simulate(workload=SMALL, policy=Bad())

    def test_a_view_kept_after_its_call_raises_instead_of_reading_freed_memory(self):
        class Keeper(Fcfs):
            def decide(self, view, out):
                self.view, self.out = view, out
                self.req = view.request(view.waiting()[0])
                super().decide(view, out)

        k = Keeper()
        paraflex.simulate(workload=SMALL, policy=k)
        for stale in (lambda: k.view.now(), lambda: k.req.id, lambda: k.out.assign(0, [0])):
            with self.assertRaisesRegex(RuntimeError, "valid only during the policy call"):
                stale()

    def test_an_exception_raised_by_a_property_the_bindings_read_propagates(self):
        # Regression: hasattr() swallowed it and the class name was used instead.
        class BadName(Fcfs):
            @property
            def name(self):
                raise KeyError("no name")

        class BadPeriod(Fcfs):
            @property
            def tick_period(self):
                raise ZeroDivisionError("no period")

        with self.assertRaisesRegex(KeyError, "no name"):
            paraflex.simulate(workload=SMALL, policy=BadName())
        with self.assertRaisesRegex(ZeroDivisionError, "no period"):
            paraflex.simulate(workload=SMALL, policy=BadPeriod())

        # The same for decide and the parts' methods: "has no decide" or "has no key() method" before,
        # and a raising key_depends_only_on_request read as False.
        class BadDecide:
            @property
            def decide(self):
                raise KeyError("no decide today")

        class BadKey:
            @property
            def key(self):
                raise KeyError("no key today")

        class BadDeclaration:
            def key(self, view, h):
                return 0

            @property
            def key_depends_only_on_request(self):
                raise KeyError("undecided")

        with self.assertRaisesRegex(KeyError, "no decide today"):
            paraflex.simulate(workload=SMALL, policy=BadDecide())
        with self.assertRaisesRegex(KeyError, "no key today"):
            paraflex.ComposedPolicy(order=BadKey())
        with self.assertRaisesRegex(KeyError, "undecided"):
            paraflex.simulate(workload=SMALL, policy=paraflex.ComposedPolicy(order=BadDeclaration()))

    def test_a_kept_request_still_has_a_repr(self):
        # Regression: repr() raised RuntimeError, which broke printing and logging a kept request.
        class Keeper(Fcfs):
            def decide(self, view, out):
                self.req = view.request(view.waiting()[0])
                self.live = repr(self.req)
                super().decide(view, out)

        k = Keeper()
        paraflex.simulate(workload=SMALL, policy=k)
        self.assertRegex(k.live, r"^Request\(handle=\d+, id='\w+', phase=waiting\)$")
        self.assertRegex(repr(k.req), r"^Request\(handle=\d+, stale: readable only during the call it was given to\)$")

    def test_a_drop_reason_that_is_no_short_identifier_is_a_value_error_naming_the_method(self):
        # Regression: any text (100,000 characters, NUL, line breaks) became a dropped_by_reason key.
        for reason in ("\xff\n\x00" + "x" * 100_000, "not today", "x" * 65, "\u00e9t\u00e9"):
            class Dropper:
                def decide(self, view, out):
                    for h in view.waiting():
                        out.drop(h, reason)

            with self.subTest(reason=reason[:10]), self.assertRaisesRegex(ValueError, r"^Decisions\.drop: reason '.*' is not a short identifier"):
                paraflex.simulate(workload=SMALL, policy=Dropper())

        class Refuse:
            def judge(self, view, h):
                return ("drop", "too\nlate")

        with self.assertRaisesRegex(ValueError, r"^Refuse\.judge\(\): reason 'too\\x0Alate' is not a short identifier"):
            paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(admission=Refuse()))
        ok = "Drop.v2-" + "x" * 56  # 64 characters

        class Dropper:
            def decide(self, view, out):
                for h in view.waiting():
                    out.drop(h, ok)

        self.assertEqual(paraflex.simulate(workload=SMALL, policy=Dropper())["dropped_by_reason"], {ok: 3})

    def test_simulate_nested_in_a_policy_past_eight_runs_raises_recursion_error_instead_of_crashing(self):
        # Regression: each nested run takes ~15 KB of C stack that Python's recursion limit does not
        # count; in a thread with a 512 KiB stack the process died with SIGSEGV.
        code = textwrap.dedent("""
            import threading, paraflex
            rows = [dict(arrival_s=0, model="flux-dev", height=256, width=256, steps=2)]
            class Again:
                def decide(self, view, out):
                    paraflex.simulate(workload=rows, policy=self, gpus=2)
            class AgainScheduler:
                def decide(self, view, out):
                    s = paraflex.Scheduler(self, gpus=2, gpu="l20-inferred")
                    s.submit("flux-dev", 256, 256, 2)
                    s.run()
            def run(policy):
                try:
                    paraflex.simulate(workload=rows, policy=policy, gpus=2)
                except RecursionError as e:
                    print(type(policy).__name__, e)
            threading.stack_size(512 * 1024)
            for p in (Again(), AgainScheduler()):
                t = threading.Thread(target=run, args=(p,))
                t.start()
                t.join()
        """)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), EXAMPLES) if p))
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertEqual(p.stdout.splitlines(),
                         ["Again simulate: 8 runs are already nested on this thread (a policy or callback started a run inside a run)",
                          "AgainScheduler Scheduler.run: 8 runs are already nested on this thread (a policy or callback started a run inside a run)"])

    def test_a_policy_may_simulate_a_what_if_inside_decide(self):
        what_if = []

        class Lookahead(Fcfs):
            def decide(self, view, out):
                if not what_if:
                    what_if.append(paraflex.simulate(workload=SMALL, policy="slo-aware", gpus=2)["completed"])
                super().decide(view, out)

        self.assertEqual(paraflex.simulate(workload=SMALL, policy=Lookahead())["completed"], 3)
        self.assertEqual(len(what_if), 1)

    def test_a_policy_without_decide_or_with_a_bad_tick_period_is_refused(self):
        class NoDecide:
            pass

        with self.assertRaisesRegex(TypeError, "decide"):
            paraflex.simulate(workload=SMALL, policy=NoDecide())

        class BadPeriod(Fcfs):
            tick_period = 0

        with self.assertRaisesRegex(ValueError, "tick_period must be > 0"):
            paraflex.simulate(workload=SMALL, policy=BadPeriod())

        # Regression: True was taken as 1 microsecond (a million on_tick calls a simulated second).
        class TruePeriod(Fcfs):
            tick_period = True

            def on_tick(self, view):
                pass

        with self.assertRaisesRegex(TypeError, "tick_period: a time must be an int \\(microseconds\\), got bool"):
            paraflex.simulate(workload=SMALL, policy=TruePeriod())


class PolicyParts(unittest.TestCase):
    def reference(self, spec):
        return without_host_timings(paraflex.simulate(policy=spec))

    def test_the_built_in_parts_composed_in_python_reproduce_slo_aware_and_edf_best_fit(self):
        self.assertEqual(without_host_timings(paraflex.simulate(policy=paraflex.slo_aware())), self.reference("slo-aware"))
        self.assertEqual(without_host_timings(paraflex.simulate(policy=paraflex.edf_best_fit())), self.reference("edf-best-fit"))
        strict = paraflex.slo_aware(admission_mode="strict", margin=0.1, name="slo-aware:admission=strict:margin=0.1")
        self.assertEqual(without_host_timings(paraflex.simulate(policy=strict)), self.reference("slo-aware:admission=strict:margin=0.1"))

    def test_slo_aware_composed_in_python_backfills_only_on_clusters_up_to_64_gpus_as_the_registry_spec_does(self):
        self.assertEqual(paraflex.slo_aware().backfill_max_gpus, 64)
        self.assertEqual(paraflex.ComposedPolicy().backfill_max_gpus, 2**31 - 1)  # compose_options: no limit
        rows = [dict(arrival_s=0.02 * i, model="flux-dev", height=2048, width=2048, steps=20, slo_s=60.0) for i in range(300)]
        for gpus in (8, 128):
            with self.subTest(gpus=gpus):
                ref = without_host_timings(paraflex.simulate(workload=rows, policy="slo-aware", gpus=gpus))
                self.assertEqual(without_host_timings(paraflex.simulate(workload=rows, policy=paraflex.slo_aware(), gpus=gpus)), ref)
                off = paraflex.slo_aware(backfill_max_gpus=0, name="slo-aware:backfill_max_gpus=0")
                got_off = without_host_timings(paraflex.simulate(workload=rows, policy=off, gpus=gpus))
                self.assertEqual(got_off, without_host_timings(paraflex.simulate(workload=rows, policy="slo-aware:backfill_max_gpus=0", gpus=gpus)))
                # Backfill did run where the limit allows it, and only there: 8 GPUs by default, 128 when asked.
                on = without_host_timings(paraflex.simulate(workload=rows, policy=f"slo-aware:backfill_max_gpus={gpus}", gpus=gpus))
                self.assertNotEqual(on["migrations"], got_off["migrations"])
                def schedule(r):
                    return {k: v for k, v in r.items() if k != "policy"}  # the spec differs, not the run
                self.assertEqual(schedule(ref) == schedule(on), gpus == 8)
        with self.assertRaisesRegex(ValueError, "backfill_max_gpus must be >= 0"):
            paraflex.ComposedPolicy(backfill_max_gpus=-1)

    def test_slo_aware_with_a_deadline_only_order_in_python_runs_as_order_edf_does(self):
        # One GPU, both at once: the priority-0 request makes its deadline only if it runs first; the
        # priority-1 one makes its own either way.
        one = dict(arrival_s=0.0, model="flux-dev", height=512, width=512, steps=20)
        alone = paraflex.simulate(workload=[one], policy="slo-aware", gpus=1)["latency_s"]["mean"]
        rows = [dict(one, slo_s=1.5 * alone, priority=0), dict(one, slo_s=10 * alone, priority=1)]
        self.assertTrue(paraflex.PriorityEdfOrder().priority_first)
        by_deadline = paraflex.slo_aware(order=paraflex.PriorityEdfOrder(10.0, priority_first=False), name="slo-aware:order=edf")
        ref = without_host_timings(paraflex.simulate(workload=rows, policy="slo-aware:order=edf", gpus=1))
        self.assertEqual(without_host_timings(paraflex.simulate(workload=rows, policy=by_deadline, gpus=1)), ref)
        by_class = without_host_timings(paraflex.simulate(workload=rows, policy="slo-aware", gpus=1))
        self.assertGreater(ref["slo_attainment"], by_class["slo_attainment"])
        with self.assertRaisesRegex(TypeError, "priority_first must be True or False"):
            paraflex.PriorityEdfOrder(priority_first=1)

    def test_slo_aware_composed_in_python_batches_as_the_registry_spec_does(self):
        batching = paraflex.slo_aware(max_batch=8, name="slo-aware:max_batch=8")
        self.assertEqual((batching.max_batch, batching.batch_margin, batching.batch_saving), (8, min(0.9, 0.2 + 0.1), 0.25))
        got = without_host_timings(paraflex.simulate(policy=batching))
        self.assertEqual(got, self.reference("slo-aware:max_batch=8"))
        self.assertNotEqual(got["latency_s"], self.reference("slo-aware")["latency_s"])  # batches did run
        with self.assertRaisesRegex(ValueError, "max_batch must be in"):
            paraflex.ComposedPolicy(max_batch=0)
        with self.assertRaisesRegex(ValueError, "batch_saving must be in"):
            paraflex.ComposedPolicy(batch_saving=1.5)

    def test_a_python_placement_inside_slo_aware_is_called_and_can_delegate(self):
        class Delegating:
            def __init__(self):
                self.inner, self.calls = paraflex.StickyPlacement(), 0

            def place(self, view, h, k, available, preferred):
                self.calls += 1
                return self.inner.place(view, h, k, available, preferred)

        p = Delegating()
        got = without_host_timings(paraflex.simulate(policy=paraflex.slo_aware(placement=p)))
        self.assertGreater(p.calls, 0)
        self.assertEqual(got, self.reference("slo-aware"))

    def test_a_python_placement_that_changes_groups_changes_the_schedule(self):
        class HighestIds:
            def place(self, view, h, k, available, preferred):
                ids = available.to_list()
                return ids[-k:] if len(ids) >= k else None

        r = paraflex.simulate(policy=paraflex.slo_aware(placement=HighestIds(), name="slo-aware+highest"))
        self.assertEqual(r["policy"], "slo-aware+highest")
        self.assertEqual(r["completed"] + r["dropped"], r["requests"])

    def test_python_order_sizing_and_admission_parts(self):
        class Edf:
            def key(self, view, h):
                r = view.request(h)
                return (-r.priority, r.deadline)

        class Fastest:
            def __init__(self):
                self.inner = paraflex.FastestDegree()

            def degree(self, view, h, available):
                return self.inner.degree(view, h, available)

        class Unreachable:
            def __init__(self):
                self.begun = 0

            def begin(self, view):
                self.begun += 1

            def judge(self, view, h):
                return ("drop", "too_late") if paraflex.deadline_unreachable(view, h) else "admit"

        adm = Unreachable()
        mixed = paraflex.ComposedPolicy(adm, Edf(), Fastest(), paraflex.StickyPlacement(), name="mixed")
        builtin = paraflex.ComposedPolicy(paraflex.DropUnreachable(), paraflex.PriorityEdfOrder(), paraflex.FastestDegree(),
                                          paraflex.StickyPlacement(), name="mixed")
        a = without_host_timings(paraflex.simulate(policy=mixed))
        b = without_host_timings(paraflex.simulate(policy=builtin))
        self.assertGreater(adm.begun, 0)
        self.assertEqual(a["dropped_by_reason"].keys(), {"too_late"})
        b["dropped_by_reason"] = {"too_late": b["dropped_by_reason"].pop("deadline_unreachable")}
        self.assertEqual(a, b)

    def test_bad_part_results_raise_naming_the_part(self):
        class BadKey:
            def key(self, view, h):
                return "soon"

        with self.assertRaisesRegex(TypeError, "BadKey.key"):
            paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(order=BadKey()))

        class BadVerdict:
            def judge(self, view, h):
                return "maybe"

        with self.assertRaisesRegex(ValueError, "BadVerdict.judge"):
            paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(admission=BadVerdict()))

        class BusyPlacement:
            def place(self, view, h, k, available, preferred):
                return [0] * k

        # The composition passes the group on; the runtime refuses it, naming the request.
        with self.assertRaisesRegex(paraflex.PolicyError, r"request '\w+': device 0 in \{0,0"):
            paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(placement=BusyPlacement()))

        with self.assertRaisesRegex(TypeError, "has no place"):
            paraflex.ComposedPolicy(placement=object())

    def test_a_key_too_large_for_a_float_or_pending_drops_that_is_no_list_raises_naming_the_method(self):
        # Regression: a bare OverflowError / "'int' object is not iterable", naming no method.
        class HugeKey:
            def key(self, view, h):
                return 10**400

        class NotAList:
            def judge(self, view, h):
                return "admit"

            def pending_drops(self):
                return 5

        with self.assertRaisesRegex(ValueError, r"HugeKey.key\(\) returned 1000\d+ for request \d+, too large to compare as a float"):
            paraflex.simulate(workload=SMALL, policy=paraflex.ComposedPolicy(order=HugeKey()))
        with self.assertRaisesRegex(TypeError, r"NotAList.pending_drops\(\) returned a int; expected an iterable of request handles"):
            paraflex.simulate(workload=SMALL, policy=paraflex.ComposedPolicy(admission=NotAList()))

    def test_a_group_to_ask_about_must_be_non_empty_in_range_and_without_repeats(self):
        # Regression: migration_time(h, []) read element 0 of an empty group; out-of-range and
        # repeated devices were answered as if they were a group.
        answers = []

        class Asker(Fcfs):
            def decide(self, view, out):
                for h in view.waiting():
                    if view.request(h).state_group and not answers:
                        for ask in (lambda g: view.migration_time(h, g), lambda g: view.needs_migration(h, g),
                                    lambda g: view.placeable(g, view.free_devices())):
                            for g, error in (([], ValueError), ([99], IndexError), ([0, 0], ValueError)):
                                try:
                                    ask(g)
                                    answers.append(("no error", g))
                                except error as e:
                                    answers.append((type(e).__name__, str(e)))
                super().decide(view, out)

        rows = [dict(arrival_s=i * 0.0, model="flux-dev", height=512, width=512, steps=4) for i in range(6)]
        paraflex.simulate(workload=rows, policy=Asker(), gpus=2)
        self.assertEqual(len(answers), 9, answers)
        for kind, message in answers:
            self.assertNotEqual(kind, "no error", message)
            self.assertRegex(message, r"^View\.(migration_time|needs_migration|placeable): (the device group is empty|"
                                      r"device 99 out of range \(2 devices\)|device 0 appears twice in the group)$")
        with self.assertRaisesRegex(IndexError, r"Cluster.within_one_node: device 99 out of range \(8 devices\)"):
            paraflex.Cluster(8).within_one_node([99])

    def test_a_degree_beyond_64_bits_from_a_python_sizing_is_a_value_error_naming_the_part(self):
        # Regression: RuntimeError "Unable to cast Python instance to C++ type".
        class Huge:
            def degree(self, view, h, available):
                return 2**70

        with self.assertRaisesRegex(ValueError, r"Huge\.degree\(\) returned degree 1180591620717411303424 for request \d+; expected 0\.\.8"):
            paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(sizing=Huge()))

    def test_pending_drops_with_a_handle_that_does_not_exist_raises_naming_the_part(self):
        # Regression: the handle reached composed_policy unchecked and was read out of bounds (SIGSEGV).
        for bad in (10**9, 2**32 - 1, len(SMALL)):
            class Stale:
                def judge(self, view, h):
                    return ("drop", "stale")

                def pending_drops(self):
                    return [bad]

            with self.subTest(handle=bad), self.assertRaisesRegex(
                    ValueError, rf"Stale.pending_drops\(\) returned request handle {bad}, which does not exist \(\d+ requests\)"):
                paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(admission=Stale()))

    def test_a_placement_that_breaks_its_contract_raises_naming_the_part_and_the_request(self):
        # Regression: composed_policy passed such a group over as "no room": everything ended as
        # policy_stalled, nothing named the part.
        class Pl:
            def __init__(self, f):
                self.f = f

            def place(self, view, h, k, available, preferred):
                return self.f(k, available)

        cases = [(lambda k, a: list(range(100, 100 + k)), r"Pl.place\(\) for request 'a' returned device 100, which is not in `available`"),
                 (lambda k, a: a.to_list()[:k + 1], r"Pl.place\(\) for request 'a' returned 2 devices; expected k = 1"),
                 (lambda k, a: [], r"Pl.place\(\) for request 'a' returned 0 devices; expected k = 1")]
        for f, message in cases:
            with self.subTest(message=message), self.assertRaisesRegex(ValueError, message):
                paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(placement=Pl(f)))
        # None still means "no room here" (the request waits).
        r = paraflex.simulate(workload=SMALL, policy=paraflex.slo_aware(placement=Pl(lambda k, a: None)))
        self.assertEqual(r["completed"], 0)

    def test_placement_helpers(self):
        c = paraflex.Cluster(8, 4)
        free = paraflex.DeviceSet(8, [1, 2, 3, 5, 6])
        self.assertEqual(paraflex.find_free_group(free, 2, c), [5, 6])  # best fit: the node with the fewest free that fit
        self.assertEqual(paraflex.find_free_group(free, 3, c), [1, 2, 3])
        self.assertEqual(paraflex.find_free_group(paraflex.DeviceSet(8, range(8)), 4, c), [0, 1, 2, 3])  # an aligned block
        self.assertEqual(len(paraflex.find_free_group(free, 5, c)), 5)
        self.assertIsNone(paraflex.find_free_group(free, 6, c))
        free.reset_group([2, 3])
        self.assertEqual(free.to_list(), [1, 5, 6])
        self.assertIn(5, free)
        self.assertTrue(free.contains_all([5, 6]))
        self.assertEqual(paraflex.to_ticks(1.5), 1_500_000)
        self.assertEqual(paraflex.to_seconds(250_000), 0.25)
        self.assertEqual(paraflex.NEVER, 2**63 - 1)
        self.assertIn("slo-aware", paraflex.policies())

    def test_find_free_group_refuses_a_device_set_of_another_size_than_its_cluster(self):
        # Regression: a 16-device set on an 8-GPU cluster gave devices 0..11 (a smaller set was refused).
        for capacity in (16, 4):
            with self.subTest(capacity=capacity), self.assertRaisesRegex(
                    ValueError, rf"^find_free_group: the DeviceSet has capacity {capacity}; the cluster has 8 devices$"):
                paraflex.find_free_group(paraflex.DeviceSet(capacity, range(capacity)), 2, paraflex.Cluster(8, 8))

    def test_policy_lists_refuse_a_cluster_without_gpus_as_simulate_does(self):
        # Regression: gpus=0 or -1 was accepted (policy_parameters then said "[1, 0]").
        for f, message in [(lambda: paraflex.policy_parameters("static", gpus=0), r"^policy_parameters: gpus: Value 0 not in range 1 to 65536$"),
                           (lambda: paraflex.policies(-1), r"^policies: gpus: Value -1 not in range 1 to 65536$"),
                           (lambda: paraflex.default_policies(0), r"^default_policies: gpus: Value 0 not in range 1 to 65536$")]:
            with self.subTest(message=message), self.assertRaisesRegex(ValueError, message):
                f()
        with self.assertRaisesRegex(TypeError, r"^policies: gpus must be an int, got bool$"):
            paraflex.policies(True)

    def test_policy_parameters_list_what_paraflex_sim_lists(self):
        self.assertEqual(paraflex.policy_parameters("static", gpus=4), {"degree": ("required", "[1, 4]")})
        self.assertEqual(paraflex.policy_parameters("rssp"), {})
        slo = paraflex.policy_parameters("slo-aware")
        self.assertEqual(slo["admission"], ("relaxed", "relaxed|strict|off"))
        self.assertEqual(slo["exact_limit"][0], "4096")
        self.assertEqual(list(slo)[0], "admission")  # the factory's order
        with self.assertRaises(ValueError) as e:
            paraflex.policy_parameters("nope")
        self.assertIn("unknown policy 'nope'", str(e.exception))

    def test_a_device_set_of_anything_but_ints_is_a_type_error_naming_device_set(self):
        # Regression: RuntimeError "Unable to cast Python instance to C++ type".
        with self.assertRaisesRegex(TypeError, r"^DeviceSet: device ids must be ints, got float$"):
            paraflex.DeviceSet(8, [1.5])
        with self.assertRaisesRegex(TypeError, r"^DeviceSet: devices must be an iterable of ints, got str$"):
            paraflex.DeviceSet(8, "01")
        with self.assertRaisesRegex(ValueError, r"^DeviceSet: device -1 out of range \[0, 8\)$"):
            paraflex.DeviceSet(8, [-1])
        with self.assertRaisesRegex(ValueError, r"^DeviceSet: capacity -1 is out of range \[0, 4294967295\]$"):
            paraflex.DeviceSet(-1)
        s = paraflex.DeviceSet(8, [1, 2])
        for f, exc, message in [(lambda: s.set(-1), IndexError, r"^DeviceSet\.set: device -1 out of range \[0, 8\)$"),
                                (lambda: s.reset(2**70), IndexError, r"^DeviceSet\.reset: device 1180591620717411303424 out of range"),
                                (lambda: s.test("1"), TypeError, r"^DeviceSet\.test: device ids must be ints, got str$")]:
            with self.subTest(message=message), self.assertRaisesRegex(exc, message):
                f()
        self.assertEqual(s.to_list(), [1, 2])

    def test_a_device_set_equals_only_a_device_set_and_holds_only_its_devices(self):
        # Regression: == with another type and `in` with a negative or non-int raised TypeError.
        s = paraflex.DeviceSet(8, [1])
        self.assertFalse(s == 3)
        self.assertTrue(s != "x")
        self.assertEqual(s, paraflex.DeviceSet(8, [1]))
        self.assertNotEqual(s, paraflex.DeviceSet(8, [2]))
        for value in (-1, 8, 2**70, "1", 1.0, None, True):
            with self.subTest(value=value):
                self.assertNotIn(value, s)
        self.assertIn(1, s)
        self.assertFalse(s.test(-1))  # as device_set::test: false beyond the set
        self.assertFalse(s.test(100))

    def test_a_cluster_follows_simulates_rules_and_node_of_refuses_a_device_it_does_not_have(self):
        # Regression: Cluster(8, 3) was accepted (simulate refuses it) and node_of(10**9) returned 250000000.
        for args, message in [((8, 3), r"^Cluster: gpus 8 is not a multiple of gpus_per_node 3: every node must be whole \(e\.g\. gpus 9 or gpus_per_node 2\)$"),
                              ((8, 16), r"^Cluster: gpus_per_node 16 exceeds gpus 8$"),
                              ((0,), r"^Cluster: gpus: Value 0 not in range 1 to 65536$"),
                              ((2**40,), r"^Cluster: gpus: Value 1099511627776 not in range 1 to 65536$")]:
            with self.subTest(args=args), self.assertRaisesRegex(ValueError, message):
                paraflex.Cluster(*args)
        with self.assertRaises(ValueError):
            paraflex.simulate(gpus=8, gpus_per_node=3)
        with self.assertRaisesRegex(TypeError, r"^Cluster: gpus must be an int, got str$"):
            paraflex.Cluster("8")
        c = paraflex.Cluster(8, 4)
        self.assertEqual([c.node_of(0), c.node_of(7)], [0, 1])
        for device in (8, 10**9, -1):
            with self.subTest(device=device), self.assertRaisesRegex(IndexError, rf"^Cluster\.node_of: device {device} out of range \[0, 8\)$"):
                c.node_of(device)

    def test_placement_helpers_refuse_a_device_set_of_another_size_than_the_cluster(self):
        # Regression: on an 8-GPU cluster they returned devices 0..15 from a 64-device set.
        seen = []

        class Probe:
            def decide(self, view, out):
                h = view.waiting()[0]
                if not seen:
                    all64, none64 = paraflex.DeviceSet(64, range(64)), paraflex.DeviceSet(64)
                    for label, f in [("place", lambda: paraflex.place(view, h, 16, all64)),
                                     ("place", lambda: paraflex.place(view, h, 1, paraflex.DeviceSet(2, [0, 1]))),
                                     ("StickyPlacement.place: available", lambda: paraflex.StickyPlacement().place(view, h, 16, all64, none64)),
                                     ("PackedPlacement.place: available", lambda: paraflex.PackedPlacement().place(view, h, 16, all64, none64)),
                                     ("expected_migration", lambda: paraflex.expected_migration(view, h, 1, all64)),
                                     ("estimated_finish", lambda: paraflex.estimated_finish(view, h, 1, all64)),
                                     ("SmallestMeetingDegree.degree: available", lambda: paraflex.SmallestMeetingDegree().degree(view, h, all64)),
                                     ("FastestDegree.degree: available", lambda: paraflex.FastestDegree().degree(view, h, all64)),
                                     ("CheapestDegree.degree: available", lambda: paraflex.CheapestDegree().degree(view, h, all64))]:
                        try:
                            seen.append(("returned", f()))
                        except ValueError as e:
                            seen.append((label, str(e)))
                out.assign(h, [0])

        paraflex.simulate(workload=SMALL[:1], policy=Probe())
        self.assertEqual([label for label, _ in seen],
                         ["place", "place", "StickyPlacement.place: available", "PackedPlacement.place: available", "expected_migration",
                          "estimated_finish", "SmallestMeetingDegree.degree: available", "FastestDegree.degree: available",
                          "CheapestDegree.degree: available"])
        for label, message in seen:
            self.assertRegex(message, rf"^{label}: the DeviceSet has capacity (64|2); the cluster has 8 devices$")


if __name__ == "__main__":
    unittest.main()
