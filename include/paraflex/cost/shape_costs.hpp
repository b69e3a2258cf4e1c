// paraflex/cost/shape_costs.hpp - a cost model's answers for one shape, rounded once to microseconds.
//
// The runtime prices every (shape, degree) exactly once, when the shape first arrives, and then only
// reads integer tables; batched steps (shape, degree, batch) are priced once too, on first use.
// Anything else that must agree with the runtime to the microsecond (the input check below, the fluid
// upper bound in sim/fluid_bound.hpp, offline planners) reads the same functions, so that all see
// identical durations: a bound computed from slightly different rounding could undercut a real run.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

/// Thrown by round_cost_seconds for a time past the clock: the shape is too large to price, which
/// check_workload_costs reports under the shape's largest dimension rather than the model.
class shape_too_large : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Seconds from a cost model to whole microseconds; a value that is not finite, is negative or does
/// not fit is an input error naming the shape and the degree (0 = not degree-specific).
[[nodiscard]] inline tick round_cost_seconds(double seconds, const request_shape& s, int degree) {
  const auto t = to_ticks(seconds);
  if (t && *t >= 0) return *t;
  const auto message = [&](std::string_view why) {
    return fmt::format("cost model: the time of {} {}x{}x{} on {} devices, {} s, {}", s.model, s.height, s.width, s.frames, degree,
                       seconds, why);
  };
  if (!std::isfinite(seconds)) throw std::invalid_argument(message("is not a finite number"));
  if (seconds < 0) throw std::invalid_argument(message("is negative"));
  // to_ticks stops near 4.6e12 s, past the simulated clock's end: the clock's limit is the one to state.
  throw shape_too_large(message("is beyond the simulated clock's limit of 4.0e12 s: the shape is too large for this cost model"));
}

