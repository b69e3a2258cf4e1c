"""A worker process killed in the middle of a step: the runtime sees device_lost, the launch on it
fails, the live ranks of that step finish it (failed) instead of hanging, the request restarts
elsewhere and matches the reference, and the other devices keep serving. Needs the bindings."""

import time
import unittest

import torch

from torch_support import SMALL, needs_plan  # first: it puts paraflex_torch on sys.path
from paraflex_torch.driver import DoubleRuntime, Task
from paraflex_torch.executor import TorchExecutor
from paraflex_torch.tiny_dit import Shape, reference_generate
from paraflex_torch.worker import Settings


@needs_plan
class KilledWorkerTest(unittest.TestCase):
    def test_a_worker_killed_mid_step_is_lost_and_every_request_ends_exactly_once(self):
        torch.set_num_threads(1)
        # device 1 kills itself (SIGKILL) after the first all_to_all of the first step it runs
        ex = TorchExecutor.spawn(Settings(devices=4, model=SMALL, timeout_s=60, kill_device=1, kill_at_step=1))
        try:
            shape, rid = Shape(64, 48), "victim"
            events = []

            def wait_for(kind):
                deadline = time.monotonic() + 60
                while not any(e[0] == kind for e in events) and time.monotonic() < deadline:
                    ex.wait_until(ex.now() + 100_000)
                    events.extend(ex.poll())

            ex.launch(Task(1, 0, rid, "encode", -1, [0, 1, 2, 3], [], "tiny-dit", 64, 48, 1, 0, 3))
            wait_for("task_done")
            ex.launch(Task(2, 0, rid, "step", 0, [0, 1, 2, 3], [], "tiny-dit", 64, 48, 1, 0, 3))
            wait_for("device_lost")
            self.assertEqual(events, [("task_done", 1, 0), ("task_failed", 2, 0), ("device_lost", 1)])
            self.assertEqual(ex.lost_devices(), [1])
            self.assertIn("device 1 lost", " ".join(ex.errors()))

            # The runtime restarts the victim (its state lived on device 1) and serves new requests
            # on what is left; a survivor that had waited out the transport timeout would be lost too.
            rt = DoubleRuntime(ex, 4, degrees=(1, 2, 4), seed=2, max_running=2, lost=[1])
            rt.next_launch = 10
            victim = rt.submit(rid, shape, 3)
            for i in range(4):
                rt.submit(f"after-{i}", Shape(32, 64), 3)
            records = rt.run(timeout_s=90)
            self.assertTrue(all(r.ends == 1 for r in records))
            self.assertEqual([r.phase for r in records], ["completed"] * 5, [(r.id, r.reason) for r in records])
            self.assertEqual(ex.lost_devices(), [1])
            for r in records:
                out = ex.output(r.handle)
                self.assertLessEqual((out - reference_generate(SMALL, r.id, r.shape, 3)).abs().max().item(), 1e-5, r.id)
            self.assertTrue(all(1 not in t.group and 1 not in t.source for t in rt.launched))
            self.assertEqual(records[victim].position, 5)
            held = ex.held_states()
            self.assertEqual(sorted(held), [0, 2, 3])
            self.assertTrue(all(h["committed"] == [] and h["staged"] == 0 for h in held.values()), held)
        finally:
            ex.close()
        codes = ex.exit_codes()
        self.assertEqual(codes[1], -9)
        self.assertEqual([codes[0], codes[2], codes[3]], [0, 0, 0])


if __name__ == "__main__":
    unittest.main()
