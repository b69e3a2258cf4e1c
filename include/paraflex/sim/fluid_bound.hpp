// paraflex/sim/fluid_bound.hpp - an upper bound on SLO attainment that no schedule can beat.
//
// For a workload, a cluster of G devices and a cost model, this header builds (solver-agnostic) the
// time-indexed fluid LP relaxation of "serve as many requests by their deadline as possible", and
// computes two cheaper bounds that need no solver. A solver adapter (bench/clp_bound.hpp) solves the
// LP; the figure it reports is certified from the solver's duals here, so it stays valid even when
// the solver stops early or is inexact.
//
// The LP. Only requests with a deadline count (the denominator of slo_attainment); the others are
// left out, which only frees capacity. A request r arrives at a_r, is due at d_r, and is a chain of
// stages: text encode (1 unit), `steps` denoising steps (1 unit each), VAE decode (1 unit); a unit of
// stage s on k devices takes T_s(k), exactly the runtime's rounded duration (make_shape_costs).
// Time is cut at every arrival and deadline, giving intervals i of length L_i. Variables:
//   x_r in [0,1]              the fraction of r that is served on time (objective: maximise sum x_r)
//   u_{r,s,k,i} in [0,1]      the fraction of interval i during which r runs stage s on k devices
//                             (only for intervals inside r's window; upper bound min(1, F_s(k)/L_i)
//                             where F_s(k) = units_s T_s(k) is the whole stage on k devices)
// Rows:
//   work      per (r,s):  x_r - sum_{k,i} (L_i / F_s(k)) u_{r,s,k,i} <= 0   (the stage is done x_r times)
//   one-at-a-time  per (r,i): sum_{s,k} u_{r,s,k,i} <= 1     (a request runs one task at a time)
//   capacity  per i:      sum_{r,s,k} k u_{r,s,k,i} <= G        (G devices)
//   packing   per (i, p): sum_{r,s,k} f_p(k/G) u_{r,s,k,i} <= 1   (groups are whole: p = 1, 2)
// where f_p is a dual-feasible function (Fekete and Schepers' u^(p), packing_weight): for any set of
// tasks whose degrees add up to at most G, their f_p add up to at most 1. The capacity row alone
// would let a task on 5 of 8 devices overlap one on 4 (8 x 0.8 + ... fits on average); f_1 gives 1
// to every degree above G/2 and 1/2 to G/2, so two such tasks cannot overlap and their times in an
// interval add up to at most its length. These rows are optional (fluid_bound_options::packing_cuts).
// Stages are kept apart because they scale differently with k: one work unit "whole request at degree
// k" would undercount a schedule that runs the encoder on 1 device and the steps on 8.
//
// Why it is a valid bound. Take any schedule the runtime can produce - any placement, any degree per
// task, migrations, retries, lost devices - and let A be its set of requests finished by their
// deadline. Put x_r = 1 for r in A, 0 otherwise, and let u_{r,s,k,i} L_i be the time within interval
// i during which the successful run of one of r's stage-s tasks on k devices is in flight (r in A
// only; everything else 0). Every task of r in A ran to completion inside [a_r, d_r] (it cannot start
// before arrival, and r finished by d_r), each taking exactly T_s(k), so the work rows hold with
// equality, and u <= min(1, F_s(k)/L_i) since that time fits both in the interval and in the stage.
// A request has at most one task in flight, so the one-at-a-time rows hold. A device runs one thing
// at a time and at most G are usable, so the capacity rows hold; at every instant the tasks in
// flight use disjoint devices, so their f_p add up to at most 1 and the packing rows hold.
// Migrations, failed attempts and the requests outside A only use time and devices, which the LP
// does not ask to be counted. So the point is feasible with objective |A|, and LP optimum >= |A| for
// every schedule; integrality (|A| is a whole number) lets the figure be rounded down. Step
// granularity, placement on concrete devices and (beyond the stage windows below) precedence between
// tasks are relaxed away, which is why this is an upper bound and not a schedule.
//
// Reductions that keep the optimum: per stage, only degrees on the lower convex hull of (time,
// device-time) per unit are kept - a dominated degree (another is as fast with no more device-time) or
// one above the chord of two others (mixing those two gives the same time with less device-time) can
// always be replaced inside the same interval. With packing rows that replacement could raise a
// packing row, so then only a degree that a smaller degree matches in speed is dropped (f_p is
// nondecreasing: the smaller one, run for no longer, weighs no more in any row). Also: requests that
// cannot finish by their deadline even alone on the fastest degrees are fixed at x_r = 0; a stage's
// window is narrowed to the part of [a_r, d_r] where it can run given the minimum time of the stages
// before and after it (the final, successful chain encode -> steps -> decode runs in that order);
// rows that can never bind (their columns' upper bounds already satisfy them) are not emitted; and the
// workload is split where no window spans a point in time (split_fluid_workload), since such parts
// share no interval and their optima add up.
// Cut points closer than fluid_bound_options::min_interval_s may be merged, rounding windows outwards:
// a relaxation (still valid, looser, smaller LP); the default 0 merges only equal times.
//
// Certification. For max c.x, A x <= b, l <= x <= u, any y >= 0 gives c.x <= b.y + sum_j max(l_j d_j,
// u_j d_j) with d = c - A^T y (weak duality with boxed columns). fluid_lp::attainment_from_duals takes
// whatever row duals a solver returns, clamps them to y >= 0, and evaluates that expression; with y = 0
// it is the per-request bound. A margin of 1e-6 requests covers floating-point summation before the
// count is rounded down.
//
// Count cuts. The LP may serve a request in part (0 < x_r < 1): on overloaded workloads it spreads
// what is left of the devices over many large requests, a fraction each (98 of 400 requests on FLUX
// at load 1.5, adding up to 48), which no schedule can do. A count cut is a row
//   sum_{r in S} x_r <= m(S)
// for a span [t1, t2] and a set S of requests, where m(S) is the largest number of S's requests whose
// needs in the span (span_need) add up to at most G (t2 - t1). A request's need is a lower bound on
// the device-time it spends inside the span if it is on time: for a window inside the span, its least
// device-time (fluid_request::min_device_us); for a window that sticks out, what its denoising steps
// must still do inside - outside the span it has at most (t1 - a_r)+ + (d_r - t2)+ of time, and one
// task at a time gets through at most that time over the fastest step time of step work, so the rest
// runs inside, within the overlap, for at least the least device-time of that many steps in that time.
// The row holds for every schedule: its on-time requests of S spend at least their needs inside the
// span, the G devices offer G (t2 - t1) there, and no m(S) + 1 of them fit (the m(S) + 1 cheapest
// already do not). So the point of any schedule (x_r = 1 on its on-time requests) satisfies every such
// row, and the LP with them is still a relaxation: the certification below covers them as rows like
// any other. They only remove fractional points. separate_count_cuts finds violated ones for a given
// solution (spans from arrivals to deadlines of its fractional requests; for each span, every set "the
// requests with x_r > 0 whose need is at least theta"), and a solver adapter adds them and solves
// again, for fluid_bound_options::count_cut_rounds rounds or until none is violated.
//
// Cheap bounds (no solver): per_request_bound = requests that could meet their deadline alone / N;
// capacity_bound partitions time into disjoint segments and, in each, keeps only as many of the
// requests whose whole window lies inside as fit by least device-seconds into G x segment length.
//
// Durations: the bound assumes tasks take at least their nominal times, as in the simulated executor.
// When it may run a task faster (--jitter, a straggler factor below 1), pass the smallest factor as
// speed_factor. Lost devices, failed tasks and stragglers slowing down only take capacity away.
//
// Size: one x column per request and one work row per (request, stage); per request, about (intervals in its
// window) x (hull degrees) columns and as many one-at-a-time rows as intervals where it could use more
// than the interval. For 3,000 requests on 8 GPUs: 0.2-1.1 million columns, 40-190 thousand rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include "paraflex/core/time.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/runtime/view.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

