"""Shared set-up of the PyTorch executor tests (test_torch_*.py): the examples' paraflex_torch package
on sys.path, the small model they run, whether the bindings the executor needs are importable, and a
test class whose tests share one executor's worker processes.

ctest runs each file with `python3 -m unittest` from this directory and PYTHONPATH at the build's
package directory; the examples directory goes after it, so the built `paraflex` is the one found.
"""

import os
import sys
import unittest

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from paraflex_torch.tiny_dit import DiTConfig  # noqa: E402

try:
    import paraflex
except ImportError:
    paraflex = None

HAVE_PLAN = hasattr(paraflex, "plan_migration")
HAVE_SCHEDULER = hasattr(paraflex, "Scheduler")
# TorchExecutor plans its migrations with the bindings.
needs_plan = unittest.skipUnless(HAVE_PLAN, "the bindings (paraflex.plan_migration) are not on PYTHONPATH")

SMALL = DiTConfig(hidden=32, depth=2, heads=4, text_tokens=8)


class SharedExecutorTest(unittest.TestCase):
    """Tests that share one TorchExecutor: its worker processes (one gloo process group) start once for
    the class, from the class attribute `settings` (a paraflex_torch.worker.Settings), and stop after
    its last test. Tests use it as self.ex."""

    settings = None

    @classmethod
    def setUpClass(cls):
        from paraflex_torch.executor import TorchExecutor  # torch.distributed: only where a class uses it

        torch.set_num_threads(1)
        cls.ex = TorchExecutor.spawn(cls.settings)

    @classmethod
    def tearDownClass(cls):
        cls.ex.close()
