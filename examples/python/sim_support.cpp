// examples/python/sim_support.cpp - see sim_support.hpp.
#include "sim_support.hpp"

#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/cost/profile.hpp"
#include "paraflex/sim/fault_flags.hpp"
#include "py_args.hpp"

namespace paraflex_python {

using namespace paraflex;

namespace {

// The name a list of rows has while the CSV reader reads it; errors mentioning it are renamed.
const char* const rows_source = "<workload rows>";
// Columns of formats §1, in the order the rows are written.
const char* const columns[] = {"arrival_s", "request_id", "model", "height", "width", "frames", "steps", "slo_s", "priority", "class"};

[[noreturn]] void row_error(std::size_t i, const std::string& column, const std::string& message) {
  throw input_exception(input_error{fmt::format("workload[{}]", i), 0, column, message});
}

// An input_error about the rows: "workload[i]: column 'x': message" instead of a file and line.
input_error rename(const input_error& e) {
  if (e.file != rows_source) return e;
  input_error r = e;
  if (e.line >= 2) {
    r.file = fmt::format("workload[{}]", e.line - 2);  // line 1 is the header
  } else {
    r.file = "workload";
  }
  r.line = 0;
  return r;
}

}  // namespace

void input_failure(const std::string& message) { throw py::value_error(message); }

bool is_path(py::handle p) { return PyUnicode_Check(p.ptr()) || PyBytes_Check(p.ptr()) || py::hasattr(p, "__fspath__"); }

std::string path_or_empty(py::handle p, const char* what) {
  if (p.is_none()) return {};
  if (is_path(p)) {
    // os.fspath: str or bytes (the file system's bytes, passed on as they are), else TypeError.
    py::object s = py::module_::import("os").attr("fspath")(p);
    if (PyBytes_Check(s.ptr())) return std::string(py::bytes(s));
    return s.cast<std::string>();
  }
  throw py::type_error(std::string(what) + " must be a path (str, bytes or os.PathLike) or None, got " + type_name(p));
}

std::string flag_path(py::handle p, const char* what, std::string_view flag) {
  std::string path = path_or_empty(p, what);
  if (path.empty() && !p.is_none()) input_failure(fmt::format("{}: empty value", flag));
  return path;
}

workload workload_from_rows(py::handle rows, const std::vector<std::string>& known_models) {
  if (!py::isinstance<py::sequence>(rows) || py::isinstance<py::str>(rows)) {
    throw py::type_error("workload must be a path, None, or a list of dicts; got " + type_name(rows));
  }
  const auto seq = py::reinterpret_borrow<py::sequence>(rows);
  if (py::len(seq) == 0) throw input_exception(input_error{"workload", 0, "", "no requests: the list is empty"});
  std::ostringstream csv;
  for (std::size_t c = 0; c < std::size(columns); ++c) csv << (c ? "," : "") << columns[c];
  csv << '\n';
  std::unordered_map<std::string, std::size_t> ids;  // id -> first row
  for (std::size_t i = 0; i < py::len(seq); ++i) {
    py::object row = seq[i];
    if (!py::isinstance<py::dict>(row)) throw py::type_error(fmt::format("workload[{}] must be a dict, got {}", i, type_name(row)));
    const auto d = py::reinterpret_borrow<py::dict>(row);
    for (auto [k, v] : d) {
      const std::string key = py::str(k);
      bool known = false;
      for (const char* c : columns) known = known || key == c;
      if (!known) row_error(i, "", fmt::format("unknown column '{}' (known: {})", key, fmt::join(columns, ", ")));
    }
    std::string id;
    for (std::size_t c = 0; c < std::size(columns); ++c) {
      if (c) csv << ',';
      const char* name = columns[c];
      std::string text;
      if (d.contains(name) && !d[name].is_none()) {
        py::object v = d[name];
        text = arg<std::string>(py::str(v), fmt::format("workload[{}]", i), fmt::format("column '{}'", name));
        if (text.find_first_of("\r\n") != std::string::npos) row_error(i, name, "line breaks are not allowed");
        // Refused as in a file, where the CSV reader would take it for UTF-16 text.
        if (text.find('\0') != std::string::npos) row_error(i, name, "NUL characters are not allowed");
      }
      if (std::string_view(name) == "request_id") {
        if (text.empty()) text = std::to_string(i);  // default: the row's index in the list
        const auto [it, inserted] = ids.emplace(text, i);
        if (!inserted) row_error(i, name, fmt::format("duplicate request_id '{}' (first used in workload[{}])", text, it->second));
      }
      workload_csv_detail::write_text(csv, text);
    }
    csv << '\n';
  }
  std::istringstream in(csv.str());
  auto w = read_workload_csv(in, rows_source, known_models);
  if (!w) throw input_exception(rename(w.error()));
  return std::move(w).value();
}

paraflex_bench::sim_inputs load_inputs(py::handle workload_arg, py::handle profile, const std::string& gpu_arg, int gpus, int max_degree) {
  const std::string profile_file = flag_path(profile, "profile", "--profile");
  if (workload_arg.is_none() || is_path(workload_arg)) {
    return paraflex_bench::load_sim_inputs(flag_path(workload_arg, "workload", "--workload"), profile_file, gpu_arg, gpus, max_degree);
  }
  // Rows: the same steps as load_sim_inputs, with the workload read from the rows.
  return paraflex_bench::load_sim_inputs_with(
      profile_file, gpu_arg, gpus, max_degree, [&](const std::vector<std::string>& known_models) { return workload_from_rows(workload_arg, known_models); },
      rename);
}

cost_inputs load_cost(py::handle profile, const std::string& gpu_arg) {
  std::string gpu = gpu_arg;
  profile_table table = paraflex_bench::load_profile_table(flag_path(profile, "profile", "--profile"));
  paraflex_bench::check_gpu_type(table, gpu);
  if (gpu.empty()) gpu = default_gpu_for(table, {}, table.source).value_or_throw();
  auto cost = profile_cost_model::from_profile(table, gpu).value_or_throw();
  return cost_inputs{std::move(table), std::move(gpu), std::move(cost)};
}

cluster_size check_cluster(py::handle gpus_arg, py::handle per_node_arg, std::string_view fn, const cluster_names& names) {
  // CLI11's range message, also for an int beyond 32 bits.
  auto size = [&](py::handle v, std::string_view arg_name, std::string_view name) {
    const auto n = try_arg<int>(v, fn, arg_name);
    if (!n || *n < 1 || *n > max_cluster_gpus) {
      input_failure(fmt::format("{}{}: Value {} not in range 1 to {}", names.prefix, name, std::string(py::str(v)), max_cluster_gpus));
    }
    return *n;
  };
  const int gpus = size(gpus_arg, "gpus", names.gpus);
  if (per_node_arg.is_none()) return {gpus, gpus};
  const int per_node = size(per_node_arg, "gpus_per_node", names.per_node);
  if (per_node > gpus) input_failure(fmt::format("{}{} {} exceeds {} {}", names.prefix, names.per_node, per_node, names.gpus, gpus));
  if (gpus % per_node != 0) {  // paraflex-sim: nodes are whole
    int divisor = per_node;
    while (gpus % divisor != 0) --divisor;
    input_failure(fmt::format("{0}{1} {2} is not a multiple of {3} {4}: every node must be whole (e.g. {1} {5} or {3} {6})", names.prefix, names.gpus,
                              gpus, names.per_node, per_node, (gpus / per_node + 1) * per_node, divisor));
  }
  return {gpus, per_node};
}

std::uint64_t seed_arg(py::handle seed, std::string_view fn) {
  const auto s = try_arg<std::uint64_t>(seed, fn, "seed");
  if (!s) input_failure(fmt::format("--seed: expected an integer in [0, 18446744073709551615], got '{}'", std::string(py::str(seed))));
  return *s;
}

namespace {

std::string number_text(double v) { return py::str(py::float_(v)); }

}  // namespace

simulation_faults make_faults(double jitter, double fail_rate, const std::vector<std::string>& fail_devices,
                              const std::vector<std::string>& stragglers, int gpus) {
  if (!(jitter >= 0.0 && jitter <= 0.9)) input_failure(fmt::format("--jitter: Value {} not in range 0.000000 to 0.900000", number_text(jitter)));
  if (!(fail_rate >= 0.0 && fail_rate <= 1.0)) {
    input_failure(fmt::format("--fail-rate: Value {} not in range 0.000000 to 1.000000", number_text(fail_rate)));
  }
  simulation_faults faults;
  faults.jitter = jitter;
  faults.fail_rate = fail_rate;
  for (const auto& f : fail_devices) faults.device_failures.push_back(parse_device_failure(f, gpus).value_or_throw());
  for (const auto& f : stragglers) faults.stragglers.push_back(parse_straggler(f, gpus).value_or_throw());
  return faults;
}

}  // namespace paraflex_python