struct fluid_bound_options {
  /// Smallest factor by which the executor may shorten a nominal duration (1 = never faster).
  double speed_factor = 1.0;
  /// Cut points closer than this to the previous kept one are merged (0 = exact LP).
  double min_interval_s = 0.0;
  /// Breakpoints of the capacity bound's segment search (more = tighter, O(P^2 n)).
  int capacity_breakpoints = 64;
  /// Adds the packing rows (groups are whole: wide tasks cannot overlap; see the header comment).
  /// Never looser, but a larger LP (every degree that no smaller degree matches in speed is kept:
  /// +27% columns, +85% nonzeros on 400 FLUX requests on 8 GPUs) - and on every setup of
  /// docs/results.md it changes no figure, so it is off by default.
  bool packing_cuts = false;
  /// Rounds of count cuts (see "Count cuts" in the header comment) that a solver adapter runs after the
  /// first solve: each separates the cuts the LP's solution violates and solves again. 0 = the plain LP.
  int count_cut_rounds = 20;
  /// At most this many cuts are added per round (the most violated first).
  std::size_t count_cuts_per_round = 200;
  /// Rounds x LP columns, over all the independent parts of a workload, at most: a re-solve costs
  /// about the LP's size whatever the cuts, so this bounds what cuts add to the plain solve. Parts are
  /// solved in time order and each gets the rounds the rest of the budget pays for (none once it is
  /// spent). The default gives 400 requests on 8 GPUs (~40,000 columns) every round; on 3,000 bursty
  /// requests (1.6 million columns in 70 parts) it runs out after the first parts. A work count, not a
  /// time: the bound stays the same on every machine.
  std::size_t count_cut_work = 2'000'000;
  /// Most LP columns one independent part may have. A part that would have more (many GPUs give each
  /// stage many degrees, long windows many intervals) is built with its cut points merged further
  /// apart - min_interval_s doubled (from 1 ms when 0) until it fits: a looser bound, still valid - so that the
  /// LP and Clp's copies of it stay within about a gigabyte. A part too large even as one interval
  /// counts by the solver-free capacity bound. 0 = no limit.
  std::size_t max_columns = 4'000'000;
};

/// The dual-feasible functions of the packing rows: f_p(k/G) for p = 1..packing_cut_family.
inline constexpr int packing_cut_family = 2;

/// f_p(k / G) of Fekete and Schepers' family u^(p): k/G when (p + 1) k / G is a whole number, else
/// floor((p + 1) k / G) / p. For any tasks whose degrees sum to at most G, their f_p sum to at most 1.
[[nodiscard]] constexpr double packing_weight(int p, int k, int gpus) noexcept {
  const long long scaled = static_cast<long long>(p + 1) * k;
  if (scaled % gpus == 0) return static_cast<double>(k) / static_cast<double>(gpus);
  return static_cast<double>(scaled / gpus) / static_cast<double>(p);
}

/// Requests of headroom added before a certified LP value is rounded down to a whole count.
inline constexpr double fluid_bound_margin = 1e-6;

/// maximise c.x  subject to  A x <= b,  lower <= x <= upper (all finite). A by columns (CSC).
struct sparse_lp {
  std::vector<double> objective, col_lower, col_upper;
  std::vector<double> row_upper;
  std::vector<int> column_start{0};  ///< size cols + 1
  std::vector<int> row_index;
  std::vector<double> value;

  [[nodiscard]] int cols() const noexcept { return static_cast<int>(objective.size()); }
  [[nodiscard]] int rows() const noexcept { return static_cast<int>(row_upper.size()); }
  [[nodiscard]] std::size_t nonzeros() const noexcept { return value.size(); }

