// simulate_cells (paraflex/sim/cells.hpp): a cluster served as independent cells, one policy each.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bundled_data.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/sim/cells.hpp"
#include "paraflex/sim/chrome_trace.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

struct bundled {
  const profile_cost_model& cost;
  const workload& w;
};

// The bundled default workload (300 FLUX requests) and profile.
bundled bundled_inputs() { return {paraflex_test::bundled_cost(), paraflex_test::bundled_workload()}; }

// Everything of the metrics but the host timings (outside the determinism contract).
void check_same_figures(const run_metrics& a, const run_metrics& b) {
  CHECK(a.requests == b.requests);
  CHECK(a.completed == b.completed);
  CHECK(a.dropped == b.dropped);
  CHECK(a.slo_attainment == b.slo_attainment);
  CHECK(a.latency_s.mean == b.latency_s.mean);
  CHECK(a.latency_s.p99 == b.latency_s.p99);
  CHECK(a.makespan_s == b.makespan_s);
  CHECK(a.gpu_busy_s == b.gpu_busy_s);
  CHECK(a.utilization == b.utilization);
  CHECK(a.migrations == b.migrations);
  CHECK(a.dropped_by_reason == b.dropped_by_reason);
  CHECK(a.per_class.size() == b.per_class.size());
  CHECK(a.decisions == b.decisions);
}

run_metrics run_cells(const workload& w, const cluster& c, const std::string& spec, const simulation_options& o, int cells, int threads) {
  const auto& in = bundled_inputs();
  return simulate_cells(w, c, in.cost, [&] { return paraflex_test::builtin_policies(c.gpus / cells).make(spec).value_or_throw(); }, spec, o,
                        cell_options{.cells = cells, .threads = threads});
}

// Random draws on: jittered durations and failed tasks.
simulation_options noisy(std::uint64_t seed, double jitter, double fail_rate = 0) {
  simulation_options o;
  o.seed = seed;
  o.faults.jitter = jitter;
  o.faults.fail_rate = fail_rate;
  return o;
}

}  // namespace

TEST_CASE("a cluster run as one cell gives exactly what simulate gives", "[sim][cells]") {
  const auto& in = bundled_inputs();
  const cluster c{8, 4, "l20-inferred"};
  const simulation_options o = noisy(5, 0.1, 0.02);
  for (const char* spec : {"slo-aware", "round-based", "static:2"}) {
    INFO(spec);
    auto policy = paraflex_test::builtin_policies(8).make(spec).value_or_throw();
    const run_metrics whole = simulate(in.w, c, in.cost, policy, spec, o);
    check_same_figures(run_cells(in.w, c, spec, o, 1, 1), whole);
  }
}

TEST_CASE("cells give the same figures whatever the number of threads that run them", "[sim][cells][threads]") {
  const auto& in = bundled_inputs();
  const cluster c{8, 2, "l20-inferred"};
  simulation_options o = noisy(11, 0.2, 0.05);
  o.faults.device_failures.push_back({5, 20'000'000});
  const run_metrics one = run_cells(in.w, c, "slo-aware", o, 4, 1);
  for (int threads : {2, 4, 0}) {
    INFO(threads << " threads");
    check_same_figures(run_cells(in.w, c, "slo-aware", o, 4, threads), one);
  }
  CHECK(one.completed + one.dropped == in.w.requests.size());
}

TEST_CASE("each cell runs its requests as they would run alone on a cluster of the cell's size", "[sim][cells][threads]") {
  const auto& in = bundled_inputs();
  const cluster c{8, 2, "l20-inferred"};
  simulation_options o = noisy(3, 0.1);
  o.faults.device_failures.push_back({3, 10'000'000});  // device 1 of cell 1 (cells of 2)
  const int cells = 4;
  std::vector<int> on_time_by_cell(cells, 0);
  const auto cell_of = round_robin_cells(in.w, cells);
  const run_metrics together = simulate_cells(
      in.w, c, in.cost, [] { return paraflex_test::builtin_policies(2).make("slo-aware").value_or_throw(); }, "slo-aware", o, cell_options{.cells = cells, .threads = 2},
      [&](std::size_t i, const request_record& r) { on_time_by_cell[static_cast<std::size_t>(cell_of[i])] += met_slo(r) ? 1 : 0; });
  std::size_t on_time = 0, completed = 0;
  std::uint64_t migrations = 0;
  for (int k = 0; k < cells; ++k) {
    INFO("cell " << k);
    workload part;
    part.source = "<cell>";
    for (std::size_t i = 0; i < in.w.requests.size(); ++i) {
      if (cell_of[i] == k) part.requests.push_back(in.w.requests[i]);
    }
    auto policy = paraflex_test::builtin_policies(2).make("slo-aware").value_or_throw();
    const run_metrics alone = simulate(part, cluster{2, 2, "l20-inferred"}, in.cost, policy, "slo-aware", cell_simulation_options(o, 2, k));
    const auto n = static_cast<double>(part.requests.size());
    CHECK(static_cast<int>(alone.slo_attainment.value() * n + 0.5) == on_time_by_cell[static_cast<std::size_t>(k)]);
    on_time += static_cast<std::size_t>(alone.slo_attainment.value() * n + 0.5);
    completed += alone.completed;
    migrations += alone.migrations;
  }
  CHECK(together.completed == completed);
  CHECK(together.migrations == migrations);
  CHECK(static_cast<std::size_t>(together.slo_attainment.value() * static_cast<double>(in.w.requests.size()) + 0.5) == on_time);
  // Utilization is over the whole cluster: busy device-seconds / (8 x makespan).
  CHECK(together.utilization == Approx(together.gpu_busy_s / (8.0 * together.makespan_s)));
}

