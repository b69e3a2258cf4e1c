"""plan_migration and shard_range: the migration plans a Python executor follows."""

import unittest

from support import paraflex


class MigrationPlans(unittest.TestCase):
    def test_a_shared_device_keeps_its_half_locally(self):
        p = paraflex.plan_migration([0, 1], [1, 2], 100)
        self.assertEqual(p.layout, [2, 1])
        self.assertEqual((p.local_elements, p.remote_elements), (50, 50))
        self.assertEqual([(e.src_rank, e.dst_rank, e.offset, e.count, e.local) for e in p.edges],
                         [(0, 1, 0, 50, False), (1, 0, 50, 50, True)])

    def test_every_element_is_in_exactly_one_edge(self):
        for src, dst, total in [([0], [0, 1, 2, 3], 1001), ([0, 1, 2, 3], [5], 7), ([3, 1, 2], [2, 0], 64), ([0, 1], [0, 1], 9)]:
            with self.subTest(src=src, dst=dst, total=total):
                p = paraflex.plan_migration(src, dst, total)
                self.assertEqual(sorted(p.layout), sorted(dst))
                covered = sorted((e.offset, e.offset + e.count) for e in p.edges)
                self.assertEqual(covered[0][0], 0)
                self.assertEqual(covered[-1][1], total)
                for (a, b), (c, _) in zip(covered, covered[1:]):
                    self.assertEqual(b, c)
                self.assertEqual(p.local_elements + p.remote_elements, total)
                for e in p.edges:
                    self.assertEqual(e.local, src[e.src_rank] == dst[e.dst_rank])

    def test_shard_ranges_tile_the_state(self):
        self.assertEqual([paraflex.shard_range(i, 3, 10) for i in range(3)], [(0, 3), (3, 3), (6, 4)])

    def test_bad_arguments_raise_value_error(self):
        with self.assertRaisesRegex(ValueError, "empty source"):
            paraflex.plan_migration([], [1], 10)
        with self.assertRaisesRegex(ValueError, "appears twice"):
            paraflex.plan_migration([0], [1, 1], 10)
        with self.assertRaisesRegex(ValueError, "not a device id"):
            paraflex.plan_migration([-1], [1], 10)
        with self.assertRaisesRegex(ValueError, "total must be >= 0"):
            paraflex.plan_migration([0], [1], -5)
        with self.assertRaisesRegex(ValueError, "rank 3 of 3"):
            paraflex.shard_range(3, 3, 10)

    def test_an_int_too_large_or_a_wrong_type_names_the_function_and_the_argument(self):
        # Regression: pybind11's "incompatible function arguments" with the whole signature.
        with self.assertRaisesRegex(ValueError, r"^plan_migration: source: 1099511627776 is not a device id$"):
            paraflex.plan_migration([2**40], [1], 10)
        with self.assertRaisesRegex(TypeError, r"^plan_migration: dest: device ids must be ints, got str$"):
            paraflex.plan_migration([0], ["1"], 10)
        with self.assertRaisesRegex(ValueError, r"^shard_range: rank 1180591620717411303424 is out of range"):
            paraflex.shard_range(2**70, 3, 10)
        with self.assertRaisesRegex(TypeError, r"^shard_range: total must be an int, got float$"):
            paraflex.shard_range(0, 3, 10.0)

    def test_an_edge_equals_only_an_edge(self):
        # Regression: == with another type raised pybind11's TypeError.
        a, b = paraflex.plan_migration([0, 1], [1, 2], 100).edges
        self.assertEqual(a, paraflex.plan_migration([0, 1], [1, 2], 100).edges[0])
        self.assertNotEqual(a, b)
        self.assertFalse(a == (0, 1, 0, 50, False))
        self.assertTrue(a != None)  # noqa: E711 - the comparison itself is under test


if __name__ == "__main__":
    unittest.main()