  int add_row(double upper) {
    row_upper.push_back(upper);
    return rows() - 1;
  }
  /// Starts a column; its entries follow through add_entry until the next add_column.
  int add_column(double obj, double lower, double upper) {
    objective.push_back(obj);
    col_lower.push_back(lower);
    col_upper.push_back(upper);
    if (value.size() >= static_cast<std::size_t>(std::numeric_limits<int>::max())) throw std::length_error("sparse_lp: too many nonzeros");
    column_start.push_back(static_cast<int>(value.size()));
    return cols() - 1;
  }
  void add_entry(int row, double v) {
    row_index.push_back(row);
    value.push_back(v);
    column_start.back() = static_cast<int>(value.size());
  }

  /// Weak-duality bound from any row multipliers (negative or non-finite ones are taken as 0).
  [[nodiscard]] double dual_bound(std::span<const double> duals) const {
    std::vector<double> y(row_upper.size(), 0.0);
    for (std::size_t i = 0; i < y.size() && i < duals.size(); ++i) y[i] = std::isfinite(duals[i]) && duals[i] > 0 ? duals[i] : 0.0;
    long double total = 0;  // long double: thousands of terms, the margin stays far above the error
    for (std::size_t i = 0; i < y.size(); ++i) total += static_cast<long double>(row_upper[i]) * y[i];
    for (std::size_t j = 0; j < objective.size(); ++j) {
      long double d = objective[j];
      for (auto e = static_cast<std::size_t>(column_start[j]); e < static_cast<std::size_t>(column_start[j + 1]); ++e) {
        d -= static_cast<long double>(value[e]) * y[static_cast<std::size_t>(row_index[e])];
      }
      total += std::max(d * col_lower[j], d * col_upper[j]);
    }
    return static_cast<double>(total);
  }
  /// c.x and the largest violation of a row or a bound by x (for checking a primal solution).
  [[nodiscard]] std::pair<double, double> evaluate(std::span<const double> x) const {
    std::vector<double> activity(row_upper.size(), 0.0);
    double obj = 0, worst = 0;
    for (std::size_t j = 0; j < objective.size(); ++j) {
      obj += objective[j] * x[j];
      worst = std::max({worst, col_lower[j] - x[j], x[j] - col_upper[j]});
      for (auto e = static_cast<std::size_t>(column_start[j]); e < static_cast<std::size_t>(column_start[j + 1]); ++e) {
        activity[static_cast<std::size_t>(row_index[e])] += value[e] * x[j];
      }
    }
    for (std::size_t i = 0; i < activity.size(); ++i) worst = std::max(worst, activity[i] - row_upper[i]);
    return {obj, worst};
  }
};

/// One stage of a request as the bound sees it: its non-dominated degrees (by increasing time).
struct fluid_stage {
  int units = 1;                ///< steps for the denoising stage, 1 for encode/decode
  std::vector<int> degree;      ///< non-dominated degrees, fastest last
  std::vector<double> unit_us;  ///< time of one unit on degree[j], microseconds (speed-scaled)

  [[nodiscard]] double min_unit_us() const noexcept { return unit_us.empty() ? 0.0 : unit_us.back(); }
  [[nodiscard]] double min_time_us() const noexcept { return units * min_unit_us(); }
};

/// A request with a deadline that could meet it running alone.
struct fluid_request {
  std::size_t index = 0;  ///< position in the workload
  tick arrival = 0, deadline = 0;
  std::vector<fluid_stage> stages;  ///< stages that take time, in run order (encode, steps, decode)
  double min_time_us = 0;           ///< fastest completion alone, degrees mixed freely
  double min_device_us = 0;         ///< a lower bound on device-microseconds to finish within the window
  /// The LP then counts only schedules that serve this request on time (x_r = 1): a conditional bound,
  /// e.g. paraflex-sim's `given_priorities` (the most any schedule could have on time while serving
  /// the higher-priority requests a run served). Every schedule that does so satisfies every row, so
  /// certification and count cuts hold unchanged.
  bool must_serve = false;
};

/// The workload as the bound sees it.
struct fluid_workload {
  int gpus = 0;
  std::size_t with_deadline = 0;        ///< N: the denominator of slo_attainment
  std::vector<fluid_request> requests;  ///< those that could meet their deadline alone
};

