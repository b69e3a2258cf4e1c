"""The tiny DiT and its Ulysses split, in one process (no torch.distributed): the sharded forward of
any degree, with uneven shards and any layout order, computes what the whole-sequence forward does."""

import threading
import unittest

import torch

from torch_support import SMALL  # first: it puts paraflex_torch on sys.path
from paraflex_torch.comm import Edge, Plan, token_counts
from paraflex_torch.tiny_dit import (Comm, DiTConfig, LocalComm, Shape, model_for, reference_generate,
                                     request_seed, shard_range)


class ThreadComm(Comm):
    """Ulysses over k threads of this process: the same chunking as comm.UlyssesComm, exchanged
    through shared slots and a barrier instead of isend/irecv."""

    def __init__(self, shared: dict, barrier: threading.Barrier, rank: int, degree: int):
        self.shared, self.barrier, self.rank, self.degree = shared, barrier, rank, degree

    def _swap(self, chunks):
        for j, c in enumerate(chunks):
            self.shared[(self.rank, j)] = c.clone()
        self.barrier.wait()
        got = [self.shared[(j, self.rank)] for j in range(self.degree)]
        self.barrier.wait()
        return got

    def seq_to_heads(self, x, counts):
        hk = x.shape[2] // self.degree
        return torch.cat(self._swap([x[:, :, j * hk:(j + 1) * hk] for j in range(self.degree)]), dim=0)

    def heads_to_seq(self, x, counts):
        offs = [sum(counts[:j]) for j in range(self.degree + 1)]
        return torch.cat(self._swap([x[offs[j]:offs[j + 1]] for j in range(self.degree)]), dim=1)


def sharded_step(cfg, request_id, shape, step, steps, degree):
    m = model_for(cfg)
    y = m.encode_text(request_id)
    x = m.initial_noise(request_id, shape)
    total = x.shape[0]
    counts = token_counts(degree, total)
    out = [None] * degree
    shared, barrier = {}, threading.Barrier(degree)
    errors = []

    def rank(i):
        try:
            b, n = shard_range(i, degree, total)
            with torch.no_grad():
                out[i] = m.euler_step(x[b:b + n], step, steps, y, shape, b, ThreadComm(shared, barrier, i, degree), counts)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(degree)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    with torch.no_grad():
        whole = m.euler_step(x, step, steps, y, shape, 0, LocalComm(), [total])
    return torch.cat(out, dim=0), whole


class TinyDiTTest(unittest.TestCase):
    def test_a_sharded_step_at_any_allowed_degree_matches_the_whole_sequence(self):
        shape = Shape(80, 48)  # 5 x 3 = 15 tokens: uneven shards for degrees 2 and 4
        for degree in (1, 2, 4):
            with self.subTest(degree=degree):
                got, want = sharded_step(SMALL, "req-a", shape, 1, 4, degree)
                self.assertLessEqual((got - want).abs().max().item(), 1e-5)

    def test_the_token_count_is_paraflex_latent_tokens(self):
        # (H/16)(W/16) per latent frame, 1 + (F-1)/4 latent frames, at least one token
        self.assertEqual(Shape(512, 512).tokens(DiTConfig()), 1024)
        self.assertEqual(Shape(1024, 768).tokens(DiTConfig()), 64 * 48)
        self.assertEqual(Shape(720, 1280, 17).tokens(DiTConfig()), 45 * 80 * 5)
        self.assertEqual(Shape(8, 8).tokens(DiTConfig()), 1)

    def test_the_reference_is_deterministic_per_request_and_differs_between_requests(self):
        a = reference_generate(SMALL, "r1", Shape(32, 48), 3)
        b = reference_generate(SMALL, "r1", Shape(32, 48), 3)
        c = reference_generate(SMALL, "r2", Shape(32, 48), 3)
        self.assertEqual(tuple(a.shape), (1, 3, 32, 48))
        self.assertTrue(torch.equal(a, b))
        self.assertGreater((a - c).abs().max().item(), 1e-3)
        self.assertEqual(request_seed("r1"), request_seed("r1"))
        self.assertNotEqual(request_seed("r1"), request_seed("r2"))

    def test_every_step_changes_the_latent(self):
        m = model_for(SMALL)
        shape = Shape(32, 32)
        x = m.initial_noise("r", shape)
        with torch.no_grad():
            x1 = m.euler_step(x, 0, 4, m.encode_text("r"), shape, 0, LocalComm(), [x.shape[0]])
        self.assertGreater((x1 - x).abs().max().item(), 1e-3)

    def test_a_degree_that_does_not_divide_the_heads_is_not_allowed(self):
        self.assertTrue(SMALL.allows_degree(4))
        self.assertFalse(SMALL.allows_degree(3))
        self.assertFalse(SMALL.allows_degree(0))
        with self.assertRaisesRegex(ValueError, "not a multiple of heads"):
            DiTConfig(hidden=30, heads=4)

    def test_shard_range_matches_the_cpp_formula(self):
        self.assertEqual([shard_range(i, 3, 10) for i in range(3)], [(0, 3), (3, 3), (6, 4)])
        with self.assertRaises(ValueError):
            shard_range(3, 3, 10)


class PlanTest(unittest.TestCase):
    def test_a_plan_that_tiles_the_destination_is_valid(self):
        # {0,1} -> {1,2} over 100 elements: device 1 keeps [50,100), device 2 gets [0,50) from 0
        p = Plan((0, 1), (1, 2), (2, 1), (Edge(0, 1, 0, 50, False), Edge(1, 0, 50, 50, True)), 100)
        p.validate()

    def test_a_plan_with_a_gap_or_a_wrong_local_flag_is_rejected(self):
        with self.assertRaisesRegex(ValueError, "slice 0 of the destination"):
            Plan((0, 1), (1, 2), (2, 1), (Edge(0, 1, 0, 40, False), Edge(1, 0, 50, 50, True)), 100).validate()
        with self.assertRaisesRegex(ValueError, "local flag"):
            Plan((0, 1), (1, 2), (2, 1), (Edge(0, 1, 0, 50, True), Edge(1, 0, 50, 50, True)), 100).validate()
        with self.assertRaisesRegex(ValueError, "permutation"):
            Plan((0,), (1,), (2,), (Edge(0, 0, 0, 10, False),), 10).validate()


if __name__ == "__main__":
    unittest.main()
