"""Group-free collectives on torch.distributed: a group is an ordered list of ranks, nothing more.

Every collective here is composed from point-to-point isend/irecv on one process group created once
for the whole world (the world group with gloo, or one NCCL group over all workers), so no
communicator is created per group and a degree change costs no set-up. This is GF-DiT's idea, and
with gloo the only way to get an all_to_all at all (ProcessGroupGloo has no alltoall).

Failure semantics (what keeps a dead peer from hanging its group):
  * every operation of an exchange is posted before any is waited for, and every one is waited for
    even after one failed, so the exchanges between live ranks always complete;
  * a failed receive leaves zeros in its buffer and marks the ``Exchange`` failed instead of raising;
    the caller goes on with the (garbage) data, so it takes part in every later exchange of the task
    exactly as its peers expect, and raises ``ExchangeError`` at the end of the task. A rank that
    died makes every exchange with it fail at once ("Connection closed by peer"), so the live ranks
    of a task all finish it (failed) instead of waiting for the transport timeout.
  * The transport timeout (init_process_group's timeout) is the last resort, for a peer that is
    alive but stuck. Note that with gloo a timeout closes every connection of the process that
    timed out, so that process is lost as well.

Tags (gloo): each task has a base tag from its launch id and numbers its exchanges; messages of
different tasks between the same pair of ranks can never be confused. NCCL ignores tags and matches
by order, which the identical exchange sequence on every rank of a task guarantees; with NCCL the
operations of one exchange are posted as one batch_isend_irecv (a NCCL group call), as NCCL needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from .tiny_dit import Comm, shard_range

# Tags below this are the control channel's (protocol.py).
DATA_TAG_BASE = 1024
EXCHANGES_PER_TASK = 1024


class ExchangeError(RuntimeError):
    """A task's exchanges with some peer failed (the peer died, or the transport timed out)."""


def task_tag_base(launch_id: int) -> int:
    return DATA_TAG_BASE + (launch_id % (1 << 20)) * EXCHANGES_PER_TASK


@dataclass
class Transport:
    """The process group the data travels on, and how device ids map to its ranks.

    ``device_rank(d)`` is the global rank of device d (the driver is rank 0, device d is rank d + 1).
    ``group`` is None for the default (world) group.
    """

    backend: str = "gloo"
    group: Optional[object] = None
    rank_offset: int = 1

    def rank_of(self, device: int) -> int:
        return device + self.rank_offset

    @property
    def nccl(self) -> bool:
        return self.backend == "nccl"


@dataclass
class Exchange:
    """The exchanges of one task on one rank: numbered in call order, failures collected."""

    transport: Transport
    me: int  # this device
    tag_base: int = DATA_TAG_BASE
    seq: int = 0
    errors: list = field(default_factory=list)
    exchanges: int = 0
    bytes_sent: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def check(self) -> None:
        """Raises ExchangeError if any exchange of this task failed."""
        if self.errors:
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise ExchangeError(f"device {self.me}: {self.errors[0]}{more}")

    def run(self, sends: Sequence[tuple[int, torch.Tensor]], recvs: Sequence[tuple[int, torch.Tensor]]) -> None:
        """One exchange: sends[i] = (device, tensor), recvs[i] = (device, tensor to fill). Between one
        pair of devices the i-th send of one side matches the i-th receive of the other."""
        if self.seq >= EXCHANGES_PER_TASK:
            raise RuntimeError(f"a task may make at most {EXCHANGES_PER_TASK} exchanges")
        tag = self.tag_base + self.seq
        self.seq += 1
        self.exchanges += 1
        t = self.transport
        works: list = []  # (work or None, what, recv tensor or None)
        if t.nccl:
            ops = [dist.P2POp(dist.isend, x, t.rank_of(d), t.group) for d, x in sends]
            ops += [dist.P2POp(dist.irecv, x, t.rank_of(d), t.group) for d, x in recvs]
            whats = [f"send to device {d}" for d, _ in sends] + [f"receive from device {d}" for d, _ in recvs]
            bufs = [None] * len(sends) + [x for _, x in recvs]
            if ops:
                try:
                    reqs = dist.batch_isend_irecv(ops)
                    works = list(zip(reqs, whats, bufs))
                except Exception as e:  # noqa: BLE001 - any transport error fails the task, not the process
                    self.errors.append(f"exchange {tag}: {e}")
                    for b in bufs:
                        if b is not None:
                            b.zero_()
                    return
        else:
            # Post every operation before waiting for any; a post that fails (closed connection) must
            # not keep the others from being posted, or a live peer would wait for them.
            for d, x in sends:
                try:
                    works.append((dist.isend(x, t.rank_of(d), group=t.group, tag=tag), f"send to device {d}", None))
                except Exception as e:  # noqa: BLE001
                    works.append((None, f"send to device {d}: {e}", None))
            for d, x in recvs:
                try:
                    works.append((dist.irecv(x, t.rank_of(d), group=t.group, tag=tag), f"receive from device {d}", x))
                except Exception as e:  # noqa: BLE001
                    works.append((None, f"receive from device {d}: {e}", x))
        for w, what, buf in works:
            if w is None:
                self.errors.append(what)
                if buf is not None:
                    buf.zero_()
                continue
            try:
                w.wait()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                if buf is not None:
                    buf.zero_()
        for _, x in sends:
            self.bytes_sent += x.numel() * x.element_size()

    # collectives over an ordered device list ------------------------------------------------------
    def all_to_all(self, devices: Sequence[int], chunks: Sequence[torch.Tensor], out: Sequence[torch.Tensor]) -> None:
        """chunks[j] goes to devices[j]; out[j] receives what devices[j] sent to me. My own chunk is
        copied locally."""
        me = list(devices).index(self.me)
        sends, recvs = [], []
        for j, d in enumerate(devices):
            if j == me:
                out[j].copy_(chunks[j])
            else:
                sends.append((d, chunks[j].contiguous()))
                recvs.append((d, out[j]))
        self.run(sends, recvs)

    def gather(self, devices: Sequence[int], root: int, chunk: torch.Tensor, out: Optional[Sequence[torch.Tensor]]) -> None:
        """Every device sends `chunk` to `root`; on root, out[j] receives devices[j]'s chunk."""
        if self.me == root:
            recvs = []
            for j, d in enumerate(devices):
                if d == root:
                    out[j].copy_(chunk)
                else:
                    recvs.append((d, out[j]))
            self.run([], recvs)
        else:
            self.run([(root, chunk.contiguous())], [])


class UlyssesComm(Comm):
    """Ulysses sequence parallelism over an ordered device list (the request's layout): rank i holds
    tokens shard_range(i, k, T) and, inside attention, heads [i*H/k, (i+1)*H/k)."""

    def __init__(self, exchange: Exchange, layout: Sequence[int]):
        self.x = exchange
        self.layout = list(layout)
        self.degree = len(self.layout)
        self.rank = self.layout.index(exchange.me)
        self.after_exchange = None  # test hook: called with the exchange count after each one

    def _hook(self) -> None:
        if self.after_exchange is not None:
            self.after_exchange(self.x.exchanges)

    def seq_to_heads(self, x: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        k = self.degree
        n, g, heads, d = x.shape
        if heads % k:
            raise ValueError(f"Ulysses: {heads} heads cannot be split over {k} ranks")
        hk = heads // k
        chunks = [x[:, :, j * hk:(j + 1) * hk, :].contiguous() for j in range(k)]
        out = [torch.empty(token_counts[j], g, hk, d, dtype=x.dtype, device=x.device) for j in range(k)]
        self.x.all_to_all(self.layout, chunks, out)
        self._hook()
        return torch.cat(out, dim=0)

    def heads_to_seq(self, x: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        k = self.degree
        total, hk, d = x.shape
        offsets = [0]
        for c in token_counts:
            offsets.append(offsets[-1] + c)
        chunks = [x[offsets[j]:offsets[j + 1]] for j in range(k)]
        mine = token_counts[self.rank]
        out = [torch.empty(mine, hk, d, dtype=x.dtype, device=x.device) for _ in range(k)]
        self.x.all_to_all(self.layout, chunks, out)
        self._hook()
        return torch.cat(out, dim=1)


def token_counts(degree: int, total: int) -> list[int]:
    return [shard_range(i, degree, total)[1] for i in range(degree)]


@dataclass(frozen=True)
class Edge:
    """One point-to-point copy of a migration plan (paraflex::migration_edge)."""

    src_rank: int  # index in the source layout
    dst_rank: int  # index in the destination group
    offset: int
    count: int
    local: bool


@dataclass(frozen=True)
class Plan:
    """A migration plan in plain values: what paraflex.plan_migration returns, made picklable."""

    source: tuple  # the source layout the plan was made for: source[i] holds slice i
    dest: tuple  # the destination group (edges' dst_rank indexes it)
    layout: tuple  # layout[j] holds slice j afterwards
    edges: tuple  # of Edge
    total: int

    @staticmethod
    def from_bindings(p, source: Sequence[int], dest: Sequence[int], total: int) -> "Plan":
        return Plan(tuple(source), tuple(dest), tuple(p.layout),
                    tuple(Edge(int(e.src_rank), int(e.dst_rank), int(e.offset), int(e.count), bool(e.local)) for e in p.edges), int(total))

    def validate(self) -> None:
        """The invariants a plan must satisfy; raises ValueError naming the first that fails."""
        if sorted(self.layout) != sorted(self.dest):
            raise ValueError(f"plan layout {list(self.layout)} is not a permutation of the destination {list(self.dest)}")
        covered = 0
        for j in range(len(self.layout)):
            want_b, want_n = shard_range(j, len(self.layout), self.total)
            got = sorted((e.offset, e.count) for e in self.edges if self.dest[e.dst_rank] == self.layout[j])
            pos = want_b
            for off, cnt in got:
                if off != pos:
                    raise ValueError(f"plan: slice {j} of the destination is not tiled by its edges at element {pos}")
                pos += cnt
            if pos != want_b + want_n:
                raise ValueError(f"plan: slice {j} of the destination ends at {pos}, expected {want_b + want_n}")
            covered += want_n
        for e in self.edges:
            sb, sn = shard_range(e.src_rank, len(self.source), self.total)
            if not (sb <= e.offset and e.offset + e.count <= sb + sn):
                raise ValueError(f"plan: edge {e} is outside source slice {e.src_rank}")
            if e.local != (self.source[e.src_rank] == self.dest[e.dst_rank]):
                raise ValueError(f"plan: edge {e} has a wrong local flag")
        if covered != self.total:
            raise ValueError(f"plan covers {covered} of {self.total} elements")