namespace fluid_detail {

// A nominal duration as the bound uses it: scaled by the speed factor, and 1 us less for the executor's
// rounding of a scaled duration, so it never exceeds what the executor can produce.
[[nodiscard]] inline double scaled_us(tick t, double speed) noexcept {
  if (speed >= 1.0) return static_cast<double>(t);
  return std::max(0.0, static_cast<double>(t) * speed - 1.0);
}

// Non-dominated degrees of one stage: keep k only if every faster (or equally fast, fewer-device)
// degree uses strictly more device-time. Empty when some allowed degree makes the stage free.
//
// With `whole_groups` (packing rows on) only degrees that a smaller degree matches in speed are
// dropped: replacing a degree by a mix of others can raise a packing row (a mix of 1 and 5 devices
// for one of 4 can put more than half the time on a degree above G/2), so the hull is not used.
[[nodiscard]] inline std::optional<fluid_stage> make_stage(const std::vector<tick>& table, const std::vector<int>& allowed, int units,
                                                          double speed, bool whole_groups = false) {
  std::vector<std::pair<double, int>> by_time;
  for (int k : allowed) {
    const double t = scaled_us(table[static_cast<std::size_t>(k)], speed);
    if (t <= 0) return std::nullopt;  // free on k: the stage constrains nothing
    by_time.emplace_back(t, k);
  }
  if (by_time.empty()) return std::nullopt;
  std::sort(by_time.begin(), by_time.end());  // by time, ties: fewer devices first
  fluid_stage st;
  st.units = units;
  double best_device_time = std::numeric_limits<double>::infinity();
  std::vector<std::pair<double, int>> kept;  // by increasing time, strictly decreasing device-time
  int fewest = std::numeric_limits<int>::max();  // fewest devices among the degrees kept or passed so far
  for (const auto& [t, k] : by_time) {
    if (whole_groups) {  // by growing time: k is matched iff some degree <= k seen so far is as fast
      if (k >= fewest) continue;
      fewest = k;
      kept.emplace_back(t, k);
      continue;
    }
    if (k * t >= best_device_time) continue;  // dominated
    // Lower convex hull of (time, device-time) per unit: a point clearly above the chord of its
    // neighbours is matched by mixing them (same time, less device-time), so it adds nothing.
    while (kept.size() >= 2) {
      const auto [t0, k0] = kept[kept.size() - 2];
      const auto [t1, k1] = kept.back();
      const long double ax = t1 - t0, ay = static_cast<long double>(k1) * t1 - static_cast<long double>(k0) * t0;
      const long double bx = t - t0, by = static_cast<long double>(k) * t - static_cast<long double>(k0) * t0;
      const long double cross = ax * by - ay * bx;  // < 0: (t1, k1 t1) lies above the chord
      const long double scale = std::abs(ax * by) + std::abs(ay * bx);
      if (cross >= -1e-9L * scale) break;  // on or below it (or too close to tell): keep it, always safe
      kept.pop_back();
    }
    kept.emplace_back(t, k);
    best_device_time = k * t;
  }
  for (auto it = kept.rbegin(); it != kept.rend(); ++it) st.degree.push_back(it->second), st.unit_us.push_back(it->first);
  return st;
}

// Least device-time for `units` units of a stage (all of them by default) when they must all run within
// `budget_us` (mixing at most two frontier degrees is optimal for this two-constraint LP). Infinity when
// even the fastest is too slow.
[[nodiscard]] inline double min_device_time(const fluid_stage& st, double budget_us, double units) {
  const double n = units;
  double best = std::numeric_limits<double>::infinity();
  const std::size_t m = st.degree.size();
  for (std::size_t p = 0; p < m; ++p) {
    const double tp = st.unit_us[p], cp = st.degree[p] * tp;
    if (n * tp <= budget_us) best = std::min(best, n * cp);
    for (std::size_t q = 0; q < m; ++q) {
      const double tq = st.unit_us[q], cq = st.degree[q] * tq;
      if (!(tp * n > budget_us && tq * n <= budget_us)) continue;
      const double alpha = (tp - budget_us / n) / (tp - tq);  // share of units on the faster q
      best = std::min(best, n * ((1 - alpha) * cp + alpha * cq));
    }
  }
  return best;
}
[[nodiscard]] inline double min_device_time(const fluid_stage& st, double budget_us) { return min_device_time(st, budget_us, st.units); }

// Sorts and dedupes time points; when more than `most` (>= 2) remain, keeps `most` evenly spread
// quantiles of them, both ends included.
inline void sorted_quantiles(std::vector<tick>& pts, std::size_t most) {
  std::sort(pts.begin(), pts.end());
  pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
  if (pts.size() <= most) return;
  std::vector<tick> q;
  for (std::size_t j = 0; j < most; ++j) q.push_back(pts[j * (pts.size() - 1) / (most - 1)]);
  q.erase(std::unique(q.begin(), q.end()), q.end());
  pts = std::move(q);
}

}  // namespace fluid_detail

/// Prepares the bound's view of a workload; `costs[j]` are the runtime's costs of request j's shape.
[[nodiscard]] inline fluid_workload prepare_fluid_workload(std::span<const request_spec> requests,
                                                           std::span<const shape_costs* const> costs, int gpus,
                                                           const fluid_bound_options& o = {}) {
  if (costs.size() != requests.size()) throw std::invalid_argument("prepare_fluid_workload: one shape_costs per request");
  if (gpus < 1) throw std::invalid_argument("prepare_fluid_workload: gpus must be >= 1");
  if (!(o.speed_factor > 0) || o.speed_factor > 1) throw std::invalid_argument("prepare_fluid_workload: speed_factor must be in (0, 1]");
  fluid_workload w;
  w.gpus = gpus;
  for (std::size_t j = 0; j < requests.size(); ++j) {
    const auto& spec = requests[j];
    if (!spec.has_deadline()) continue;
    ++w.with_deadline;
    const shape_costs& c = *costs[j];
    if (c.allowed_degrees.empty() || spec.steps <= 0) continue;  // the runtime drops it: a miss
    fluid_request r;
    r.index = j;
    r.arrival = spec.arrival;
    r.deadline = spec.deadline();
    for (int s = 0; s < 3; ++s) {
      const auto& table = s == 0 ? c.encode : s == 1 ? c.step : c.decode;
      if (auto st = fluid_detail::make_stage(table, c.allowed_degrees, s == 1 ? spec.steps : 1, o.speed_factor, o.packing_cuts)) {
        r.min_time_us += st->min_time_us();
        r.stages.push_back(std::move(*st));
      }
    }
    const double window_us = static_cast<double>(r.deadline - r.arrival);
    // Exact in integers when speed_factor = 1 (sums of whole microseconds below 2^53).
    if (r.min_time_us > window_us) continue;
    for (const auto& st : r.stages) {
      // Each stage gets at most the window less the minimum time of the others.
      const double budget = window_us - (r.min_time_us - st.min_time_us());
      r.min_device_us += fluid_detail::min_device_time(st, budget);
    }
    r.min_device_us *= 1.0 - 1e-9;  // rounding must never make it exceed the true minimum
    w.requests.push_back(std::move(r));
  }
  return w;
}

