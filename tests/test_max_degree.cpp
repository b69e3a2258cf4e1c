// A degree cap (profile_cost_model::set_max_degree, paraflex-sim --max-degree): the widest group a
// deployment runs one request on, whatever the cluster size and whatever the policy.
#include <catch2/catch.hpp>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bundled_data.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/sim/simulate.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

using paraflex_test::bundled_workload;

profile_cost_model capped_cost(int max_degree) {
  profile_cost_model cost = paraflex_test::bundled_cost();  // a copy: the cap is this run's
  cost.set_max_degree(max_degree);
  return cost;
}

struct widest_run {
  run_metrics metrics;
  std::size_t widest = 0;  // devices of the widest encode, step or decode launched
};

widest_run run_capped(const std::string& spec, int gpus, int max_degree) {
  const auto cost = capped_cost(max_degree);
  any_policy p = paraflex_test::builtin_policies(gpus).make(spec).value_or_throw();
  widest_run out;
  out.metrics = simulate(bundled_workload(), cluster{gpus, 8, "l20-inferred"}, cost, p, spec, simulation_options{}, [&](auto& sched) {
    sched.on_task_record([&](const task_record& t) {
      // A migration's record also holds the devices it left: only the tasks that compute are sized.
      if (t.task.kind != task_kind::migrate) out.widest = std::max(out.widest, t.devices.size());
    });
  });
  return out;
}

}  // namespace

TEST_CASE("a degree cap allows no degree above it, on top of the heads rule", "[cost][max_degree]") {
  std::istringstream in("model,gpu,height,width,frames,degree,step_s,heads\n"
                        "flux,l20,1024,1024,1,1,0.84,24\n"
                        "flux,l20,1024,1024,1,2,0.54,24\n");
  const auto table = read_profile_csv(in, "p.csv").value_or_throw();
  profile_cost_model cm(table, "l20");
  const request_shape s{"flux", 2048, 2048, 1};
  const auto allowed = [&] {
    std::vector<int> ks;
    for (int k = 1; k <= 64; ++k) {
      if (cm.allows_degree(s, k)) ks.push_back(k);
    }
    return ks;
  };
  CHECK(cm.max_degree() == 0);
  CHECK(allowed() == std::vector<int>{1, 2, 3, 4, 6, 8, 12, 24});
  cm.set_max_degree(7);
  CHECK(cm.max_degree() == 7);
  CHECK(allowed() == std::vector<int>{1, 2, 3, 4, 6});
  // The runtime's tables follow: nothing above the cap is priced, the fastest degree is within it.
  const shape_costs c = make_shape_costs(cm, s, 64);
  CHECK(c.allowed_degrees == std::vector<int>{1, 2, 3, 4, 6});
  CHECK(c.fastest_degree <= 6);
  CHECK_FALSE(c.allows(8));
  cm.set_max_degree(0);  // no cap again
  CHECK(allowed().back() == 24);
  CHECK_THROWS_AS(cm.set_max_degree(-1), std::invalid_argument);
}

TEST_CASE("no built-in policy launches a task wider than the cap, and every request still ends once", "[sim][max_degree]") {
  const std::size_t n = bundled_workload().requests.size();
  // Without a cap slo-aware widens past 4 on 16 GPUs, so the checks below can fail.
  REQUIRE(run_capped("slo-aware", 16, 0).widest > 4);
  for (const char* spec : {"slo-aware", "edf-best-fit", "throughput-first", "round-based", "rssp", "static:4"}) {
    INFO(spec);
    const widest_run r = run_capped(spec, 16, 4);
    CHECK(r.widest >= 1);
    CHECK(r.widest <= 4);
    CHECK(r.metrics.completed + r.metrics.dropped == n);
  }
}

TEST_CASE("a static degree above the cap is refused before the run, naming the cap", "[sim][max_degree]") {
  const auto cost = capped_cost(4);
  const auto e = check_fixed_degree(bundled_workload(), cost, 16, 8, "static:8");
  REQUIRE(e.has_value());
  CHECK_THAT(e->what(), Catch::Contains("policy 'static:8'") && Catch::Contains("degree cap") && Catch::Contains("allows 1..4 of 1..16"));
  CHECK_FALSE(check_fixed_degree(bundled_workload(), cost, 16, 4, "static:4").has_value());
}
