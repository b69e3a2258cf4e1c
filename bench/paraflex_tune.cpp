// paraflex-tune: searches a policy's parameters in the simulator and reports the best setting.
//
//   paraflex-tune --policy round-based --param round_steps=1,2,5,10 --param scale_up=on,off
//                 [--workload W.csv --profile P.csv --gpus 8 --gpu TYPE] [--objective slo|goodput|latency]
//
// Every combination of the --param values is simulated on the same input (a grid search; the run is
// deterministic, so one run per setting is exact). The policy's defaults are run too, and the gain of
// the best setting over them is reported. Every setting is checked before the first run: a bad value
// is an error naming its --param, not a failure after minutes of simulation.
// Exit status: 0 on success, 2 on bad usage or bad input ("paraflex-tune: error: ..." on stderr).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "builtin_policies.hpp"
#include "cli_parse.hpp"
#include "paraflex/core/csv.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/sim/cells.hpp"
#include "paraflex/sim/simulate.hpp"
#include "progress_line.hpp"
#include "sim_inputs.hpp"

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "paraflex-tune: error: %s\n", paraflex::printable(message).c_str());
  std::exit(2);
}

struct param_axis {
  std::string text;  ///< as given, for messages
  std::string key;
  std::vector<std::string> values;
};

/// "KEY=V1,V2,...": blanks around the key and each value are dropped. A ':' would smuggle a second
/// parameter into the policy spec ("round_steps=1:mid_round=admit"), so it is refused, as are empty and
/// repeated values.
param_axis parse_axis(const std::string& text) {
  const auto eq = text.find('=');
  const auto bad = [&](const std::string& why) { fail(fmt::format("--param '{}': {}", text, why)); };
  if (eq == std::string::npos) bad("expected KEY=V1,V2,...");
  param_axis a{text, std::string(paraflex::trim(std::string_view(text).substr(0, eq))), {}};
  if (a.key.empty()) bad("empty parameter name (expected KEY=V1,V2,...)");
  if (a.key.find_first_of(":,") != std::string::npos) bad(fmt::format("parameter name '{}' has a ':' or ','", a.key));
  const auto values = paraflex::policy_registry::split_list(text.substr(eq + 1));
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::string v(paraflex::trim(values[i]));
    if (v.empty()) bad(fmt::format("value {} of {} is empty (two commas in a row, or one at an end?)", i + 1, values.size()));
    if (v.find(':') != std::string::npos) bad(fmt::format("value '{}' has a ':' (one --param per parameter)", v));
    if (std::find(a.values.begin(), a.values.end(), v) != a.values.end()) bad(fmt::format("value '{}' is given twice", v));
    a.values.push_back(std::move(v));
  }
  return a;
}

// Larger is better for every objective (latency is negated).
double score(const paraflex::run_metrics& m, const std::string& objective) {
  if (objective == "goodput") return m.goodput_rps;
  if (objective == "latency") return m.latency_s.mean ? -*m.latency_s.mean : -1e300;
  return m.slo_attainment.value_or(0.0);
}