/// Same, pricing each shape once with the runtime's own rounding (make_shape_costs).
template <CostModel C>
[[nodiscard]] fluid_workload prepare_fluid_workload(std::span<const request_spec> requests, const C& cost, int gpus,
                                                    const fluid_bound_options& o = {}) {
  std::map<request_shape, shape_costs> table;
  std::vector<const shape_costs*> per_request;
  per_request.reserve(requests.size());
  for (const auto& r : requests) {
    auto it = table.find(r.shape);
    if (it == table.end()) it = table.emplace(r.shape, make_shape_costs(cost, r.shape, gpus)).first;
    per_request.push_back(&it->second);
  }
  return prepare_fluid_workload(requests, std::span<const shape_costs* const>(per_request), gpus, o);
}

/// Splits the workload where no request's window spans a point in time: the LP has no row linking
/// the parts (their intervals are disjoint), so its optimum is the sum of the parts' optima and each
/// part can be solved on its own - far faster than one LP when traffic has quiet gaps.
[[nodiscard]] inline std::vector<fluid_workload> split_fluid_workload(const fluid_workload& w) {
  std::vector<const fluid_request*> order;
  for (const auto& r : w.requests) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->arrival < b->arrival; });
  std::vector<fluid_workload> parts;
  tick end = never;
  for (const auto* r : order) {
    if (parts.empty() || r->arrival >= end) {  // windows that only touch share no interval
      parts.push_back(fluid_workload{w.gpus, w.with_deadline, {}});
      end = r->deadline;
    }
    parts.back().requests.push_back(*r);
    end = std::max(end, r->deadline);
  }
  return parts;
}

/// A certified count of on-time requests (any real number, e.g. a sum over parts) as a bound on SLO
/// attainment: the margin covers floating-point error, then the count is rounded down, because the
/// number of on-time requests is a whole number.
[[nodiscard]] inline std::optional<double> attainment_from_count(double count, std::size_t with_deadline) {
  if (with_deadline == 0) return std::nullopt;
  const double n = static_cast<double>(with_deadline);
  count = std::floor(std::clamp(count, 0.0, n) + fluid_bound_margin);
  return std::min(1.0, count / n);
}

/// Bound (a): requests that could meet their deadline alone / N. Empty when no request has a deadline.
[[nodiscard]] inline std::optional<double> per_request_bound(const fluid_workload& w) {
  if (w.with_deadline == 0) return std::nullopt;
  return static_cast<double>(w.requests.size()) / static_cast<double>(w.with_deadline);
}

/// Bound (b) as a count: capacity over disjoint time segments. On a segment [s, e] the requests whose
/// window lies inside must spend their least device-time inside it; at most the cheapest ones that fit
/// in G (e - s) can be on time, a whole number of them. Segments are chosen by dynamic programming over
/// up to P breakpoints. Counts only w.requests (a part of a workload gives a bound for that part).
[[nodiscard]] inline std::size_t capacity_count(const fluid_workload& w, const fluid_bound_options& o = {}) {
  std::vector<tick> pts;
  for (const auto& r : w.requests) pts.push_back(r.arrival), pts.push_back(r.deadline);
  fluid_detail::sorted_quantiles(pts, static_cast<std::size_t>(std::max(2, o.capacity_breakpoints)));
  std::vector<const fluid_request*> by_cost;
  for (const auto& r : w.requests) by_cost.push_back(&r);
  std::sort(by_cost.begin(), by_cost.end(), [](const auto* a, const auto* b) { return a->min_device_us < b->min_device_us; });
  // best[j]: most requests that must miss, over partitions of [pts[0], pts[j]].
  std::vector<std::size_t> best(pts.size(), 0);
  for (std::size_t j = 1; j < pts.size(); ++j) {
    best[j] = best[j - 1];
    for (std::size_t i = 0; i < j; ++i) {
      const double capacity = static_cast<double>(w.gpus) * static_cast<double>(pts[j] - pts[i]);
      double used = 0;
      std::size_t inside = 0, fit = 0;
      for (const auto* r : by_cost) {
        if (r->arrival < pts[i] || r->deadline > pts[j]) continue;
        ++inside;
        used += r->min_device_us;
        if (used <= capacity) ++fit;
      }
      best[j] = std::max(best[j], best[i] + (inside - fit));
    }
  }
  return w.requests.size() - (pts.empty() ? 0 : best.back());
}

/// Bound (b) on SLO attainment (capacity_count / N). Empty when no request has a deadline.
[[nodiscard]] inline std::optional<double> capacity_bound(const fluid_workload& w, const fluid_bound_options& o = {}) {
  if (w.with_deadline == 0) return std::nullopt;
  return static_cast<double>(capacity_count(w, o)) / static_cast<double>(w.with_deadline);
}

/// The fluid LP of a workload, with what is needed to turn solver output into a certified bound.
struct fluid_lp {
  sparse_lp lp;
  std::size_t with_deadline = 0;  ///< N
  std::size_t requests = 0;       ///< requests in the LP (could meet their deadline alone)
  std::size_t intervals = 0;
  std::size_t capacity_rows = 0, packing_rows = 0, one_at_a_time_rows = 0, work_rows = 0;
  std::size_t count_cut_rows = 0;  ///< added after the first solve (add_count_cuts)
  std::vector<int> x_column;      ///< column of x_r, by position in fluid_workload::requests

  /// Certified upper bound on the number of on-time requests among this LP's, from any row
  /// multipliers (see the header comment); the LP's optimal duals give the LP optimum.
  [[nodiscard]] double certified_requests(std::span<const double> duals) const {
    return std::clamp(lp.dual_bound(duals), 0.0, static_cast<double>(requests));
  }
  /// The same as a bound on SLO attainment. Empty when no request has a deadline.
  [[nodiscard]] std::optional<double> attainment_from_duals(std::span<const double> duals) const {
    return attainment_from_count(certified_requests(duals), with_deadline);
  }
};

