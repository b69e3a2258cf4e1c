// Embedding paraflex in a serving loop on real threads: four CPU "devices" run a real stand-in for a
// DiT (sharded latent, Ulysses all_to_alls, migrations that move the rows), the slo-aware policy
// decides, and a client thread submits requests while run() serves them. The same policy object
// would run unchanged on the simulator or on GPUs; only the executor type differs.
#include <chrono>
#include <cstdio>
#include <thread>

#include <paraflex/executor/thread_executor.hpp>
#include <paraflex/paraflex.hpp>
#include <paraflex/policy/builtin.hpp>

namespace {
// A few milliseconds per step, faster on wider groups for larger latents.
struct cpu_cost {
  double step_seconds(const paraflex::request_shape& s, int k) const { return 0.001 + paraflex::latent_tokens(s) * 2e-6 / k; }
  bool allows_degree(const paraflex::request_shape&, int) const { return true; }
  double migration_seconds(const paraflex::request_shape&, int, int, bool) const { return 0.0005; }
};
}  // namespace

int main() {
  using namespace paraflex;
  constexpr int devices = 4, requests = 12;
  thread_executor executor(devices);  // default body: cpu_dit_body, sleeps to the cost model's times
  cpu_cost cost;
  auto policy = builtin_policies(devices).make("slo-aware").value_or_throw();
  scheduler sched(cluster{devices, devices, "cpu"}, policy, executor, cost);

  int completed = 0;
  sched.on_request_end([&](const request_record& r) {  // on the scheduler's thread
    const bool ok = r.phase == request_phase::completed;
    completed += ok;
    std::printf("%-4s %-9s after %5.1f ms on %d device(s), %u migration(s)\n", r.spec.id.c_str(), ok ? "completed" : r.drop_reason.c_str(),
                to_seconds(r.finish - r.spec.arrival) * 1e3, r.last_degree, r.migrations);
  });

  sched.open_inbox();  // run() keeps serving between submissions until close_inbox()
  std::thread client([&] {
    for (int i = 0; i < requests; ++i) {
      const int px = i % 3 == 0 ? 512 : 256;
      request_spec r;
      r.id = "q" + std::to_string(i);
      r.shape = {"toy-dit", px, px, 1};
      r.steps = 8;
      // Generous: the work is real CPU time, 10x slower under TSan on a loaded 2-core machine, and no
      // request may be dropped for that. Arrival 0 = when the scheduler picks it up.
      r.slo = *to_ticks(60.0);
      sched.submit_async(std::move(r));
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    sched.close_inbox();
  });
  sched.run();  // returns once the inbox is closed and every request has ended
  client.join();

  std::printf("%d of %d completed; %llu tasks, %llu failed\n", completed, requests,
              static_cast<unsigned long long>(executor.succeeded()), static_cast<unsigned long long>(executor.failed()));
  return completed == requests && executor.failed() == 0 ? 0 : 1;
}
