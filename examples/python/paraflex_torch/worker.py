"""One device: a worker process that runs the tasks the driver sends, in the order it sends them.

Threads: the main thread runs tasks; a control thread receives messages from the driver and queues
them; a heartbeat thread keeps the control channel inside the transport's timeout.

State (as thread_executor's device_store): ``committed`` holds, per request, this device's shard of
the latent (tokens [n, token_dim] for slice ``begin..begin+n`` of ``total``), the sampler state
(steps done), the conditioning vector and the layout (layout[i] holds slice i; the rank order of the
layout, not of the task's group, says who holds what). A task writes its result into ``staged`` under
its launch id; the driver's COMMIT (every rank succeeded) or DISCARD (some rank failed) decides, so a
failed launch leaves the request's state exactly as before it - what paraflex's Executor concept
promises for task_failed.

Tasks:
  encode   text encoder -> y; initial noise from the request's seed; keep my slice (group order)
  step     one Euler step of the DiT under Ulysses over the layout (comm.UlyssesComm)
  decode   gather every slice to the holder of slice 0, unpatchify, decode to pixels; the holder
           reports the pixels; every rank forgets the request
  migrate  the plan made by the driver with paraflex.plan_migration: the holder of slice 0 sends
           (steps done, y) to devices new to the request, then every edge is one send/recv pair or
           a local copy; the new layout is the plan's

Run standalone (torchrun / env://) with ``python -m paraflex_torch.worker`` - see docs/torch-executor.md.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from . import protocol as P
from .comm import Exchange, Plan, Transport, UlyssesComm, task_tag_base, token_counts
from .tiny_dit import DiTConfig, Shape, model_for, shard_range


@dataclass(frozen=True)
class Settings:
    """What every process of a run agrees on (picklable: it travels to spawned workers)."""

    devices: int
    model: DiTConfig = DiTConfig()
    backend: str = "gloo"  # data plane: gloo or nccl (the control channel is always gloo)
    device_type: str = "cpu"  # cpu or cuda
    init_method: str = "env://"
    timeout_s: float = 60.0
    threads: int = 1
    time_scale: float = 0.0  # > 0: a task lasts at least expected_duration x time_scale
    return_outputs: bool = True
    kill_device: int = -1  # fault injection: this device kills itself ...
    kill_at_step: int = 0  # ... in the middle of the n-th step task it runs (1-based)
    fail_device: int = -1  # fault injection: this device fails (raises), once, ...
    fail_request: str = ""  # ... step `fail_step` of this request, after its exchanges (its peers succeed)
    fail_step: int = 0

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1 (got {self.devices})")
        if self.backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be gloo or nccl (got {self.backend!r})")
        if self.device_type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda (got {self.device_type!r})")
        if self.backend == "nccl" and self.device_type != "cuda":
            raise ValueError("the nccl backend needs --device cuda")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be > 0 s (got {self.timeout_s})")

    @property
    def world_size(self) -> int:
        return self.devices + 1

    @property
    def heartbeat_s(self) -> float:
        return max(0.05, min(5.0, self.timeout_s / 4))


def tune_malloc() -> None:
    """Keep freed blocks in the heap: with glibc's default, every multi-MB tensor is a fresh mmap and
    its page faults cost more than the attention that fills it (10x on a loaded 2-core machine).
    Children inherit the environment variables; this process gets mallopt."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 30))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 30))
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def init_distributed(settings: Settings, rank: int) -> Transport:
    """init_process_group for this process (driver or worker), and the data-plane transport.

    The world group is gloo: the control channel and, with backend gloo, the data. With backend nccl
    one NCCL group over every worker is created once here (every process of the world must call
    new_group, the driver included) - one communicator for the world, never one per task group."""
    dist.init_process_group("gloo", init_method=settings.init_method, rank=rank, world_size=settings.world_size,
                            timeout=datetime.timedelta(seconds=settings.timeout_s))
    if settings.backend == "nccl":
        workers = list(range(1, settings.world_size))
        group = dist.new_group(ranks=workers, backend="nccl", timeout=datetime.timedelta(seconds=settings.timeout_s))
        return Transport("nccl", group, 1)
    return Transport("gloo", None, 1)


