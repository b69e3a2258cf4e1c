"""torch_serving.py end to end through the bindings' Scheduler: a small configuration passes --check
(every completed request equals its single-process reference), and a worker killed mid-step is
one lost device while every request still ends exactly once."""

import os
import re
import subprocess
import sys
import unittest

from torch_support import HAVE_SCHEDULER

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "torch_serving.py")
LAST = re.compile(r"^max_abs_diff=(\S+) completed=(\d+) dropped=(\d+) lost=(\d+) migrations=(\d+) degrees=([\d,]*)$")

SMALL = ["--hidden", "32", "--depth", "2", "--heads", "4", "--sizes", "128,256", "--steps", "4", "--step-ms", "300",
         "--rate", "6", "--timeout", "60"]


def serve(*extra):
    r = subprocess.run([sys.executable, SCRIPT, *SMALL, *extra], capture_output=True, text=True, timeout=110)
    lines = r.stdout.strip().splitlines()
    m = LAST.match(lines[-1]) if lines else None
    return r, m


@unittest.skipUnless(HAVE_SCHEDULER, "the bindings (paraflex.Scheduler) are not on PYTHONPATH")
class TorchServingTest(unittest.TestCase):
    def test_served_requests_equal_their_single_process_references(self):
        r, m = serve("--procs", "3", "--requests", "5", "--check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIsNotNone(m, r.stdout)
        diff, completed, dropped, lost = float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
        self.assertLessEqual(diff, 1e-5)
        self.assertGreaterEqual(completed, 1)
        self.assertEqual(completed + dropped, 5)
        self.assertEqual(lost, 0)
        self.assertTrue(set(m.group(6).split(",")) <= {"1", "2", "4"}, m.group(6))  # 3 does not divide 4 heads

    def test_a_worker_killed_mid_step_is_one_lost_device_and_the_rest_is_served(self):
        r, m = serve("--procs", "3", "--requests", "4", "--kill-device", "0", "--kill-at-step", "1", "--check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIsNotNone(m, r.stdout)
        self.assertEqual(int(m.group(4)), 1)
        self.assertEqual(int(m.group(2)) + int(m.group(3)), 4)
        self.assertIn("device 0 lost", r.stdout)

    def test_bad_arguments_are_a_usage_error(self):
        r = subprocess.run([sys.executable, SCRIPT, "--procs", "2", "--kill-device", "5"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--kill-device 5 is not a device", r.stderr)


if __name__ == "__main__":
    unittest.main()
