#!/usr/bin/python3
"""Online serving of a real (tiny) DiT across processes: paraflex.Scheduler + TorchExecutor.

    PYTHONPATH=<build>/examples/python /usr/bin/python3 examples/python/torch_serving.py \\
        --procs 4 --requests 16 --steps 8 --policy slo-aware --check

The driver (this process, rank 0) runs the paraflex scheduler; each device is a worker process
(torch.multiprocessing, start method spawn) running the tiny DiT under Ulysses sequence parallelism
with group-free collectives on torch.distributed (gloo on CPU; --backend nccl --device cuda on
GPUs). A client thread submits generated requests at their arrival times while the scheduler
serves them; the policy changes degrees and groups between steps and the executor migrates the
sharded latents by paraflex.plan_migration's plans.

The cost profile the scheduler sees is written here (``--profile-out`` keeps it): a GPU-like shape
in which a step of T tokens on k devices takes step_ms x (0.15 + 0.85 (T/1024) / k) + 2 ms (k-1),
and the ``heads`` column says which degrees the model can run. With --time-scale 1 (the default)
every task lasts at least its profiled time (the workers pace themselves), as the thread executor
does: on a 2-core CPU the real compute does not get faster with more processes, so without pacing
the policy would have no reason to change degrees. The numbers computed do not depend on timing.

--check compares every completed request's pixels with a single-process, degree-1 reference of the
same request and seed, and exits 1 unless max_abs_diff <= 1e-5, every request ended exactly once,
and no device was lost (one, with --kill-device). The last line is always

    max_abs_diff=<x> completed=<n> dropped=<d> lost=<l> migrations=<m> degrees=<sorted distinct degrees>

Across machines / with torchrun: --launcher env reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
rank 0 runs this driver, every other rank a worker (devices = WORLD_SIZE - 1). See
docs/torch-executor.md.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import threading
import time

# The paraflex_torch package sits next to this script. The bindings (paraflex) must come from
# PYTHONPATH (the build directory): the source tree's paraflex/ folder next to this script has no
# compiled core, so this directory goes last on sys.path instead of first.
_here = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _here:
    sys.path.append(sys.path.pop(0))

import torch  # noqa: E402

from paraflex_torch.tiny_dit import DiTConfig, Shape, reference_generate  # noqa: E402
from paraflex_torch.worker import Settings, run_worker, tune_malloc  # noqa: E402

MODEL = "tiny-dit"
GPU = "paced-cpu"


def import_paraflex():
    try:
        import paraflex

        paraflex.Scheduler  # noqa: B018 - the compiled core is there
        return paraflex
    except (ImportError, AttributeError) as e:
        sys.exit(f"torch_serving: error: the paraflex bindings are not importable ({e}); build them "
                 "(cmake --build <build> --target paraflex_python) and run with PYTHONPATH=<build>/examples/python")


def step_seconds(tokens: int, degree: int, step_ms: float) -> float:
    return step_ms / 1e3 * (0.15 + 0.85 * (tokens / 1024) / degree) + 0.002 * (degree - 1)


def write_profile(path: str, cfg: DiTConfig, sizes: list, degrees: int, step_ms: float) -> None:
    with open(path, "w") as f:
        f.write("model,gpu,height,width,frames,degree,step_s,heads,source\n")
        for px in sizes:
            tokens = Shape(px, px).tokens(cfg)
            for k in range(1, degrees + 1):
                f.write(f"{MODEL},{GPU},{px},{px},1,{k},{step_seconds(tokens, k, step_ms):.6f},{cfg.heads},torch_serving.py\n")


def make_workload(args, cfg: DiTConfig) -> list:
    """(arrival_s, request_id, size, slo_s): Poisson arrivals, sizes and SLOs from the seed."""
    rng = random.Random(args.seed)
    t = 0.0
    out = []
    for i in range(args.requests):
        if i:
            t += rng.expovariate(args.rate)
        px = rng.choice(args.sizes)
        alone = args.steps * step_seconds(Shape(px, px).tokens(cfg), 1, args.step_ms)
        slo = alone * rng.uniform(args.slo_min, args.slo_max) if args.slo_max > 0 else None
        out.append((t, f"req-{i:03d}", px, slo))
    return out


def build_settings(args, devices: int, init_method: str) -> Settings:
    return Settings(devices=devices, model=DiTConfig.from_args(args), backend=args.backend, device_type=args.device,
                    init_method=init_method, timeout_s=args.timeout, threads=args.threads, time_scale=args.time_scale,
                    kill_device=args.kill_device, kill_at_step=args.kill_at_step)


def serve(args, executor, devices: int, paraflex) -> int:
    cfg = executor.s.model
    profile = args.profile_out or os.path.join(tempfile.mkdtemp(prefix="paraflex-torch-"), "profile.csv")
    write_profile(profile, cfg, args.sizes, devices, args.step_ms)
    try:
        sched = paraflex.Scheduler(args.policy, executor, gpus=devices, profile=profile, gpu=GPU, max_failures=args.max_failures)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"torch_serving: error: {e}", file=sys.stderr)
        return 2
    ends: dict = {}
    lock = threading.Lock()

    def ended(status):
        with lock:
            ends.setdefault(status.id, []).append(status)
        if args.verbose:
            print(f"  {status.id} {status.state}{' (' + status.reason + ')' if status.reason else ''} degree={status.degree} "
                  f"migrations={status.migrations}", flush=True)

    sched.on_request_end(ended)
    workload = make_workload(args, cfg)
    print(f"torch_serving: {devices} worker processes ({args.backend}/{args.device}), model hidden={cfg.hidden} depth={cfg.depth} "
          f"heads={cfg.heads}, {len(workload)} requests x {args.steps} steps, sizes {args.sizes}, policy {args.policy}", flush=True)

    def client():
        t0 = time.monotonic()
        try:
            for arrival, rid, px, slo in workload:
                delay = arrival - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
                sched.submit(MODEL, px, px, args.steps, slo_s=slo, request_id=rid)
        finally:
            sched.close()

    sched.open()
    t0 = time.monotonic()
    th = threading.Thread(target=client, name="client")
    th.start()
    sched.run()  # serves until the client has closed and every request has ended
    th.join()
    wall = time.monotonic() - t0
    metrics = sched.metrics()

    completed = sorted(rid for rid, s in ends.items() if s[-1].state == "completed")
    dropped = sorted(rid for rid, s in ends.items() if s[-1].state == "dropped")
    once = all(len(s) == 1 for s in ends.values()) and len(ends) == len(workload)
    reasons: dict = {}
    for rid in dropped:
        reasons[ends[rid][-1].reason] = reasons.get(ends[rid][-1].reason, 0) + 1
    lost = executor.lost_devices()
    stats = executor.stats
    print(f"served in {wall:.1f} s: {len(completed)} completed, {len(dropped)} dropped {reasons or ''}; "
          f"{stats.launched} launches ({stats.failed} failed), {stats.migrations} migrations "
          f"({stats.migrated_tokens} tokens moved, {stats.local_tokens} kept in place), lost devices {lost}", flush=True)
    for e in executor.errors()[:5]:
        print(f"  executor: {e}")
    if args.verbose:
        print(f"  task times: {stats.summary()}")
        print(f"  scheduler: slo_attainment={metrics.get('slo_attainment')} migrations={metrics.get('migrations')} "
              f"utilization={metrics.get('utilization')}")

    # single-process references (after serving, so they do not compete with it for the CPUs)
    worst = 0.0
    sizes = {rid: px for _, rid, px, _ in workload}
    if args.check or args.diff:
        for rid in completed:
            out = executor.output_by_id(rid)
            if out is None:
                worst = math.inf
                print(f"  {rid}: completed without an output")
                continue
            ref = reference_generate(cfg, rid, Shape(sizes[rid], sizes[rid]), args.steps)
            worst = max(worst, (out - ref).abs().max().item())
    executor.close()
    degrees = ",".join(str(k) for k in sorted(stats.degrees))
    diff = f"{worst:.3g}" if (args.check or args.diff) and completed else "nan"
    ok = True
    if args.check:
        expect_lost = 1 if args.kill_device >= 0 else 0
        problems = []
        if not completed:
            problems.append("no request completed")
        if not worst <= args.tolerance:
            problems.append(f"max_abs_diff {worst:.3g} > {args.tolerance}")
        if not once:
            problems.append("a request did not end exactly once")
        if len(lost) != expect_lost:
            problems.append(f"{len(lost)} devices lost, expected {expect_lost}")
        for p in problems:
            print(f"torch_serving: check failed: {p}")
        ok = not problems
    print(f"max_abs_diff={diff} completed={len(completed)} dropped={len(dropped)} lost={len(lost)} "
          f"migrations={stats.migrations} degrees={degrees}", flush=True)
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description="Serve a tiny DiT online with paraflex across torch.distributed processes.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--procs", type=int, default=4, help="worker processes = devices (spawn launcher)")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--policy", default="slo-aware", help="a paraflex policy spec")
    p.add_argument("--check", action="store_true", help="compare with single-process references; exit 1 on a mismatch")
    p.add_argument("--diff", action="store_true", help="compute max_abs_diff without failing")
    p.add_argument("--tolerance", type=float, default=1e-5, help="--check's bound on max_abs_diff (the reference runs on "
                   "this process's CPU: on GPUs, float32 kernels differ from the CPU's by more than rounding)")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[256, 384, 512], help="image sides, comma-separated")
    p.add_argument("--rate", type=float, default=2.0, help="mean arrivals per second (Poisson)")
    p.add_argument("--slo-min", type=float, default=0.8, help="SLO = U(slo_min, slo_max) x steps x the degree-1 step time")
    p.add_argument("--slo-max", type=float, default=3.0, help="0: no SLOs")
    p.add_argument("--step-ms", type=float, default=500.0, help="profiled ms of a 1024-token step at degree 1")
    p.add_argument("--time-scale", type=float, default=1.0, help="tasks last at least profiled time x this (0: no pacing)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-failures", type=int, default=8, help="failed attempts before the scheduler drops a request")
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"], help="data plane (the control channel is gloo)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--timeout", type=float, default=60.0, help="transport timeout, seconds")
    p.add_argument("--launcher", default="spawn", choices=["spawn", "env"], help="spawn: start --procs workers here; "
                   "env: torchrun / env:// (RANK 0 = driver)")
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=0, help="0: a free port (spawn launcher)")
    p.add_argument("--kill-device", type=int, default=-1, help="fault injection: this device's worker is killed (SIGKILL) ...")
    p.add_argument("--kill-at-step", type=int, default=1, help="... in the middle of the n-th step task it runs")
    p.add_argument("--profile-out", help="keep the generated cost profile here")
    p.add_argument("--verbose", action="store_true")
    DiTConfig.add_arguments(p)
    args = p.parse_args()
    if args.requests < 1 or args.steps < 1 or args.rate <= 0 or not args.sizes or min(args.sizes) < 16:
        p.error("--requests, --steps, --rate must be > 0 and --sizes at least 16 pixels")
    tune_malloc()
    torch.set_num_threads(args.threads)

    if args.launcher == "env":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if world < 2:
            p.error("--launcher env needs WORLD_SIZE >= 2 (a driver and at least one worker)")
        settings = build_settings(args, world - 1, "env://")
        if rank != 0:
            run_worker(settings, rank)
            return 0
        paraflex = import_paraflex()
        from paraflex_torch.executor import TorchExecutor

        return serve(args, TorchExecutor(settings), world - 1, paraflex)

    if args.procs < 1:
        p.error("--procs must be >= 1")
    if args.kill_device >= args.procs:
        p.error(f"--kill-device {args.kill_device} is not a device (0..{args.procs - 1})")
    paraflex = import_paraflex()
    from paraflex_torch.executor import TorchExecutor

    settings = build_settings(args, args.procs, "")
    ex = TorchExecutor.spawn(settings, master_addr=args.master_addr, master_port=args.master_port or None)
    try:
        return serve(args, ex, args.procs, paraflex)
    finally:
        ex.close()


if __name__ == "__main__":
    sys.exit(main())