@dataclass
class Shard:
    request: int
    request_id: str
    shape: Shape
    steps: int
    tokens: torch.Tensor  # [n, token_dim]
    begin: int
    total: int
    steps_done: int
    layout: tuple
    y: torch.Tensor  # [hidden]


class TaskError(RuntimeError):
    pass


class Worker:
    def __init__(self, settings: Settings, rank: int, transport: Transport, device: torch.device):
        self.s = settings
        self.rank = rank
        self.me = rank - 1  # device id
        self.t = transport
        self.device = device
        self.model = model_for(settings.model).to(device)
        self.channel = P.worker_channel()
        self.inbox: "queue.Queue[tuple]" = queue.Queue()
        self.committed: dict[int, Shard] = {}
        self.staged: dict[int, tuple[int, Optional[Shard]]] = {}
        self.steps_run = 0
        self.failed_once = False
        self.stopping = threading.Event()
        self.last_send = time.monotonic()

    # threads ------------------------------------------------------------------------------------
    def _control(self) -> None:
        try:
            while True:
                msg = self.channel.recv()
                if msg[0] == P.HEARTBEAT:
                    continue
                self.inbox.put(msg)
                if msg[0] == P.STOP:
                    return
        except Exception as e:  # noqa: BLE001 - the driver is gone: nothing left to serve
            self.inbox.put((P.STOP, 0, 0, 0, {"error": f"control channel: {e}"}))

    def _heartbeat(self) -> None:
        hb = self.s.heartbeat_s
        while not self.stopping.wait(hb / 2):
            if time.monotonic() - self.last_send >= hb / 2:
                self._send(P.HEARTBEAT)

    def _send(self, kind: int, a: int = 0, b: int = 0, payload: Any = None) -> None:
        try:
            self.channel.send(kind, a, b, 0, payload)
            self.last_send = time.monotonic()
        except Exception:  # noqa: BLE001 - the driver is gone; the control thread stops us
            pass

    def serve(self) -> None:
        threading.Thread(target=self._control, name="paraflex-control", daemon=True).start()
        self._send(P.READY, payload={"pid": os.getpid(), "host": socket.gethostname(), "device": str(self.device)})
        threading.Thread(target=self._heartbeat, name="paraflex-heartbeat", daemon=True).start()
        while True:
            kind, a, b, c, payload = self.inbox.get()
            if kind == P.TASK:
                self.run_task(payload)
            elif kind == P.COMMIT:
                for req, shard in self.staged.pop(a, ()):  # every member of a batched launch at once
                    if shard is None:
                        self.committed.pop(req, None)
                    else:
                        self.committed[req] = shard
            elif kind == P.DISCARD:
                self.staged.pop(a, None)
            elif kind == P.DROP:
                self.committed.pop(b, None)
                for lid in list(self.staged):  # a batch keeps its other members
                    rest = [(req, sh) for req, sh in self.staged[lid] if req != b]
                    if rest:
                        self.staged[lid] = rest
                    else:
                        del self.staged[lid]
            elif kind == P.QUERY:
                self._send(P.INFO, payload={"committed": sorted(self.committed), "staged": len(self.staged),
                                            "steps_run": self.steps_run})
            elif kind == P.STOP:
                break
        self.stopping.set()
        self._send(P.BYE)

    # tasks --------------------------------------------------------------------------------------
    def run_task(self, task: dict) -> None:
        start = time.monotonic()
        launch, req = task["id"], task["request"]
        report: dict = {}
        ok = True
        try:
            kind = task["kind"]
            members = task.get("members")
            if members:  # a batched launch: staged together, committed or discarded together
                if kind == "encode":
                    staged = [(m["request"], self.encode(self._member_task(task, m))) for m in members]
                elif kind == "step":
                    staged = list(zip([m["request"] for m in members], self.step_batch(task, members)))
                else:
                    raise TaskError(f"a batched {kind} is not supported (steps and encodes only)")
                self.staged[launch] = staged
            else:
                if kind == "encode":
                    shard = self.encode(task)
                elif kind == "step":
                    shard = self.step(task)
                elif kind == "decode":
                    shard, out = self.decode(task)
                    if out is not None and self.s.return_outputs:
                        report["output"] = out.cpu().numpy()
                elif kind == "migrate":
                    shard = self.migrate(task)
                else:
                    raise TaskError(f"unknown task kind {kind!r}")
                self.staged[launch] = [(req, shard)]
        except Exception as e:  # noqa: BLE001 - the launch fails, the worker keeps serving
            ok = False
            msg = str(e) or type(e).__name__
            if not isinstance(e, (TaskError, ValueError)) and "device" not in msg:
                msg += " | " + traceback.format_exc(limit=3).replace("\n", " ")
            report["error"] = f"device {self.me}: {msg}"
        if ok and self.s.time_scale > 0:
            until = start + task.get("expected_duration_us", 0) * self.s.time_scale / 1e6
            delay = until - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        report["run_us"] = int((time.monotonic() - start) * 1e6)
        self._send(P.REPORT, launch, 1 if ok else 0, report)

    def _shape(self, task: dict) -> Shape:
        return Shape(int(task["height"]), int(task["width"]), int(task.get("frames", 1) or 1), str(task.get("model", "")))

    def _held(self, task: dict, what: str) -> Shard:
        s = self.committed.get(task["request"])
        if s is None:
            raise TaskError(f"{what} of request {task['request_id']!r}, but this device holds no state for it")
        if sorted(s.layout) != sorted(task["group"]):
            raise TaskError(f"{what} on {list(task['group'])}, but the state lives on {list(s.layout)} (a migration is missing)")
        return s

    def encode(self, task: dict) -> Shard:
        group = list(task["group"])
        k = len(group)
        if not self.s.model.allows_degree(k):
            raise TaskError(f"degree {k} cannot run: {self.s.model.heads} heads % {k} != 0")
        i = group.index(self.me)
        shape = self._shape(task)
        total = shape.tokens(self.s.model)
        b, n = shard_range(i, k, total)
        with torch.no_grad():
            y = self.model.encode_text(task["request_id"]).to(self.device)
            noise = self.model.initial_noise(task["request_id"], shape)[b:b + n].to(self.device)
        return Shard(task["request"], task["request_id"], shape, int(task["steps"]), noise.contiguous(), b, total, 0, tuple(group), y)

    def _maybe_kill(self, comm: Optional[UlyssesComm]) -> None:
        """Fault injection: die in the middle of the chosen step (after its first exchange)."""
        if self.me != self.s.kill_device or self.steps_run != self.s.kill_at_step:
            return
        if comm is None:
            os.kill(os.getpid(), signal.SIGKILL)
        comm.after_exchange = lambda n: os.kill(os.getpid(), signal.SIGKILL) if n == 1 else None

    def step(self, task: dict) -> Shard:
        s = self._held(task, "step")
        k = len(s.layout)
        if not self.s.model.allows_degree(k):
            raise TaskError(f"degree {k} cannot run: {self.s.model.heads} heads % {k} != 0")
        if s.steps_done != task["step"]:
            raise TaskError(f"step {task['step']} of request {task['request_id']!r} on a latent after {s.steps_done} steps")
        self.steps_run += 1
        ex = Exchange(self.t, self.me, task_tag_base(task["id"]))
        comm = UlyssesComm(ex, s.layout)
        self._maybe_kill(comm if k > 1 else None)
        with torch.no_grad():
            x = self.model.euler_step(s.tokens, s.steps_done, s.steps, s.y, s.shape, s.begin, comm, token_counts(k, s.total))
        ex.check()
        if (self.me == self.s.fail_device and task["request_id"] == self.s.fail_request and task["step"] == self.s.fail_step
                and not self.failed_once):
            self.failed_once = True
            raise TaskError(f"injected failure of step {task['step']} of request {task['request_id']!r}")
        return Shard(s.request, s.request_id, s.shape, s.steps, x, s.begin, s.total, s.steps_done + 1, s.layout, s.y)

    @staticmethod
    def _member_task(task: dict, m: dict) -> dict:
        """The task as member m of a batch sees it: its request, id, step and total steps."""
        return dict(task, request=m["request"], request_id=m["request_id"], step=m["step"], steps=m["steps"], members=None)

    def step_batch(self, task: dict, members: list) -> list:
        """One Euler step of every member. Members whose states share one layout (the usual case: they
        were encoded on the group together) run as one forward over their stacked latents
        (TinyDiT.euler_step_batch: one exchange per attention for the whole batch); otherwise each
        runs its own forward, in member order on every rank, so the exchanges still pair up."""
        held = []
        for m in members:
            mt = self._member_task(task, m)
            s = self._held(mt, "step")
            if s.steps_done != m["step"]:
                raise TaskError(f"step {m['step']} of request {m['request_id']!r} on a latent after {s.steps_done} steps")
            held.append(s)
        k = len(held[0].layout)
        if not self.s.model.allows_degree(k):
            raise TaskError(f"degree {k} cannot run: {self.s.model.heads} heads % {k} != 0")
        self.steps_run += 1
        ex = Exchange(self.t, self.me, task_tag_base(task["id"]))
        first = held[0]
        with torch.no_grad():
            if all(s.layout == first.layout for s in held):
                comm = UlyssesComm(ex, first.layout)
                self._maybe_kill(comm if k > 1 else None)
                xs = self.model.euler_step_batch(torch.stack([s.tokens for s in held]), [(s.steps_done, s.steps) for s in held],
                                                 torch.stack([s.y for s in held]), first.shape, first.begin, comm,
                                                 token_counts(k, first.total))
                outs = [x.contiguous() for x in xs.unbind(0)]
            else:
                outs = []
                for s in held:
                    comm = UlyssesComm(ex, s.layout)
                    outs.append(self.model.euler_step(s.tokens, s.steps_done, s.steps, s.y, s.shape, s.begin, comm, token_counts(k, s.total)))
        ex.check()
        for m in members:
            if (self.me == self.s.fail_device and m["request_id"] == self.s.fail_request and m["step"] == self.s.fail_step
                    and not self.failed_once):
                self.failed_once = True
                raise TaskError(f"injected failure of step {m['step']} of request {m['request_id']!r} (a batch of {len(members)})")
        return [Shard(s.request, s.request_id, s.shape, s.steps, x, s.begin, s.total, s.steps_done + 1, s.layout, s.y)
                for s, x in zip(held, outs)]

    def decode(self, task: dict) -> tuple[None, Optional[torch.Tensor]]:
        s = self._held(task, "decode")
        layout = list(s.layout)
        k = len(layout)
        root = layout[0]
        counts = token_counts(k, s.total)
        ex = Exchange(self.t, self.me, task_tag_base(task["id"]))
        out = None
        if self.me == root:
            bufs = [torch.empty(counts[j], s.tokens.shape[1], dtype=s.tokens.dtype, device=self.device) for j in range(k)]
            ex.gather(layout, root, s.tokens, bufs)
            ex.check()
            with torch.no_grad():
                out = self.model.decode(torch.cat(bufs, dim=0), s.shape)
        else:
            ex.gather(layout, root, s.tokens, None)
            ex.check()
        return None, out

    def migrate(self, task: dict) -> Optional[Shard]:
        plan: Plan = task["plan"]
        src, dst = list(plan.source), list(plan.dest)
        is_src, is_dst = self.me in src, self.me in dst
        hidden = self.s.model.hidden
        td = self.s.model.token_dim
        ex = Exchange(self.t, self.me, task_tag_base(task["id"]))
        mine: Optional[Shard] = None
        if is_src:
            mine = self.committed.get(task["request"])
            if mine is None or list(mine.layout) != src:
                raise TaskError(f"migrate of request {task['request_id']!r} from {src}, but its state here is "
                                f"{'missing' if mine is None else 'laid out as ' + str(list(mine.layout))}")
        # 1. the sampler state and conditioning, from the holder of slice 0 to devices new to the request
        meta = torch.zeros(2 + hidden, device=self.device)
        if self.me == src[0]:
            meta[0] = mine.steps_done
            meta[1] = mine.total
            meta[2:] = mine.y
            ex.run([(d, meta) for d in dst if d not in src], [])
        elif is_dst and not is_src:
            ex.run([], [(src[0], meta)])
        else:
            ex.run([], [])
        # 2. the slices, edge by edge
        sends, recvs = [], []
        new: Optional[torch.Tensor] = None
        j = plan.layout.index(self.me) if is_dst else -1
        want_b, want_n = shard_range(j, len(dst), plan.total) if is_dst else (0, 0)
        if is_dst:
            new = torch.empty(want_n, td, dtype=torch.float32, device=self.device)
        for e in plan.edges:
            s_dev, d_dev = src[e.src_rank], dst[e.dst_rank]
            if e.local:
                if d_dev == self.me:
                    new[e.offset - want_b:e.offset - want_b + e.count].copy_(mine.tokens[e.offset - mine.begin:e.offset - mine.begin + e.count])
                continue
            if s_dev == self.me:
                sends.append((d_dev, mine.tokens[e.offset - mine.begin:e.offset - mine.begin + e.count].contiguous()))
            if d_dev == self.me:
                recvs.append((s_dev, new[e.offset - want_b:e.offset - want_b + e.count]))
        ex.run(sends, recvs)
        ex.check()
        if not is_dst:
            return None
        if is_src:
            steps_done, y = mine.steps_done, mine.y
        else:
            steps_done, y = int(meta[0].item()), meta[2:].clone()
            if int(meta[1].item()) != plan.total:
                raise TaskError(f"migrate: the source holds {int(meta[1].item())} tokens, the plan moves {plan.total}")
        shape = self._shape(task)
        return Shard(task["request"], task["request_id"], shape, int(task["steps"]), new, want_b, plan.total, steps_done,
                     tuple(plan.layout), y)


