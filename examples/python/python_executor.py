"""An executor written in Python, plugged into paraflex.Scheduler exactly like a C++ one.

The protocol (docs/python.md, "Executors"):
    launch(task)          start a task; return at once (task.id, .request, .kind, .group, .source, ...)
    poll() -> events      ("task_done", launch_id, request) | ("task_failed", launch_id, request)
                          | ("device_lost", device), for whatever ended since the last poll
    now() -> int          microseconds on the executor's clock
    wait_until(t)         block until an event is ready, notify() was called, or now() >= t
                          (t may be paraflex.NEVER = 2**63 - 1)
    notify()              optional, any thread: wake a wait_until early (a submit from another thread)
    release(request)      optional: a dropped request's state may be freed
    on_ready(callback)    optional: call callback() (any thread) when an event becomes ready, so an
                          event loop driving the scheduler with turn() learns of completions

SleepExecutor "runs" every task by letting its expected duration (scaled by time_scale) pass on a
real clock, and checks what a real executor relies on: no device runs two things at once, a
request's tasks arrive in order, a migration's plan (paraflex.plan_migration) covers the latent.
A GPU executor (e.g. PyTorch: launch puts the task on a CUDA stream, poll checks its events) has the
same shape. Run it:

    PYTHONPATH=<build>/examples/python python3 python_executor.py
"""

import heapq
import threading
import time

import paraflex


class SleepExecutor:
    def __init__(self, devices, time_scale=0.001):
        self.time_scale = time_scale
        self._t0 = time.monotonic_ns()
        self._cv = threading.Condition()
        self._due = []  # heap of (end_us, launch_id, event)
        self._busy = set()  # devices running something
        self._holding = {}  # launch_id -> devices it holds
        self._steps = {}  # request -> last step index run
        self._notified = False
        self._closed = False
        self._ready = None
        self._watcher = None
        self.devices = devices
        self.launches = []  # (kind, request_id, group) in launch order
        self.released = []

    # -- the protocol ---------------------------------------------------------------------------
    def now(self):
        return (time.monotonic_ns() - self._t0) // 1000

    def launch(self, task):
        held = list(task.group) + [d for d in task.source if d not in task.group]
        if any(d >= self.devices for d in held):
            raise ValueError(f"launch {task.id}: device out of range in {held}")
        if task.kind == "migrate":
            plan = paraflex.plan_migration(task.source, task.group, 1000)
            assert sorted(plan.layout) == sorted(task.group)
            assert plan.local_elements + plan.remote_elements == 1000
        if task.kind == "step":
            last = self._steps.get(task.request, -1)
            if task.step != last + 1:
                raise AssertionError(f"request {task.request_id}: step {task.step} after step {last}")
            self._steps[task.request] = task.step
        end = self.now() + int(task.expected_duration_us * self.time_scale)
        with self._cv:
            # The group must be idle. A migration's sources need not be: a busy source serves the
            # copy from its copy engine, and an idle one may be handed to another launch of the
            # same decision, so sources are read from, never held.
            clash = self._busy.intersection(task.group)
            if clash:
                raise AssertionError(f"launch {task.id} ({task.kind} of {task.request_id}) on busy devices {sorted(clash)}")
            self._busy.update(task.group)
            self._holding[task.id] = list(task.group)
            heapq.heappush(self._due, (end, task.id, ("task_done", task.id, task.request)))
            self.launches.append((task.kind, task.request_id, list(task.group)))
            self._cv.notify_all()

    def poll(self):
        now = self.now()
        out = []
        with self._cv:
            while self._due and self._due[0][0] <= now:
                _, launch, event = heapq.heappop(self._due)
                self._busy.difference_update(self._holding.pop(launch))
                out.append(event)
        return out

    def wait_until(self, t):
        with self._cv:
            while not self._notified and not self._closed:
                now = self.now()
                due = self._due[0][0] if self._due else paraflex.NEVER
                if due <= now or t <= now:
                    break
                # NEVER (nothing due, no deadline) is beyond what Condition.wait accepts: no timeout.
                timeout = (min(due, t) - now) / 1e6
                self._cv.wait(None if timeout > threading.TIMEOUT_MAX else timeout)
            self._notified = False

    def notify(self):
        with self._cv:
            self._notified = True
            self._cv.notify_all()

    def release(self, request):
        self.released.append(request)

    def on_ready(self, callback):
        # Completions here are the clock passing a due time: a small thread watches it and signals.
        # One watcher thread, however often this is called (it reads the latest callback).
        self._ready = callback
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._signal, name="SleepExecutor.on_ready", daemon=True)
            self._watcher.start()

    # -- not part of the protocol -----------------------------------------------------------------
    def close(self):
        """Stops the on_ready thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _signal(self):
        signalled = -1  # due times up to here were signalled
        with self._cv:
            while not self._closed:
                pending = [end for end, _, _ in self._due if end > signalled]
                if not pending:
                    self._cv.wait()
                    continue
                now = self.now()
                first = min(pending)
                if first > now:
                    self._cv.wait((first - now) / 1e6)
                    continue
                signalled = max(end for end in pending if end <= now)
                self._cv.release()
                try:
                    self._ready()
                finally:
                    self._cv.acquire()


def main():
    executor = SleepExecutor(devices=8, time_scale=0.0005)
    sched = paraflex.Scheduler("slo-aware", executor, gpus=8, gpu="l20-inferred")
    sched.on_request_end(lambda s: print(f"  {s.id:<6} {s.state:<9} {s.reason or ''} "
                                         f"{'' if s.latency_s is None else f'{s.latency_s * 1000:.1f} ms'}"))
    for i, size in enumerate([2048, 1024, 512, 256, 1024, 2048]):
        sched.submit("flux-dev", size, size, 28, slo_s=60.0, request_id=f"img{i}")
    sched.run()  # returns when every request has ended
    executor.close()
    kinds = {}
    for kind, _, _ in executor.launches:
        kinds[kind] = kinds.get(kind, 0) + 1
    print("launches:", kinds)


if __name__ == "__main__":
    main()
