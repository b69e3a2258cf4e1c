// A custom policy in ~50 lines: GF-DiT's EDF-best-fit with two parts replaced, run side by side with
// it in the simulator on a generated skewed FLUX mix. The order becomes "least remaining work first"
// (at one GPU), a new part written here; admission becomes the library's drop_unreachable, where
// EDF-best-fit admits all (it never drops). Sizing and placement are EDF-best-fit's.
// What it prints: 77.5% SLO attainment with 18 requests dropped, against EDF-best-fit's 66.2%. The
// gain comes from the drops, not the order: with admit_all the new order alone also gives 66.2%, and
// EDF's order with drop_unreachable gives 78.8% (17 dropped). See docs/writing-a-policy.md.
#include <cstdio>
#include <string>

#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/executor/simulated.hpp>
#include <paraflex/policy/compose.hpp>
#include <paraflex/policy/slo_aware.hpp>
#include <paraflex/runtime/scheduler.hpp>
#include <paraflex/sim/generators.hpp>
#include <paraflex/sim/metrics.hpp>

#ifndef PARAFLEX_DATA_DIR
#define PARAFLEX_DATA_DIR "bench/data"
#endif

using namespace paraflex;

// The new part: any type with key(view, handle) returning something ordered models Order.
struct least_work_first {
  tick key(const scheduler_view& v, request_handle h) const { return v.remaining_time(h, 1); }
};
// Admission drop_unreachable (EDF-best-fit: admit_all) and this order; EDF-best-fit's sizing and placement.
using least_work_policy = composed_policy<drop_unreachable, least_work_first, smallest_meeting_degree>;

template <Policy P>
run_metrics simulate(P policy, const workload& w, const profile_cost_model& cost) {
  simulated_executor executor(/*seed=*/1);
  scheduler sched(cluster{8, 8, "l20-inferred"}, policy, executor, cost);
  for (const auto& r : w.requests) sched.submit(r);
  sched.run();
  return compute_metrics(policy_name(policy), sched.state().requests, 8, sched.gpu_busy_seconds());
}

int main() {
  try {
    const auto profile = load_profile_csv(PARAFLEX_DATA_DIR "/profiles/step_latency.csv").value_or_throw();
    const auto cost = profile_cost_model::from_profile(profile, "l20-inferred").value_or_throw();
    auto fastest = [&](const request_shape& s) { return cost.step_seconds(s, 8); };
    workload_generator g{.seed = 7, .requests = 80, .arrivals = poisson_arrivals{.rate = 0.1},
                         .shapes = tetriserve_shapes("flux-dev"), .mix = shape_mix::skewed,
                         .slo = slo_rule::latency_multiple(4.0, fastest)};
    const workload w = generate_workload(g).value_or_throw();

    least_work_policy mine({}, {}, {}, {}, compose_options{.name = "least-work-first"});
    for (const run_metrics& m : {simulate(edf_best_fit_policy{}, w, cost), simulate(std::move(mine), w, cost)}) {
      std::printf("%-18s SLO attainment %5.1f%%  mean latency %6.1f s  dropped %zu\n", m.policy.c_str(),
                  100 * m.slo_attainment.value_or(0), m.latency_s.mean.value_or(0), m.dropped);
    }
    return 0;
  } catch (const input_exception& e) {
    std::fprintf(stderr, "custom_policy: error: %s\n", e.what());
    return 2;
  }
}
