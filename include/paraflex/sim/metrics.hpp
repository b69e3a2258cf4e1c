// paraflex/sim/metrics.hpp - the figures of a run (formats §4), computed from the runtime's records.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <map>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <vector>

#include "paraflex/core/duration_histogram.hpp"

#include "paraflex/core/time.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

/// Latency percentiles in seconds; every field empty when nothing completed.
struct latency_summary {
  std::optional<double> mean, p50, p90, p95, p99, max;
};

struct class_metrics {
  std::size_t requests = 0;
  std::optional<double> slo_attainment;  ///< empty when no request of the class has a deadline
  latency_summary latency_s;
};

struct run_metrics {
  std::string policy;
  std::size_t requests = 0, completed = 0, dropped = 0;
  std::optional<double> slo_attainment;
  latency_summary latency_s;
  double throughput_rps = 0, goodput_rps = 0, makespan_s = 0, gpu_busy_s = 0, utilization = 0;
  std::uint64_t migrations = 0;
  std::map<std::string, class_metrics> per_class;       ///< only labels that occur (non-empty)
  std::map<std::string, std::size_t> dropped_by_reason;
  // Host timings: excluded from the determinism contract.
  std::uint64_t decisions = 0;
  double decision_us_mean = 0, decision_us_p99 = 0, wall_s = 0;
};

/// Linear-interpolated percentile (q in [0,1]) of sorted values.
[[nodiscard]] inline double percentile_sorted(std::span<const double> sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

[[nodiscard]] inline latency_summary summarize_latencies(std::vector<double> v) {
  latency_summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  s.p50 = percentile_sorted(v, 0.50);
  s.p90 = percentile_sorted(v, 0.90);
  s.p95 = percentile_sorted(v, 0.95);
  s.p99 = percentile_sorted(v, 0.99);
  s.max = v.back();
  return s;
}

/// Whether a request with a deadline met it.
[[nodiscard]] inline bool met_slo(const request_record& r) noexcept {
  return r.phase == request_phase::completed && r.finish <= r.deadline();
}

/// The request records compute_metrics() reads: any range of them (a vector, a span, or the records of
/// several runs one after another, as simulate_cells passes them: the figures do not depend on the
/// order, since latencies are sorted before they are summed).
template <class R>
concept request_record_range = std::ranges::input_range<R> && std::same_as<std::ranges::range_value_t<R>, request_record>;

/// Metrics of a finished run. `gpu_busy_s` is device-seconds of tasks and migrations.
template <request_record_range Records>
[[nodiscard]] run_metrics compute_metrics(std::string policy, Records&& requests, int gpus, double gpu_busy_s) {
  run_metrics m;
  m.policy = std::move(policy);
  m.gpu_busy_s = gpu_busy_s;
  std::vector<double> lat;
  std::size_t with_deadline = 0, on_time = 0;
  tick first_arrival = never, last_completion = never;
  struct class_acc { std::size_t n = 0, with_deadline = 0, on_time = 0; std::vector<double> lat; };
  std::map<std::string, class_acc> classes;
  for (const request_record& r : requests) {
    ++m.requests;
    first_arrival = std::min(first_arrival, r.spec.arrival);
    class_acc* c = r.spec.class_label.empty() ? nullptr : &classes[r.spec.class_label];
    if (c) ++c->n;
    if (r.phase == request_phase::completed) {
      ++m.completed;
      const double l = to_seconds(r.finish - r.spec.arrival);
      lat.push_back(l);
      if (c) c->lat.push_back(l);
      last_completion = last_completion == never ? r.finish : std::max(last_completion, r.finish);
    } else {
      ++m.dropped;
      ++m.dropped_by_reason[r.drop_reason.empty() ? "unknown" : r.drop_reason];
    }
    m.migrations += r.migrations;
    if (r.has_deadline()) {
      ++with_deadline;
      if (c) ++c->with_deadline;
      if (met_slo(r)) {
        ++on_time;
        if (c) ++c->on_time;
      }
    }
  }
  if (with_deadline) m.slo_attainment = static_cast<double>(on_time) / static_cast<double>(with_deadline);
  m.latency_s = summarize_latencies(std::move(lat));
  if (last_completion != never && first_arrival != never && last_completion > first_arrival) {
    m.makespan_s = to_seconds(last_completion - first_arrival);
    m.throughput_rps = static_cast<double>(m.completed) / m.makespan_s;
    m.goodput_rps = static_cast<double>(on_time) / m.makespan_s;
    m.utilization = gpu_busy_s / (static_cast<double>(gpus) * m.makespan_s);
  }
  for (auto& [label, acc] : classes) {
    class_metrics cm;
    cm.requests = acc.n;
    if (acc.with_deadline) cm.slo_attainment = static_cast<double>(acc.on_time) / static_cast<double>(acc.with_deadline);
    cm.latency_s = summarize_latencies(std::move(acc.lat));
    m.per_class.emplace(label, std::move(cm));
  }
  return m;
}

/// compute_metrics over a span (also `{}`: no requests).
[[nodiscard]] inline run_metrics compute_metrics(std::string policy, std::span<const request_record> requests, int gpus, double gpu_busy_s) {
  return compute_metrics<std::span<const request_record>>(std::move(policy), std::move(requests), gpus, gpu_busy_s);
}

/// Host-time figures of the policy calls: mean and p99 in microseconds.
inline void set_decision_timings(run_metrics& m, const duration_histogram& host_us, double wall_s) {
  m.decisions = host_us.count();
  m.wall_s = wall_s;
  if (host_us.empty()) return;
  m.decision_us_mean = host_us.mean();
  m.decision_us_p99 = host_us.quantile(0.99);
}

}  // namespace paraflex
