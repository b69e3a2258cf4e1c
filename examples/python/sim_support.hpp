// examples/python/sim_support.hpp - inputs of a simulation from Python arguments, with paraflex-sim's
// checks and messages: a workload given as a path or as a list of dicts, the profile, the GPU type,
// faults in paraflex-sim's flag syntax. Shared by simulate() and Scheduler.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pybind11/pybind11.h>

#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/sim/workload_csv.hpp"
#include "sim_inputs.hpp"

namespace paraflex_python {

namespace py = pybind11;

/// The most GPUs a cluster may have, and so the largest degree cap (paraflex-sim's --gpus and
/// --max-degree ranges).
inline constexpr int max_cluster_gpus = 1 << 16;

/// The most host threads simulate(cells=...) may use (paraflex-sim's --threads range).
inline constexpr int max_cell_threads = 1024;

/// paraflex-sim's message for a bad flag value, as a ValueError (the text after "paraflex-sim: error: ").
[[noreturn]] void input_failure(const std::string& message);

/// Reads `workload` (None: the embedded default; a path (is_path): a CSV; list of dicts: rows with
/// the CSV's column names) with `profile` (None or a path) for `gpus` devices, as load_sim_inputs
/// does. Throws paraflex::input_exception with the message paraflex-sim prints.
[[nodiscard]] paraflex_bench::sim_inputs load_inputs(py::handle workload, py::handle profile, const std::string& gpu, int gpus,
                                                     int max_degree = 0);

/// Only the profile and the cost model (no workload): what a Scheduler needs before requests arrive.
/// `gpu` empty: the profile's only GPU type. Throws paraflex::input_exception.
struct cost_inputs {
  paraflex::profile_table table;
  std::string gpu;
  paraflex::profile_cost_model cost;
};
[[nodiscard]] cost_inputs load_cost(py::handle profile, const std::string& gpu);

/// A workload given as a list of dicts, read as the CSV reader reads a file (same checks); errors
/// name the row as "workload[i]". `known_models` as for read_workload_csv.
[[nodiscard]] paraflex::workload workload_from_rows(py::handle rows, const std::vector<std::string>& known_models);

/// How check_cluster's messages name the two sizes: paraflex-sim's flags, or a function's arguments.
struct cluster_names {
  std::string_view prefix, gpus, per_node;
};
inline constexpr cluster_names sim_flag_names{"", "--gpus", "--gpus-per-node"};
inline constexpr cluster_names cluster_arg_names{"Cluster: ", "gpus", "gpus_per_node"};

/// paraflex-sim's --gpus / --gpus-per-node rules (each 1 to 65536, gpus_per_node <= gpus, every node
/// whole) with its messages as ValueError; TypeError naming `fn` for a non-int.
struct cluster_size {
  int gpus = 0;
  int per_node = 0;  ///< default: gpus (one node)
};
[[nodiscard]] cluster_size check_cluster(py::handle gpus, py::handle gpus_per_node, std::string_view fn, const cluster_names& names = sim_flag_names);

/// paraflex-sim's --seed (a uint64), with its message; TypeError naming `fn` for a non-int.
[[nodiscard]] std::uint64_t seed_arg(py::handle seed, std::string_view fn);

/// paraflex-sim's --jitter / --fail-rate / --fail-device / --straggler, with its messages.
[[nodiscard]] paraflex::simulation_faults make_faults(double jitter, double fail_rate, const std::vector<std::string>& fail_devices,
                                                      const std::vector<std::string>& stragglers, int gpus);

/// Whether `p` is given as a path: str, bytes or os.PathLike.
[[nodiscard]] bool is_path(py::handle p);

/// A path (is_path) -> its text; None -> "" (embedded default); TypeError naming `what` otherwise.
[[nodiscard]] std::string path_or_empty(py::handle p, const char* what);

/// path_or_empty for what paraflex-sim takes as `flag`: an empty path (an unset variable, say) is the
/// flag's "empty value" error, never the default that None asks for.
[[nodiscard]] std::string flag_path(py::handle p, const char* what, std::string_view flag);

}  // namespace paraflex_python
