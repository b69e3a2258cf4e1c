// paraflex/sim/simulate.hpp - one policy on one workload in the simulator, start to finish.
//
// The building block of paraflex-sim, the tuner and the tests: submit every request, run on the
// virtual clock, and compute the metrics of formats §4 (host timings included).
#pragma once

#include <chrono>
#include <string>

#include "paraflex/cost/concepts.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

struct simulation_options {
  std::uint64_t seed = 0;
  simulation_faults faults;
  scheduler_options runtime;
};

/// The default set-up step of simulate(): nothing.
struct no_setup {
  template <class S>
  void operator()(S&) const noexcept {}
};

/// Runs `policy` on every request of `w` and returns the metrics, labelled `label`. `setup` is called
/// with the scheduler before the run (e.g. to attach a trace recorder or callbacks).
template <Policy P, CostModel C, class Setup = no_setup>
[[nodiscard]] run_metrics simulate(const workload& w, const cluster& topology, const C& cost, P& policy, const std::string& label,
                                   const simulation_options& options = {}, Setup&& setup = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  simulated_executor executor(options.seed, options.faults);
  scheduler sched(topology, policy, executor, cost, options.runtime);
  setup(sched);
  for (const auto& r : w.requests) sched.submit(r);
  sched.run();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run_metrics m = compute_metrics(label, sched.state().requests, topology.gpus, sched.gpu_busy_seconds());
  set_decision_timings(m, sched.stats().host_us, wall);
  return m;
}

}  // namespace paraflex
