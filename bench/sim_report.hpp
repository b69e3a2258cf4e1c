// Output of paraflex-sim: the JSON document of formats §4 and the human-readable table.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "decision_gap.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/resource/cluster.hpp"
#include "paraflex/sim/metrics.hpp"

namespace paraflex_bench {

struct policy_result {
  paraflex::run_metrics metrics;
  std::optional<double> upper_bound;  ///< bound on SLO attainment (--bound)
  /// --bound with several priority levels: the bound over schedules that serve the higher-priority
  /// requests this run served on time (upper_bound.given_priorities)
  std::optional<double> given_priorities = std::nullopt;
};

struct report {
  std::string workload_file;
  std::size_t requests = 0;
  paraflex::cluster topology;
  int cells = 1;  ///< --cells: independent cells, one policy each
  int max_degree = 0;  ///< --max-degree: no group wider than this (0: no cap)
  paraflex::tick decision_gap = 0;  ///< --decision-gap-ms, in microseconds (0: a decision at every event time)
  std::vector<policy_result> results;
};

using json = nlohmann::ordered_json;

inline json optional_number(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

inline json latency_json(const paraflex::latency_summary& l, bool full) {
  json j = json::object();
  j["mean"] = optional_number(l.mean);
  if (full) j["p50"] = optional_number(l.p50), j["p90"] = optional_number(l.p90);
  j["p95"] = optional_number(l.p95);
  if (full) j["p99"] = optional_number(l.p99), j["max"] = optional_number(l.max);
  return j;
}

inline std::string to_json(const report& r) {
  json doc;
  doc["workload"] = {{"file", r.workload_file}, {"requests", r.requests}};
  doc["cluster"] = {{"gpus", r.topology.gpus}, {"gpus_per_node", r.topology.gpus_per_node}, {"gpu", r.topology.gpu_type}};
  if (r.cells > 1) doc["cluster"]["cells"] = r.cells;  // only then: the output of a run without --cells is unchanged
  if (r.max_degree > 0) doc["cluster"]["max_degree"] = r.max_degree;  // likewise without --max-degree
  if (r.decision_gap > 0) doc["cluster"]["decision_gap_ms"] = static_cast<double>(r.decision_gap) / 1000.0;  // and --decision-gap-ms
  json results = json::array();
  for (const auto& pr : r.results) {
    const auto& m = pr.metrics;
    json j;
    j["policy"] = m.policy;
    j["requests"] = m.requests;
    j["completed"] = m.completed;
    j["dropped"] = m.dropped;
    j["slo_attainment"] = optional_number(m.slo_attainment);
    j["latency_s"] = latency_json(m.latency_s, true);
    j["throughput_rps"] = m.throughput_rps;
    j["goodput_rps"] = m.goodput_rps;
    j["makespan_s"] = m.makespan_s;
    j["gpu_busy_s"] = m.gpu_busy_s;
    j["utilization"] = m.utilization;
    j["migrations"] = m.migrations;
    // Appended to the ordered object's vector: its operator[] looks the key up first, which made
    // 200,000 distinct classes quadratic (the labels are distinct already: a map's keys).
    json pc = json::object();
    auto& classes = static_cast<json::object_t::Container&>(pc.get_ref<json::object_t&>());
    classes.reserve(m.per_class.size());
    for (const auto& [label, c] : m.per_class) {
      classes.emplace_back(label, json{{"requests", c.requests}, {"slo_attainment", optional_number(c.slo_attainment)},
                                       {"latency_s", latency_json(c.latency_s, false)}});
    }
    j["per_class"] = std::move(pc);
    json drops = json::object();
    for (const auto& [reason, n] : m.dropped_by_reason) drops[reason] = n;
    j["dropped_by_reason"] = drops;
    if (pr.upper_bound) {
      j["upper_bound"] = {{"slo_attainment", *pr.upper_bound}};
      if (pr.given_priorities) j["upper_bound"]["given_priorities"] = *pr.given_priorities;
    }
    j["scheduler"] = {{"decisions", m.decisions}, {"decision_us_mean", m.decision_us_mean}, {"decision_us_p99", m.decision_us_p99}, {"wall_s", m.wall_s}};
    results.push_back(std::move(j));
  }
  doc["results"] = std::move(results);
  // Names from files are checked UTF-8 by the readers; a path or a spec from the command line need not
  // be, and must not turn into an exception: invalid bytes become U+FFFD.
  return doc.dump(2, ' ', false, json::error_handler_t::replace);
}

inline std::string fmt_opt(const std::optional<double>& v, const char* spec_fmt, double scale = 1.0) {
  return v ? fmt::format(fmt::runtime(spec_fmt), *v * scale) : std::string("-");
}

inline std::string to_table(const report& r) {
  std::string out = fmt::format("workload: {} ({} requests)   cluster: {} x {} ({} per node){}\n\n", paraflex::printable(r.workload_file), r.requests,
                                r.topology.gpus, r.topology.gpu_type, r.topology.gpus_per_node,
                                (r.cells > 1 ? fmt::format(", {} cells of {}", r.cells, r.topology.gpus / r.cells) : "") +
                                    (r.max_degree > 0 ? fmt::format(", groups of at most {}", r.max_degree) : "") +
                                    decision_gap_note(r.decision_gap));
  const bool any_bound = std::any_of(r.results.begin(), r.results.end(), [](const policy_result& p) { return p.upper_bound.has_value(); });
  const bool any_given = std::any_of(r.results.begin(), r.results.end(), [](const policy_result& p) { return p.given_priorities.has_value(); });
  out += fmt::format("{:<22} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8}{}{}\n", "policy", "done", "dropped", "SLO %", "mean s",
                     "p95 s", "p99 s", "goodput/s", "util%", "migrate", any_bound ? "   bound %" : "", any_given ? "  prio bound %" : "");
  for (const auto& pr : r.results) {
    const auto& m = pr.metrics;
    out += fmt::format("{:<22} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9.4f} {:>6.1f} {:>8}{}{}\n", m.policy, m.completed, m.dropped,
                       fmt_opt(m.slo_attainment, "{:.1f}", 100.0), fmt_opt(m.latency_s.mean, "{:.2f}"), fmt_opt(m.latency_s.p95, "{:.2f}"),
                       fmt_opt(m.latency_s.p99, "{:.2f}"), m.goodput_rps, 100.0 * m.utilization, m.migrations,
                       any_bound ? fmt::format(" {:>9}", fmt_opt(pr.upper_bound, "{:.1f}", 100.0)) : "",
                       any_given ? fmt::format(" {:>13}", fmt_opt(pr.given_priorities, "{:.1f}", 100.0)) : "");
  }
  out += "\nSLO % = requests with a deadline that finished by it; latencies over completed requests.\n";
  if (any_given) out += "prio bound % = the bound over schedules that also serve the higher-priority requests this policy served on time.\n";
  return out;
}

}  // namespace paraflex_bench
