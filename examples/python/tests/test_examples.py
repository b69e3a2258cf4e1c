"""The three examples run as they are documented: a Python policy, a Python executor, asyncio serving."""

import asyncio
import contextlib
import io
import unittest

from support import DEFAULT_WORKLOAD, paraflex  # noqa: F401  (support puts the examples on sys.path)

import asyncio_serving
import edf_drop_policy
import python_executor


class Examples(unittest.TestCase):
    def test_the_python_policy_example_compares_itself_with_the_built_ins(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            edf_drop_policy.main(["edf_drop_policy.py", DEFAULT_WORKLOAD])
        lines = out.getvalue().splitlines()
        self.assertEqual([line.split()[0] for line in lines], ["py-edf-drop", "edf-best-fit", "slo-aware"])

    def test_the_python_executor_example_serves_every_request(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            python_executor.main()
        text = out.getvalue()
        self.assertEqual(text.count(" completed "), 6)
        self.assertIn("launches:", text)

    def test_the_asyncio_example_awaits_every_completion(self):
        statuses = asyncio.run(asyncio_serving.main(quiet=True))
        self.assertEqual(len(statuses), 8)
        self.assertEqual(sorted(s.id for s in statuses), sorted(f"user{i}" for i in range(8)))
        self.assertTrue(all(s.ended for s in statuses))

    def test_the_asyncio_loop_learns_of_thread_executor_completions_without_polling(self):
        async def scenario():
            sched = paraflex.Scheduler("slo-aware", paraflex.ThreadExecutor(time_scale=0.0005, verify=False), gpu="l20-inferred")
            server = asyncio_serving.AsyncScheduler(sched, poll_interval=None)
            serving = asyncio.create_task(server.serve())
            done = await asyncio.wait_for(asyncio.gather(*(server.generate("flux-dev", 512, 512, 8, slo_s=60.0) for _ in range(4))), 60)
            server.stop()
            await asyncio.wait_for(serving, 30)
            return done

        self.assertEqual([s.state for s in asyncio.run(scenario())], ["completed"] * 4)

    def test_a_cancelled_coroutine_cancels_its_request(self):
        async def scenario():
            executor = python_executor.SleepExecutor(devices=8, time_scale=0.01)
            sched = paraflex.Scheduler("slo-aware", executor, gpus=8, gpu="l20-inferred")
            server = asyncio_serving.AsyncScheduler(sched)
            serving = asyncio.create_task(server.serve())
            job = asyncio.create_task(server.generate("flux-dev", 2048, 2048, 50, request_id="gone"))
            await asyncio.sleep(0.05)
            job.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await job
            server.stop()
            await asyncio.wait_for(serving, 30)
            executor.close()
            return sched.status("gone")

        status = asyncio.run(scenario())
        self.assertEqual((status.state, status.reason), ("dropped", "cancelled"))


if __name__ == "__main__":
    unittest.main()
