// clp_bound.hpp - solves the fluid LP of paraflex/sim/fluid_bound.hpp with COIN-OR Clp.
//
// The solver is a dependency of the tools only: the library builds the LP and certifies the result,
// this adapter just loads it into Clp, runs the chosen algorithm and hands the row duals back.
// Whatever Clp returns (optimal, stopped by the time limit, or numerically troubled) is turned into a
// bound by fluid_lp::attainment_from_duals, which is valid for any multipliers; a poor solve can only
// make the figure looser, never wrong. Dual simplex is the default: it keeps the duals feasible, so
// even an interrupted solve gives a usable bound.
//
// Clp's sign convention: for a maximisation, dualRowSolution() of a binding "<=" row is >= 0, the
// multiplier y of fluid_bound.hpp as is.
#pragma once

#include <chrono>
#include <optional>
#include <span>
#include <string>

#include <ClpSimplex.hpp>
#include <ClpSolve.hpp>

#include "paraflex/sim/fluid_bound.hpp"

namespace paraflex {

enum class clp_method { dual, primal, barrier, automatic };

struct clp_options {
  clp_method method = clp_method::dual;
  bool presolve = true;
  double max_seconds = 600;  ///< Clp stops here; the duals it has still give a valid (looser) bound
  int log_level = 0;
};

struct clp_report {
  std::optional<double> bound;     ///< certified bound on SLO attainment
  double primal_objective = 0;     ///< Clp's objective (requests served on time in the LP)
  double certified_requests = 0;   ///< the weak-duality figure before rounding down
  bool optimal = false;
  int status = -1;                 ///< Clp status: 0 optimal, 1 infeasible, 2 unbounded, 3 stopped, 4 errors
  int iterations = 0;
  double seconds = 0;              ///< load + solve
};

/// Solves `f` with Clp and certifies the result.
[[nodiscard]] inline clp_report solve_fluid_lp_clp(const fluid_lp& f, const clp_options& o = {}) {
  clp_report rep;
  if (f.with_deadline == 0) return rep;
  if (f.lp.cols() == 0) {  // no request can meet its deadline: nothing to solve
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
  rep.status = model.status();
  rep.optimal = model.isProvenOptimal();
  rep.iterations = model.getIterationCount();
  rep.primal_objective = model.objectiveValue();
  const std::span<const double> duals(model.dualRowSolution(), static_cast<std::size_t>(lp.rows()));
  rep.certified_requests = lp.dual_bound(duals);
  rep.bound = f.attainment_from_duals(duals);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace paraflex
