// paraflex-tune: searches a policy's parameters in the simulator and reports the best setting.
//
//   paraflex-tune --policy round-based --param round_steps=1,2,5,10 --param scale_up=on,off
//                 [--workload W.csv --profile P.csv --gpus 8 --gpu TYPE] [--objective slo|goodput|latency]
//
// Every combination of the --param values is simulated on the same input (a grid search; the run is
// deterministic, so one run per setting is exact). The policy's defaults are run too, and the gain of
// the best setting over them is reported.
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "builtin_policies.hpp"
#include "cli_parse.hpp"
#include "paraflex/sim/simulate.hpp"
#include "sim_inputs.hpp"

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "paraflex-tune: error: %s\n", message.c_str());
  std::exit(2);
}

struct param_axis {
  std::string key;
  std::vector<std::string> values;
};

param_axis parse_axis(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) fail(fmt::format("--param '{}': expected KEY=V1,V2,...", text));
  param_axis a{text.substr(0, eq), paraflex::policy_registry::split_list(text.substr(eq + 1))};
  for (const auto& v : a.values) {
    if (v.empty()) fail(fmt::format("--param '{}': empty value", text));
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
  CLI::App app{"paraflex-tune: grid search over a policy's parameters in the simulator."};
  std::string workload_file, profile_file, gpu, policy, objective = "slo";
  std::vector<std::string> params;
  int gpus = 8, gpus_per_node = 0;
  std::uint64_t seed = 0;
  app.add_option("--policy", policy, "policy NAME[:KEY=VALUE...] whose other parameters are searched")->required();
  app.add_option("--param", params, "KEY=V1,V2,... values to try; repeatable (the grid is their product)")->required();
  app.add_option("--workload", workload_file, "workload CSV; default: the embedded workload")->check(paraflex_bench::non_empty);
  app.add_option("--profile", profile_file, "profile CSV; default: the embedded profile")->check(paraflex_bench::non_empty);
  app.add_option("--gpus", gpus, "GPUs in the cluster")->check(CLI::Range(1, 1 << 16));
  app.add_option("--gpus-per-node", gpus_per_node, "GPUs per node (default: --gpus)")->check(CLI::Range(1, 1 << 16));
  app.add_option("--gpu", gpu, "GPU type (profile rows)")->check(paraflex_bench::non_empty);
  app.add_option("--seed", seed, "seed")->check(paraflex_bench::uint64_digits);
  app.add_option("--objective", objective, "slo (attainment), goodput, or latency (mean)")->check(CLI::IsMember({"slo", "goodput", "latency"}));
  if (const auto status = paraflex_bench::parse_command_line(app, argc, argv, fail)) return *status;
  if (gpus_per_node == 0) gpus_per_node = gpus;
  if (gpus_per_node > gpus) fail("--gpus-per-node exceeds --gpus");
  if (gpus % gpus_per_node != 0) fail(fmt::format("--gpus {} is not a multiple of --gpus-per-node {}: every node must be whole", gpus, gpus_per_node));
  try {
    auto in = paraflex_bench::load_sim_inputs(workload_file, profile_file, gpu, gpus);
    const auto registry = paraflex_bench::builtin_registry(gpus);
    const paraflex::cluster topology{gpus, gpus_per_node, in.gpu};
    std::vector<param_axis> axes;
    std::size_t combos = 1;
    for (const auto& p : params) {
      axes.push_back(parse_axis(p));
      combos *= axes.back().values.size();
      if (combos > 10'000) fail("--param: more than 10,000 combinations");
    }
    auto run = [&](const std::string& spec) {
      auto p = registry.make(spec).value_or_throw();
      paraflex::simulation_options o{.seed = seed, .faults = {}, .runtime = {}};
      o.progress = [](const paraflex::simulation_progress& pr) {  // long runs only, at most 2 lines a second
        if (pr.wall_s < 2.0) return;
        std::fprintf(stderr, "paraflex-tune: %.*s: %zu/%zu requests ended, simulated %.1f s, %.1f s elapsed\n", static_cast<int>(pr.label.size()),
                     pr.label.data(), pr.ended, pr.total, paraflex::to_seconds(pr.now), pr.wall_s);
      };
      return paraflex::simulate(in.workload, topology, in.cost, p, spec, o);
    };
    std::printf("workload %s (%zu requests), %d x %s, objective %s\n\n", in.workload.source.c_str(), in.workload.requests.size(),
                gpus, in.gpu.c_str(), objective.c_str());
    // The policy as given (its defaults for the searched keys) is the baseline, when it runs alone.
    std::optional<paraflex::run_metrics> baseline;
    if (registry.make(policy).has_value()) {
      baseline = run(policy);
      std::printf("%-48s %s\n", policy.c_str(), describe(*baseline).c_str());
    }
    std::string best_spec;
    std::optional<paraflex::run_metrics> best = baseline;
    if (baseline) best_spec = policy;
    std::vector<std::size_t> index(axes.size(), 0);
    for (std::size_t c = 0; c < combos; ++c) {
      std::string spec = policy;
      for (std::size_t a = 0; a < axes.size(); ++a) spec += ":" + axes[a].key + "=" + axes[a].values[index[a]];
      const auto m = run(spec);
      std::printf("%-48s %s\n", spec.c_str(), describe(m).c_str());
      std::fflush(stdout);
      if (!best || score(m, objective) > score(*best, objective)) best = m, best_spec = spec;
      for (std::size_t a = 0; a < axes.size() && ++index[a] == axes[a].values.size(); ++a) index[a] = 0;  // odometer
    }
    std::printf("\nbest: %s\n      %s\n", best_spec.c_str(), describe(*best).c_str());
    if (!baseline) {
      std::printf("(no baseline: '%s' does not run without the searched parameters)\n", policy.c_str());
    } else if (objective == "slo") {
      std::printf("gain over the defaults: %+.1f points of SLO attainment\n",
                  100 * (best->slo_attainment.value_or(0) - baseline->slo_attainment.value_or(0)));
    } else if (objective == "goodput") {
      std::printf("gain over the defaults: %+.4f on-time completions/s\n", best->goodput_rps - baseline->goodput_rps);
    } else if (best->latency_s.mean && baseline->latency_s.mean) {
      std::printf("gain over the defaults: %+.2f s mean latency\n", *best->latency_s.mean - *baseline->latency_s.mean);
    }
    return 0;
  } catch (const paraflex::input_exception& e) {
    fail(e.what());
  }
}