namespace fluid_detail {

// The LP's time axis: cut at every arrival and deadline; with min_interval_s, points too close to the
// last kept one are dropped (windows are then rounded outwards, so this only relaxes).
struct interval_grid {
  std::vector<tick> pts;
  std::vector<double> len;  ///< of each interval, microseconds
  std::size_t intervals = 0;

  interval_grid(const fluid_workload& w, double min_interval_s) {
    std::vector<tick> all;
    for (const auto& r : w.requests) all.push_back(r.arrival), all.push_back(r.deadline);
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    const double min_gap = std::max(0.0, min_interval_s) * static_cast<double>(ticks_per_second);
    pts.push_back(all.front());
    for (std::size_t j = 1; j < all.size(); ++j) {
      if (static_cast<double>(all[j] - pts.back()) >= min_gap) pts.push_back(all[j]);
    }
    if (pts.back() != all.back()) {
      if (pts.size() > 1) pts.back() = all.back();  // stretch the last interval to the end
      else pts.push_back(all.back());
    }
    intervals = pts.size() - 1;
    len.resize(intervals);
    for (std::size_t i = 0; i < intervals; ++i) len[i] = static_cast<double>(pts[i + 1] - pts[i]);
  }
  [[nodiscard]] std::size_t first_interval(tick t) const {  // the interval containing t (rounding the window start down)
    const auto it = std::upper_bound(pts.begin(), pts.end(), t);
    const auto i = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, (it - pts.begin()) - 1));
    return std::min(i, intervals - 1);
  }
  [[nodiscard]] std::size_t last_interval(tick t) const {  // the interval containing t (rounding the window end up)
    const auto it = std::lower_bound(pts.begin(), pts.end(), t);
    const auto i = static_cast<std::size_t>(std::max<std::ptrdiff_t>(1, it - pts.begin()) - 1);
    return std::min(i, intervals - 1);
  }
  // f(stage, first interval, last interval) for each stage of r: the intervals it may run in, given
  // the minimum time of the stages before and after it.
  template <class F>
  void for_each_stage_window(const fluid_request& r, F&& f) const {
    double before = 0;  // minimum time of the stages before this one
    for (std::size_t s = 0; s < r.stages.size(); ++s) {
      const auto& st = r.stages[s];
      const double after = r.min_time_us - before - st.min_time_us();
      // Rounded outwards to whole microseconds; both stay inside [arrival, deadline] (the request fits).
      const tick lo = r.arrival + static_cast<tick>(std::floor(before));
      const tick hi = r.deadline - static_cast<tick>(std::floor(std::max(0.0, after)));
      const std::size_t i0 = first_interval(lo);
      f(s, i0, std::max(i0, last_interval(hi)));
      before += st.min_time_us();
    }
  }
};

}  // namespace fluid_detail

/// How many columns build_fluid_lp(w) makes with cut points at least `min_interval_s` apart, without
/// building it.
[[nodiscard]] inline std::size_t fluid_lp_columns(const fluid_workload& w, double min_interval_s) {
  if (w.requests.empty()) return 0;
  const fluid_detail::interval_grid grid(w, min_interval_s);
  std::size_t columns = 0;
  for (const auto& r : w.requests) {
    ++columns;  // x_r
    grid.for_each_stage_window(r, [&](std::size_t s, std::size_t i0, std::size_t i1) { columns += (i1 - i0 + 1) * r.stages[s].degree.size(); });
  }
  return columns;
}

/// The smallest min_interval_s (`min_interval_s`, then it or 1 ms doubled) at which w's LP has at most
/// `max_columns` columns (fluid_bound_options::max_columns); nullopt when even one interval has more.
[[nodiscard]] inline std::optional<double> interval_for_columns(const fluid_workload& w, double min_interval_s, std::size_t max_columns) {
  if (max_columns == 0 || fluid_lp_columns(w, min_interval_s) <= max_columns) return min_interval_s;
  tick first = never, last = 0;
  for (const auto& r : w.requests) first = std::min(first, r.arrival), last = std::max(last, r.deadline);
  const double span_s = to_seconds(last - first);
  for (double gap = min_interval_s > 0 ? 2 * min_interval_s : 1e-3;; gap *= 2) {  // min_interval_s itself was too fine
    if (fluid_lp_columns(w, gap) <= max_columns) return gap;
    if (gap > span_s) return std::nullopt;  // one interval already
  }
}

