"""TorchExecutor: paraflex's Executor protocol in the driver process, one worker process per device.

The paraflex scheduler (the bindings' Scheduler) calls, on its own thread:

  launch(task)       returns at once: the task goes to every device it occupies (its group, and for a
                     migration the source devices too), over the control channel, in one global order
  poll()             events since the last poll: ("task_done", id, request), ("task_failed", id,
                     request), ("device_lost", device); a launch on a lost device is reported failed
                     before the loss
  now()              monotonic microseconds since the executor started
  wait_until(t)      blocks until an event is ready, notify() was called, or now() >= t
  notify()           any thread: wakes wait_until
  release(request)   a dropped request's state is freed on every device
  on_ready(cb)       cb() is called (any thread) when events become ready (event-loop embeddings)

Outcomes are transactional per launch, as in thread_executor: every rank reports; when all have
succeeded the driver sends COMMIT to each, when any failed (or a device of the launch was lost) it
sends DISCARD to the live ones - before the event is visible to poll(), so the next task of that
request always finds the committed (or the old) state. The driver keeps each request's layout (which
device holds which slice): the group of a step is a set, the layout is the order, and a migration's
plan comes from paraflex.plan_migration(layout, group, tokens) and gives the next layout.

Degrees the model cannot run (heads % degree != 0 for Ulysses), groups with lost or unknown devices,
and tasks whose state is not where the scheduler says are failed at launch without reaching a worker,
with the reason in errors(); the scheduler retries and, after its max_failures, drops the request
("task_failed"). A profile with a ``heads`` column keeps the scheduler from choosing such degrees.

A device is lost when its worker's control connection breaks (the process died: gloo reports the
closed connection at once) or a send to it fails. Exchanges of a task with a dead peer fail at once on
the live ranks, which finish the task (failed) instead of hanging (comm.py).
"""

from __future__ import annotations

import atexit
import socket
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist

from . import protocol as P
from .comm import Plan
from .tiny_dit import Shape
from .worker import Settings, init_distributed, spawn_entry, tune_malloc

NO_DEADLINE = (1 << 63) - 1
MAX_WAIT_S = 3600.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindings_plan_fn() -> Callable[[Sequence[int], Sequence[int], int], Plan]:
    """paraflex.plan_migration (the C++ plan, through the bindings) as a function returning a Plan."""
    try:
        import paraflex  # noqa: F401
        plan_migration = paraflex.plan_migration
    except (ImportError, AttributeError) as e:
        raise ImportError("paraflex.plan_migration is not importable: build the bindings (examples/python) and put "
                          "<build>/examples/python on PYTHONPATH, or pass plan_fn") from e

    def plan(source: Sequence[int], dest: Sequence[int], total: int) -> Plan:
        return Plan.from_bindings(plan_migration(list(source), list(dest), int(total)), source, dest, total)

    return plan


def _attr(task: Any, name: str, default: Any = None) -> Any:
    if isinstance(task, dict):
        return task.get(name, default)
    return getattr(task, name, default)


@dataclass
class _Launch:
    id: int
    request: int
    kind: str
    devices: list  # group, then migration sources outside it
    group: list
    pending: set
    message: dict
    plan: Optional[Plan] = None
    failed: bool = False
    error: str = ""
    output: Any = None
    sent: float = 0.0
    members: list = field(default_factory=list)  # a batched launch's requests (>= 2), else empty


@dataclass
class Stats:
    launched: int = 0
    succeeded: int = 0
    failed: int = 0
    migrations: int = 0
    migrated_tokens: int = 0  # tokens that crossed between devices
    local_tokens: int = 0  # tokens a migration kept in place
    degrees: set = field(default_factory=set)  # degrees of successful steps
    # (kind, degree) -> [launches, sum of launch-to-outcome us, sum of expected us]: how the real
    # durations compare with the cost model's
    times: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        for (kind, k), (n, real, exp) in sorted(self.times.items()):
            parts.append(f"{kind}@{k}: {n} x {real / n / 1e3:.1f} ms (expected {exp / n / 1e3:.1f})")
        return "; ".join(parts)


def _closer(executor: "weakref.ref[TorchExecutor]") -> Callable[[], None]:
    """close() of the executor if it still exists: what atexit holds (not the executor itself)."""
    def close() -> None:
        ex = executor()
        if ex is not None:
            ex.close()
    return close


