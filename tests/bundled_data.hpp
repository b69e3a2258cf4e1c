// The bundled profile and default workload (bench/data), loaded once per test executable: what tests
// that run the shipped inputs share. PARAFLEX_DATA_DIR comes from tests/CMakeLists.txt.
#pragma once

#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/sim/workload_csv.hpp"

namespace paraflex_test {

/// bench/data/profiles/step_latency.csv.
inline const paraflex::profile_table& bundled_profile() {
  static const paraflex::profile_table table = paraflex::load_profile_csv(PARAFLEX_DATA_DIR "/profiles/step_latency.csv").value_or_throw();
  return table;
}

/// The bundled profile's cost model for its l20-inferred rows (every model of the default workload).
inline const paraflex::profile_cost_model& bundled_cost() {
  static const paraflex::profile_cost_model cost = paraflex::profile_cost_model::from_profile(bundled_profile(), "l20-inferred").value_or_throw();
  return cost;
}

/// bench/data/default_workload.csv: 300 FLUX requests.
inline const paraflex::workload& bundled_workload() {
  static const paraflex::workload w = paraflex::load_workload_csv(PARAFLEX_DATA_DIR "/default_workload.csv", bundled_cost().models()).value_or_throw();
  return w;
}

}  // namespace paraflex_test
