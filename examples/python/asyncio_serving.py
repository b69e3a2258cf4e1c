"""Serving from an asyncio event loop: coroutines submit requests and await their completion.

The scheduler has no thread of its own here. The loop calls Scheduler.turn() whenever something is
due: at next_wakeup() (an arrival, a policy wake-up), when on_wakeup fires (a submit or cancel from
any thread, or - with an executor that has on_ready - a completion), or every poll_interval seconds
for an executor that cannot signal completions. Completions come back through on_request_end, on
the loop's thread, and resolve the futures the coroutines await.

    PYTHONPATH=<build>/examples/python python3 asyncio_serving.py
"""

import asyncio

import paraflex
from python_executor import SleepExecutor


class AsyncScheduler:
    """A paraflex.Scheduler driven by the running asyncio loop (see the module comment)."""

    def __init__(self, scheduler, poll_interval=None):
        self.scheduler = scheduler
        self.poll_interval = poll_interval  # seconds; None: rely on on_wakeup (executor with on_ready)
        self._futures = {}
        self._stopping = False
        scheduler.on_request_end(self._ended)

    def _ended(self, status):
        fut = self._futures.pop(status.id, None)
        if fut is not None and not fut.done():
            fut.set_result(status)

    async def generate(self, model, height, width, steps, **options):
        """Submits one request and returns its RequestStatus once it has ended (completed or dropped)."""
        rid = self.scheduler.submit(model, height, width, steps, **options)
        fut = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        try:
            return await fut
        except asyncio.CancelledError:
            # The client went away: free the devices (a stopped scheduler has nothing to free and
            # refuses every call).
            if self.scheduler.error is None:
                self.scheduler.cancel(rid)
            raise

    async def serve(self):
        """Runs until stop() was called and every request has ended. If it ends otherwise (a turn
        raised, which stops the scheduler for good, or it was cancelled), every generate() still
        waiting raises too instead of waiting forever."""
        try:
            await self._serve()
        except asyncio.CancelledError:
            self._fail_waiting(None)
            raise
        except BaseException as e:
            self._fail_waiting(e)
            raise
        finally:
            # Executor threads may still signal; the loop may be closed by then.
            self.scheduler.on_wakeup(lambda: None)

    def _fail_waiting(self, error):
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if fut.done():
                continue
            if error is None:
                fut.cancel()
            else:
                stopped = RuntimeError(f"paraflex serving stopped: {error!r}")
                stopped.__cause__ = error
                fut.set_exception(stopped)

    async def _serve(self):
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        # Any thread: the loop should turn soon. Must not call into the scheduler itself.
        self.scheduler.on_wakeup(lambda: loop.call_soon_threadsafe(wake.set))
        self.scheduler.open()
        while True:
            wake.clear()
            t = self.scheduler.turn()  # never blocks; the GIL is released inside
            if self._stopping and self.scheduler.finished():
                return
            timeout = None if t == paraflex.NEVER else max(0.0, (t - self.scheduler.now()) / 1e6)
            if self.poll_interval is not None:
                timeout = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def stop(self):
        """serve() returns once everything submitted so far has ended."""
        self._stopping = True
        self.scheduler.close()  # fires on_wakeup


async def main(time_scale=0.0005, quiet=False):
    executor = SleepExecutor(devices=8, time_scale=time_scale)
    server = AsyncScheduler(paraflex.Scheduler("slo-aware", executor, gpus=8, gpu="l20-inferred"))
    serving = asyncio.create_task(server.serve())

    async def client(i, size, delay):
        await asyncio.sleep(delay)
        status = await server.generate("flux-dev", size, size, 28, slo_s=40.0, request_id=f"user{i}")
        if not quiet:
            latency = "" if status.latency_s is None else f"{status.latency_s * 1000:.1f} ms"
            print(f"user{i}: {size}x{size} {status.state} {status.reason} {latency}")
        return status

    sizes = [1024, 2048, 512, 256, 1024, 2048, 512, 1024]
    results = await asyncio.gather(*(client(i, s, 0.002 * i) for i, s in enumerate(sizes)))
    server.stop()
    await serving
    executor.close()
    return results


if __name__ == "__main__":
    statuses = asyncio.run(main())
    print(sum(s.state == "completed" for s in statuses), "of", len(statuses), "completed")
