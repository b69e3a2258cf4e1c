// paraflex/sim/simulate.hpp - one policy on one workload in the simulator, start to finish.
//
// The building block of paraflex-sim, the tuner and the tests: submit every request, run on the
// virtual clock, and compute the metrics of formats §4 (host timings included).
//
// Two things beyond running:
//   - a fixed-degree policy (static:K) is checked against the workload first: formats §5 promises
//     that static:K never drops a request, so a model whose allowed degrees (heads % K == 0) exclude
//     K is an input error naming the policy, the model and the degrees it allows - never a silent
//     drop (check_fixed_degree; simulate() throws it as input_exception);
//   - a long run can report progress through simulation_options::progress, at most once per
//     progress_interval_s of host time, so that a tool can show "requests done / total" without
//     slowing a short run down (unset, it costs one counter per event).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/csv.hpp"
#include "paraflex/core/duration_histogram.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/cost/shape_costs.hpp"  // degree_ranges
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

/// Where a simulation stands, for simulation_options::progress.
struct simulation_progress {
  std::string_view label;  ///< the run's label (e.g. the policy spec)
  std::size_t ended = 0;   ///< requests ended so far (completed or dropped)
  std::size_t total = 0;   ///< requests in the workload
  tick now = 0;            ///< simulated time
  double wall_s = 0.0;     ///< host seconds since simulate() began
};

struct simulation_options {
  std::uint64_t seed = 0;
  simulation_faults faults;
  scheduler_options runtime;
  /// Called on the simulating thread while the run goes on: first after progress_interval_s of host
  /// time, then at most once per progress_interval_s (the clock is read every 1024 events), never
  /// after the last request ended. Empty: no progress reports.
  std::function<void(const simulation_progress&)> progress = {};
  double progress_interval_s = 0.5;
};

/// The default set-up step of simulate(): nothing.
struct no_setup {
  template <class S>
  void operator()(S&) const noexcept {}
};

/// The one degree a fixed-degree policy gives every request: policy.degree() when the type has it
/// (static_degree_policy), else K when the policy's name is "static:K" (the built-in static policy
/// behind any_policy); nullopt for every other policy.
template <Policy P>
[[nodiscard]] std::optional<int> fixed_degree_of(const P& policy) {
  if constexpr (requires { { policy.degree() } -> std::convertible_to<int>; }) {
    return static_cast<int>(policy.degree());
  } else {
    const std::string name = policy_name(policy);
    constexpr std::string_view prefix = "static:";
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
    const auto k = parse_int(std::string_view(name).substr(prefix.size()));
    return k ? k.value : std::nullopt;
  }
}

namespace simulate_detail {

/// The scheduler's executor in simulate(): the simulated executor, plus a hook every 1024 clock
/// advances (one per event) for progress reports.
template <class E>
class progress_executor {
 public:
  template <class... Args>
  explicit progress_executor(Args&&... args) : inner_(std::forward<Args>(args)...) {}

  /// Batched steps exactly when the wrapped executor runs them (the simulated one does).
  static constexpr bool runs_batches = BatchingExecutor<E>;

  [[nodiscard]] tick now() const noexcept { return inner_.now(); }
  void launch(const task_launch& l) { inner_.launch(l); }
  void poll(std::vector<executor_event>& out) { inner_.poll(out); }
  [[nodiscard]] tick next_event_time() const noexcept { return inner_.next_event_time(); }
  void advance_to(tick t) {
    inner_.advance_to(t);
    if (hook_ && ++events_ % 1024 == 0) hook_();
  }
  void release(request_handle h)
    requires ReleasingExecutor<E>
  {
    inner_.release(h);
  }

  std::function<void()> hook_;

 private:
  E inner_;
  std::uint64_t events_ = 0;
};

}  // namespace simulate_detail

/// A fixed-degree policy (static:K) runs every request at degree K and never drops one, so every
/// request's model must allow K. Returns an input_error (file "--policy", like other policy errors)
/// naming `policy`, the first request whose model does not allow K (with its workload file and
/// line) and the degrees in 1..gpus that model allows; nothing when all requests can run at K.
template <CostModel C>
[[nodiscard]] std::optional<input_error> check_fixed_degree(const workload& w, const C& cost, int gpus, int degree,
                                                            std::string_view policy) {
  std::vector<std::string> checked;  // models seen, each checked once
  for (const auto& r : w.requests) {
    if (std::find(checked.begin(), checked.end(), r.shape.model) != checked.end()) continue;
    checked.push_back(r.shape.model);
    if (cost.allows_degree(r.shape, degree)) continue;
    std::vector<int> allowed;
    for (int k = 1; k <= gpus; ++k) {
      if (cost.allows_degree(r.shape, k)) allowed.push_back(k);
    }
    const std::string where = r.source_line > 0 ? fmt::format("{} line {}", w.source, r.source_line) : w.source;
    return input_error{"--policy", 0, {},
                       fmt::format("policy '{}' cannot run model '{}' (request '{}', {}): the cost model does not allow "
                                   "degree {} for it (the model's heads must be divisible by it, and it must not exceed a "
                                   "degree cap such as --max-degree); it allows {} of 1..{}. static:K never drops a request, "
                                   "so choose K among those degrees",
                                   policy, r.shape.model, r.id, where, degree, degree_ranges(allowed), gpus)};
  }
  return std::nullopt;
}