class TorchExecutor:
    """The driver side. ``TorchExecutor.spawn(...)`` starts the workers on this machine with
    torch.multiprocessing; ``TorchExecutor(settings)`` in rank 0 of a torchrun/env:// launch attaches
    to workers started by others (``paraflex_torch.worker``)."""

    def __init__(self, settings: Settings, *, plan_fn: Optional[Callable] = None, processes: Any = None,
                 steps: Optional[dict] = None):
        self.s = settings
        self.plan_fn = plan_fn or bindings_plan_fn()
        self._processes = processes
        self._t0 = time.monotonic()
        self._cv = threading.Condition()
        self._events: deque = deque()
        self._notified = False
        self._on_ready: Optional[Callable[[], None]] = None
        self._lock = threading.RLock()  # bookkeeping below
        self._inflight: dict[int, _Launch] = {}
        self._layout: dict[int, tuple] = {}  # request -> committed layout
        self._lost: set = set()
        self._errors: list[str] = []
        self._outputs: dict[int, Any] = {}
        self._request_ids: dict[int, str] = {}
        self._steps: dict[str, int] = dict(steps or {})
        self._info: dict[int, dict] = {}
        self._held: dict[int, dict] = {}
        self._ready = threading.Event()
        self._closed = False
        self.stats = Stats()
        self.transport = init_distributed(settings, 0)
        self._channels = [P.driver_channel(d + 1) for d in range(settings.devices)]
        self._stop = threading.Event()
        self._receivers = [threading.Thread(target=self._receive, args=(d,), name=f"paraflex-recv-{d}", daemon=True)
                           for d in range(settings.devices)]
        for t in self._receivers:
            t.start()
        self._hb = threading.Thread(target=self._heartbeat, name="paraflex-heartbeat", daemon=True)
        self._hb.start()
        deadline = time.monotonic() + settings.timeout_s
        while len(self._info) + len(self._lost) < settings.devices and time.monotonic() < deadline:
            self._ready.wait(0.05)
            self._ready.clear()
        if len(self._info) + len(self._lost) < settings.devices:
            raise TimeoutError(f"TorchExecutor: only {len(self._info)} of {settings.devices} workers reported ready "
                               f"within {settings.timeout_s} s")
        # A driver that ends without close() (an uncaught exception, sys.exit) must still exit: the
        # spawned workers are not daemonic, so multiprocessing's exit handler would wait for them
        # for good. atexit calls handlers last-registered first, so this one runs before that one.
        self._close_at_exit = _closer(weakref.ref(self))
        atexit.register(self._close_at_exit)

    # start-up -----------------------------------------------------------------------------------
    @classmethod
    def spawn(cls, settings: Settings, *, master_addr: str = "127.0.0.1", master_port: Optional[int] = None,
              plan_fn: Optional[Callable] = None, steps: Optional[dict] = None) -> "TorchExecutor":
        """Starts settings.devices worker processes here (torch.multiprocessing, start method spawn) and
        connects to them as rank 0."""
        import torch.multiprocessing as mp

        tune_malloc()  # sets the environment the children inherit
        if plan_fn is None:
            plan_fn = bindings_plan_fn()  # fail before starting processes
        port = master_port or free_port()
        settings = replace(settings, init_method=f"tcp://{master_addr}:{port}")
        ctx = mp.start_processes(spawn_entry, args=(settings,), nprocs=settings.devices, join=False, start_method="spawn")
        try:
            return cls(settings, plan_fn=plan_fn, processes=ctx, steps=steps)
        except BaseException:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise

    # the Executor protocol ------------------------------------------------------------------------
    def now(self) -> int:
        return int((time.monotonic() - self._t0) * 1e6)

    def wait_until(self, t: int) -> None:
        with self._cv:
            while not self._events and not self._notified:
                left = (min(int(t), NO_DEADLINE) - self.now()) / 1e6
                if left <= 0:
                    break
                self._cv.wait(min(left, MAX_WAIT_S))
            self._notified = False

    def notify(self) -> None:
        with self._cv:
            self._notified = True
            self._cv.notify_all()

    def on_ready(self, callback: Optional[Callable[[], None]]) -> None:
        """Optional protocol member: callback() is called (from a receiver thread) whenever events
        become ready to poll, so an event loop driving the scheduler with turn() hears of them."""
        self._on_ready = callback

    def poll(self) -> list:
        with self._cv:
            out = list(self._events)
            self._events.clear()
        return out

    def set_steps(self, request_id: str, steps: int) -> None:
        """The request's total denoising steps, for tasks that do not carry ``steps`` (the sampler's
        schedule depends on it)."""
        with self._lock:
            self._steps[request_id] = int(steps)

    runs_batches = True  # a batched step is one forward over the members' stacked latents (worker.step_batch)

    def launch(self, task: Any) -> None:
        lid = int(_attr(task, "id"))
        req = int(_attr(task, "request"))
        kind = str(_attr(task, "kind"))
        group = [int(d) for d in _attr(task, "group", [])]
        source = [int(d) for d in (_attr(task, "source", None) or [])]
        rid = str(_attr(task, "request_id", req))
        steps = _attr(task, "steps", None)
        shape = Shape(int(_attr(task, "height", 0)), int(_attr(task, "width", 0)), int(_attr(task, "frames", 1) or 1),
                      str(_attr(task, "model", "")))
        msg = {"id": lid, "request": req, "request_id": rid, "kind": kind, "step": int(_attr(task, "step", -1)),
               "group": group, "model": shape.model, "height": shape.height, "width": shape.width, "frames": shape.frames,
               "expected_duration_us": int(_attr(task, "expected_duration_us", 0) or 0)}
        batch = list(_attr(task, "batch", None) or [])
        with self._lock:
            self.stats.launched += 1
            self._request_ids[req] = rid
            if steps is None:
                steps = self._steps.get(rid)
            devices = list(group) + [d for d in source if d not in group]
            launch = _Launch(lid, req, kind, devices, group, set(devices), msg)
            why = ""
            if batch:
                members = []
                for m in batch:
                    mreq = int(_attr(m, "request"))
                    mrid = str(_attr(m, "request_id", "") or mreq)
                    msteps = _attr(m, "steps", None) or self._steps.get(mrid)
                    self._request_ids[mreq] = mrid
                    members.append({"request": mreq, "request_id": mrid, "step": int(_attr(m, "step", -1)),
                                    "steps": int(msteps) if msteps else 0})
                    if str(_attr(m, "kind", kind)) != kind:
                        why = why or f"launch {lid}: the members of a batch run different kinds of task"
                launch.members = [m["request"] for m in members]
                msg["members"] = members
                if len(set(launch.members)) != len(members):
                    why = why or f"launch {lid}: a request appears twice in the batch"
                for m in members:  # each member checked as its own task
                    sub = _Launch(lid, m["request"], kind, devices, group, set(devices),
                                  dict(msg, request=m["request"], request_id=m["request_id"], step=m["step"]))
                    why = why or self._check(sub, source, shape, m["steps"] or None)
            else:
                why = self._check(launch, source, shape, steps)
            if why:
                launch.failed, launch.error = True, why
                sends = self._decide(launch)
            else:
                msg["steps"] = int(steps) if steps is not None else 0
                if kind == "migrate":
                    msg["plan"] = launch.plan
                self._inflight[lid] = launch
                launch.sent = time.monotonic()
                # Sent under the lock: a loss noticed meanwhile must not DISCARD it before it is sent.
                self._flush([(d, P.TASK, 0, 0, msg) for d in devices])
                return
        self._flush(sends)

    def release(self, request: int) -> None:
        with self._lock:
            layout = self._layout.pop(int(request), ())
            sends = [(d, P.DROP, 0, int(request), None) for d in layout if d not in self._lost]
        self._flush(sends)

    # results --------------------------------------------------------------------------------------
    def output(self, request: int) -> Optional[torch.Tensor]:
        """The decoded pixels of a completed request, or None: [latent frames, 3, H', W'], where
        H' and W' are H and W rounded down to whole 16-pixel tokens (at least 16) and a video of
        `frames` frames has 1 + (frames - 1) // 4 latent frames (1 for an image): the stand-in DiT's
        decoder does not expand time or pad (Shape.grid)."""
        with self._lock:
            o = self._outputs.get(int(request))
        return None if o is None else torch.from_numpy(o)

    def output_by_id(self, request_id: str) -> Optional[torch.Tensor]:
        """The decoded pixels of the completed request with this id (the latest one), or None."""
        with self._lock:
            handles = [h for h, rid in self._request_ids.items() if rid == request_id and h in self._outputs]
            o = self._outputs[max(handles)] if handles else None
        return None if o is None else torch.from_numpy(o)

    def take_output(self, request: int) -> Optional[torch.Tensor]:
        with self._lock:
            o = self._outputs.pop(int(request), None)
        return None if o is None else torch.from_numpy(o)

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def lost_devices(self) -> list[int]:
        with self._lock:
            return sorted(self._lost)

    def layout_of(self, request: int) -> Optional[tuple]:
        with self._lock:
            return self._layout.get(int(request))

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def held_states(self, timeout: float = 30.0) -> dict:
        """{device: {"committed": [requests whose state it holds], "staged": n, "steps_run": n}} from
        every live worker, once everything sent to it before has run. For tests and diagnostics."""
        with self._lock:
            self._held.clear()
            live = [d for d in range(self.s.devices) if d not in self._lost]
        self._flush([(d, P.QUERY, 0, 0, None) for d in live])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(d in self._held or d in self._lost for d in live):
                    return dict(self._held)
            self._ready.wait(0.02)
            self._ready.clear()
        raise TimeoutError(f"held_states: no answer from {[d for d in live if d not in self._held]} within {timeout} s")

    def worker_info(self) -> dict:
        with self._lock:
            return dict(self._info)

    @property
    def devices(self) -> int:
        return self.s.devices

    # internals ------------------------------------------------------------------------------------
    def _check(self, launch: _Launch, source: list, shape: Shape, steps: Any) -> str:
        """Why the launch cannot run (checked here so every rank agrees), or ''."""
        k = len(launch.group)
        where = f"launch {launch.id} ({launch.kind} of request {launch.message['request_id']!r})"
        if k == 0:
            return f"{where}: empty group"
        if len(set(launch.devices)) != len(launch.devices) or len(set(launch.group)) != k:
            return f"{where}: a device appears twice in {launch.group}"
        bad = [d for d in launch.devices if not 0 <= d < self.s.devices]
        if bad:
            return f"{where}: device {bad[0]} out of range ({self.s.devices} devices)"
        lost = [d for d in launch.devices if d in self._lost]
        if lost:
            return f"{where}: device {lost[0]} is lost"
        if not self.s.model.allows_degree(k):
            return (f"{where}: degree {k} cannot run this model: Ulysses splits {self.s.model.heads} heads, "
                    f"{self.s.model.heads} % {k} != 0 (give the profile a heads column)")
        if steps is None or int(steps) <= 0:
            return f"{where}: total steps of the request unknown (the task has no steps; call set_steps)"
        if shape.height <= 0 or shape.width <= 0:
            return f"{where}: bad shape {shape}"
        layout = self._layout.get(launch.request)
        if launch.kind == "encode":
            return ""
        if launch.kind in ("step", "decode"):
            if layout is None or sorted(layout) != sorted(launch.group):
                return f"{where} on {launch.group}, but its state is on {list(layout) if layout else 'no device'}"
            if launch.kind == "step" and not 0 <= launch.message["step"] < int(steps):
                return f"{where}: step {launch.message['step']} of {steps}"
            return ""
        if launch.kind == "migrate":
            if layout is None or sorted(layout) != sorted(source):
                return f"{where} from {source}, but its state is on {list(layout) if layout else 'no device'}"
            try:
                launch.plan = self.plan_fn(list(layout), list(launch.group), shape.tokens(self.s.model))
                launch.plan.validate()
            except Exception as e:  # noqa: BLE001
                return f"{where}: migration plan: {e}"
            return ""
        return f"{where}: unknown task kind {launch.kind!r}"

    def _decide(self, launch: _Launch) -> list:
        """The launch has ended (lock held): commit or discard it on its live devices, record the
        outcome, and queue its event. Returns the control messages to send before the event shows."""
        self._inflight.pop(launch.id, None)
        ok = not launch.failed
        live = [d for d in launch.devices if d not in self._lost]
        sends = []
        if launch.sent:  # the workers have it
            sends = [(d, P.COMMIT if ok else P.DISCARD, launch.id, launch.request, None) for d in live]
        if ok:
            self.stats.succeeded += 1
            t = self.stats.times.setdefault((launch.kind, len(launch.group)), [0, 0, 0])
            t[0] += 1
            t[1] += int((time.monotonic() - launch.sent) * 1e6)
            t[2] += launch.message["expected_duration_us"]
            if launch.kind == "encode":
                for r in launch.members or [launch.request]:
                    old = self._layout.get(r, ())
                    self._layout[r] = tuple(launch.group)
                    # a restart: state left elsewhere by an earlier life of the request is stale
                    sends += [(d, P.DROP, 0, r, None) for d in old if d not in launch.group and d not in self._lost]
            elif launch.kind == "migrate":
                self._layout[launch.request] = tuple(launch.plan.layout)
                self.stats.migrations += 1
                self.stats.migrated_tokens += sum(e.count for e in launch.plan.edges if not e.local)
                self.stats.local_tokens += sum(e.count for e in launch.plan.edges if e.local)
            elif launch.kind == "decode":
                self._layout.pop(launch.request, None)
                if launch.output is not None:
                    self._outputs[launch.request] = launch.output
            elif launch.kind == "step":
                self.stats.degrees.add(len(launch.group))
            outcome = "task_done"
        else:
            self.stats.failed += 1
            if len(self._errors) < 1000:
                self._errors.append(launch.error or f"launch {launch.id} failed")
            outcome = "task_failed"
        for r in launch.members or [launch.request]:  # one event per member of a batch, all alike
            sends.append((None, (outcome, launch.id, r)))
        return sends

    def _flush(self, sends: list) -> None:
        """Sends control messages (not under the bookkeeping lock), then publishes events, in order."""
        events = []
        for item in sends:
            if item[0] is None:
                events.append(item[1])
                continue
            d, kind, a, b, payload = item
            if d in self._lost:
                continue
            try:
                self._channels[d].send(kind, a, b, 0, payload)
            except Exception as e:  # noqa: BLE001 - a send that fails means the worker is gone
                events_lost = self._lose(d, f"send to device {d} failed: {e}")
                self._flush(events_lost)
        if events:
            with self._cv:
                self._events.extend(events)
                self._cv.notify_all()
            cb = self._on_ready
            if cb is not None:
                cb()

    def _lose(self, d: int, why: str) -> list:
        """Device d is gone: its launches fail (live peers discard), then the loss is reported."""
        with self._lock:
            if d in self._lost or self._closed:
                return []
            self._lost.add(d)
            if len(self._errors) < 1000:
                self._errors.append(f"device {d} lost: {why}")
            sends: list = []
            for launch in sorted((l for l in self._inflight.values() if d in l.devices), key=lambda l: l.id):
                launch.failed = True
                launch.error = launch.error or f"launch {launch.id} ({launch.kind} of request {launch.message['request_id']!r}): device {d} lost"
                sends += self._decide(launch)
            sends.append((None, ("device_lost", d)))
        self._ready.set()
        return sends

    def _receive(self, d: int) -> None:
        ch = self._channels[d]
        while not self._stop.is_set():
            try:
                kind, a, b, c, payload = ch.recv()
            except Exception as e:  # noqa: BLE001 - the worker died (or the transport timed out)
                if not self._stop.is_set():
                    self._flush(self._lose(d, str(e).splitlines()[0] if str(e) else type(e).__name__))
                return
            if kind == P.READY:
                with self._lock:
                    self._info[d] = payload or {}
                self._ready.set()
            elif kind == P.REPORT:
                self._report(d, a, bool(b), payload or {})
            elif kind == P.INFO:
                with self._lock:
                    self._held[d] = payload or {}
                self._ready.set()
            elif kind == P.BYE:
                return

    def _report(self, d: int, lid: int, ok: bool, payload: dict) -> None:
        with self._lock:
            launch = self._inflight.get(lid)
            if launch is None or d not in launch.pending:
                return  # decided already (a peer failed or a device was lost)
            launch.pending.discard(d)
            if "output" in payload:
                launch.output = payload["output"]
            if not ok:
                launch.failed = True
                launch.error = launch.error or f"launch {lid} ({launch.kind} of request {launch.message['request_id']!r}) on {payload.get('error', f'device {d}: failed')}"
            if launch.pending and not launch.failed:
                return
            sends = self._decide(launch)
        self._flush(sends)

    def _heartbeat(self) -> None:
        hb = self.s.heartbeat_s
        while not self._stop.wait(hb):
            for d in range(self.s.devices):
                if d in self._lost or self._stop.is_set():
                    continue
                try:
                    self._channels[d].send(P.HEARTBEAT)
                except Exception as e:  # noqa: BLE001
                    self._flush(self._lose(d, f"heartbeat: {e}"))

    # shutdown ---------------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Stops the workers and leaves the process group. Idempotent; called at interpreter exit if
        the driver did not."""
        with self._lock:
            if self._closed:
                return
            alive = [d for d in range(self.s.devices) if d not in self._lost]
        atexit.unregister(self._close_at_exit)
        for d in alive:
            try:
                self._channels[d].send(P.STOP)
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + timeout
        for t in self._receivers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        with self._lock:
            self._closed = True
        if self._processes is not None:
            for p in self._processes.processes:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(1.0)
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass

    def exit_codes(self) -> list:
        if self._processes is None:
            return []
        return [p.exitcode for p in self._processes.processes]

    def __enter__(self) -> "TorchExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
