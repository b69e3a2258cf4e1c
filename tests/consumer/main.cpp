// Embeds paraflex: a static:2 policy on a 4-GPU simulated cluster, priced from the bundled FLUX
// profile that find_package / add_subdirectory make reachable (paraflex/data.hpp).
#include <cstdio>
#include <exception>

#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/data.hpp>
#include <paraflex/paraflex.hpp>

int main() try {
  using namespace paraflex;
  const auto profile = load_profile_csv(bundled_data_file("profiles/step_latency.csv").string()).value_or_throw();
  const auto cost = profile_cost_model::from_profile(profile, "l20-inferred").value_or_throw();
  static_degree_policy policy(2);
  simulated_executor executor;
  scheduler sched(cluster{4, 4, "l20-inferred"}, policy, executor, cost);
  for (int i = 0; i < 4; ++i) sched.submit({std::to_string(i), 0, {"flux-dev", 512, 512, 1}, 10, never, 0, ""});
  sched.run();
  const auto m = compute_metrics("static:2", sched.state().requests, 4, sched.gpu_busy_seconds());
  std::printf("data in %s: completed %zu of %zu, mean latency %.2f s\n", bundled_data_dir().string().c_str(), m.completed, m.requests,
              *m.latency_s.mean);
  return m.completed == 4 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer: %s\n", e.what());
  return 1;
}