/// check_fixed_degree for `policy` when it is a fixed-degree one (fixed_degree_of), else nothing.
template <Policy P, CostModel C>
[[nodiscard]] std::optional<input_error> check_policy_degrees(const workload& w, const C& cost, int gpus, const P& policy) {
  const auto k = fixed_degree_of(policy);
  if (!k) return std::nullopt;
  return check_fixed_degree(w, cost, gpus, *k, policy_name(policy));
}

/// What one simulated run leaves: every request's final record (in submission order, which is
/// workload order) and the figures the metrics need besides. simulate() turns it into run_metrics;
/// simulate_cells (sim/cells.hpp) merges several of them first.
struct simulation_outcome {
  std::vector<request_record> requests;
  double gpu_busy_s = 0;        ///< device-seconds of tasks and migrations
  duration_histogram host_us;   ///< host time of the policy calls
  double wall_s = 0;            ///< host seconds of the whole run
};

namespace simulate_detail {

/// The run behind simulate() and simulate_outcome(): `finish(sched, wall_s)` reads what it needs
/// from the scheduler before it goes away (the records are not copied unless it copies them).
template <Policy P, CostModel C, class Setup, class Finish>
auto run(const workload& w, const cluster& topology, const C& cost, P& policy, const std::string& label, const simulation_options& options,
         Setup&& setup, Finish&& finish) {
  if (auto e = check_policy_degrees(w, cost, topology.gpus, policy)) throw input_exception(std::move(*e));
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  simulate_detail::progress_executor<simulated_executor> executor(options.seed, options.faults);
  scheduler sched(topology, policy, executor, cost, options.runtime);
  if (options.progress) {
    const auto interval = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(options.progress_interval_s));
    auto next = t0 + interval;
    executor.hook_ = [&, interval, next]() mutable {  // interval by value: this block ends before the run
      const auto now = clock::now();
      if (now < next) return;
      next = now + interval;
      const std::size_t total = w.requests.size();
      const std::size_t unended = std::min(sched.unended(), total);
      if (unended == 0) return;
      options.progress(simulation_progress{label, total - unended, total, sched.state().now,
                                           std::chrono::duration<double>(now - t0).count()});
    };
  }
  setup(sched);
  sched.reserve(w.requests.size());  // the request table never moves while a large workload is submitted
  for (const auto& r : w.requests) sched.submit(r);
  try {
    sched.run();
  } catch (const clock_overflow& e) {  // a bad input after all: named by the request it stopped at
    if (e.request >= w.requests.size()) throw input_exception(input_error{w.source, 0, "", e.what()});
    const request_spec& r = w.requests[e.request];  // submitted in workload order: the handle is the position
    throw input_exception(input_error{w.source, r.source_line, "", "request '" + r.id + "': " + e.what()});
  }
  executor.hook_ = nullptr;
  return finish(sched, std::chrono::duration<double>(clock::now() - t0).count());
}

}  // namespace simulate_detail

/// simulate() without the metrics: the run's records (copied out of the scheduler) and timings.
template <Policy P, CostModel C, class Setup = no_setup>
[[nodiscard]] simulation_outcome simulate_outcome(const workload& w, const cluster& topology, const C& cost, P& policy, const std::string& label,
                                                  const simulation_options& options = {}, Setup&& setup = {}) {
  return simulate_detail::run(w, topology, cost, policy, label, options, std::forward<Setup>(setup), [](const auto& sched, double wall_s) {
    simulation_outcome out;
    out.wall_s = wall_s;
    const auto& records = sched.state().requests;
    out.requests.assign(records.begin(), records.end());
    out.gpu_busy_s = sched.gpu_busy_seconds();
    out.host_us = sched.stats().host_us;
    return out;
  });
}

/// Runs `policy` on every request of `w` and returns the metrics, labelled `label`. `setup` is called
/// with the scheduler before the run (e.g. to attach a trace recorder or callbacks). Throws
/// input_exception when `policy` is static:K and a model of `w` does not allow K (check_fixed_degree).
template <Policy P, CostModel C, class Setup = no_setup>
[[nodiscard]] run_metrics simulate(const workload& w, const cluster& topology, const C& cost, P& policy, const std::string& label,
                                   const simulation_options& options = {}, Setup&& setup = {}) {
  return simulate_detail::run(w, topology, cost, policy, label, options, std::forward<Setup>(setup), [&](const auto& sched, double wall_s) {
    run_metrics m = compute_metrics(label, sched.state().requests, topology.gpus, sched.gpu_busy_seconds());
    set_decision_timings(m, sched.stats().host_us, wall_s);
    return m;
  });
}

}  // namespace paraflex