// One Chrome trace of a run in cells: each cell's recorder, on its own devices of the whole cluster,
// appended in cell order.
namespace {
std::string cells_trace(const workload& w, const cluster& c, const simulation_options& o, int cells, int threads) {
  const auto& in = bundled_inputs();
  std::vector<chrome_trace_recorder> per_cell(static_cast<std::size_t>(cells));
  (void)simulate_cells(
      w, c, in.cost, [&] { return paraflex_test::builtin_policies(c.gpus / cells).make("slo-aware").value_or_throw(); }, "slo-aware", o,
      cell_options{.cells = cells, .threads = threads}, [](std::size_t, const request_record&) {},
      [&](int k, auto& sched) { per_cell[static_cast<std::size_t>(k)].attach(sched, cell_first_device(c, cells, k)); });
  chrome_trace_recorder all;
  for (auto& t : per_cell) all.append(std::move(t));
  std::ostringstream out;
  all.write(out, c.gpus);
  return out.str();
}

// The same run written as it goes (cell 0 to the file, the others held until finish()).
std::string cells_trace_file(const workload& w, const cluster& c, const simulation_options& o, int cells, int threads) {
  const auto& in = bundled_inputs();
  const std::string path = (std::filesystem::temp_directory_path() / fmt::format("paraflex_cells_trace_{}.json", threads)).string();
  {
    chrome_trace_file file(path, c.gpus, cells);
    (void)simulate_cells(
        w, c, in.cost, [&] { return paraflex_test::builtin_policies(c.gpus / cells).make("slo-aware").value_or_throw(); }, "slo-aware", o,
        cell_options{.cells = cells, .threads = threads}, [](std::size_t, const request_record&) {},
        [&](int k, auto& sched) { file.attach(sched, k, cell_first_device(c, cells, k)); });
    file.finish();
  }
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::filesystem::remove(path);
  return bytes;
}
}  // namespace

