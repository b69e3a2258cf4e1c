// paraflex/sim/cells.hpp - a large cluster served as independent cells, one policy instance each.
//
// Why: a continuous policy decides at every step boundary of every request, so on a large cluster
// it decides often, and what one decision costs grows with the devices it looks at (slo-aware
// about 10 us a decision on 1,024 GPUs, about 1.4 us on 64). A serving system of that size shards:
// a front end sends each request to one cell of G / C devices and each cell runs its own scheduler
// over its own devices and queue. simulate_cells() is that deployment, offline.
//
// Dispatch is round robin in arrival order: the i-th request to arrive (ties in workload order)
// goes to cell i mod C. The rule reads nothing but the arrival order, so the cells never interact:
// they may run on several threads, and the output is the same whatever the thread count (and the
// same as running each cell's requests alone on a cluster of G / C devices). Over many requests it
// gives every cell the same mix; a rule that looked at the cells' queues would couple their runs.
// Measured (docs/performance.md, "Cells"): on the 1,000,000-request files on 1,024 GPUs, slo-aware in
// 16 cells of 64 finishes more requests on time than one slo-aware over all 1,024, in a fraction of
// the time; throughput-first, rssp and static:2 read the same either way, round-based 1-2 points
// less, and edf-best-fit, which never drops, far less at load 0.9 (a cell whose share of the
// arrivals runs ahead has no neighbour to take the excess).
//
// Cells are whole nodes (G / C a multiple of gpus_per_node), or one node split evenly (gpus_per_node
// a multiple of G / C); check_cells() says which C a cluster allows. Faults keep their devices:
// --fail-device / --straggler device d is device d mod (G / C) of cell d / (G / C). Random draws
// (jitter, failed tasks) use seed ^ (c x 0x9E3779B97F4A7C15) in cell c, so cell 0 draws what a run
// of the whole cluster would, and no two cells draw the same sequence.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/error.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/sim/simulate.hpp"

namespace paraflex {

/// How many cells a cluster is cut into, and how many host threads run them.
struct cell_options {
  int cells = 1;    ///< 1: the whole cluster is one cell (simulate_cells is then simulate)
  int threads = 0;  ///< host threads running cells at once; 0: as many as the host has (at most `cells`)
};

/// An input_error (flag "--cells") when `topology` cannot be cut into `cells` equal cells of whole
/// nodes (or equal parts of one node); nothing when it can.
[[nodiscard]] inline std::optional<input_error> check_cells(const cluster& topology, int cells) {
  const auto error = [&](std::string message) { return input_error{"--cells", 0, {}, std::move(message)}; };
  if (cells < 1) return error(fmt::format("{}: a cluster is at least one cell", cells));
  if (cells > topology.gpus) return error(fmt::format("{} cells for {} GPUs: a cell has at least one GPU", cells, topology.gpus));
  if (topology.gpus % cells != 0) {
    return error(fmt::format("{} GPUs do not split into {} equal cells (choose a divisor of {})", topology.gpus, cells, topology.gpus));
  }
  const int per_cell = topology.gpus / cells;
  if (per_cell % topology.gpus_per_node != 0 && topology.gpus_per_node % per_cell != 0) {
    return error(fmt::format("cells of {} GPUs would cut nodes of {} unevenly: a cell is whole nodes, or an equal part of one node", per_cell,
                             topology.gpus_per_node));
  }
  return std::nullopt;
}

/// The topology of one of `cells` cells of `topology` (check_cells must accept them).
[[nodiscard]] inline cluster cell_topology(const cluster& topology, int cells) {
  const int per_cell = topology.gpus / cells;
  return cluster{per_cell, std::min(per_cell, topology.gpus_per_node), topology.gpu_type};
}

/// `e` (about a policy that cannot run on a cell) with the cell size it was checked against appended.
[[nodiscard]] inline input_error within_cells(input_error e, const cluster& topology, int cells) {
  e.message += fmt::format(" (in cells of {} GPUs: --cells {} on {} GPUs)", topology.gpus / cells, cells, topology.gpus);
  return e;
}

/// The cell of each request of `w` (by workload position): round robin in arrival order, ties in
/// workload order.
[[nodiscard]] inline std::vector<int> round_robin_cells(const workload& w, int cells) {
  std::vector<std::size_t> order(w.requests.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return w.requests[a].arrival < w.requests[b].arrival; });
  std::vector<int> cell(w.requests.size());
  for (std::size_t i = 0; i < order.size(); ++i) cell[order[i]] = static_cast<int>(i % static_cast<std::size_t>(cells));
  return cell;
}

