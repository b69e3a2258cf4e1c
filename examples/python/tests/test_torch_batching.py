"""Batched steps in the PyTorch executor: one forward over the members' stacked latents gives each
member what its own steps give; a batch reports one event per member, all alike; a batch that fails on
one rank leaves every member's state as it was. Needs the bindings (paraflex.plan_migration) on
PYTHONPATH for the executor."""

import time
import unittest

import torch

from torch_support import SMALL, SharedExecutorTest, needs_plan  # first: it puts paraflex_torch on sys.path
from paraflex_torch.tiny_dit import LocalComm, Shape, model_for, reference_generate
from paraflex_torch.worker import Settings

SHAPE = Shape(48, 64)  # 12 tokens
TOL = 1e-5


class BatchedForwardTest(unittest.TestCase):
    def test_a_batched_forward_equals_each_members_own_step(self):
        torch.set_num_threads(1)
        m = model_for(SMALL)
        ids = ["a", "bb", "ccc"]
        with torch.no_grad():
            xs = torch.stack([m.initial_noise(i, SHAPE) for i in ids])
            ys = torch.stack([m.encode_text(i) for i in ids])
            steps_at = [(0, 4), (2, 4), (3, 5)]  # members at different steps of different schedules
            out = m.euler_step_batch(xs, steps_at, ys, SHAPE, 0, LocalComm(), [xs.shape[1]])
            for i, (s, n) in enumerate(steps_at):
                own = m.euler_step(xs[i], s, n, ys[i], SHAPE, 0, LocalComm(), [xs.shape[1]])
                self.assertLessEqual((out[i] - own).abs().max().item(), TOL, ids[i])
            # a different member in the batch changes nothing for the others
            out2 = m.euler_step_batch(xs[:2], steps_at[:2], ys[:2], SHAPE, 0, LocalComm(), [xs.shape[1]])
            self.assertLessEqual((out2 - out[:2]).abs().max().item(), TOL)


def task(lid, kind, group, members, *, step=-1, steps=3, shape=SHAPE):
    first = members[0]
    return {"id": lid, "request": first[0], "request_id": first[1], "kind": kind, "step": step, "group": list(group),
            "source": [], "model": "tiny-dit", "height": shape.height, "width": shape.width, "frames": 1,
            "expected_duration_us": 0, "steps": steps,
            "batch": [{"request": h, "request_id": rid, "kind": kind, "step": s, "steps": steps} for h, rid, s in members]}


