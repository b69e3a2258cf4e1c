"""Where the result and performance scripts find things: the tools of a build, the bundled data.

Shared by bench/perf/run_perf.py and bench/results/*.py; each keeps its own output folders.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = os.path.join(ROOT, "bench", "data", "profiles")
PROFILE = os.path.join(PROFILES, "step_latency.csv")
TRACES = os.path.join(ROOT, "bench", "data", "traces")


def tool(build, name):
    """A tool built under build/bench (paraflex-sim, paraflex-workload, paraflex-micro); exits with
    what to do when it is not there."""
    path = os.path.join(build, "bench", name)
    if not os.access(path, os.X_OK):
        sys.exit(f"{path}: no such program - build it first (cmake --build {build} --target {name}) "
                 "or pass the build directory as the first argument")
    return path


def sh(cmd):
    """stdout of cmd; exits with its stderr when it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout
