"""A test double for paraflex's scheduler: a small pure-Python runtime loop that drives an executor
through the same protocol the bindings' Scheduler uses, with the runtime's rules:

  * a request's tasks run in order: encode, step 0 .. step N-1, decode; one at a time
  * at a task boundary the request may get another group (random degree among the allowed ones,
    random free devices); if its state lives elsewhere a migration runs first, occupying the
    destination and the source devices that are idle (a busy source serves the copy after its step)
  * a device runs one task at a time (except a busy migration source, as in the runtime)
  * task failed: the request waits and is retried; after max_failures it is dropped
  * device lost: never used again; requests whose state it held restart from encode
  * every request ends exactly once (completed, or dropped with a reason)

It exists to test executors without the bindings' Scheduler, and to make degree changes and
migrations happen on purpose (random groups), which a real policy does only under the right load.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from .tiny_dit import Shape


@dataclass
class Task:
    """What launch() receives: the attributes of the bindings' task object (plus steps)."""

    id: int
    request: int
    request_id: str
    kind: str
    step: int
    group: list
    source: list
    model: str
    height: int
    width: int
    frames: int
    expected_duration_us: int
    steps: int


@dataclass
class Record:
    handle: int
    id: str
    shape: Shape
    steps: int
    phase: str = "waiting"  # waiting, running, completed, dropped
    reason: str = ""
    position: int = 0  # 0 encode, 1..steps the steps, steps + 1 decode
    state_group: tuple = ()
    run_group: tuple = ()
    occupied: tuple = ()
    launch: int = 0
    launch_kind: str = ""
    chunk_left: int = 0
    failures: int = 0
    migrations: int = 0
    degrees: list = field(default_factory=list)  # degree of every successful step
    ends: int = 0  # times the request ended (must be exactly 1)

    @property
    def tasks_total(self) -> int:
        return self.steps + 2

    def next_task(self) -> tuple[str, int]:
        if self.position == 0:
            return "encode", -1
        if self.position <= self.steps:
            return "step", self.position - 1
        return "decode", -1


class DoubleRuntime:
    def __init__(self, executor: Any, devices: int, *, degrees: Sequence[int] = (1, 2, 4), seed: int = 0,
                 max_chunk: int = 3, max_failures: int = 4, step_us: int = 0, max_running: int = 0,
                 lost: Sequence[int] = ()):
        self.ex = executor
        self.devices = devices
        self.degrees = sorted(d for d in degrees if 1 <= d <= devices)
        self.rng = random.Random(seed)
        self.max_chunk = max_chunk
        self.max_failures = max_failures
        self.step_us = step_us
        self.max_running = max_running  # > 0: at most this many requests hold devices at once
        self.requests: list[Record] = []
        self.lost: set = set(lost)  # devices known lost before the run
        self.free = set(range(devices)) - self.lost
        self.next_launch = 0
        self.migrations = 0
        self.launched: list[Task] = []

    def submit(self, request_id: str, shape: Shape, steps: int) -> int:
        h = len(self.requests)
        self.requests.append(Record(h, request_id, shape, steps))
        return h

    # the loop ------------------------------------------------------------------------------------
    def run(self, timeout_s: float = 120.0) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while any(r.phase in ("waiting", "running") for r in self.requests):
            if time.monotonic() > deadline:
                raise TimeoutError("DoubleRuntime: requests still unfinished after "
                                   f"{timeout_s} s: {[(r.id, r.phase, r.position) for r in self.requests if r.ends == 0]}")
            for ev in self.ex.poll():
                self._handle(ev)
            self._schedule()
            self.ex.wait_until(self.ex.now() + 200_000)
        return self.requests

    def _end(self, r: Record, phase: str, reason: str = "") -> None:
        r.phase, r.reason = phase, reason
        r.ends += 1
        if phase == "dropped" and hasattr(self.ex, "release"):
            self.ex.release(r.handle)

    def _release(self, devs: Sequence[int]) -> None:
        for d in devs:
            if d not in self.lost:
                self.free.add(d)

    def _handle(self, ev: tuple) -> None:
        kind = ev[0]
        if kind == "device_lost":
            d = int(ev[1])
            self.lost.add(d)
            self.free.discard(d)
            for r in self.requests:
                if r.phase in ("waiting", "running") and d in r.state_group:
                    r.state_group, r.position = (), 0
            return
        _, lid, h = ev
        r = self.requests[h]
        if r.phase != "running" or r.launch != lid:
            raise AssertionError(f"event {ev} for request {r.id} which is {r.phase} (launch {r.launch})")
        self._release(r.occupied)
        r.occupied = ()
        if kind == "task_failed":
            r.failures += 1
            r.chunk_left = 0
            if r.failures >= self.max_failures:
                self._end(r, "dropped", "task_failed")
            else:
                r.phase = "waiting"
            return
        if r.launch_kind == "migrate":
            r.state_group = r.run_group
            r.migrations += 1
            self.migrations += 1
            self._launch_next(r)
            return
        if r.launch_kind == "step":
            r.degrees.append(len(r.run_group))
        r.position += 1
        r.chunk_left -= 1
        r.state_group = r.run_group
        if r.position == r.tasks_total:
            self._end(r, "completed")
        elif r.chunk_left > 0:
            self._launch_next(r)
        else:
            r.phase = "waiting"

    def _schedule(self) -> None:
        usable = self.devices - len(self.lost)
        running = sum(r.phase == "running" for r in self.requests)
        for r in self.requests:
            if r.phase != "waiting":
                continue
            if not self.degrees or self.degrees[0] > usable:
                self._end(r, "dropped", "device_lost_no_capacity")
                continue
            if self.max_running and running >= self.max_running:
                continue
            fits = [k for k in self.degrees if k <= len(self.free)]
            if not fits:
                continue
            k = self.rng.choice(fits)
            group = tuple(self.rng.sample(sorted(self.free), k))
            r.run_group = group
            r.chunk_left = min(self.rng.randint(1, self.max_chunk), r.tasks_total - r.position)
            r.phase = "running"
            running += 1
            if r.state_group and sorted(r.state_group) != sorted(group):
                occupied = list(group) + [d for d in r.state_group if d in self.free and d not in group]
                self._start(r, "migrate", -1, occupied, list(r.state_group))
            else:
                self._launch_next(r)

    def _launch_next(self, r: Record) -> None:
        kind, step = r.next_task()
        self._start(r, kind, step, list(r.run_group), [])

    def _start(self, r: Record, kind: str, step: int, occupied: list, source: list) -> None:
        for d in occupied:
            self.free.discard(d)
        self.next_launch += 1
        r.launch, r.launch_kind, r.occupied, r.phase = self.next_launch, kind, tuple(occupied), "running"
        t = Task(self.next_launch, r.handle, r.id, kind, step, list(r.run_group), source, r.shape.model, r.shape.height,
                 r.shape.width, r.shape.frames, self.step_us if kind == "step" else 0, r.steps)
        self.launched.append(t)
        self.ex.launch(t)
