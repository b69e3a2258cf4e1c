"""Measure batched denoising steps of the PyTorch tiny DiT on this CPU and write them as a paraflex
step-latency profile (docs/formats.md §2 with the optional `batch` column of §6).

One row per (resolution, degree, batch): the median wall time of one Euler step of `batch` requests
of that resolution run as one forward over their stacked latents (TinyDiT.euler_step_batch), members
at different steps as in a continuous batch. Degree 1 runs in this process (LocalComm); degree 2 runs
in two processes under Ulysses (gloo on localhost, comm.UlyssesComm), each rank timing its share and
the step taking as long as its slower rank.

Rounds are interleaved (every configuration once per round, in a shuffled order) so that a burst of
load from other processes on the machine lands on all configurations alike; the median over rounds
is reported.

  /usr/bin/python3 examples/python/bench_batch_steps.py --sizes 128,256,384,512 --batches 1,2,4,8 \
      --degrees 1,2 --rounds 15 --out bench/data/profiles/tiny_dit_cpu_batch.csv
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paraflex_torch.tiny_dit import DiTConfig, LocalComm, Shape, model_for  # noqa: E402
from paraflex_torch.worker import tune_malloc  # noqa: E402


def members(m, shape: Shape, batch: int):
    """Stacked latents and conditionings of `batch` distinct requests, at staggered steps."""
    ids = [f"bench-{shape.height}-{i}" for i in range(batch)]
    xs = torch.stack([m.initial_noise(i, shape) for i in ids])
    ys = torch.stack([m.encode_text(i) for i in ids])
    steps_at = [((3 * i) % 20, 20) for i in range(batch)]
    return xs, ys, steps_at


def time_local(m, shape: Shape, batch: int, warm: bool) -> float:
    xs, ys, steps_at = members(m, shape, batch)
    comm = LocalComm()
    counts = [xs.shape[1]]
    if warm:
        m.euler_step_batch(xs, steps_at, ys, shape, 0, comm, counts)
    t0 = time.perf_counter()
    m.euler_step_batch(xs, steps_at, ys, shape, 0, comm, counts)
    return time.perf_counter() - t0


def run_local(cfg: DiTConfig, configs, rounds: int, seed: int) -> dict:
    m = model_for(cfg)
    out: dict = {c: [] for c in configs}
    with torch.no_grad():
        for c in configs:  # warm-up: oneDNN weight conversion, allocator
            time_local(m, Shape(c[0], c[0]), c[1], warm=True)
        rng = random.Random(seed)
        for _ in range(rounds):
            order = list(configs)
            rng.shuffle(order)
            for size, batch in order:
                out[(size, batch)].append(time_local(m, Shape(size, size), batch, warm=False))
    return out


def _degree2_worker(rank: int, cfg: DiTConfig, configs, rounds: int, seed: int, port: int, threads: int, result) -> None:
    import torch.distributed as dist

    from paraflex_torch.comm import Exchange, Transport, UlyssesComm, token_counts
    from paraflex_torch.tiny_dit import shard_range

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    m = model_for(cfg)
    transport = Transport("gloo", None, 0)  # device d is rank d
    times: dict = {c: [] for c in configs}

    def one(size: int, batch: int) -> float:
        shape = Shape(size, size)
        xs, ys, steps_at = members(m, shape, batch)
        total = xs.shape[1]
        b, n = shard_range(rank, 2, total)
        counts = token_counts(2, total)
        comm = UlyssesComm(Exchange(transport, rank), [0, 1])
        mine = xs[:, b:b + n].contiguous()
        dist.barrier()
        t0 = time.perf_counter()
        m.euler_step_batch(mine, steps_at, ys, shape, b, comm, counts)
        dt = time.perf_counter() - t0
        comm.x.check()
        return dt

    with torch.no_grad():
        for c in configs:
            one(*c)
        rng = random.Random(seed)  # the same order on both ranks
        for _ in range(rounds):
            order = list(configs)
            rng.shuffle(order)
            for c in order:
                times[c].append(one(*c))
    dist.barrier()
    dist.destroy_process_group()
    result[rank] = times


def run_degree2(cfg: DiTConfig, configs, rounds: int, seed: int, threads: int) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    result = manager.dict()
    mp.spawn(_degree2_worker, args=(cfg, configs, rounds, seed, port, threads, result), nprocs=2, join=True)
    r0, r1 = result[0], result[1]
    return {c: [max(a, b) for a, b in zip(r0[c], r1[c])] for c in configs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    DiTConfig.add_arguments(p)
    p.add_argument("--sizes", default="128,256,384,512", help="image heights = widths in pixels")
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--degrees", default="1", help="1 and/or 2")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--seed", type=int, default=1, help="seed of the round order")
    p.add_argument("--gpu", default="cpu-1t", help="the profile's gpu column")
    p.add_argument("--out", default="-", help="CSV path, - for stdout")
    a = p.parse_args()
    tune_malloc()  # as the workers do: multi-MB tensors otherwise page-fault on every step
    torch.set_num_threads(a.threads)
    cfg = DiTConfig.from_args(a)
    sizes = [int(v) for v in a.sizes.split(",")]
    batches = [int(v) for v in a.batches.split(",")]
    if 1 not in batches:
        raise SystemExit("bench_batch_steps: --batches must include 1 (a batch row needs its batch-1 row)")
    degrees = [int(v) for v in a.degrees.split(",")]
    configs = [(s, b) for s in sizes for b in batches]

    rows = []
    for k in degrees:
        if k == 1:
            res = run_local(cfg, configs, a.rounds, a.seed)
        elif k == 2:
            res = run_degree2(cfg, configs, a.rounds, a.seed, a.threads)
        else:
            raise SystemExit(f"bench_batch_steps: degree {k} not supported (1 or 2)")
        for (size, batch), ts in res.items():
            rows.append((size, k, batch, statistics.median(ts), min(ts)))

    cmd = "/usr/bin/python3 examples/python/" + os.path.basename(__file__) + " " + " ".join(sys.argv[1:])
    lines = [
        f"# Measured by examples/python/bench_batch_steps.py on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs, torch {torch.__version__},",
        f"# {a.threads} torch thread(s) per process, oneDNN kernels), {datetime.date.today().isoformat()}: median of {a.rounds} interleaved rounds.",
        f"# Model: tiny DiT hidden={cfg.hidden} depth={cfg.depth} heads={cfg.heads} mlp_ratio={cfg.mlp_ratio}; a batch of b is one forward",
        "# over b stacked latents (TinyDiT.euler_step_batch). min_s is the fastest round (ignored by the reader).",
        f"# Command: {cmd}",
        "model,gpu,height,width,frames,degree,batch,step_s,heads,min_s,source",
    ]
    for size, k, batch, med, lo in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        lines.append(f"tiny-dit,{a.gpu},{size},{size},1,{k},{batch},{med:.6f},{cfg.heads},{lo:.6f},bench_batch_steps")
    text = "\n".join(lines) + "\n"
    if a.out == "-":
        sys.stdout.write(text)
    else:
        with open(a.out, "w") as f:
            f.write(text)
        print(f"bench_batch_steps: wrote {len(rows)} rows to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
