// clp_bound.hpp - solves the fluid LP of paraflex/sim/fluid_bound.hpp with COIN-OR Clp.
//
// The solver is a dependency of the tools only: the library builds the LP and certifies the result,
// this adapter just loads it into Clp, runs the chosen algorithm and hands the row duals back.
// Whatever Clp returns (optimal, stopped by the time limit, or numerically troubled) is turned into a
// bound by fluid_lp::certified_requests, which is valid for any multipliers; a poor solve can only
// make the figure looser, never wrong. The workload is first split where traffic has quiet gaps (the
// parts' LPs share no row) and each part is solved alone. Primal simplex (with presolve) is the
// default: on these LPs it was the fastest of Clp's methods - 3,000 Azure-arrival requests on 8 GPUs
// (0.2-1.1 million columns) in 1.4-6 s on 2 cores, where dual simplex and barrier took 2-6x as long.
// A time limit still yields a valid bound (looser: an unfinished primal's duals are not optimal).
// Count cuts (fluid_bound.hpp) are added to the loaded model round by round and re-solved with dual
// simplex from the last basis; their duals are certified with the other rows'.
//
// Clp's sign convention: for a maximisation, dualRowSolution() of a binding "<=" row is >= 0, the
// multiplier y of fluid_bound.hpp as is.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ClpSimplex.hpp>
#include <ClpSolve.hpp>

#include "paraflex/sim/fluid_bound.hpp"

