// Loading what a simulation needs from the command line's files (or the embedded defaults):
// the profile, the workload, the GPU type and the cost model. Shared by paraflex-sim and paraflex-tune.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "embedded_data.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/sim/workload_csv.hpp"

namespace paraflex_bench {

struct sim_inputs {
  paraflex::profile_table table;
  paraflex::workload workload;
  std::string gpu;
  paraflex::profile_cost_model cost;
};

/// The profile in `profile_file`, or the embedded default when the name is empty. Throws
/// paraflex::input_exception.
inline paraflex::profile_table load_profile_table(const std::string& profile_file) {
  using namespace paraflex;
  if (profile_file.empty()) {
    std::istringstream in{std::string(embedded_profile_csv)};
    return read_profile_csv(in, "<embedded profile>").value_or_throw();
  }
  return load_profile_csv(profile_file).value_or_throw();
}

/// A GPU type given with --gpu (not empty) must have rows in the profile. Throws paraflex::input_exception.
inline void check_gpu_type(const paraflex::profile_table& table, const std::string& gpu) {
  using namespace paraflex;
  if (!gpu.empty() && !table.has_gpu(gpu)) {
    // `--gpu 8` is most likely the GPU count meant for --gpus.
    const bool a_count = gpu.find_first_not_of("0123456789") == std::string::npos;
    throw input_exception(input_error{"--gpu", 0, "",
                                      fmt::format("'{}': the profile {} has no rows for it (it has: {}){}", gpu, table.source,
                                                  join_names(table.gpus()),
                                                  a_count ? fmt::format("; --gpu names the GPU type, --gpus {} sets the count", gpu) : "")});
  }
}

/// load_sim_inputs with the workload read by `read_workload(known_models)` (a file, rows from Python),
/// and `rename(error)` applied to the error about a request the cost model cannot price (so that it can
/// name the request the way its reader does).
/// `max_degree` > 0 caps every model's degrees (profile_cost_model::set_max_degree; 0: no cap).
template <class ReadWorkload, class Rename>
sim_inputs load_sim_inputs_with(const std::string& profile_file, std::string gpu, int gpus, int max_degree, ReadWorkload&& read_workload,
                                Rename&& rename) {
  using namespace paraflex;
  profile_table table = load_profile_table(profile_file);
  check_gpu_type(table, gpu);
  const auto known_models = gpu.empty() ? table.models() : table.models_on(gpu);
  workload w = read_workload(known_models);
  if (gpu.empty()) {
    std::vector<std::string> models;
    for (const auto& r : w.requests) models.push_back(r.shape.model);
    std::sort(models.begin(), models.end());
    models.erase(std::unique(models.begin(), models.end()), models.end());
    gpu = default_gpu_for(table, models, table.source).value_or_throw();
  }
  auto cost = profile_cost_model::from_profile(table, gpu).value_or_throw();
  cost.set_max_degree(max_degree);
  if (auto e = check_workload_costs(w, cost, gpus)) throw input_exception(rename(*e));
  cost.clear_extrapolation_notes();  // the check priced every degree; the run reports what it uses
  return sim_inputs{std::move(table), std::move(w), std::move(gpu), std::move(cost)};
}

/// Empty file names select the embedded default profile / workload. An empty `gpu` selects the only
/// GPU type the profile has for the workload's models. Every request is priced on 1..gpus devices up
/// front, so that a shape the cost model cannot price is an input error, not a failure mid-run.
/// Throws paraflex::input_exception on bad input.
inline sim_inputs load_sim_inputs(const std::string& workload_file, const std::string& profile_file, std::string gpu, int gpus,
                                  int max_degree = 0) {
  using namespace paraflex;
  return load_sim_inputs_with(
      profile_file, std::move(gpu), gpus, max_degree,
      [&](const std::vector<std::string>& known_models) {
        if (workload_file.empty()) {
          std::istringstream in{std::string(embedded_workload_csv)};
          return read_workload_csv(in, "<embedded workload>", known_models).value_or_throw();
        }
        return load_workload_csv(workload_file, known_models).value_or_throw();
      },
      [](const input_error& e) { return e; });
}

}  // namespace paraflex_bench