/// "1..4, 6, 8, 12": a sorted list of degrees (shape_costs::allowed_degrees, say) for a message, runs
/// of three or more shortened; "none" when empty.
[[nodiscard]] inline std::string degree_ranges(const std::vector<int>& ks) {
  std::string out;
  for (std::size_t i = 0; i < ks.size();) {
    std::size_t j = i;
    while (j + 1 < ks.size() && ks[j + 1] == ks[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    out += j >= i + 2 ? fmt::format("{}..{}", ks[i], ks[j]) : std::to_string(ks[i]);
    if (j == i + 1) out += ", " + std::to_string(ks[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

/// When make_shape_costs prices batched steps: all of them at once, or each (degree, batch) the first
/// time someone asks for it (shape_costs::batch_step_time). The figures are the same either way;
/// on_first_use keeps a run that never batches from calling the cost model's batch pricing at all
/// (whose estimates are noted, see profile_cost_model::extrapolation_notes).
enum class batch_pricing { eager, on_first_use };

/// Calls f(k, step, encode, decode) for each degree k in 1..gpus that `cost` allows, in increasing order,
/// with the times rounded to microseconds (round_cost_seconds; a step is at least 1 us). A
/// MultiDegreeCostModel lists the degrees and prices their steps in one call; any other model is asked
/// one degree at a time.
/// The one place where a shape's times are read off a cost model: the runtime's tables and the
/// workload check see the same figures.
template <CostModel C, class F>
void for_each_priced_degree(const C& cost, const request_shape& s, int gpus, F&& f) {
  const auto priced = [&](int k, double step_seconds) {
    f(k, std::max<tick>(1, round_cost_seconds(step_seconds, s, k)), round_cost_seconds(stage_seconds_of(cost, s, stage_kind::encode, k), s, k),
      round_cost_seconds(stage_seconds_of(cost, s, stage_kind::decode, k), s, k));
  };
  if constexpr (MultiDegreeCostModel<C>) {
    std::vector<std::pair<int, double>> allowed;
    cost.allowed_step_seconds(s, gpus, allowed);
    for (const auto& [k, seconds] : allowed) priced(k, seconds);
  } else {
    for (int k = 1; k <= gpus; ++k) {
      if (cost.allows_degree(s, k)) priced(k, static_cast<double>(cost.step_seconds(s, k)));
    }
  }
}

/// One migration of `s`'s state within a node or across nodes, in whole microseconds.
template <CostModel C>
[[nodiscard]] tick migration_ticks(const C& cost, const request_shape& s, bool cross_node) {
  return round_cost_seconds(static_cast<double>(cost.migration_seconds(s, 1, 1, cross_node)), s, 0);
}

/// Step, encode and decode times of `s` on 1..gpus devices, plus migration times, and (BatchCostModel)
/// batched steps of 2..max_batch requests. A step is never shorter than 1 us, because a 0 entry in
/// shape_costs::step means "degree not allowed" (and a 0 in batch_step "not priced yet").
/// on_first_use: `cost` must outlive the returned costs and every copy of them.
template <CostModel C>
[[nodiscard]] shape_costs make_shape_costs(const C& cost, const request_shape& s, int gpus, int max_batch = 1,
                                           batch_pricing pricing = batch_pricing::eager) {
  shape_costs c;
  c.shape = s;
  const auto g = static_cast<std::size_t>(std::max(gpus, 0));
  c.step.assign(g + 1, 0);
  c.encode.assign(g + 1, 0);
  c.decode.assign(g + 1, 0);
  tick best = never, best_work = never;
  for_each_priced_degree(cost, s, gpus, [&](int k, tick step, tick encode, tick decode) {
    const auto kk = static_cast<std::size_t>(k);
    c.step[kk] = step;
    c.encode[kk] = encode;
    c.decode[kk] = decode;
    c.allowed_degrees.push_back(k);
    if (step < best) best = step, c.fastest_degree = k;  // strict: ties keep fewer devices
    // <=: of two degrees with equal work the wider one has the shorter step, so it wins the tie.
    if (const tick work = step * k; work <= best_work) best_work = work, c.efficient_degree = k;
  });
  if constexpr (BatchCostModel<C>) {
    if (max_batch > 1) {
      c.max_batch = max_batch;
      const auto price = [model = &cost, s](int k, int b) {
        return std::max<tick>(1, round_cost_seconds(static_cast<double>(model->batch_step_seconds(s, k, b)), s, k));
      };
      if (pricing == batch_pricing::on_first_use) {
        c.price_batch = price;
      } else {
        c.batch_step.assign(static_cast<std::size_t>(max_batch - 1) * (g + 1), 0);
        for (int b = 2; b <= max_batch; ++b) {
          for (int k : c.allowed_degrees) c.batch_step[static_cast<std::size_t>(b - 2) * (g + 1) + static_cast<std::size_t>(k)] = price(k, b);
        }
      }
    }
  } else {
    (void)max_batch, (void)pricing;
  }
  c.migrate_intra_node = migration_ticks(cost, s, false);
  c.migrate_inter_node = migration_ticks(cost, s, true);
  return c;
}

/// Checks before a run that every request of `w` can be priced on 1..gpus devices and that its whole
/// trajectory, run on one device after its arrival, still fits the microsecond clock. Returns an
/// input_error naming the workload file, the request's line and id, or nothing when all is well.
/// (The runtime would otherwise fail in the middle of a run with the cost model's message.)
template <CostModel C>
[[nodiscard]] std::optional<input_error> check_workload_costs(const workload& w, const C& cost, int gpus) {
  std::map<request_shape, tick> slowest;  // per shape: the longest step or stage over allowed degrees
  for (const auto& r : w.requests) {
    auto it = slowest.find(r.shape);
    if (it == slowest.end()) {
      tick worst = 0;
      try {
        for_each_priced_degree(cost, r.shape, gpus, [&](int, tick step, tick encode, tick decode) { worst = std::max({worst, step, encode, decode}); });
        (void)migration_ticks(cost, r.shape, false);  // priced as make_shape_costs prices them
        (void)migration_ticks(cost, r.shape, true);
      } catch (const shape_too_large& e) {
        // Named by the largest dimension, the likeliest typo (a frames count for a pixel count, say).
        const request_shape& s = r.shape;
        const char* column = s.frames > std::max(s.height, s.width) ? "frames" : s.width > s.height ? "width" : "height";
        return input_error{w.source, r.source_line, column, fmt::format("request '{}': {}", r.id, e.what())};
      } catch (const std::exception& e) {  // the cost model cannot price this model's shape
        return input_error{w.source, r.source_line, "model", fmt::format("request '{}': {}", r.id, e.what())};
      }
      it = slowest.emplace(r.shape, worst).first;
    }
    // In integers: near the limit a double cannot tell 4.0e18 us from 4.0e18 us + 30 us.
    const tick units = static_cast<tick>(r.steps) + 2;
    const tick room = r.arrival < clock_limit ? clock_limit - r.arrival : 0;
    if (r.arrival > clock_limit || it->second > room / units) {
      const double work = static_cast<double>(it->second) * static_cast<double>(units);
      // Named by what weighs more: a late arrival, or the work itself.
      return input_error{w.source, r.source_line, static_cast<double>(r.arrival) > work ? "arrival_s" : "steps",
                         fmt::format("request '{}': arriving at {} s, its {} step{} of up to {} s each (plus encode and decode) "
                                     "would end past the microsecond clock's limit of 4.0e12 s",
                                     r.id, to_seconds(r.arrival), r.steps, r.steps == 1 ? "" : "s", to_seconds(it->second))};
    }
  }
  return std::nullopt;
}

}  // namespace paraflex
