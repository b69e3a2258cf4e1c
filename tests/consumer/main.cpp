// Embeds paraflex: a static:2 policy on a 4-GPU simulated cluster with a made-up cost model.
#include <cstdio>

#include <paraflex/paraflex.hpp>

struct flat_cost {
  double step_seconds(const paraflex::request_shape&, int k) const { return 0.1 / k; }
  bool allows_degree(const paraflex::request_shape&, int) const { return true; }
  double migration_seconds(const paraflex::request_shape&, int, int, bool) const { return 0.0; }
};

int main() {
  flat_cost cost;
  paraflex::static_degree_policy policy(2);
  paraflex::simulated_executor executor;
  paraflex::scheduler sched(paraflex::cluster{4, 4, "any"}, policy, executor, cost);
  for (int i = 0; i < 4; ++i) sched.submit({std::to_string(i), 0, {"m", 512, 512, 1}, 10, paraflex::never, 0, ""});
  sched.run();
  const auto m = paraflex::compute_metrics("static:2", sched.state().requests, 4, sched.gpu_busy_seconds());
  std::printf("completed %zu of %zu, mean latency %.2f s\n", m.completed, m.requests, *m.latency_s.mean);
  return m.completed == 4 ? 0 : 1;
}
