"""TorchExecutor with real worker processes (gloo on CPU): served requests match the single-process
reference while groups, degrees and layouts change; failures are transactional; bad launches fail
cleanly. Needs the bindings (paraflex.plan_migration) on PYTHONPATH."""

import os
import time
import unittest

from torch_support import SMALL, SharedExecutorTest, needs_plan, paraflex  # first: it puts paraflex_torch on sys.path
from paraflex_torch.driver import DoubleRuntime, Task
from paraflex_torch.tiny_dit import Shape, reference_generate
from paraflex_torch.worker import Settings

TOL = 1e-5


class Launcher:
    """Launches tasks one by one as the runtime would and waits for each outcome."""

    def __init__(self, ex):
        self.ex = ex
        self.next = 1000

    def run(self, request, rid, kind, group, *, step=-1, source=(), shape=Shape(48, 64), steps=3, timeout=60.0):
        self.next += 1
        lid = self.next
        self.ex.launch(Task(lid, request, rid, kind, step, list(group), list(source), "tiny-dit", shape.height, shape.width,
                            shape.frames, 0, steps))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.ex.poll():
                if ev[0] != "device_lost" and ev[1] == lid:
                    return ev[0]
            self.ex.wait_until(self.ex.now() + 100_000)
        raise AssertionError(f"no outcome for launch {lid} within {timeout} s")


def max_diff(ex, records, cfg):
    worst = 0.0
    for r in records:
        if r.phase != "completed":
            continue
        out = ex.output(r.handle)
        if out is None:
            raise AssertionError(f"request {r.id} completed without an output")
        worst = max(worst, (out - reference_generate(cfg, r.id, r.shape, r.steps)).abs().max().item())
    return worst