/// Builds the fluid LP (see the header comment for the model and why it bounds every schedule).
[[nodiscard]] inline fluid_lp build_fluid_lp(const fluid_workload& w, const fluid_bound_options& o = {}) {
  fluid_lp out;
  out.with_deadline = w.with_deadline;
  out.requests = w.requests.size();
  if (w.requests.empty()) return out;

  const fluid_detail::interval_grid grid(w, o.min_interval_s);
  const std::size_t intervals = grid.intervals;
  out.intervals = intervals;
  const std::vector<double>& len = grid.len;

  // The columns of one request: stage s on frontier degree j in interval i, with their upper bound.
  struct column { std::size_t stage, degree_pos, interval; double upper; };
  std::vector<column> cols;
  auto columns_of = [&](const fluid_request& r) {
    cols.clear();
    grid.for_each_stage_window(r, [&](std::size_t s, std::size_t i0, std::size_t i1) {
      const auto& st = r.stages[s];
      for (std::size_t i = i0; i <= i1; ++i) {
        for (std::size_t d = 0; d < st.degree.size(); ++d) {
          cols.push_back({s, d, i, std::min(1.0, st.units * st.unit_us[d] / len[i])});
        }
      }
    });
  };

  // Pass 1: which capacity rows can bind (their columns could put more than G devices to use).
  std::vector<double> load(intervals, 0.0);
  for (const auto& r : w.requests) {
    columns_of(r);
    for (const auto& c : cols) load[c.interval] += r.stages[c.stage].degree[c.degree_pos] * c.upper;
  }
  std::vector<int> cap_row(intervals, -1);
  for (std::size_t i = 0; i < intervals; ++i) {
    if (load[i] > w.gpus) cap_row[i] = out.lp.add_row(static_cast<double>(w.gpus)), ++out.capacity_rows;
  }
  // Packing rows (f_p, p = 1..packing_cut_family) where they can bind and say more than capacity:
  // some column weighs more under f_p than k / G.
  const int families = o.packing_cuts ? packing_cut_family : 0;
  std::vector<std::vector<int>> pack_row(static_cast<std::size_t>(families), std::vector<int>(intervals, -1));
  for (int p = 1; p <= families; ++p) {
    std::vector<double> weight(intervals, 0.0);
    std::vector<unsigned char> above(intervals, 0);
    for (const auto& r : w.requests) {
      columns_of(r);
      for (const auto& c : cols) {
        const int k = r.stages[c.stage].degree[c.degree_pos];
        const double f = packing_weight(p, k, w.gpus);
        weight[c.interval] += f * c.upper;
        if (f * w.gpus > k) above[c.interval] = 1;
      }
    }
    for (std::size_t i = 0; i < intervals; ++i) {
      if (weight[i] > 1.0 && above[i]) pack_row[static_cast<std::size_t>(p - 1)][i] = out.lp.add_row(1.0), ++out.packing_rows;
    }
  }

  // Pass 2: per request, its work rows, the one-at-a-time rows that can bind, then its columns.
  std::vector<double> per_interval(intervals, 0.0);
  std::vector<int> one_row(intervals, -1);
  std::vector<int> work_row;
  for (const auto& r : w.requests) {
    columns_of(r);
    work_row.clear();
    for (std::size_t s = 0; s < r.stages.size(); ++s) work_row.push_back(out.lp.add_row(0.0)), ++out.work_rows;
    for (const auto& c : cols) per_interval[c.interval] += c.upper;
    for (const auto& c : cols) {
      if (per_interval[c.interval] > 1.0 && one_row[c.interval] < 0) one_row[c.interval] = out.lp.add_row(1.0), ++out.one_at_a_time_rows;
    }
    out.x_column.push_back(out.lp.add_column(1.0, r.must_serve ? 1.0 : 0.0, 1.0));
    for (int row : work_row) out.lp.add_entry(row, 1.0);
    for (const auto& c : cols) {
      const auto& st = r.stages[c.stage];
      const int k = st.degree[c.degree_pos];
      out.lp.add_column(0.0, 0.0, c.upper);
      // Rows were created in the order capacity < packing < work < one-at-a-time: entries stay sorted.
      if (cap_row[c.interval] >= 0) out.lp.add_entry(cap_row[c.interval], static_cast<double>(k));
      for (int p = 1; p <= families; ++p) {
        const int row = pack_row[static_cast<std::size_t>(p - 1)][c.interval];
        const double f = packing_weight(p, k, w.gpus);
        if (row >= 0 && f > 0) out.lp.add_entry(row, f);
      }
      out.lp.add_entry(work_row[c.stage], -len[c.interval] / (st.units * st.unit_us[c.degree_pos]));
      if (one_row[c.interval] >= 0) out.lp.add_entry(one_row[c.interval], 1.0);
    }
    for (const auto& c : cols) per_interval[c.interval] = 0.0, one_row[c.interval] = -1;
  }
  return out;
}

/// A count cut (see the header comment): of the requests `members` (positions in the part's
/// fluid_workload::requests, ascending), at most `most` are on time.
struct count_cut {
  std::vector<std::size_t> members;
  double most = 0;
  double violation = 0;  ///< by the solution it was separated from
};

/// A lower bound on the device-microseconds request r spends inside [t1, t2] if it is on time (the
/// `need` of a count cut). A window inside the span: its least device-time. A window that sticks out:
/// outside the span r has at most (t1 - a_r)+ + (d_r - t2)+ of time, in which its longest stage (the
/// denoising steps) gets through at most that time over its fastest unit time; the units left run
/// inside, within the overlap, costing at least the least device-time of that many units in that
/// time (the other stages are left out: a lower bound either way). 0 when it could do it all outside;
/// infinity when it cannot be on time at all.
[[nodiscard]] inline double span_need(const fluid_request& r, tick t1, tick t2) {
  if (r.arrival >= t1 && r.deadline <= t2) return r.min_device_us;
  if (r.deadline <= t1 || r.arrival >= t2 || r.stages.empty()) return 0.0;
  const fluid_stage* longest = &r.stages.front();
  for (const auto& st : r.stages) {
    if (st.units > longest->units) longest = &st;
  }
  const double outside = static_cast<double>(std::max<tick>(0, t1 - r.arrival) + std::max<tick>(0, r.deadline - t2));
  const double units_left = longest->units - outside / longest->min_unit_us();
  if (units_left <= 0) return 0.0;
  const double overlap = static_cast<double>(std::min(r.deadline, t2) - std::max(r.arrival, t1));
  return fluid_detail::min_device_time(*longest, overlap, units_left) * (1.0 - 1e-9);
}

