// paraflex-sim: runs scheduling policies side by side on a workload in the simulator
// (contract: formats.md §3-§5). With no arguments it runs the embedded default workload, profile
// and 8-GPU cluster and prints a comparison table.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "paraflex/core/output_file.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/sim/cells.hpp"
#include "paraflex/sim/chrome_trace.hpp"
#include "paraflex/sim/fault_flags.hpp"
#include "paraflex/sim/fluid_bound.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/sim/simulate.hpp"
#include "paraflex/sim/workload_csv.hpp"
#include "builtin_policies.hpp"
#include "cli_parse.hpp"
#include "output_clash.hpp"
#include "progress_line.hpp"
#include "sim_inputs.hpp"
#include "sim_report.hpp"
#ifdef PARAFLEX_HAVE_CLP
#include "clp_bound.hpp"
#endif

namespace {

using namespace paraflex;

constexpr int exit_bad_input = 2;
// An LP part with this many columns takes Clp tens of seconds or more (~80 s for 1.2 million here).
constexpr std::size_t large_lp_columns = 250000;

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "paraflex-sim: error: %s\n", message.c_str());
  std::exit(exit_bad_input);
}

// --policy: a comma-separated list of specs. Empty text, or an empty element ("a,,b", "a,"), is a
// usage error: it is a typo, not a request for the default list (which is what omitting --policy means).
std::vector<std::string> policy_list(const std::string& text) {
  if (text.empty()) fail("--policy: empty policy list (omit --policy to run every built-in policy; see --list-policies)");
  auto specs = policy_registry::split_list(text);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].empty()) fail(fmt::format("--policy '{}': policy {} of {} is empty (two commas in a row, or one at an end)", text, i + 1, specs.size()));
  }
  return specs;
}

// The lowest priority among requests with a deadline, when they have more than one level.
std::optional<int> lowest_of_several_priorities(const workload& w) {
  std::optional<int> lo, hi;
  for (const auto& r : w.requests) {
    if (!r.has_deadline()) continue;
    lo = lo ? std::min(*lo, r.priority) : r.priority;
    hi = hi ? std::max(*hi, r.priority) : r.priority;
  }
  return lo && *hi > *lo ? lo : std::nullopt;
}

#ifdef PARAFLEX_HAVE_CLP
// upper_bound.given_priorities: the fluid LP again, counting only schedules that serve on time every
// request above the lowest priority that this run served on time. A policy that serves the higher
// levels first is measured against what was left for the lowest level, not against a bound that
// would have traded those requests for cheaper ones. Never below the run (it is one such schedule);
// if Clp's answer says otherwise (numerical trouble), nothing is reported rather than a wrong figure.
std::optional<double> bound_given_priorities(const workload& w, fluid_workload fw, const fluid_bound_options& bo, const std::vector<char>& met,
                                             int lowest, const run_metrics& m, const std::string& spec, std::optional<double> plain_bound,
                                             bool quiet) {
  for (auto& r : fw.requests) r.must_serve = met[r.index] != 0 && w.requests[r.index].priority > lowest;
  if (!quiet && fw.with_deadline > 2000) std::fprintf(stderr, "paraflex-sim: bound: %s: solving the fluid LP again, given its priorities\n", spec.c_str());
  const clp_fluid_report solved = clp_fluid_bound(fw, bo, clp_options{});
  std::optional<double> b = combine_bounds(fw, solved.bound, bo).slo_attainment;
  // Those schedules are schedules: the plain bound holds for them too, and is the tighter one when Clp
  // stopped this LP early (its time limit) but finished the first.
  if (b && plain_bound) b = std::min(*b, *plain_bound);
  if (b && m.slo_attainment && *b < *m.slo_attainment - 1e-9) {
    if (!quiet) std::fprintf(stderr, "paraflex-sim: bound: %s: the bound given its priorities could not be certified (Clp: %s); not reported\n",
                             spec.c_str(), solved.optimal ? "optimal" : "not optimal");
    return std::nullopt;
  }
  if (!quiet && b) {
    std::fprintf(stderr, "paraflex-sim: bound: %s: given the higher-priority requests it served, %.4f%s\n", spec.c_str(), *b,
                 solved.optimal ? "" : " (Clp stopped early: a looser figure)");
  }
  return b;
}

