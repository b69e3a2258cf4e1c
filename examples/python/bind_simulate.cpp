// examples/python/bind_simulate.cpp - paraflex.simulate(): one policy on one workload in the
// simulator, returning one entry of paraflex-sim's JSON `results` (docs/formats.md §4). The inputs
// are loaded and the JSON is built by the same headers paraflex-sim uses (bench/sim_inputs.hpp,
// bench/sim_report.hpp), so the two cannot drift apart.
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "builtin_policies.hpp"
#include "decision_gap.hpp"
#include "output_clash.hpp"
#include "paraflex/sim/cells.hpp"
#include "paraflex/sim/chrome_trace.hpp"
#include "paraflex/sim/fluid_bound.hpp"
#include "paraflex/sim/generators.hpp"
#include "paraflex/sim/simulate.hpp"
#include "py_args.hpp"
#include "sim_report.hpp"
#include "sim_support.hpp"
#ifdef PARAFLEX_HAVE_CLP
#include "clp_bound.hpp"
#endif

namespace paraflex_python {

using namespace paraflex;

namespace {

// paraflex-sim --bound: the same computation, without the progress lines.
std::optional<double> upper_bound(const workload& w, const profile_cost_model& cost, int gpus, const simulation_faults& faults) {
  fluid_bound_options bo;
  bo.speed_factor = 1.0 - faults.jitter;
  for (const auto& st : faults.stragglers) bo.speed_factor = std::min(bo.speed_factor, st.factor);
  const fluid_workload fw = prepare_fluid_workload(std::span<const request_spec>(w.requests), cost, gpus, bo);
  std::optional<double> lp_bound;
#ifdef PARAFLEX_HAVE_CLP
  lp_bound = clp_fluid_bound(fw, bo).bound;
#endif
  return combine_bounds(fw, lp_bound, bo).slo_attainment;
}

// Clears the run's state pointer when the scheduler is gone, also when the run throws.
struct state_guard {
  call_slot& slot;
  ~state_guard() { slot.state = nullptr; }
};

// A wrong type raises TypeError naming the argument; a value out of range, paraflex-sim's message for its flag.
py::dict simulate_py(py::handle workload_arg, py::handle profile, typed<int> gpus_arg, typed<std::optional<std::string>> gpu_arg, py::handle policy,
                     typed<std::optional<int>> gpus_per_node, typed<std::uint64_t> seed_value, typed<bool> bound_arg, typed<double> jitter_arg,
                     typed<double> fail_rate_arg, typed<std::vector<std::string>> fail_devices_arg, typed<std::vector<std::string>> stragglers_arg,
                     py::handle trace_out, typed<std::optional<int>> cells_arg, typed<std::optional<int>> threads_arg, typed<std::optional<int>> max_degree_arg,
                     typed<double> decision_gap_arg) {
  const char* fn = "simulate";
  const nested_run nest("simulate");
  // The order of paraflex-sim: flags, inputs, policy, faults.
  const auto size = check_cluster(gpus_arg.value, gpus_per_node.value, fn);
  const int gpus = size.gpus;
  const std::uint64_t seed = seed_arg(seed_value.value, fn);
  const bool bound = arg(bound_arg, fn, "bound");
  const double jitter = arg(jitter_arg, fn, "jitter");
  const double fail_rate = arg(fail_rate_arg, fn, "fail_rate");
  const auto fail_devices = arg(fail_devices_arg, fn, "fail_devices");
  const auto stragglers = arg(stragglers_arg, fn, "stragglers");
  if (!(jitter >= 0.0 && jitter <= 0.9) || !(fail_rate >= 0.0 && fail_rate <= 1.0)) (void)make_faults(jitter, fail_rate, {}, {}, gpus);
  const auto gpu_given = arg(gpu_arg, fn, "gpu");
  if (gpu_given && gpu_given->empty()) input_failure("--gpu: empty value");  // None asks for the default
  const std::string gpu_name = gpu_given.value_or("");
  const std::string trace_file = flag_path(trace_out, "trace_out", "--trace-out");
  {  // writing the trace over an input file would destroy it (the trace is opened before the run)
    const std::string why = paraflex_bench::output_clash(
        {"trace_out", trace_file}, {{"workload", is_path(workload_arg) ? flag_path(workload_arg, "workload", "--workload") : std::string()},
                                    {"profile", flag_path(profile, "profile", "--profile")}});
    if (!why.empty()) input_failure(why);
  }
  // None: not given. threads without cells is paraflex-sim's "--threads requires --cells" (one policy
  // over the whole cluster runs on one thread, so threads would do nothing).
  const std::optional<int> cells_given = arg(cells_arg, fn, "cells");
  const std::optional<int> threads_given = arg(threads_arg, fn, "threads");
  if (threads_given && !cells_given) input_failure("--threads requires --cells");
  const int cells = cells_given.value_or(1);
  const int threads = threads_given.value_or(0);
  if (auto e = check_cells(cluster{gpus, size.per_node, {}}, cells)) input_failure(e->what());
  if (threads < 0 || threads > max_cell_threads) input_failure(fmt::format("--threads: Value {} not in range 0 to {}", threads, max_cell_threads));
  const std::optional<int> cap = arg(max_degree_arg, fn, "max_degree");  // None: no cap
  if (cap && (*cap < 1 || *cap > max_cluster_gpus)) input_failure(fmt::format("--max-degree: Value {} not in range 1 to {}", *cap, max_cluster_gpus));
  const int max_degree = cap.value_or(0);
  const tick decision_gap = paraflex_bench::decision_gap_ticks(arg(decision_gap_arg, fn, "decision_gap_ms"));
  // One policy instance per cell: only a built-in spec can be made again for each (a Python object is one instance).
  if (cells > 1 && !py::isinstance<py::str>(policy)) {
    throw py::value_error("simulate: cells > 1 needs a built-in policy spec (str), one instance per cell; got " + type_name(policy));
  }
  const int policy_gpus = gpus / cells;

  auto inputs = load_inputs(workload_arg, profile, gpu_name, gpus, max_degree);
  const workload& w = inputs.workload;
  const profile_cost_model& cost = inputs.cost;

  auto ctx = run_context::make();
  std::string label;
  any_policy p = [&] {
    try {
      return make_policy(policy, policy_gpus, ctx, label);
    } catch (const input_exception& e) {  // paraflex-sim's message: the cell is the limit
      if (cells > 1) throw input_exception(within_cells(e.error(), cluster{gpus, size.per_node, {}}, cells));
      throw;
    }
  }();
  const simulation_faults faults = make_faults(jitter, fail_rate, fail_devices, stragglers, gpus);
  const cluster topology{gpus, size.per_node, inputs.gpu};

  paraflex_bench::report report;
  report.workload_file = w.source;
  report.requests = w.requests.size();
  report.topology = topology;
  report.cells = cells;
  report.max_degree = max_degree;
  report.decision_gap = decision_gap;
  simulation_options options{seed, faults, {}};
  options.runtime.min_decision_gap = decision_gap;
  std::optional<double> bound_value;
  run_metrics m;
  // Opened before the run (a path that cannot be written fails at once) and written as it goes.
  std::optional<chrome_trace_file> trace;
  if (!trace_file.empty()) trace.emplace(trace_file, gpus, cells, "trace_out");
  {
    // Built-in policies run without the GIL; a Python policy takes it for its own calls only.
    gil_release nogil;
    if (bound) bound_value = upper_bound(w, cost, gpus, faults);
    state_guard guard{*ctx->slot};
    if (cells > 1) {
      const auto& registry = paraflex_bench::builtin_registry(policy_gpus);
      m = simulate_cells(
          w, topology, cost, [&] { return registry.make(label).value_or_throw(); }, label, options,
          cell_options{.cells = cells, .threads = threads}, [](std::size_t, const request_record&) {},
          [&](int c, auto& sched) {
            if (trace) trace->attach(sched, c, cell_first_device(topology, cells, c));
          });
    } else {
      m = simulate(w, topology, cost, p, label, options, [&](auto& sched) {
        ctx->slot->state = &sched.state();
        if (trace) trace->attach(sched);
      });
    }
  }
  if (trace) trace->finish();  // the other cells, in cell order, whatever thread ran which
  report.results.push_back(paraflex_bench::policy_result{std::move(m), bound_value});
  const std::string text = paraflex_bench::to_json(report);
  py::object doc = py::module_::import("json").attr("loads")(text);
  py::object entry = doc["results"][py::int_(0)];
  return entry.cast<py::dict>();
}

// paraflex-workload's reading of --arrivals trace:FILE (--trace-time, --steps trace:COLUMN[:N]).
py::dict read_trace_py(py::handle path, typed<std::optional<std::string>> time_column, typed<std::optional<std::string>> steps_column,
                       typed<std::optional<int>> missing_steps_arg) {
  const char* fn = "read_trace";
  if (path.is_none()) throw py::type_error("read_trace: path must be a path (str, bytes or os.PathLike), got None");
  const std::string file = path_or_empty(path, "read_trace: path");
  trace_columns columns;
  columns.time = arg(time_column, fn, "time_column").value_or("");
  columns.steps = arg(steps_column, fn, "steps_column").value_or("");
  columns.missing_steps = arg(missing_steps_arg, fn, "missing_steps");
  if (columns.missing_steps && columns.steps.empty()) input_failure("read_trace: missing_steps is for the empty cells of steps_column, which is not given");
  if (columns.missing_steps && *columns.missing_steps < 1) input_failure(fmt::format("read_trace: missing_steps must be >= 1, got {}", *columns.missing_steps));
  recorded_trace t = load_recorded_trace(file, columns).value_or_throw();
  py::dict out;
  out["times_s"] = py::cast(t.times_s);
  out["steps"] = columns.steps.empty() ? py::object(py::none()) : py::cast(t.steps);
  out["filled_steps"] = t.filled_steps;
  return out;
}

}  // namespace

void bind_simulate(py::module_& m) {
  m.def("read_trace", &read_trace_py, py::arg("path"), py::arg("time_column") = py::none(), py::arg("steps_column") = py::none(),
        py::arg("missing_steps") = py::none(),
        R"doc(Reads a recorded arrival trace as paraflex-workload --arrivals trace:FILE does (docs/formats.md §6).

Returns {"times_s": [...], "steps": [...] or None, "filled_steps": n}: arrival times in seconds, sorted
(ties in file order) and shifted to start at 0, and, with steps_column, each arrival's recorded steps.
path           str, bytes or os.PathLike: Azure CSV, Mooncake JSON lines, Hetu-DiT, one number per line, or
               any CSV with a time column
time_column    a CSV's time column (date-times or seconds); default: TIMESTAMP, arrival_s, gmt_create or
               arrival_time, any case
steps_column   a CSV column of step counts (e.g. "num_inference_steps"); missing_steps: the steps of a row
               whose cell is empty (else such a row is an error)
Bad input raises ValueError naming the file, line and column; a wrong type TypeError naming the argument.)doc");

  m.def("simulate", &simulate_py, py::arg("workload") = py::none(), py::arg("profile") = py::none(), py::arg("gpus") = 8,
        py::arg("gpu") = py::none(), py::arg("policy") = "slo-aware", py::arg("gpus_per_node") = py::none(), py::arg("seed") = 0,
        py::arg("bound") = false, py::arg("jitter") = 0.0, py::arg("fail_rate") = 0.0, py::arg("fail_devices") = std::vector<std::string>{},
        py::arg("stragglers") = std::vector<std::string>{}, py::arg("trace_out") = py::none(), py::arg("cells") = py::none(), py::arg("threads") = py::none(),
        py::arg("max_degree") = py::none(), py::arg("decision_gap_ms") = 0.0,
        R"doc(Runs one policy on one workload in the simulator; returns one entry of paraflex-sim's JSON "results".

workload      None (the embedded default), a CSV path (str, bytes or os.PathLike; docs/formats.md §1), or a list of dicts with
              the CSV's column names (request_id defaults to the row's index)
profile       None (the embedded default) or a profile CSV path (§2)
gpus, gpus_per_node (default gpus), gpu (default: the profile's only type for the workload's models)
policy        a built-in spec ("slo-aware", "static:4", "round-based:round_steps=5"), a ComposedPolicy,
              or any object with decide(view, out) and optional hooks
seed, jitter, fail_rate, fail_devices ["ID@SECONDS"], stragglers ["ID@SECONDS:FACTOR"], bound, trace_out,
cells, threads, max_degree (default None: no cap), decision_gap_ms (default 0: a decision at every event):
              as paraflex-sim's flags of the same names (cells > 1: a built-in spec, one instance per cell;
              cells None is one cell; threads needs cells, as --threads needs --cells)
Bad input raises ValueError with paraflex-sim's message, a wrong type TypeError naming the argument; an
invalid decision raises PolicyError; an exception raised by a Python policy propagates unchanged.)doc");
}

}  // namespace paraflex_python