/// The faults of the whole cluster that fall in cell `c` (devices renumbered from 0), and its seed.
[[nodiscard]] inline simulation_options cell_simulation_options(const simulation_options& options, int per_cell, int c) {
  simulation_options o;
  o.seed = options.seed ^ (static_cast<std::uint64_t>(c) * 0x9E3779B97F4A7C15ULL);
  o.runtime = options.runtime;
  o.progress_interval_s = options.progress_interval_s;
  o.faults.jitter = options.faults.jitter;
  o.faults.fail_rate = options.faults.fail_rate;
  const auto in_cell = [&](device_id d) { return static_cast<int>(d) / per_cell == c; };
  const auto local = [&](device_id d) { return static_cast<device_id>(static_cast<int>(d) % per_cell); };
  for (auto f : options.faults.device_failures) {
    if (in_cell(f.device)) f.device = local(f.device), o.faults.device_failures.push_back(f);
  }
  for (auto s : options.faults.stragglers) {
    if (in_cell(s.device)) s.device = local(s.device), o.faults.stragglers.push_back(s);
  }
  return o;
}

/// Cell c's device d is device cell_first_device(topology, cells, c) + d of the whole cluster.
[[nodiscard]] inline device_id cell_first_device(const cluster& topology, int cells, int c) {
  return static_cast<device_id>(c * (topology.gpus / cells));
}

/// simulate_cells' default cell_setup: attaches nothing.
struct no_cell_setup {
  template <class Scheduler>
  void operator()(int, Scheduler&) const noexcept {}
};