// --bound-out: one row per request with a deadline, in workload order: the share of it that the fluid
// LP serves on time (0 for a request that cannot meet its deadline even alone). Which requests the
// bound gives up is what an admission policy is measured against (docs/results.md, section E).
void write_bound_out(output_file& file, const workload& w, const std::vector<std::pair<std::size_t, double>>& served) {
  std::vector<double> share(w.requests.size(), 0.0);
  for (const auto& [index, x] : served) share[index] = x;
  std::ostream& out = file.stream();
  out << "request_id,arrival_s,deadline_s,served\n";
  for (std::size_t j = 0; j < w.requests.size(); ++j) {
    const request_spec& r = w.requests[j];
    if (!r.has_deadline()) continue;
    workload_csv_detail::write_text(out, r.id);
    out << ',' << workload_csv_detail::seconds_text(r.arrival) << ',' << workload_csv_detail::seconds_text(r.deadline()) << fmt::format(",{:.6f}\n", share[j]);
  }
  file.commit();
}
#endif

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"paraflex-sim: compare GPU-parallelism scheduling policies for DiT serving in the simulator.\n"
               "With no arguments: the embedded default workload, profile and 8-GPU cluster."};
  std::string workload_file, profile_file, gpu_type, policies, format = "table", trace_out, bound_out;
  int gpus = 8, gpus_per_node = 0, cells = 1, threads = 0, max_degree = 0;
  std::uint64_t seed = 0;
  double fail_rate = 0, jitter = 0, decision_gap_ms = 0;
  bool bound = false, priority_bound = false, quiet = false, list = false;
  std::vector<std::string> fail_devices, stragglers;
  app.add_option("--workload", workload_file, "workload CSV (formats §1); default: the embedded workload")->check(paraflex_bench::non_empty);
  app.add_option("--profile", profile_file, "step-latency profile CSV (formats §2); default: the embedded profile")->check(paraflex_bench::non_empty);
  app.add_option("--gpus", gpus, "GPUs in the cluster")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  app.add_option("--gpus-per-node", gpus_per_node, "GPUs per node (default: --gpus, one node)")->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  auto* cells_option = app.add_option("--cells", cells,
                 "cut the cluster into this many equal cells of whole nodes, each with its own policy; requests go round robin "
                 "in arrival order (default 1: one policy over every GPU)")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  app.add_option("--threads", threads, "with --cells: host threads running cells at once (default 0: one per host core); the output is the same")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(0, 1024))
      ->needs(cells_option);  // without cells one policy runs the whole cluster on one thread: --threads would do nothing
  app.add_option("--max-degree", max_degree,
                 "run no request on more GPUs than this: the widest sequence-parallel group the deployment runs (default: "
                 "no cap; every degree the cost model allows up to a policy's GPUs)")
      ->transform(paraflex_bench::decimal_integer)->check(CLI::Range(1, 1 << 16));
  app.add_option("--decision-gap-ms", decision_gap_ms,
                 "call each policy at most once per this many milliseconds; events in between are decided together "
                 "(default 0: a decision at every event time)")
      ->check(paraflex_bench::decision_gap_ms);
  app.add_option("--gpu", gpu_type, "GPU type: selects profile rows (default: the only one the profile has for the workload's models)")->check(paraflex_bench::non_empty);
  auto* policy_option = app.add_option("--policy", policies, "policy or comma-separated list, NAME[:KEY=VALUE]... (default: every built-in)");
  app.add_option("--seed", seed, "seed for every random draw (jitter, faults)")->transform(paraflex_bench::uint64_digits);
  app.add_option("--format", format, "table or json")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--trace-out", trace_out, "write a Chrome trace (Perfetto) of the first policy's run")->check(paraflex_bench::non_empty);
  auto* bound_flag = app.add_flag("--bound", bound, "add an upper bound on SLO attainment to each result");
  app.add_option("--bound-out", bound_out, "with --bound: write the share of each request the fluid LP serves on time (CSV)")
      ->check(paraflex_bench::non_empty)
      ->needs(bound_flag);
  app.add_flag("--priority-bound", priority_bound,
               "with --bound and several priority levels: also bound each run given the higher-priority requests it served (one LP per policy)")
      ->needs(bound_flag);
  app.add_option("--fail-device", fail_devices, "lose device ID at SECONDS (ID@SECONDS); repeatable");
  app.add_option("--straggler", stragglers, "device ID runs FACTOR times slower from SECONDS (ID@SECONDS:FACTOR); repeatable");
  app.add_option("--fail-rate", fail_rate, "probability that a launched task fails")->check(paraflex_bench::finite_range(0.0, 1.0));
  app.add_option("--jitter", jitter, "task durations vary uniformly by +-JITTER (fraction)")->check(paraflex_bench::finite_range(0.0, 0.9));
  app.add_flag("--quiet", quiet, "no progress lines on stderr");
  app.add_flag("--list-policies", list, "list the built-in policies and exit");
  if (const auto status = paraflex_bench::parse_command_line(app, argc, argv, fail)) return *status;
  if (gpus_per_node == 0) gpus_per_node = gpus;
  const tick decision_gap = paraflex_bench::decision_gap_ticks(decision_gap_ms);  // checked by the flag's validator
  if (gpus_per_node > gpus) fail(fmt::format("--gpus-per-node {} exceeds --gpus {}", gpus_per_node, gpus));
  // Nodes are whole: a partial last node would be a different machine type the cost model knows nothing about.
  if (gpus % gpus_per_node != 0) {
    int divisor = gpus_per_node;
    while (gpus % divisor != 0) --divisor;
    fail(fmt::format("--gpus {} is not a multiple of --gpus-per-node {}: every node must be whole (e.g. --gpus {} or --gpus-per-node {})",
                     gpus, gpus_per_node, (gpus / gpus_per_node + 1) * gpus_per_node, divisor));
  }

  // An output that is also an input, or both outputs one file, would overwrite what the run reads
  // or writes (the trace is opened before the run).
  for (const auto& why : {paraflex_bench::output_clash({"--trace-out", trace_out}, {{"--workload", workload_file}, {"--profile", profile_file},
                                                                                      {"--bound-out", bound_out}}),
                          paraflex_bench::output_clash({"--bound-out", bound_out}, {{"--workload", workload_file}, {"--profile", profile_file}})}) {
    if (!why.empty()) fail(why);
  }

  const cluster whole{gpus, gpus_per_node, {}};
  if (auto e = check_cells(whole, cells)) fail(e->what());
  // What one policy instance schedules: a cell (the whole cluster without --cells).
  const int policy_gpus = cell_topology(whole, cells).gpus;
  policy_registry registry = paraflex_bench::builtin_registry(policy_gpus);
  if (list) {
    // A line per policy, then an indented line per parameter: KEY=DEFAULT and what it accepts.
    for (const auto& n : registry.names()) {
      std::printf("%-18s %s\n", n.c_str(), registry.summary(n).c_str());
      for (const auto& k : registry.parameters(n)) {
        const std::string setting = fmt::format("{}={}", k.key, k.default_value);
        if (k.accepted.empty()) std::printf("    %s\n", setting.c_str());
        else std::printf("    %-24s %s\n", setting.c_str(), k.accepted.c_str());
      }
    }
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) fail("cannot write to stdout");
    return 0;
  }

  try {
    auto inputs = paraflex_bench::load_sim_inputs(workload_file, profile_file, gpu_type, gpus, max_degree);
    const workload& w = inputs.workload;
    const profile_cost_model& cost = inputs.cost;
    gpu_type = inputs.gpu;

    const bool default_list = policy_option->count() == 0;
    std::vector<std::string> specs;
    std::vector<any_policy> built;
    for (const auto& s : default_list ? paraflex_bench::default_policy_list(policy_gpus) : policy_list(policies)) {
      auto made = registry.make(s);
      // e.g. static:K above a cell's GPUs: say that the cell is the limit
      if (!made && cells > 1) throw input_exception(within_cells(made.error(), whole, cells));
      any_policy p = std::move(made).value_or_throw();
      // static:K must be able to run every model at K (formats §5: it never drops): refuse before any
      // run - unless the user did not name it (the default list), then it is left out with a note.
      if (auto e = check_policy_degrees(w, cost, policy_gpus, p)) {
        if (!default_list) throw input_exception(cells > 1 ? within_cells(*e, whole, cells) : *e);
        if (!quiet) std::fprintf(stderr, "paraflex-sim: note: %s is left out of the default policy list: a model of the workload does not allow its degree\n", s.c_str());
        continue;
      }
      specs.push_back(s);
      built.push_back(std::move(p));
    }

    simulation_faults faults;
    faults.fail_rate = fail_rate;
    faults.jitter = jitter;
    for (const auto& f : fail_devices) faults.device_failures.push_back(parse_device_failure(f, gpus).value_or_throw());
    for (const auto& f : stragglers) faults.stragglers.push_back(parse_straggler(f, gpus).value_or_throw());

    const cluster topology{gpus, gpus_per_node, gpu_type};
    // --bound: computed once (it does not depend on the policy), reported with every result.
    std::optional<double> upper_bound;
    fluid_bound_options bo;
    bo.speed_factor = 1.0 - jitter;  // tasks may run this much faster than nominal
    for (const auto& st : faults.stragglers) bo.speed_factor = std::min(bo.speed_factor, st.factor);
    fluid_workload fw;
    // With priority levels, a policy that serves the higher levels first gives up requests the bound
    // (which counts requests, not levels) keeps: given_priorities is the bound for what it did serve.
    const std::optional<int> lowest_priority = priority_bound ? lowest_of_several_priorities(w) : std::nullopt;
#ifndef PARAFLEX_HAVE_CLP
    if (priority_bound) fail("--priority-bound needs the fluid LP: this paraflex-sim was built without COIN-OR Clp");
#endif
    if (priority_bound && !lowest_priority && !quiet) {
      std::fprintf(stderr, "paraflex-sim: note: --priority-bound: the requests with a deadline have one priority level; nothing to add to the bound\n");
    }
    if (bound) {
#ifdef PARAFLEX_HAVE_CLP
      // Opened before the LP is solved: a path that cannot be written fails at once, not minutes later.
      std::optional<output_file> bound_file;
      if (!bound_out.empty()) bound_file.emplace(bound_out, "--bound-out");
#endif
      fw = prepare_fluid_workload(std::span<const request_spec>(w.requests), cost, gpus, bo);
      std::optional<double> lp_bound;
#ifdef PARAFLEX_HAVE_CLP
      // A few thousand requests solve in seconds; beyond that it can take minutes: say so up front,
      // then how far it is, at most every 2 s.
      clp_options co;
      co.report_served = !bound_out.empty();
      if (!quiet && fw.with_deadline > 2000) {
        std::fprintf(stderr, "paraflex-sim: bound: solving the fluid LP of %zu requests; large workloads take minutes (Clp stops after %.0f s with a valid, looser bound)\n",
                     fw.with_deadline, co.max_seconds);
      }
      const auto bound_t0 = std::chrono::steady_clock::now();
      double next_line_s = 2.0;
      const clp_fluid_report solved = clp_fluid_bound(fw, bo, co, [&](const clp_progress& p) {
        if (quiet) return;
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - bound_t0).count();
        // A part this large takes Clp a minute or more, and no line comes while it solves: say so first.
        // (Many GPUs do this with few requests: each request gets a column per degree and interval.)
        if (p.part_columns >= large_lp_columns) {
          std::fprintf(stderr,
                       "paraflex-sim: bound: part %zu/%zu is a large LP (%zu requests, %zu rows x %zu columns); Clp may take minutes "
                       "(it stops after %.0f s more with a valid, looser bound)\n",
                       p.parts_done + 1, p.parts, p.part_requests, p.part_rows, p.part_columns, p.seconds_left);
          next_line_s = s + 2.0;
          return;
        }
        if (p.part_columns > 0 || s < next_line_s) return;
        next_line_s = s + 2.0;
        std::fprintf(stderr, "paraflex-sim: bound: %zu/%zu parts solved (%zu/%zu requests), %.1f s elapsed\n", p.parts_done, p.parts,
                     p.requests_done, fw.with_deadline, s);
      });
      lp_bound = solved.bound;
      if (bound_file) write_bound_out(*bound_file, w, solved.served);
      if (!quiet) {
        std::fprintf(stderr,
                     "paraflex-sim: bound: fluid LP of %zu/%zu requests in %zu independent parts: %zu rows x %zu columns, %zu nonzeros, "
                     "%zu intervals (largest part %zu columns), %zu count cuts in %d rounds; built in %.2f s, Clp %s in %.2f s "
                     "(%d iterations)\n",
                     solved.requests, fw.with_deadline, solved.parts, solved.rows, solved.cols, solved.nonzeros, solved.intervals,
                     solved.largest_part_cols, solved.count_cut_rows, solved.cut_rounds, solved.build_seconds,
                     solved.optimal ? "optimal" : "stopped early (bound from its duals)", solved.solve_seconds, solved.iterations);
        if (solved.coarsened_parts + solved.oversized_parts > 0) {
          std::fprintf(stderr,
                       "paraflex-sim: note: bound: %zu of %zu parts would have had more than %zu LP columns: %zu built with cut points "
                       "at least %.3g s apart, %zu counted by the capacity bound (a looser bound, still valid)\n",
                       solved.coarsened_parts + solved.oversized_parts, solved.parts, bo.max_columns, solved.coarsened_parts,
                       solved.coarsest_interval_s, solved.oversized_parts);
        }
      }
#else
      if (!bound_out.empty()) fail("--bound-out needs the fluid LP: this paraflex-sim was built without COIN-OR Clp");
      std::fprintf(stderr, "paraflex-sim: bound: built without COIN-OR Clp: no fluid LP, reporting the looser solver-free bounds\n");
#endif
      const fluid_bound_result b = combine_bounds(fw, lp_bound, bo);
      upper_bound = b.slo_attainment;
      if (!quiet) {
        auto num = [](const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("-"); };
        std::fprintf(stderr, "paraflex-sim: bound: per-request %s, capacity %s, fluid LP %s -> %s\n", num(b.per_request).c_str(),
                     num(b.capacity).c_str(), num(b.lp).c_str(), num(b.slo_attainment).c_str());
      }
    }
    if (bound && !quiet) {
      // The LP knows nothing of batched steps (docs/results.md section D): a batched run may beat it.
      for (const auto& s : specs) {
        const auto values = registry.parse(s).value_or_throw().values;  // make() accepted it: max_batch is an int
        if (const auto it = values.find("max_batch"); it != values.end() && std::atoi(it->second.c_str()) > 1) {
          std::fprintf(stderr, "paraflex-sim: note: --bound does not model batched steps: %s may exceed it\n", s.c_str());
        }
      }
    }
    paraflex_bench::report report;
    report.workload_file = w.source;
    report.requests = w.requests.size();
    report.topology = topology;
    report.cells = cells;
    report.max_degree = max_degree;
    report.decision_gap = decision_gap;
    simulation_options options{.seed = seed, .faults = faults, .runtime = {}};
    options.runtime.min_decision_gap = report.decision_gap;
    if (!quiet) {
      // Only runs longer than a couple of seconds say how far they are; at most 2 lines a second.
      options.progress = paraflex_bench::progress_printer("paraflex-sim");
    }
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const bool tracing = i == 0 && !trace_out.empty();
      // Opened before the run (a path that cannot be written fails at once) and written as it goes.
      std::optional<chrome_trace_file> trace;
      if (tracing) trace.emplace(trace_out, gpus, cells, "--trace-out");
      std::vector<char> met;  // by workload position: on time in this run (for given_priorities)
      if (lowest_priority) met.assign(w.requests.size(), 0);
      run_metrics m =
          cells > 1 ? simulate_cells(
                          w, topology, cost, [&] { return registry.make(specs[i]).value_or_throw(); }, specs[i], options,
                          cell_options{.cells = cells, .threads = threads},
                          [&](std::size_t position, const request_record& r) {
                            if (lowest_priority) met[position] = met_slo(r) ? 1 : 0;
                          },
                          [&](int c, auto& sched) {
                            if (tracing) trace->attach(sched, c, cell_first_device(topology, cells, c));
                          })
                    : simulate(w, topology, cost, built[i], specs[i], options, [&](auto& sched) {
                        if (tracing) trace->attach(sched);
                        // simulate() submits in workload order, so a request's handle is its position.
                        if (lowest_priority) sched.on_request_end([&met](const request_record& r) { met[r.handle] = met_slo(r) ? 1 : 0; });
                      });
      if (!quiet) {
        std::fprintf(stderr, "paraflex-sim: %s: %zu requests, %llu decisions, %.2f s\n", specs[i].c_str(), w.requests.size(),
                     static_cast<unsigned long long>(m.decisions), m.wall_s);
      }
      std::optional<double> given_priorities;
#ifdef PARAFLEX_HAVE_CLP
      if (lowest_priority) given_priorities = bound_given_priorities(w, fw, bo, met, *lowest_priority, m, specs[i], upper_bound, quiet);
#endif
      report.results.push_back(paraflex_bench::policy_result{std::move(m), upper_bound, given_priorities});
      if (tracing) trace->finish();  // the other cells, in cell order, whatever thread ran which
    }
    if (!quiet) {  // one line per cause of extrapolation, with a count (never one per shape and degree)
      for (const auto& note : cost.extrapolation_notes()) std::fprintf(stderr, "paraflex-sim: note: %s\n", note.c_str());
    }
    if (format == "json") std::cout << paraflex_bench::to_json(report) << '\n';
    else std::cout << paraflex_bench::to_table(report);
    if (!std::cout.flush()) fail("cannot write to stdout");  // a full disk must not pass for a result
    return 0;
  } catch (const input_exception& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "paraflex-sim: internal error: %s\n", e.what());
    return 1;
  }
}