@needs_plan
class TorchBatchingTest(SharedExecutorTest):
    # device 1 fails step 1 of "flaky-member" once, after the batch's exchanges
    settings = Settings(devices=2, model=SMALL, timeout_s=30, fail_device=1, fail_request="flaky-member", fail_step=1)
    next = 5000  # launch ids

    def launch(self, t, timeout=60.0):
        """Launches `t` and returns {request: outcome} once every member has reported."""
        type(self).next += 1
        t["id"] = self.next
        want = {m["request"] for m in t["batch"]} if t.get("batch") else {t["request"]}
        got = {}
        self.ex.launch(t)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(got) != want:
            for ev in self.ex.poll():
                if ev[0] != "device_lost" and ev[1] == t["id"]:
                    self.assertNotIn(ev[2], got, "one event per member")
                    got[ev[2]] = ev[0]
            if set(got) != want:
                self.ex.wait_until(self.ex.now() + 100_000)
        self.assertEqual(set(got), want, f"outcomes of launch {t['id']}")
        return got

    def single(self, h, rid, kind, group, step=-1, steps=3):
        t = task(0, kind, group, [(h, rid, step)], step=step, steps=steps)
        del t["batch"]
        return self.launch(t)[h]

    def check_outputs(self, members, steps=3):
        for h, rid in members:
            out = self.ex.output(h)
            self.assertIsNotNone(out, rid)
            self.assertLessEqual((out - reference_generate(SMALL, rid, SHAPE, steps)).abs().max().item(), TOL, rid)

    def test_1_batched_encodes_and_steps_serve_each_member_as_alone(self):
        members = [(201, "batch-a"), (202, "batch-b"), (203, "batch-c")]
        got = self.launch(task(0, "encode", [0, 1], [(h, rid, -1) for h, rid in members]))
        self.assertEqual(set(got.values()), {"task_done"})
        self.assertEqual(self.ex.layout_of(202), (0, 1))
        # batch-c runs its first step alone: the batches then hold members at different steps
        self.assertEqual(self.single(203, "batch-c", "step", [0, 1], step=0), "task_done")
        got = self.launch(task(0, "step", [1, 0], [(201, "batch-a", 0), (202, "batch-b", 0), (203, "batch-c", 1)], step=0))
        self.assertEqual(set(got.values()), {"task_done"})
        got = self.launch(task(0, "step", [0, 1], [(201, "batch-a", 1), (202, "batch-b", 1), (203, "batch-c", 2)], step=1))
        self.assertEqual(set(got.values()), {"task_done"})
        got = self.launch(task(0, "step", [0, 1], [(201, "batch-a", 2), (202, "batch-b", 2)], step=2))
        self.assertEqual(set(got.values()), {"task_done"})
        for h, rid in members:
            self.assertEqual(self.single(h, rid, "decode", [0, 1]), "task_done")
        self.check_outputs(members)
        held = self.ex.held_states()
        self.assertEqual({d: x["staged"] for d, x in held.items()}, {0: 0, 1: 0})

    def test_2_a_batch_that_fails_on_one_rank_fails_every_member_and_keeps_their_states(self):
        members = [(211, "steady-member"), (212, "flaky-member")]
        self.assertEqual(set(self.launch(task(0, "encode", [0, 1], [(h, rid, -1) for h, rid in members])).values()), {"task_done"})
        self.assertEqual(set(self.launch(task(0, "step", [0, 1], [(h, rid, 0) for h, rid in members], step=0)).values()), {"task_done"})
        got = self.launch(task(0, "step", [0, 1], [(h, rid, 1) for h, rid in members], step=1))
        self.assertEqual(got, {211: "task_failed", 212: "task_failed"})
        self.assertIn("injected failure", self.ex.errors()[-1])
        # had any rank kept a member's new state, the retry would find a latent one step ahead and fail
        for s in (1, 2):
            self.assertEqual(set(self.launch(task(0, "step", [0, 1], [(h, rid, s) for h, rid in members], step=s)).values()),
                             {"task_done"})
        for h, rid in members:
            self.assertEqual(self.single(h, rid, "decode", [0, 1]), "task_done")
        self.check_outputs(members)

    def test_3_members_in_different_rank_orders_run_one_forward_each_and_stay_exact(self):
        self.assertEqual(self.single(221, "order-a", "encode", [0, 1]), "task_done")
        self.assertEqual(self.single(222, "order-b", "encode", [1, 0]), "task_done")
        self.assertEqual(self.ex.layout_of(222), (1, 0))
        for s in range(3):
            got = self.launch(task(0, "step", [0, 1], [(221, "order-a", s), (222, "order-b", s)], step=s))
            self.assertEqual(set(got.values()), {"task_done"})
        for h, rid in ((221, "order-a"), (222, "order-b")):
            self.assertEqual(self.single(h, rid, "decode", [0, 1]), "task_done")
        self.check_outputs([(221, "order-a"), (222, "order-b")])

    def test_4_a_bad_batch_fails_at_launch_for_every_member(self):
        self.assertEqual(self.single(231, "lonely", "encode", [0]), "task_done")
        got = self.launch(task(0, "step", [0, 1], [(231, "lonely", 0), (232, "never-encoded", 0)], step=0))
        self.assertEqual(got, {231: "task_failed", 232: "task_failed"})
        self.assertIn("state is on", self.ex.errors()[-1])
        self.assertEqual(self.ex.runs_batches, True)


if __name__ == "__main__":
    unittest.main()