/// Count cuts that `x` (x_r by position in w.requests) violates by more than `min_violation`, the most
/// violated first, at most `limit`, no two with the same members. Spans run from an arrival to a
/// deadline of requests with fractional x (evenly spread, at most 256 of each, fewer when many
/// requests count), so the work is O(spans x requests x log requests), spans x requests <= ~2^25.
[[nodiscard]] inline std::vector<count_cut> separate_count_cuts(const fluid_workload& w, std::span<const double> x, std::size_t limit,
                                                                double min_violation = 1e-3) {
  constexpr double fractional = 1e-6;
  std::vector<std::size_t> counted;  // the requests that count (x_r > 0)
  std::vector<tick> starts, ends;
  for (std::size_t j = 0; j < w.requests.size() && j < x.size(); ++j) {
    if (x[j] > fractional) counted.push_back(j);
    if (x[j] > fractional && x[j] < 1 - fractional) starts.push_back(w.requests[j].arrival), ends.push_back(w.requests[j].deadline);
  }
  // Spans x requests stays under about 2^25 (a round takes well under a second): up to 256 x 256
  // spans for 512 requests, fewer for more.
  const auto most_points = static_cast<std::size_t>(
      std::clamp(std::sqrt(33554432.0 / static_cast<double>(std::max<std::size_t>(1, counted.size()))), 16.0, 256.0));
  fluid_detail::sorted_quantiles(starts, most_points);
  fluid_detail::sorted_quantiles(ends, most_points);
  std::vector<count_cut> found;
  std::vector<std::pair<double, std::size_t>> inside;  // (least device-time inside the span, request), cheapest first
  std::vector<double> device_sum, x_sum;               // prefix sums over `inside`
  for (const tick t1 : starts) {
    for (const tick t2 : ends) {
      if (t2 <= t1) continue;
      inside.clear();
      for (std::size_t j : counted) {
        const double need = span_need(w.requests[j], t1, t2);
        if (need > 0 && std::isfinite(need)) inside.emplace_back(need, j);
      }
      const std::size_t n = inside.size();
      if (n < 2) continue;
      std::sort(inside.begin(), inside.end());
      device_sum.assign(n + 1, 0.0);
      x_sum.assign(n + 1, 0.0);
      for (std::size_t i = 0; i < n; ++i) {
        device_sum[i + 1] = device_sum[i] + inside[i].first;
        x_sum[i + 1] = x_sum[i] + x[inside[i].second];
      }
      const double capacity = static_cast<double>(w.gpus) * static_cast<double>(t2 - t1);
      // S = inside[i..n): its cheapest m fit, m found by binary search on the prefix sums.
      double best = min_violation;
      std::size_t best_i = n, best_m = 0;
      for (std::size_t i = 0; i + 1 < n; ++i) {
        const auto end = std::upper_bound(device_sum.begin() + static_cast<std::ptrdiff_t>(i), device_sum.end(), device_sum[i] + capacity);
        const auto m = static_cast<std::size_t>(end - device_sum.begin()) - 1 - i;
        const double violation = (x_sum[n] - x_sum[i]) - static_cast<double>(m);
        if (violation > best) best = violation, best_i = i, best_m = m;
      }
      if (best_i == n) continue;
      count_cut c;
      for (std::size_t i = best_i; i < n; ++i) c.members.push_back(inside[i].second);
      std::sort(c.members.begin(), c.members.end());
      c.most = static_cast<double>(best_m);
      c.violation = best;
      found.push_back(std::move(c));
    }
  }
  std::sort(found.begin(), found.end(), [](const count_cut& a, const count_cut& b) {
    return a.violation > b.violation || (a.violation == b.violation && a.members < b.members);
  });
  std::vector<count_cut> out;
  for (auto& c : found) {
    if (out.size() >= limit) break;
    if (std::any_of(out.begin(), out.end(), [&](const count_cut& o) { return o.members == c.members; })) continue;
    out.push_back(std::move(c));
  }
  return out;
}

/// Appends count cuts to the LP as rows over its x columns (so that certification covers them).
inline void add_count_cuts(fluid_lp& f, std::span<const count_cut> cuts) {
  if (cuts.empty()) return;
  std::vector<std::vector<int>> rows_of(f.x_column.size());  // by request position: its new rows, ascending
  for (const auto& c : cuts) {
    const int row = f.lp.add_row(c.most);
    for (std::size_t j : c.members) rows_of.at(j).push_back(row);
  }
  std::vector<int> request_of(static_cast<std::size_t>(f.lp.cols()), -1);
  for (std::size_t j = 0; j < f.x_column.size(); ++j) request_of[static_cast<std::size_t>(f.x_column[j])] = static_cast<int>(j);
  sparse_lp& lp = f.lp;
  std::vector<int> start{0}, index;
  std::vector<double> value;
  index.reserve(lp.row_index.size() + cuts.size() * 8), value.reserve(lp.value.size() + cuts.size() * 8);
  for (int j = 0; j < lp.cols(); ++j) {
    for (auto e = lp.column_start[static_cast<std::size_t>(j)]; e < lp.column_start[static_cast<std::size_t>(j) + 1]; ++e) {
      index.push_back(lp.row_index[static_cast<std::size_t>(e)]), value.push_back(lp.value[static_cast<std::size_t>(e)]);
    }
    if (const int r = request_of[static_cast<std::size_t>(j)]; r >= 0) {
      for (int row : rows_of[static_cast<std::size_t>(r)]) index.push_back(row), value.push_back(1.0);  // new rows: last, so still sorted
    }
    start.push_back(static_cast<int>(index.size()));
  }
  lp.column_start = std::move(start);
  lp.row_index = std::move(index);
  lp.value = std::move(value);
  f.count_cut_rows += cuts.size();
}

/// What a bound run reports: each bound that was computed, and the least of them.
struct fluid_bound_result {
  std::optional<double> slo_attainment;  ///< min of the bounds below; empty when no request has a deadline
  std::optional<double> per_request, capacity, lp;
};

/// Combines the cheap bounds with an LP figure (when a solver produced one).
[[nodiscard]] inline fluid_bound_result combine_bounds(const fluid_workload& w, std::optional<double> lp_bound,
                                                       const fluid_bound_options& o = {}) {
  fluid_bound_result b;
  b.per_request = per_request_bound(w);
  b.capacity = capacity_bound(w, o);
  b.lp = lp_bound;
  for (const auto& v : {b.per_request, b.capacity, b.lp}) {
    if (v) b.slo_attainment = b.slo_attainment ? std::min(*b.slo_attainment, *v) : *v;
  }
  return b;
}

}  // namespace paraflex