def cuda_index(rank: int, local_device: Optional[int] = None) -> int:
    """The GPU of a worker: PARAFLEX_CUDA_DEVICE if set; else the spawn index; else (torchrun)
    LOCAL_RANK, minus one on the node of rank 0 (the driver, which holds no GPU, is local rank 0
    there: RANK == LOCAL_RANK only on that node)."""
    env = os.environ
    if "PARAFLEX_CUDA_DEVICE" in env:
        return int(env["PARAFLEX_CUDA_DEVICE"])
    if local_device is not None:
        return local_device
    if "LOCAL_RANK" in env:
        local = int(env["LOCAL_RANK"])
        return local - 1 if int(env.get("RANK", rank)) == local else local
    return rank - 1


def run_worker(settings: Settings, rank: int, local_device: Optional[int] = None) -> None:
    """The body of one worker process (rank >= 1 = device rank - 1)."""
    tune_malloc()
    torch.set_num_threads(settings.threads)
    transport = init_distributed(settings, rank)
    if settings.device_type == "cuda":
        torch.cuda.set_device(cuda_index(rank, local_device))
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 throughout, as on CPU
        torch.backends.cudnn.allow_tf32 = False
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    w = Worker(settings, rank, transport, device)
    try:
        w.serve()
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


def spawn_entry(index: int, settings: Settings) -> None:
    """torch.multiprocessing entry point: process `index` is device `index` (rank index + 1)."""
    run_worker(settings, index + 1, index if settings.device_type == "cuda" else None)


def _main() -> None:
    """Standalone worker for torchrun / env:// launches; the driver (rank 0) is torch_serving.py."""
    import argparse

    p = argparse.ArgumentParser(description="A paraflex torch worker process (rank >= 1); rank 0 runs the driver.")
    DiTConfig.add_arguments(p)
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=0.0)
    a = p.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if rank == 0:
        sys.exit("paraflex_torch.worker: rank 0 is the driver; run torch_serving.py there")
    s = Settings(world - 1, DiTConfig.from_args(a), a.backend, a.device, "env://", a.timeout, a.threads, a.time_scale)
    run_worker(s, rank)


if __name__ == "__main__":
    _main()