namespace paraflex {

enum class clp_method { dual, primal, barrier, automatic };

struct clp_options {
  clp_method method = clp_method::primal;
  bool presolve = true;
  double max_seconds = 600;  ///< per run of Clp (clp_fluid_bound: in all); a stopped run still gives a valid, looser bound
  int log_level = 0;
  bool report_served = false;  ///< clp_fluid_bound: fill clp_fluid_report::served (paraflex-sim --bound-out)
};

struct clp_report {
  std::optional<double> bound;     ///< certified bound on SLO attainment
  double primal_objective = 0;     ///< Clp's objective (requests served on time in the LP)
  double certified_requests = 0;   ///< the weak-duality figure (clamped to the LP's requests), before rounding down
  bool optimal = false;
  int status = -1;                 ///< Clp status: 0 optimal, 1 infeasible, 2 unbounded, 3 stopped, 4 errors
  int iterations = 0;
  int cut_rounds = 0;              ///< rounds of count cuts added and solved
  double seconds = 0;              ///< load + solve
  std::vector<double> served;      ///< the LP's x per request of the LP, in its order (the last solution, cuts included)
};

/// Solves `f` with Clp and certifies the result. With `cuts_from` (the workload `f` was built from)
/// and fo.count_cut_rounds > 0, it then adds the count cuts the solution violates (to `f` and to the
/// loaded model) and re-solves with dual simplex from where it stopped, round after round.
[[nodiscard]] inline clp_report solve_fluid_lp_clp(fluid_lp& f, const clp_options& o = {}, const fluid_workload* cuts_from = nullptr,
                                                   const fluid_bound_options& fo = {}) {
  clp_report rep;
  if (f.with_deadline == 0) return rep;
  if (f.lp.cols() == 0) {  // no request can meet its deadline: nothing to solve
    rep.served.assign(f.x_column.size(), 0.0);
    rep.bound = f.attainment_from_duals({});
    rep.optimal = true;
    rep.status = 0;
    return rep;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const sparse_lp& lp = f.lp;
  std::vector<double> row_lower(lp.row_upper.size(), -COIN_DBL_MAX);
  std::vector<CoinBigIndex> starts(lp.column_start.begin(), lp.column_start.end());
  ClpSimplex model;
  model.setLogLevel(o.log_level);
  model.loadProblem(lp.cols(), lp.rows(), starts.data(), lp.row_index.data(), lp.value.data(), lp.col_lower.data(),
                    lp.col_upper.data(), lp.objective.data(), row_lower.data(), lp.row_upper.data());
  model.setOptimizationDirection(-1);  // maximise
  model.setMaximumSeconds(o.max_seconds);
  ClpSolve how;
  switch (o.method) {
    case clp_method::dual: how.setSolveType(ClpSolve::useDual); break;
    case clp_method::primal: how.setSolveType(ClpSolve::usePrimal); break;
    case clp_method::barrier: how.setSolveType(ClpSolve::useBarrier); break;
    case clp_method::automatic: how.setSolveType(ClpSolve::automatic); break;
  }
  how.setPresolveType(o.presolve ? ClpSolve::presolveOn : ClpSolve::presolveOff);
  model.initialSolve(how);
  // Count cuts: a row per cut over the x columns; a round ends when none is violated or time is up.
  std::vector<double> x;
  for (int round = 0; cuts_from != nullptr && round < fo.count_cut_rounds && model.isProvenOptimal(); ++round) {
    const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (spent >= o.max_seconds) break;
    const double* primal = model.primalColumnSolution();
    x.clear();
    for (int c : f.x_column) x.push_back(primal[c]);
    const std::vector<count_cut> cuts = separate_count_cuts(*cuts_from, x, fo.count_cuts_per_round);
    if (cuts.empty()) break;
    std::vector<CoinBigIndex> row_start{0};
    std::vector<int> columns;
    std::vector<double> ones, lower(cuts.size(), -COIN_DBL_MAX), upper;
    for (const auto& c : cuts) {
      for (std::size_t j : c.members) columns.push_back(f.x_column[j]), ones.push_back(1.0);
      row_start.push_back(static_cast<CoinBigIndex>(columns.size()));
      upper.push_back(c.most);
    }
    model.addRows(static_cast<int>(cuts.size()), lower.data(), upper.data(), row_start.data(), columns.data(), ones.data());
    add_count_cuts(f, cuts);
    model.setMaximumSeconds(std::max(1.0, o.max_seconds - spent));
    model.dual();  // the old basis stays dual feasible with the new rows basic: a warm start
    ++rep.cut_rounds;
  }
  rep.status = model.status();
  rep.optimal = model.isProvenOptimal();
  rep.iterations = model.getIterationCount();
  rep.primal_objective = model.objectiveValue();
  if (const double* primal = model.primalColumnSolution()) {
    for (int c : f.x_column) rep.served.push_back(std::clamp(primal[c], 0.0, 1.0));
  }
  const double* row_duals = model.dualRowSolution();  // null only if Clp failed before solving: bound from y = 0
  const std::span<const double> duals(row_duals, row_duals ? static_cast<std::size_t>(lp.rows()) : 0);
  rep.certified_requests = f.certified_requests(duals);
  rep.bound = f.attainment_from_duals(duals);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

/// Solves `f` as built (no count cuts) and certifies the result.
[[nodiscard]] inline clp_report solve_fluid_lp_clp(const fluid_lp& f, const clp_options& o = {}) {
  fluid_lp copy = f;  // the overload above adds rows only with cuts_from; a copy keeps one code path
  return solve_fluid_lp_clp(copy, o);
}

/// What clp_fluid_bound did: the certified LP bound and the size and cost of getting it.
struct clp_fluid_report {
  std::optional<double> bound;          ///< certified bound on SLO attainment (fluid LP)
  double primal_requests = 0;           ///< sum of Clp's objectives
  double certified_requests = 0;        ///< sum of the parts' certified counts
  /// Sum over parts of min(certified count rounded down, the part's capacity count): the bound's count.
  /// Each part's on-time requests are a whole number no greater than either, so this stays a bound.
  double part_requests = 0;
  bool optimal = true;                  ///< every part solved to optimality
  std::size_t parts = 0, requests = 0, intervals = 0, rows = 0, cols = 0, nonzeros = 0;
  std::size_t largest_part_cols = 0;
  std::size_t count_cut_rows = 0;       ///< count cuts added (included in rows)
  /// Parts whose exact LP would have had more than fluid_bound_options::max_columns columns: built
  /// with coarser intervals (the widest merge: coarsest_interval_s), or, too large even as one
  /// interval, counted by the capacity bound (oversized_parts). Both only loosen the bound.
  std::size_t coarsened_parts = 0, oversized_parts = 0;
  double coarsest_interval_s = 0;
  int cut_rounds = 0;                   ///< rounds of count cuts, over all parts
  int iterations = 0;
  double build_seconds = 0, solve_seconds = 0;
  /// With clp_options::report_served: (position in the workload, the LP's x in [0, 1]) for every request
  /// of the LP - the share of it the LP serves on time. Not certified like the bound: a part Clp had
  /// no time left for counts every request as served in full, as the bound does.
  std::vector<std::pair<std::size_t, double>> served;
};

/// Where clp_fluid_bound is, for its progress callback.
struct clp_progress {
  std::size_t parts_done = 0, parts = 0;  ///< independent parts solved so far, and in all
  std::size_t requests_done = 0;          ///< requests in the parts solved so far
  /// The part about to be solved, once built (0 before it is built): its size says how long Clp may
  /// take - many GPUs give every request many degrees, so a few requests can make a large LP.
  std::size_t part_requests = 0, part_rows = 0, part_columns = 0;
  double seconds_left = 0;  ///< of clp_options::max_seconds, for this part and the rest
};

/// The fluid LP bound of a workload: split into independent parts, each built and solved with Clp.
/// `progress`, when given, is called with a clp_progress before each part is built and again before
/// it is solved: a large workload's bound takes minutes.
template <class Progress = std::nullptr_t>
[[nodiscard]] inline clp_fluid_report clp_fluid_bound(const fluid_workload& w, const fluid_bound_options& fo = {},
                                                      const clp_options& co = {}, Progress&& progress = nullptr) {
  clp_fluid_report rep;
  if (w.with_deadline == 0) return rep;
  double left = co.max_seconds;
  std::size_t cut_work_left = fo.count_cut_work;  // rounds x columns (fluid_bound_options::count_cut_work)
  const std::vector<fluid_workload> parts = split_fluid_workload(w);
  // A part no LP is solved for (too large, or no time left): every request counts as served (the
  // bound with all multipliers 0), capped by the part's capacity count.
  const auto count_unsolved = [&](const fluid_workload& part) {
    rep.optimal = false;
    rep.certified_requests += static_cast<double>(part.requests.size());
    rep.primal_requests += static_cast<double>(part.requests.size());
    rep.part_requests += static_cast<double>(std::min(part.requests.size(), capacity_count(part, fo)));
    if (co.report_served) {
      for (const auto& r : part.requests) rep.served.emplace_back(r.index, 1.0);
    }
  };
  for (const fluid_workload& part : parts) {
    constexpr bool reports = !std::is_same_v<std::decay_t<Progress>, std::nullptr_t>;
    if constexpr (reports) progress(clp_progress{rep.parts, parts.size(), rep.requests, 0, 0, 0, left});
    const auto t0 = std::chrono::steady_clock::now();
    ++rep.parts;
    rep.requests += part.requests.size();
    fluid_bound_options build_fo = fo;
    const std::optional<double> gap = interval_for_columns(part, fo.min_interval_s, fo.max_columns);
    if (!gap) {  // no LP of that size: the part counts by the capacity bound, as one out of time does
      ++rep.oversized_parts;
      count_unsolved(part);
      continue;
    }
    if (*gap > fo.min_interval_s) {
      build_fo.min_interval_s = *gap;
      ++rep.coarsened_parts;
      rep.coarsest_interval_s = std::max(rep.coarsest_interval_s, *gap);
    }
    fluid_lp lp = build_fluid_lp(part, build_fo);
    rep.build_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rep.intervals += lp.intervals;
    rep.rows += static_cast<std::size_t>(lp.lp.rows());
    rep.cols += static_cast<std::size_t>(lp.lp.cols());
    rep.nonzeros += lp.lp.nonzeros();
    rep.largest_part_cols = std::max(rep.largest_part_cols, static_cast<std::size_t>(lp.lp.cols()));
    if constexpr (reports) {
      if (left > 0) {
        progress(clp_progress{rep.parts - 1, parts.size(), rep.requests - lp.requests, lp.requests, static_cast<std::size_t>(lp.lp.rows()),
                              static_cast<std::size_t>(lp.lp.cols()), left});
      }
    }
    if (left <= 0) {  // out of time
      count_unsolved(part);
      continue;
    }
    clp_options o = co;
    o.max_seconds = left;
    fluid_bound_options part_fo = build_fo;
    const auto columns = std::max<std::size_t>(1, static_cast<std::size_t>(lp.lp.cols()));
    part_fo.count_cut_rounds = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(std::max(0, fo.count_cut_rounds)),
                                                                      cut_work_left / columns));
    const clp_report r = solve_fluid_lp_clp(lp, o, &part, part_fo);
    if (co.report_served) {
      for (std::size_t j = 0; j < part.requests.size(); ++j) rep.served.emplace_back(part.requests[j].index, j < r.served.size() ? r.served[j] : 1.0);
    }
    cut_work_left -= std::min(cut_work_left, static_cast<std::size_t>(r.cut_rounds) * columns);
    rep.rows += lp.count_cut_rows;  // added while solving
    rep.count_cut_rows += lp.count_cut_rows;
    rep.cut_rounds += r.cut_rounds;
    left -= r.seconds;
    rep.solve_seconds += r.seconds;
    rep.iterations += r.iterations;
    rep.optimal = rep.optimal && r.optimal;
    rep.primal_requests += r.primal_objective;
    rep.certified_requests += r.certified_requests;
    // A part's on-time count is a whole number, at most its LP value and at most its capacity count.
    const double whole = std::floor(r.certified_requests + fluid_bound_margin);
    rep.part_requests += std::min(whole, static_cast<double>(capacity_count(part, fo)));
  }
  rep.bound = attainment_from_count(rep.part_requests, w.with_deadline);
  return rep;
}

}  // namespace paraflex
