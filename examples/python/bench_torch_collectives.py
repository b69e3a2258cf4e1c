#!/usr/bin/python3
"""Measures what group-free collectives cost on torch.distributed, and how fast the tiny DiT steps.

  python3 examples/python/bench_torch_collectives.py --procs 4 [--backend gloo] [--device cpu] [--json out.json]

Every process of the world runs this script (torch.multiprocessing.spawn); rank 0 prints. Figures:

  1. group formation + first collective, for groups of 2, 3, 4 ranks: dist.new_group(ranks) plus a
     first all_reduce on it, against the group-free way: the first all_to_all over the same rank list
     on the world group (no formation at all). Each membership is formed fresh, as at a degree change.
  2. all_to_all cost per MB (group-free, isend/irecv on the world group), degrees 2..P, several sizes.
  3. migration cost per MB: a latent moved between groups by the plan of paraflex.plan_migration
     (skipped when the bindings are not on PYTHONPATH).
  4. steps per second of the tiny DiT (a 512x512 request, 1024 tokens) at degree 1, 2, 4.

Times are the max over the participating ranks of the median of --repeat runs; all ranks start
each run together (a barrier). Debian's torch is CPU-only: with --device cuda --backend nccl the same
code runs on GPUs (not measured here).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

# This directory holds the paraflex_torch package; the bindings (paraflex) come from PYTHONPATH, ahead
# of the source tree's paraflex/ folder, which has no compiled core.
_here = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _here:
    sys.path.append(sys.path.pop(0))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from paraflex_torch.comm import Exchange, Transport, UlyssesComm, token_counts  # noqa: E402
from paraflex_torch.executor import free_port  # noqa: E402
from paraflex_torch.tiny_dit import DiTConfig, LocalComm, Shape, model_for, shard_range  # noqa: E402
from paraflex_torch.worker import tune_malloc  # noqa: E402


def _plan_fn():
    """paraflex.plan_migration through the bindings, or None (the migration figure is then skipped)."""
    try:
        from paraflex_torch.executor import bindings_plan_fn

        return bindings_plan_fn()
    except ImportError:
        return None


class Bench:
    def __init__(self, rank: int, world: int, args):
        self.rank, self.world, self.a = rank, world, args
        self.t = Transport(args.backend, None, 0)
        self.dev = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
        self.launch = 0
        self.results: dict = {}

    def timed(self, members, fn, repeat=None) -> float:
        """Median seconds of fn() over `repeat` runs, max over the members (every rank calls)."""
        times = []
        for i in range(1 + (repeat or self.a.repeat)):  # the first run warms up (buffers, connections)
            self.launch += 1  # on every rank: tags must agree
            dist.barrier()
            t0 = time.perf_counter()
            if self.rank in members:
                fn()
            dt = time.perf_counter() - t0 if self.rank in members else 0.0
            if i > 0:
                times.append(dt)
        med = torch.tensor([statistics.median(times)], dtype=torch.float64)
        dist.all_reduce(med, op=dist.ReduceOp.MAX)
        return float(med.item())

    def exchange(self) -> Exchange:
        """The exchanges of the current run (its tags come from the run's number, the same on every rank)."""
        return Exchange(self.t, self.rank, 1024 + self.launch * 1024)

    def all_to_all(self, ranks, nbytes: int) -> None:
        k = len(ranks)
        per = max(1, nbytes // 4 // k)
        chunks = [torch.ones(per, device=self.dev) for _ in range(k)]
        out = [torch.empty(per, device=self.dev) for _ in range(k)]
        ex = self.exchange()
        ex.all_to_all(ranks, chunks, out)
        ex.check()

    # 1 ------------------------------------------------------------------------------------------
    def formation(self) -> None:
        rows = []
        for k in range(2, min(4, self.world) + 1):
            ranks = list(range(k))
            fresh, gf = [], []
            for _ in range(self.a.repeat):
                dist.barrier()
                t0 = time.perf_counter()
                g = dist.new_group(ranks=ranks)  # every rank of the world must call new_group
                if self.rank in ranks:
                    x = torch.ones(4, device=self.dev)
                    dist.all_reduce(x, group=g)
                fresh.append(time.perf_counter() - t0)
                self.launch += 1
                dist.barrier()
                t0 = time.perf_counter()
                if self.rank in ranks:
                    self.all_to_all(ranks, 16 * k)
                gf.append(time.perf_counter() - t0)
            a = torch.tensor([statistics.median(fresh), statistics.median(gf)], dtype=torch.float64)
            dist.all_reduce(a, op=dist.ReduceOp.MAX)
            rows.append({"ranks": k, "new_group_plus_first_ms": a[0].item() * 1e3, "group_free_first_ms": a[1].item() * 1e3})
        self.results["formation"] = rows

    # 2 ------------------------------------------------------------------------------------------
    def all_to_all_cost(self) -> None:
        rows = []
        for k in range(2, self.world + 1):
            ranks = list(range(k))
            for mb in self.a.sizes_mb:
                nbytes = int(mb * (1 << 20))
                s = self.timed(ranks, lambda: self.all_to_all(ranks, nbytes))
                rows.append({"ranks": k, "mb_per_rank": mb, "ms": s * 1e3, "ms_per_mb": s * 1e3 / mb})
        self.results["all_to_all"] = rows

    # 3 ------------------------------------------------------------------------------------------
    def migration_cost(self) -> None:
        plan_fn = _plan_fn()
        if plan_fn is None:
            self.results["migration"] = {"plan": "skipped: paraflex.plan_migration is not importable (PYTHONPATH)", "rows": []}
            return
        cases = [((0,), (1,)), ((0, 1), (2, 3)), ((0,), (0, 1, 2, 3)), ((0, 1, 2, 3), (1,)), ((0, 1), (1, 2)), ((0, 1, 2, 3), (3, 2, 1, 0))]
        cases = [(s, d) for s, d in cases if max(s + d) < self.world]
        rows = []
        td = 16
        for mb in self.a.sizes_mb:
            total = max(1, int(mb * (1 << 20)) // (4 * td))
            for src, dst in cases:
                plan = plan_fn(list(src), list(dst), total)
                members = sorted(set(src) | set(dst))
                mine = None
                if self.rank in src:
                    b, n = shard_range(src.index(self.rank), len(src), total)
                    mine = (b, torch.ones(n, td, device=self.dev))

                def move():
                    ex = self.exchange()
                    sends, recvs = [], []
                    new = None
                    if self.rank in dst:
                        j = plan.layout.index(self.rank)
                        wb, wn = shard_range(j, len(dst), total)
                        new = torch.empty(wn, td, device=self.dev)
                    for e in plan.edges:
                        s_dev, d_dev = plan.source[e.src_rank], plan.dest[e.dst_rank]
                        if e.local:
                            if d_dev == self.rank:
                                new[e.offset - wb:e.offset - wb + e.count].copy_(mine[1][e.offset - mine[0]:e.offset - mine[0] + e.count])
                            continue
                        if s_dev == self.rank:
                            sends.append((d_dev, mine[1][e.offset - mine[0]:e.offset - mine[0] + e.count].contiguous()))
                        if d_dev == self.rank:
                            recvs.append((s_dev, new[e.offset - wb:e.offset - wb + e.count]))
                    ex.run(sends, recvs)
                    ex.check()

                s = self.timed(members, move)
                moved_mb = sum(e.count for e in plan.edges if not e.local) * td * 4 / (1 << 20)
                rows.append({"from": list(src), "to": list(dst), "latent_mb": round(total * td * 4 / (1 << 20), 3), "moved_mb": round(moved_mb, 3),
                             "ms": s * 1e3, "ms_per_moved_mb": (s * 1e3 / moved_mb) if moved_mb > 0 else None})
        self.results["migration"] = {"plan": "paraflex.plan_migration", "rows": rows}

    # 4 ------------------------------------------------------------------------------------------
    def dit_steps(self) -> None:
        cfg = DiTConfig(hidden=self.a.hidden, depth=self.a.depth, heads=self.a.heads)
        m = model_for(cfg).to(self.dev)
        shape = Shape(self.a.size, self.a.size)
        total = shape.tokens(cfg)
        y = m.encode_text("bench").to(self.dev)
        x = m.initial_noise("bench", shape).to(self.dev)
        rows = []
        for k in (1, 2, 4):
            if k > self.world or not cfg.allows_degree(k):
                continue
            layout = list(range(k))
            b, n = shard_range(self.rank, k, total) if self.rank < k else (0, 0)
            xs = x[b:b + n].contiguous()
            counts = token_counts(k, total)

            def step():
                ex = self.exchange()
                comm = UlyssesComm(ex, layout) if k > 1 else LocalComm()
                with torch.no_grad():
                    m.euler_step(xs, 0, 8, y, shape, b, comm, counts)
                ex.check()

            s = self.timed(layout, step)
            rows.append({"degree": k, "tokens": total, "step_ms": s * 1e3, "steps_per_s": 1.0 / s})
        self.results["dit"] = {"config": cfg.to_dict(), "size": self.a.size, "rows": rows}


def run(rank: int, world: int, args, port: int) -> None:
    tune_malloc()
    torch.set_num_threads(args.threads)
    dist.init_process_group(args.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=args.timeout))
    b = Bench(rank, world, args)
    for part in args.parts:
        getattr(b, {"formation": "formation", "all_to_all": "all_to_all_cost", "migration": "migration_cost", "dit": "dit_steps"}[part])()
    if rank == 0:
        report(b.results, args)
    dist.barrier()
    dist.destroy_process_group()


def report(r: dict, args) -> None:
    print(f"# bench_torch_collectives: {args.procs} processes, backend {args.backend}, device {args.device}, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} torch thread(s) per process, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    if "formation" in r:
        print("\n## group formation + first collective (ms)\n\n| ranks | new_group + first all_reduce | group-free first all_to_all |\n|---|---|---|")
        for x in r["formation"]:
            print(f"| {x['ranks']} | {x['new_group_plus_first_ms']:.2f} | {x['group_free_first_ms']:.2f} |")
    if "all_to_all" in r:
        print("\n## group-free all_to_all (isend/irecv on the world group)\n\n| ranks | MB per rank | ms | ms per MB |\n|---|---|---|---|")
        for x in r["all_to_all"]:
            print(f"| {x['ranks']} | {x['mb_per_rank']:g} | {x['ms']:.2f} | {x['ms_per_mb']:.2f} |")
    if "migration" in r and not r["migration"]["rows"]:
        print(f"\n## migration by plan: {r['migration']['plan']}")
    elif "migration" in r:
        print(f"\n## migration by plan ({r['migration']['plan']})\n\n| from | to | latent MB | moved MB | ms | ms per moved MB |\n|---|---|---|---|---|---|")
        for x in r["migration"]["rows"]:
            per = "-" if x["ms_per_moved_mb"] is None else f"{x['ms_per_moved_mb']:.2f}"
            print(f"| {x['from']} | {x['to']} | {x['latent_mb']:g} | {x['moved_mb']:g} | {x['ms']:.2f} | {per} |")
    if "dit" in r:
        c = r["dit"]["config"]
        print(f"\n## tiny DiT steps ({r['dit']['size']}x{r['dit']['size']}, hidden {c['hidden']}, depth {c['depth']}, heads {c['heads']})\n\n"
              "| degree | tokens | step ms | steps/s |\n|---|---|---|---|")
        for x in r["dit"]["rows"]:
            print(f"| {x['degree']} | {x['tokens']} | {x['step_ms']:.1f} | {x['steps_per_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"procs": args.procs, "backend": args.backend, "device": args.device, "results": r}, f, indent=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, default=4, help="processes (ranks) in the world (default %(default)s)")
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default %(default)s)")
    p.add_argument("--repeat", type=int, default=7, help="runs per figure; the median is reported (default %(default)s)")
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[1.0, 4.0, 16.0], help="message sizes (default %(default)s)")
    p.add_argument("--size", type=int, default=512, help="image side for the DiT figure (default %(default)s)")
    p.add_argument("--hidden", type=int, default=DiTConfig.hidden)
    p.add_argument("--depth", type=int, default=DiTConfig.depth)
    p.add_argument("--heads", type=int, default=DiTConfig.heads)
    p.add_argument("--parts", nargs="+", default=["formation", "all_to_all", "migration", "dit"],
                   choices=["formation", "all_to_all", "migration", "dit"])
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.procs < 2:
        p.error("--procs must be >= 2")
    if args.backend == "nccl" and args.device != "cuda":
        p.error("--backend nccl needs --device cuda")
    tune_malloc()
    mp.spawn(run, args=(args.procs, args, free_port()), nprocs=args.procs, join=True)


if __name__ == "__main__":
    main()