TEST_CASE("a trace of a run in cells shows each cell's tasks on that cell's devices, as the cell alone records them", "[sim][cells][threads]") {
  const auto& in = bundled_inputs();
  const cluster c{8, 2, "l20-inferred"};
  const simulation_options o = noisy(5, 0.1, 0.02);
  const int cells = 4;
  CHECK(cell_first_device(c, cells, 0) == 0);
  CHECK(cell_first_device(c, cells, 3) == 6);
  const std::string traced = cells_trace(in.w, c, o, cells, 2);
  CHECK(cells_trace(in.w, c, o, cells, 1) == traced);  // the file does not depend on the threads
  CHECK(cells_trace_file(in.w, c, o, cells, 2) == traced);  // written as it goes: the same bytes

  // The same as each cell's requests alone on 2 GPUs, recorded on the cell's devices, cell after cell.
  const auto cell_of = round_robin_cells(in.w, cells);
  chrome_trace_recorder expected;
  for (int k = 0; k < cells; ++k) {
    workload part;
    part.source = "<cell>";
    for (std::size_t i = 0; i < in.w.requests.size(); ++i) {
      if (cell_of[i] == k) part.requests.push_back(in.w.requests[i]);
    }
    auto policy = paraflex_test::builtin_policies(2).make("slo-aware").value_or_throw();
    chrome_trace_recorder alone;
    (void)simulate(part, cluster{2, 2, "l20-inferred"}, in.cost, policy, "slo-aware", cell_simulation_options(o, 2, k),
                   [&](auto& sched) { alone.attach(sched, static_cast<device_id>(2 * k)); });
    expected.append(std::move(alone));
  }
  std::ostringstream out;
  expected.write(out, 8);
  CHECK(out.str() == traced);

  // Every request's slices lie on the two GPUs of its cell, and every GPU of the cluster has some.
  std::map<std::string, int> cell_by_id;
  for (std::size_t i = 0; i < in.w.requests.size(); ++i) cell_by_id[in.w.requests[i].id] = cell_of[i];
  const auto doc = nlohmann::json::parse(traced);
  std::set<int> busy;
  std::size_t slices = 0;
  for (const auto& e : doc.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    const int gpu = e.at("tid").get<int>();
    const int cell = cell_by_id.at(e.at("args").at("request").get<std::string>());
    INFO("request " << e.at("args").at("request") << " on GPU " << gpu);
    CHECK(gpu / 2 == cell);
    busy.insert(gpu);
    ++slices;
  }
  CHECK(slices > 0);
  CHECK(busy == std::set<int>{0, 1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("requests go to the cells round robin in arrival order, ties in workload order", "[sim][cells]") {
  workload w;
  for (tick t : {30, 10, 20, 10, 0}) {
    request_spec r;
    r.arrival = t;
    w.requests.push_back(r);
  }
  // Arrival order: position 4 (t 0), 1 and 3 (t 10, in workload order), 2 (t 20), 0 (t 30).
  CHECK(round_robin_cells(w, 2) == std::vector<int>{0, 1, 1, 0, 0});
  CHECK(round_robin_cells(w, 3) == std::vector<int>{1, 1, 0, 2, 0});
  CHECK(round_robin_cells(w, 1) == std::vector<int>(5, 0));
}

TEST_CASE("a cut into cells must be equal cells of whole nodes, or equal parts of one node", "[sim][cells]") {
  CHECK_FALSE(check_cells(cluster{1024, 8, "g"}, 16).has_value());
  CHECK_FALSE(check_cells(cluster{1024, 8, "g"}, 128).has_value());
  CHECK_FALSE(check_cells(cluster{8, 8, "g"}, 4).has_value());  // one node in four parts of 2
  CHECK(cell_topology(cluster{8, 8, "g"}, 4).gpus_per_node == 2);
  CHECK(cell_topology(cluster{1024, 8, "g"}, 16).gpus == 64);
  CHECK(cell_topology(cluster{1024, 8, "g"}, 16).gpus_per_node == 8);
  for (const auto& [c, cells, says] : {std::tuple{cluster{8, 8, "g"}, 3, "do not split into 3 equal cells"},
                                      std::tuple{cluster{8, 8, "g"}, 0, "at least one cell"},
                                      std::tuple{cluster{8, 8, "g"}, 16, "at least one GPU"},
                                      std::tuple{cluster{24, 6, "g"}, 6, "cut nodes of 6 unevenly"}}) {
    const auto e = check_cells(c, cells);
    REQUIRE(e.has_value());
    CHECK(e->file == "--cells");
    CHECK_THAT(e->message, Catch::Contains(says));
  }
}

TEST_CASE("a fault keeps its device: it falls in that device's cell, renumbered, and nowhere else", "[sim][cells]") {
  simulation_options o;
  o.seed = 42;
  o.faults.device_failures = {{9, 100}, {2, 200}};
  o.faults.stragglers = {{15, 300, 2.0}};
  const simulation_options c0 = cell_simulation_options(o, 8, 0), c1 = cell_simulation_options(o, 8, 1);
  CHECK(c0.seed == 42);  // cell 0 draws what the whole cluster would
  CHECK(c1.seed != c0.seed);
  REQUIRE(c0.faults.device_failures.size() == 1);
  CHECK(c0.faults.device_failures[0].device == 2);
  REQUIRE(c1.faults.device_failures.size() == 1);
  CHECK(c1.faults.device_failures[0].device == 1);
  CHECK(c1.faults.device_failures[0].at == 100);
  CHECK(c0.faults.stragglers.empty());
  REQUIRE(c1.faults.stragglers.size() == 1);
  CHECK(c1.faults.stragglers[0].device == 7);
}

TEST_CASE("a policy that cannot run a request on a cell is an input error that names the cell size", "[sim][cells]") {
  const auto& in = bundled_inputs();
  try {
    const auto make = [] { return paraflex_test::builtin_policies(16).make("static:4").value_or_throw(); };
    (void)simulate_cells(in.w, cluster{16, 8, "l20-inferred"}, in.cost, make, "static:4", {}, cell_options{.cells = 8});  // cells of 2 GPUs
    FAIL("static:4 ran on cells of 2 GPUs");
  } catch (const input_exception& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("cells of 2 GPUs"));
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
}

TEST_CASE("progress over cells counts the requests ended in every cell, and stops before the last one ends", "[sim][cells][threads]") {
  const auto& in = bundled_inputs();
  simulation_options o;
  o.progress_interval_s = 0;  // report at every chance
  std::vector<std::size_t> seen;
  o.progress = [&](const simulation_progress& p) {
    CHECK(p.total == in.w.requests.size());
    CHECK(p.label == "slo-aware");
    CHECK(p.now > 0);  // the simulated time of the cell reporting (a finished cell does not report)
    seen.push_back(p.ended);
  };
  SECTION("on one thread the cells run one after another") {
    (void)run_cells(in.w, cluster{8, 2, "l20-inferred"}, "slo-aware", o, 4, 1);
    REQUIRE(seen.size() > 4);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(seen.back() < in.w.requests.size());
    CHECK(seen.back() > in.w.requests.size() / 2);  // the last cell's reports count the three cells before it
  }
  SECTION("on two threads reports come one at a time and their counts only grow") {
    (void)run_cells(in.w, cluster{8, 2, "l20-inferred"}, "slo-aware", o, 4, 2);
    REQUIRE(seen.size() > 4);
    CHECK(std::is_sorted(seen.begin(), seen.end()));  // every count is summed under the lock that reports it
    CHECK(seen.back() < in.w.requests.size());
  }
}