std::string describe(const paraflex::run_metrics& m) {
  return fmt::format("SLO {:>6}  mean {:>8}  p95 {:>8}  goodput {:.4f}/s  dropped {}",
                     m.slo_attainment ? fmt::format("{:.1f}%", 100 * *m.slo_attainment) : "-",
                     m.latency_s.mean ? fmt::format("{:.2f}s", *m.latency_s.mean) : "-",
                     m.latency_s.p95 ? fmt::format("{:.2f}s", *m.latency_s.p95) : "-", m.goodput_rps, m.dropped);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"paraflex-tune: grid search over a policy's parameters in the simulator.", "paraflex-tune"};
  std::string workload_file, profile_file, gpu, policy, objective = "slo";
  std::vector<std::string> params;
  int gpus = 8, gpus_per_node = 0, cells = 1, threads = 0, max_degree = 0;
  std::uint64_t seed = 0;
  double decision_gap_ms = 0;
  bool quiet = false;
  app.add_option("--policy", policy, "policy NAME[:KEY=VALUE...] whose other parameters are searched")->required()->check(paraflex_bench::non_empty);
  app.add_option("--param", params, "KEY=V1,V2,... values to try; repeatable, one per KEY (the grid is their product, at most 10,000)")
      ->required()
      ->check(paraflex_bench::non_empty);
  app.add_option("--workload", workload_file, "workload CSV; default: the embedded workload")->check(paraflex_bench::non_empty);
  app.add_option("--profile", profile_file, "profile CSV; default: the embedded profile")->check(paraflex_bench::non_empty);
  app.add_option("--gpus", gpus, "GPUs in the cluster")->capture_default_str()->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  app.add_option("--gpus-per-node", gpus_per_node, "GPUs per node (default: --gpus)")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  auto* cells_option = app.add_option("--cells", cells, "run each setting as paraflex-sim --cells does: equal cells of whole nodes, one policy each")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  app.add_option("--threads", threads, "with --cells: host threads running cells at once (default 0: one per host core)")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(0, 1024))
      ->needs(cells_option);  // as in paraflex-sim: without cells it would do nothing
  app.add_option("--max-degree", max_degree, "run no request on more GPUs than this, as paraflex-sim --max-degree (default: no cap)")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  app.add_option("--decision-gap-ms", decision_gap_ms, "call the policy at most once per this many milliseconds, as paraflex-sim --decision-gap-ms (default 0)")
      ->check(paraflex_bench::decision_gap_ms);
  app.add_option("--gpu", gpu, "GPU type (profile rows)")->check(paraflex_bench::non_empty);
  app.add_option("--seed", seed, "seed")->capture_default_str()->transform(paraflex_bench::uint64_digits);
  app.add_option("--objective", objective, "slo (attainment), goodput, or latency (mean)")
      ->capture_default_str()
      ->check(CLI::IsMember({"slo", "goodput", "latency"}));
  app.add_flag("--quiet", quiet, "no progress lines or notes on stderr");
  if (const auto status = paraflex_bench::parse_command_line(app, argc, argv, fail)) return *status;
  if (gpus_per_node == 0) gpus_per_node = gpus;
  const paraflex::tick decision_gap = paraflex_bench::decision_gap_ticks(decision_gap_ms);  // checked by the flag's validator
  if (gpus_per_node > gpus) fail(fmt::format("--gpus-per-node {} exceeds --gpus {}", gpus_per_node, gpus));
  if (gpus % gpus_per_node != 0) fail(fmt::format("--gpus {} is not a multiple of --gpus-per-node {}: every node must be whole", gpus, gpus_per_node));

  const paraflex::cluster whole{gpus, gpus_per_node, {}};
  if (auto e = paraflex::check_cells(whole, cells)) fail(e->what());
  const int policy_gpus = paraflex::cell_topology(whole, cells).gpus;  // what one policy instance schedules
  const auto registry = paraflex_bench::builtin_registry(policy_gpus);
  if (policy.find(',') != std::string::npos) fail(fmt::format("--policy '{}': one policy, not a list (run paraflex-tune once per policy)", policy));
  if (const std::string name = policy.substr(0, policy.find(':')); !registry.contains(name)) {
    fail(fmt::format("--policy '{}': unknown policy '{}' (known: {})", policy, name, fmt::join(registry.names(), ", ")));
  }
  // The parameters --policy sets (a positional value under its key: static:4 sets degree).
  auto parsed = registry.parse(policy);
  if (!parsed) fail(fmt::format("--policy '{}': {}", policy, parsed.error().message));
  const auto& policy_keys = parsed.value().values;

  // The grid, checked for syntax before any file is read.
  std::vector<param_axis> axes;
  std::size_t combos = 1;
  for (const auto& p : params) {
    axes.push_back(parse_axis(p));
    const auto& a = axes.back();
    for (std::size_t i = 0; i + 1 < axes.size(); ++i) {
      if (axes[i].key == a.key) fail(fmt::format("--param '{}': parameter '{}' is already searched by --param '{}'", a.text, a.key, axes[i].text));
    }
    if (policy_keys.contains(a.key)) {
      fail(fmt::format("--param '{}': parameter '{}' is already set in --policy '{}'", a.text, a.key, policy));
    }
    combos *= a.values.size();  // each factor <= 10,000 after the check below: no overflow
    if (combos > 10'000) fail("--param: more than 10,000 combinations");
  }
  try {
    auto in = paraflex_bench::load_sim_inputs(workload_file, profile_file, gpu, gpus, max_degree);
    const paraflex::cluster topology{gpus, gpus_per_node, in.gpu};
    if (objective != "latency" && std::none_of(in.workload.requests.begin(), in.workload.requests.end(),
                                               [](const paraflex::request_spec& r) { return r.has_deadline(); })) {
      fail(fmt::format("--objective {}: no request of {} has a deadline (slo_s), so every setting would score the same; "
                       "use --objective latency or a workload with SLOs",
                       objective, in.workload.source));
    }

    // Every setting of the grid, in odometer order (the first axis turns fastest).
    std::vector<std::string> specs;
    std::vector<std::size_t> index(axes.size(), 0);
    const auto spec_at = [&](const std::vector<std::size_t>& at) {
      std::string spec = policy;
      for (std::size_t a = 0; a < axes.size(); ++a) spec += ":" + axes[a].key + "=" + axes[a].values[at[a]];
      return spec;
    };
    for (std::size_t c = 0; c < combos; ++c) {
      specs.push_back(spec_at(index));
      for (std::size_t a = 0; a < axes.size() && ++index[a] == axes[a].values.size(); ++a) index[a] = 0;
    }
    // Checked before the first run (building a policy is cheap; a run may take minutes), each error
    // named by the flag that caused it: --policy alone, one --param's value, or the setting as a whole.
    const auto problem = [&](const std::string& spec) -> std::optional<std::string> {
      const auto in_cells = [&](const paraflex::input_error& e) { return cells > 1 ? paraflex::within_cells(e, whole, cells).message : e.message; };
      auto p = registry.make(spec);
      if (!p) return in_cells(p.error());
      if (auto e = paraflex::check_policy_degrees(in.workload, in.cost, policy_gpus, p.value())) return in_cells(*e);
      return std::nullopt;
    };
    const auto alone = problem(policy);
    if (const auto e = problem(specs.front())) {
      if (alone && *alone == *e) fail(fmt::format("--policy '{}': {}", policy, *e));
      for (const auto& a : axes) {
        if (e->find("'" + a.key + "'") != std::string::npos) fail(fmt::format("--param '{}': {}", a.text, *e));
      }
      fail(fmt::format("--param: setting '{}': {}", specs.front(), *e));
    }
    for (std::size_t a = 0; a < axes.size(); ++a) {
      std::vector<std::size_t> at(axes.size(), 0);
      for (std::size_t v = 1; v < axes[a].values.size(); ++v) {
        at[a] = v;
        if (const auto e = problem(spec_at(at))) fail(fmt::format("--param '{}': {}", axes[a].text, *e));
      }
    }
    for (const auto& spec : specs) {
      if (const auto e = problem(spec)) fail(fmt::format("--param: setting '{}': {}", spec, *e));
    }

    auto run = [&](const std::string& spec) {
      auto p = registry.make(spec).value_or_throw();
      paraflex::simulation_options o{.seed = seed, .faults = {}, .runtime = {}};
      o.runtime.min_decision_gap = decision_gap;
      if (!quiet) {
        o.progress = paraflex_bench::progress_printer("paraflex-tune");  // long runs only, at most 2 lines a second
      }
      if (cells > 1) {
        return paraflex::simulate_cells(in.workload, topology, in.cost, [&] { return registry.make(spec).value_or_throw(); }, spec, o,
                                        paraflex::cell_options{.cells = cells, .threads = threads});
      }
      return paraflex::simulate(in.workload, topology, in.cost, p, spec, o);
    };
    std::printf("workload %s (%zu requests), %d x %s%s%s%s, objective %s\n\n", paraflex::printable(in.workload.source).c_str(),
                in.workload.requests.size(), gpus, paraflex::printable(in.gpu).c_str(),
                cells > 1 ? fmt::format(" in {} cells of {}", cells, policy_gpus).c_str() : "",
                max_degree > 0 ? fmt::format(", groups of at most {}", max_degree).c_str() : "",
                paraflex_bench::decision_gap_note(decision_gap).c_str(),
                objective.c_str());
    // The policy as given (its defaults for the searched keys) is the baseline, when it runs alone.
    std::optional<paraflex::run_metrics> baseline;
    if (!alone) {
      baseline = run(policy);
      std::printf("%-48s %s\n", paraflex::printable(policy).c_str(), describe(*baseline).c_str());
      std::fflush(stdout);
    }
    std::string best_spec;
    std::optional<paraflex::run_metrics> best = baseline;
    if (baseline) best_spec = policy;
    for (const auto& spec : specs) {
      const auto m = run(spec);
      std::printf("%-48s %s\n", paraflex::printable(spec).c_str(), describe(m).c_str());
      std::fflush(stdout);
      if (!best || score(m, objective) > score(*best, objective)) best = m, best_spec = spec;  // ties: the first wins
    }
    std::printf("\nbest: %s\n      %s\n", paraflex::printable(best_spec).c_str(), describe(*best).c_str());
    if (!baseline) {
      std::printf("(no baseline: '%s' does not run without the searched parameters)\n", paraflex::printable(policy).c_str());
    } else if (objective == "slo") {
      std::printf("gain over the defaults: %+.1f points of SLO attainment\n",
                  100 * (best->slo_attainment.value_or(0) - baseline->slo_attainment.value_or(0)));
    } else if (objective == "goodput") {
      std::printf("gain over the defaults: %+.4f on-time completions/s\n", best->goodput_rps - baseline->goodput_rps);
    } else if (best->latency_s.mean && baseline->latency_s.mean) {
      std::printf("gain over the defaults: %.2f s less mean latency\n", *baseline->latency_s.mean - *best->latency_s.mean);
    }
    if (!quiet) {
      for (const auto& note : in.cost.extrapolation_notes()) std::fprintf(stderr, "paraflex-tune: note: %s\n", note.c_str());
    }
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) fail("cannot write to stdout");  // a full disk must not pass for a result
    return 0;
  } catch (const paraflex::input_exception& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "paraflex-tune: internal error: %s\n", e.what());
    return 1;
  }
}
