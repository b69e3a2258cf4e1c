"""Shared set-up of the Python tests: where the data, the examples and paraflex-sim are.

ctest sets PYTHONPATH to the build's package directory, PARAFLEX_DATA_DIR to bench/data and, when
paraflex-sim is built in the same tree, PARAFLEX_SIM to it.
"""

import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.dirname(HERE)
DATA = os.environ.get("PARAFLEX_DATA_DIR", os.path.join(EXAMPLES, "..", "..", "bench", "data"))
DEFAULT_WORKLOAD = os.path.join(DATA, "default_workload.csv")
PROFILE = os.path.join(DATA, "profiles", "step_latency.csv")
PARAFLEX_SIM = os.environ.get("PARAFLEX_SIM", "")

if EXAMPLES not in sys.path:
    sys.path.append(EXAMPLES)  # after the build's package directory: the examples' modules

import paraflex  # noqa: E402

HOST_TIMINGS = ("decision_us_mean", "decision_us_p99", "wall_s")


def without_host_timings(result):
    """A result entry without the host-timing keys (not part of the determinism contract)."""
    r = dict(result)
    r["scheduler"] = {k: v for k, v in r["scheduler"].items() if k not in HOST_TIMINGS}
    return r


def run_sim(*args):
    """paraflex-sim's (exit status, stdout, stderr) for args; skips the test when it is not built."""
    if not PARAFLEX_SIM:
        raise unittest.SkipTest("paraflex-sim is not part of this build (PARAFLEX_BUILD_BENCH=OFF)")
    if not os.path.exists(PARAFLEX_SIM):
        raise AssertionError(f"PARAFLEX_SIM={PARAFLEX_SIM} does not exist: build the paraflex-sim target first")
    p = subprocess.run([PARAFLEX_SIM, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def sim_error(*args):
    """The message paraflex-sim prints for bad input (after 'paraflex-sim: error: ')."""
    rc, _, err = run_sim(*args)
    assert rc == 2, f"paraflex-sim {args} exited {rc}, expected 2: {err}"
    prefix = "paraflex-sim: error: "
    line = err.strip().splitlines()[-1]
    assert line.startswith(prefix), line
    return line[len(prefix):]