/// Runs `w` on `topology` cut into cell_options::cells cells, each with its own policy made by
/// `make_policy()` (called once per cell, on the calling thread), requests dispatched by
/// round_robin_cells(), and returns the metrics of the whole run as if it were one (formats §4:
/// utilization over all G devices, latencies over every completed request). `on_record(i, r)` is
/// called for each request after the runs, in workload order, with its workload position i and its
/// final record (whose handle is its position in its cell). `cell_setup(c, sched)` is called with
/// cell c's scheduler before its run, on the thread that runs the cell (as simulate()'s setup; its
/// devices 0..G/C-1 are devices c x G/C.. of the cluster, cell_first_device()): what it attaches
/// must be the cell's own, e.g. one chrome_trace_recorder per cell, appended in cell order after
/// the run. Progress reports count the requests ended in every cell. Throws input_exception when
/// check_cells refuses the cut, or when a policy cannot run a request on a cell (static:K with K
/// above G / C).
template <CostModel C, class MakePolicy, class OnRecord = void (*)(std::size_t, const request_record&), class CellSetup = no_cell_setup>
[[nodiscard]] run_metrics simulate_cells(const workload& w, const cluster& topology, const C& cost, MakePolicy&& make_policy, const std::string& label,
                                         const simulation_options& options, const cell_options& cells,
                                         OnRecord&& on_record = [](std::size_t, const request_record&) {}, CellSetup&& cell_setup = {}) {
  if (auto e = check_cells(topology, cells.cells)) throw input_exception(std::move(*e));
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const int n = cells.cells;
  const cluster cell = cell_topology(topology, n);
  const std::vector<int> cell_of = round_robin_cells(w, n);
  std::vector<workload> parts(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < w.requests.size(); ++i) parts[static_cast<std::size_t>(cell_of[i])].requests.push_back(w.requests[i]);
  using policy_type = std::decay_t<decltype(make_policy())>;
  std::vector<policy_type> policies;
  policies.reserve(parts.size());
  for (int c = 0; c < n; ++c) {
    parts[static_cast<std::size_t>(c)].source = n == 1 ? w.source : fmt::format("{} (cell {} of {})", w.source, c + 1, n);
    policies.push_back(make_policy());
    if (const auto k = fixed_degree_of(policies.back()); k && *k > cell.gpus) {
      throw input_exception(within_cells(
          input_error{"--policy", 0, {}, fmt::format("policy '{}' runs every request on {} GPUs: more than a cell has", policy_name(policies.back()), *k)},
          topology, n));
    }
    if (auto e = check_policy_degrees(w, cost, cell.gpus, policies.back())) throw input_exception(n > 1 ? within_cells(std::move(*e), topology, n) : std::move(*e));
  }

  // Progress: requests ended in every cell (a finished cell counts whole), the simulated time of the
  // cell reporting, host time since the start. A cell that finishes only updates its count.
  std::mutex progress_mutex;
  std::vector<std::size_t> ended(parts.size(), 0);
  const auto report = [&](std::size_t c, std::size_t cell_ended, std::optional<tick> now) {
    if (!options.progress) return;
    const std::scoped_lock lock(progress_mutex);
    ended[c] = cell_ended;
    const std::size_t all = std::accumulate(ended.begin(), ended.end(), std::size_t{0});
    if (!now || all >= w.requests.size()) return;
    options.progress(simulation_progress{label, all, w.requests.size(), *now, std::chrono::duration<double>(clock::now() - t0).count()});
  };
  std::vector<simulation_outcome> outcomes(parts.size());
  std::vector<std::exception_ptr> errors(parts.size());
  std::atomic<std::size_t> next{0};
  const auto work = [&] {
    for (std::size_t c = next++; c < parts.size(); c = next++) {
      try {
        simulation_options o = cell_simulation_options(options, cell.gpus, static_cast<int>(c));
        if (options.progress) o.progress = [&, c](const simulation_progress& p) { report(c, p.ended, p.now); };
        outcomes[c] = simulate_outcome(parts[c], cell, cost, policies[c], label, o,
                                       [&, c](auto& sched) { cell_setup(static_cast<int>(c), sched); });
        report(c, parts[c].requests.size(), std::nullopt);
        parts[c] = workload{};  // its requests are in the outcome now: a day-long file is not held twice
      } catch (...) {
        errors[c] = std::current_exception();
      }
    }
  };
  const auto hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = std::clamp(cells.threads > 0 ? cells.threads : hardware, 1, n);
  {
    std::vector<std::jthread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
  }  // joined
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);  // the first cell's error, whatever the thread count
  }

  // The cells' records are read where they are (no merged copy: a day-long file would be held twice):
  // by on_record in workload order, the i-th request of a cell being its i-th in workload order.
  {
    std::vector<std::size_t> next_in(parts.size(), 0);
    for (std::size_t i = 0; i < w.requests.size(); ++i) {
      const auto c = static_cast<std::size_t>(cell_of[i]);
      on_record(i, std::as_const(outcomes[c].requests[next_in[c]++]));
    }
  }
  double gpu_busy_s = 0;
  duration_histogram host_us;
  for (const auto& o : outcomes) {
    gpu_busy_s += o.gpu_busy_s;
    host_us.merge(o.host_us);
  }
  // Cell by cell: the figures do not depend on the records' order (compute_metrics).
  run_metrics m = compute_metrics(label, outcomes | std::views::transform(&simulation_outcome::requests) | std::views::join, topology.gpus, gpu_busy_s);
  set_decision_timings(m, host_us, std::chrono::duration<double>(clock::now() - t0).count());
  return m;
}

}  // namespace paraflex