@needs_plan
class TorchExecutorTest(SharedExecutorTest):
    # device 2 fails step 0 of "flaky-req" once, after its exchanges: its peer succeeds, the launch must not
    settings = Settings(devices=3, model=SMALL, timeout_s=30, fail_device=2, fail_request="flaky-req", fail_step=0)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.go = Launcher(cls.ex)

    def test_1_requests_served_on_changing_groups_match_the_single_process_reference(self):
        rt = DoubleRuntime(self.ex, 3, degrees=(1, 2), seed=11, max_running=2)
        shapes = [Shape(64, 64), Shape(48, 80), Shape(96, 32), Shape(32, 32)]
        for i in range(6):
            rt.submit(f"serve-{i}", shapes[i % len(shapes)], 4)
        records = rt.run(timeout_s=90)
        self.assertTrue(all(r.ends == 1 for r in records))
        self.assertEqual([r.phase for r in records], ["completed"] * 6, [(r.id, r.reason) for r in records])
        self.assertGreater(rt.migrations, 0)
        self.assertEqual(sorted({k for r in records for k in r.degrees}), [1, 2])
        self.assertLessEqual(max_diff(self.ex, records, SMALL), TOL)
        self.assertEqual(self.ex.lost_devices(), [])
        held = self.ex.held_states()
        self.assertEqual({d: (h["committed"], h["staged"]) for d, h in held.items()}, {d: ([], 0) for d in range(3)})

    def test_2_a_migration_keeps_the_plan_layout_not_the_group_order(self):
        go, ex = self.go, self.ex
        h, rid, shape = 101, "layout-req", Shape(48, 64)  # 12 tokens
        self.assertEqual(go.run(h, rid, "encode", [0, 1], shape=shape), "task_done")
        self.assertEqual(go.run(h, rid, "step", [1, 0], step=0, shape=shape), "task_done")  # a set: any order
        self.assertEqual(go.run(h, rid, "migrate", [1, 2], source=[0, 1], shape=shape), "task_done")
        want = tuple(paraflex.plan_migration([0, 1], [1, 2], 12).layout)
        self.assertEqual(want, (2, 1))  # device 1 keeps its half in place
        self.assertEqual(ex.layout_of(h), want)
        self.assertEqual(go.run(h, rid, "step", [1, 2], step=1, shape=shape), "task_done")
        self.assertEqual(go.run(h, rid, "migrate", [0, 1, 2], source=[1, 2], shape=shape, steps=3), "task_failed")  # 3 % 4 heads
        self.assertEqual(go.run(h, rid, "migrate", [0], source=[1, 2], shape=shape), "task_done")
        self.assertEqual(go.run(h, rid, "step", [0], step=2, shape=shape), "task_done")
        self.assertEqual(go.run(h, rid, "decode", [0], shape=shape), "task_done")
        self.assertLessEqual((ex.output(h) - reference_generate(SMALL, rid, shape, 3)).abs().max().item(), TOL)

    def test_3_a_degree_the_model_cannot_run_fails_at_launch_and_leaves_the_state(self):
        go, ex = self.go, self.ex
        h, rid = 102, "degree-req"
        self.assertEqual(go.run(h, rid, "encode", [0, 1, 2]), "task_failed")
        self.assertIn("degree 3 cannot run this model", ex.errors()[-1])
        self.assertIsNone(ex.layout_of(h))
        self.assertEqual(go.run(h, rid, "encode", [2]), "task_done")
        self.assertEqual(go.run(h, rid, "step", [0], step=0), "task_failed")  # not where its state is
        self.assertIn("state is on [2]", ex.errors()[-1])
        self.assertEqual(go.run(h, rid, "step", [2], step=1), "task_failed")  # out of order
        for s in range(3):
            self.assertEqual(go.run(h, rid, "step", [2], step=s), "task_done")
        self.assertEqual(go.run(h, rid, "decode", [2]), "task_done")
        self.assertLessEqual((ex.output(h) - reference_generate(SMALL, rid, Shape(48, 64), 3)).abs().max().item(), TOL)

    def test_4_release_frees_the_state_of_a_dropped_request(self):
        go, ex = self.go, self.ex
        h, rid = 103, "dropped-req"
        self.assertEqual(go.run(h, rid, "encode", [0, 1]), "task_done")
        held = ex.held_states()
        self.assertIn(h, held[0]["committed"])
        self.assertIn(h, held[1]["committed"])
        ex.release(h)
        held = ex.held_states()
        self.assertTrue(all(h not in x["committed"] for x in held.values()))
        self.assertIsNone(ex.layout_of(h))

    def test_5_a_step_that_fails_on_one_rank_is_discarded_on_every_rank(self):
        go, ex = self.go, self.ex
        h, rid = 104, "flaky-req"
        self.assertEqual(go.run(h, rid, "encode", [1, 2]), "task_done")
        self.assertEqual(go.run(h, rid, "step", [1, 2], step=0), "task_failed")  # device 1 succeeded, device 2 not
        self.assertIn("device 2: injected failure", ex.errors()[-1])
        # had device 1 kept its new state, the retry would find a latent one step ahead and fail
        for s in range(3):
            self.assertEqual(go.run(h, rid, "step", [2, 1], step=s), "task_done")
        self.assertEqual(go.run(h, rid, "decode", [1, 2]), "task_done")
        self.assertLessEqual((ex.output(h) - reference_generate(SMALL, rid, Shape(48, 64), 3)).abs().max().item(), TOL)

    def test_6_now_is_monotonic_and_notify_wakes_a_wait(self):
        ex = self.ex
        a = ex.now()
        ex.notify()
        t0 = time.monotonic()
        ex.wait_until((1 << 63) - 1)  # no deadline: returns at once because of the notify
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertGreaterEqual(ex.now(), a)
        ex.wait_until(ex.now() + 20_000)  # a deadline in 20 ms
        self.assertGreaterEqual(ex.now() - a, 20_000)



@needs_plan
class Shutdown(unittest.TestCase):
    def test_a_driver_that_exits_without_close_still_exits(self):
        # Regression: the spawned workers are not daemonic; with no close() multiprocessing's exit
        # handler waited for them for good (the driver hung after an uncaught exception or sys.exit).
        import subprocess
        import sys
        import textwrap

        here = os.path.dirname(os.path.abspath(__file__))
        code = textwrap.dedent("""
            import sys, torch
            from torch_support import SMALL
            from paraflex_torch.executor import TorchExecutor
            from paraflex_torch.worker import Settings
            torch.set_num_threads(1)
            ex = TorchExecutor.spawn(Settings(devices=2, model=SMALL, timeout_s=60))
            print("spawned", flush=True)
            sys.exit(3)
            """)
        p = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=120)
        self.assertEqual((p.returncode, p.stdout.strip()), (3, "spawned"), p.stderr[-2000:])


if __name__ == "__main__":
    unittest.main()
