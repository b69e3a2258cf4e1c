// Tests of the runtime, following its concepts: trajectory, resource, policy, executor, scheduler.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <queue>
#include <random>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/policy/static_degree.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/policy/placement.hpp"
#include "paraflex/core/output_file.hpp"
#include "paraflex/sim/chrome_trace.hpp"
#include "paraflex/sim/fault_flags.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/sim/simulate.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/testing/archetypes.hpp"
#include "paraflex/testing/invariants.hpp"
#include "progress_line.hpp"  // bench/: the tools' wording of a progress report
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

// Sublinear scaling like the real profiles: a fixed part plus tokens/k, slower beyond 4 for small shapes.
struct toy_cost {
  double step_seconds(const request_shape& s, int k) const {
    const double t = latent_tokens(s);
    return 0.02 + t * 2e-5 / k + (t < 2000 ? 0.01 * (k - 1) : 0.0);
  }
  bool allows_degree(const request_shape&, int k) const { return k >= 1; }
  double migration_seconds(const request_shape&, int, int, bool cross) const { return cross ? 0.004 : 0.001; }
};

struct heads_cost : toy_cost {  // only degrees dividing 6 allowed: 1, 2, 3, 6
  bool allows_degree(const request_shape&, int k) const { return 6 % k == 0; }
};

std::vector<request_spec> random_requests(std::uint64_t seed, int n, double mean_gap_s, bool deadlines = true) {
  std::mt19937_64 rng(seed);
  const int sizes[] = {256, 512, 1024, 2048};
  std::vector<request_spec> out;
  tick t = 0;
  for (int i = 0; i < n; ++i) {
    t += static_cast<tick>(static_cast<double>(rng() % 2000) / 1000.0 * mean_gap_s * 1e6);
    request_spec r;
    r.id = "r" + std::to_string(i);
    r.arrival = t;
    const int s = sizes[rng() % 4];
    r.shape = {"toy", s, s, 1};
    r.steps = 5 + static_cast<int>(rng() % 20);
    if (deadlines) r.slo = static_cast<tick>((1 + rng() % 10) * 1'000'000);
    r.class_label = std::to_string(s) + "px";
    out.push_back(r);
  }
  return out;
}

/// Runs `p`; with `checked`, the public invariant checker (paraflex/testing/invariants.hpp) watches
/// the run and every violation fails the test.
template <class P, class C = toy_cost>
std::vector<request_record> run_policy(P& p, const std::vector<request_spec>& reqs, cluster c, std::uint64_t seed = 0,
                                       simulation_faults faults = {}, bool checked = false) {
  C cost;
  simulated_executor ex(seed, faults);
  scheduler s(c, p, ex, cost);
  testing::invariant_checker chk;
  if (checked) chk.attach(s);
  for (const auto& r : reqs) s.submit(r);
  s.run();
  if (checked) {
    const auto v = chk.violations(s.state());
    INFO(testing::join_lines(v));
    REQUIRE(v.empty());
    REQUIRE(chk.tasks_observed() > 0);
  }
  return s.state().requests;
}

// Independent closed form: static:K with FCFS is a queue with floor(G/K) identical servers.
std::vector<tick> fcfs_oracle(const std::vector<request_spec>& reqs, int gpus, int k) {
  toy_cost cost;
  std::priority_queue<tick, std::vector<tick>, std::greater<>> free;
  for (int i = 0; i < gpus / k; ++i) free.push(0);
  std::vector<tick> finish;
  for (const auto& r : reqs) {
    const tick start = std::max(r.arrival, free.top());
    free.pop();
    const tick end = start + r.steps * *to_ticks(cost.step_seconds(r.shape, k));
    free.push(end);
    finish.push_back(end);
  }
  return finish;
}

}  // namespace

// ---- concepts -------------------------------------------------------------------------------------

namespace {
struct not_a_cost_model { double step_seconds(const request_shape&, int) const; };
struct not_a_policy { std::vector<int> decide(const scheduler_view&); };
struct not_an_executor { void run(const task_launch&); };
struct blocking_executor {
  void launch(const task_launch&);
  void poll(std::vector<executor_event>&);
  tick now() const;
  void wait_until(tick);
};
struct named_periodic_policy {
  void decide(const scheduler_view&, decision_buffer&);
  std::string name() const;
  tick tick_period() const;
};
}  // namespace

TEST_CASE("Concepts accept their models and reject incomplete types", "[concepts]") {
  STATIC_REQUIRE(CostModel<toy_cost>);
  STATIC_REQUIRE_FALSE(CostModel<not_a_cost_model>);
  STATIC_REQUIRE(Policy<static_degree_policy>);
  STATIC_REQUIRE_FALSE(Policy<not_a_policy>);
  STATIC_REQUIRE(Executor<simulated_executor>);
  STATIC_REQUIRE(VirtualTimeExecutor<simulated_executor>);
  STATIC_REQUIRE_FALSE(Executor<not_an_executor>);
  STATIC_REQUIRE(BlockingExecutor<blocking_executor>);
  STATIC_REQUIRE_FALSE(VirtualTimeExecutor<blocking_executor>);
  STATIC_REQUIRE(NamedPolicy<named_periodic_policy> && PeriodicPolicy<named_periodic_policy>);
  STATIC_REQUIRE_FALSE(TickHookPolicy<named_periodic_policy>);
  STATIC_REQUIRE(Trajectory<trajectory_template>);
  STATIC_REQUIRE_FALSE(Trajectory<int>);
}

namespace {
struct hook_without_ok {  // on_task_end(view, h): the runtime calls on_task_end(view, h, ok)
  void decide(const scheduler_view&, decision_buffer&);
  void on_task_end(const scheduler_view&, request_handle);
};
struct period_as_string {
  void decide(const scheduler_view&, decision_buffer&);
  std::string tick_period() const;
};
struct tick_without_period {
  void decide(const scheduler_view&, decision_buffer&);
  void on_tick(const scheduler_view&);
};
struct all_hooks {
  void decide(const scheduler_view&, decision_buffer&);
  void on_arrival(const scheduler_view&, request_handle);
  void on_request_end(const scheduler_view&, request_handle);
  void on_task_end(const scheduler_view&, request_handle, bool);
  tick tick_period() const;
  void on_tick(const scheduler_view&);
  std::string name() const;
};
}  // namespace

TEST_CASE("A hook declared with the wrong signature is detected, not silently skipped", "[concepts]") {
  // hooks:: static_asserts on exactly these: declared, yet its refinement does not hold.
  STATIC_REQUIRE(detail::declares_on_task_end<hook_without_ok>);
  STATIC_REQUIRE_FALSE(TaskAwarePolicy<hook_without_ok>);
  STATIC_REQUIRE(detail::declares_tick_period<period_as_string>);
  STATIC_REQUIRE_FALSE(PeriodicPolicy<period_as_string>);
  STATIC_REQUIRE(detail::declares_on_tick<tick_without_period>);
  STATIC_REQUIRE_FALSE(PeriodicPolicy<tick_without_period>);
  STATIC_REQUIRE(ArrivalAwarePolicy<all_hooks> && CompletionAwarePolicy<all_hooks> && TaskAwarePolicy<all_hooks>);
  STATIC_REQUIRE(TickHookPolicy<all_hooks> && NamedPolicy<all_hooks>);
  STATIC_REQUIRE_FALSE(detail::declares_on_arrival<archetypes::policy>);
  STATIC_REQUIRE_FALSE(detail::declares_name<archetypes::policy>);
}

TEST_CASE("The scheduler needs nothing beyond its concepts (archetypes)", "[concepts][runtime]") {
  archetypes::policy p;
  archetypes::virtual_executor ex;
  archetypes::cost_model cost;
  scheduler s(cluster{2, 2, "x"}, p, ex, cost);
  for (int i = 0; i < 3; ++i) s.submit(request_spec{"a" + std::to_string(i), i * 10, {"m", 64, 64, 1}, 4, never, 0, ""});
  s.run();
  for (const auto& r : s.state().requests) REQUIRE(r.phase == request_phase::completed);
  // 3 requests x 4 steps x 1 ms, serialised on device 0 (encode/decode are free).
  REQUIRE(s.state().requests.back().finish == 12'000);
}

// ---- resources and trajectories ------------------------------------------------------------------

TEST_CASE("A device group is a value: equal ranks give equal hashes, order matters", "[resource]") {
  const device_group a{0, 1, 2, 3}, b = device_group::contiguous(0, 4), c{3, 2, 1, 0};
  REQUIRE(a == b);
  REQUIRE(a.hash() == b.hash());
  REQUIRE_FALSE(a == c);
  REQUIRE(a.same_devices(c));
  REQUIRE(a.to_string() == "{0,1,2,3}");
  device_group big = device_group::contiguous(100, 40);  // spills past the inline capacity
  REQUIRE(big.size() == 40);
  REQUIRE(big[39] == 139);
}

TEST_CASE("A device group assigned over another, inline or spilled, or cleared, holds exactly the new devices", "[resource]") {
  const device_group small{5, 6}, big = device_group::contiguous(100, 20);  // big spills past 16
  device_group g = big;
  g = small;  // spilled -> inline: the old heap ranks must not show through
  CHECK(g == small);
  CHECK(g.hash() == small.hash());
  CHECK(g.size() == 2);
  CHECK_FALSE(g.contains(100));
  g = big;  // inline -> spilled
  CHECK(g == big);
  CHECK(g[19] == 119);
  const device_group& self = g;
  g = self;  // self-assignment keeps it
  CHECK(g == big);
  g.clear();
  CHECK(g.empty());
  CHECK(g == device_group{});
  CHECK(g.hash() == device_group{}.hash());
  device_group h = small;
  h.clear();
  h = small;
  CHECK(h == small);
}

TEST_CASE("A device set tracks membership across word boundaries", "[resource]") {
  device_set s(130, true);
  REQUIRE(s.count() == 130);
  s.reset(device_group{0, 64, 129});
  REQUIRE(s.count() == 127);
  REQUIRE_FALSE(s.test(64));
  std::vector<device_id> seen;
  s.for_each([&](device_id d) { seen.push_back(d); });
  REQUIRE(seen.size() == 127);
  REQUIRE(seen.front() == 1);
}

TEST_CASE("A trajectory runs encode, every step in order, then decode", "[trajectory]") {
  trajectory_template t(3);
  REQUIRE(t.task_count() == 5);
  REQUIRE(t.task_at(0).kind == task_kind::encode);
  REQUIRE(t.task_at(1) == task_desc{task_kind::step, 0});
  REQUIRE(t.task_at(3) == task_desc{task_kind::step, 2});
  REQUIRE(t.task_at(4).kind == task_kind::decode);
  REQUIRE(t.steps_remaining(0) == 3);
  REQUIRE(t.steps_remaining(2) == 2);
  REQUIRE(t.steps_remaining(4) == 0);
  REQUIRE(boost::num_vertices(t.dag()) == 5);
  trajectory_library lib;
  REQUIRE(lib.for_steps(50) == lib.for_steps(50));  // one template per step count
  REQUIRE(lib.size() == 1);
}

// ---- static baselines against the closed form ----------------------------------------------------

TEST_CASE("static:K finishes every request exactly when the FCFS queue with G/K servers does", "[runtime][static]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const auto reqs = random_requests(seed, 200, 0.15);
    for (int k : {1, 2, 4, 8}) {
      static_degree_policy p(k);
      const auto out = run_policy(p, reqs, cluster{8, 8, "x"});
      const auto expect = fcfs_oracle(reqs, 8, k);
      for (std::size_t i = 0; i < reqs.size(); ++i) {
        INFO("seed " << seed << " K " << k << " request " << i);
        REQUIRE(out[i].phase == request_phase::completed);
        REQUIRE(out[i].finish == expect[i]);
        REQUIRE(out[i].migrations == 0);
      }
    }
  }
}

TEST_CASE("rssp picks the cheapest degree that meets the SLO alone, else the fastest", "[policy][rssp]") {
  toy_cost cost;
  simulated_executor ex;
  rssp_policy p;
  scheduler s(cluster{8, 8, "x"}, p, ex, cost);
  // 2048px: 16384 tokens, 10 steps. k=1: 10 x 0.348 = 3.5 s; k=2: 1.84 s; k=4: 1.02 s; k=8: 0.61 s.
  s.submit(request_spec{"fits-at-2", 0, {"toy", 2048, 2048, 1}, 10, 2'000'000, 0, ""});
  s.submit(request_spec{"no-slo", 0, {"toy", 2048, 2048, 1}, 10, never, 0, ""});
  s.run();
  REQUIRE(s.request(0).last_degree == 2);
  REQUIRE(s.request(1).last_degree == 8);                  // fastest, so it waits for all 8 devices
  REQUIRE(s.request(1).first_start == s.request(0).finish);
}

TEST_CASE("rssp after a device loss sizes requests for the devices left instead of stalling the queue", "[policy][rssp][faults]") {
  // Regression: a request without an SLO got the fastest degree, all 8 devices, which 7 could never
  // give: the head of the queue blocked, and the stall guard dropped every request.
  toy_cost cost;
  simulation_faults f;
  f.device_failures = {{5, 0}};
  simulated_executor ex(0, f);
  rssp_policy p;
  scheduler s(cluster{8, 8, "x"}, p, ex, cost);
  s.submit(request_spec{"big", 0, {"toy", 2048, 2048, 1}, 10, never, 0, ""});
  s.submit(request_spec{"small", 0, {"toy", 512, 512, 1}, 10, never, 0, ""});
  s.run();
  CHECK(s.request(0).phase == request_phase::completed);
  CHECK(s.request(0).last_degree == 7);  // the fastest the 7 devices left can run
  CHECK(s.request(1).phase == request_phase::completed);
}

namespace {
struct wide_only_cost : toy_cost {  // a 2048 px image needs all 8 devices
  bool allows_degree(const request_shape& s, int k) const { return s.height == 2048 ? k == 8 : k >= 1; }
};
}  // namespace

TEST_CASE("after a device loss a request that comes to wait later is dropped when no degree fits", "[runtime][faults]") {
  // The runtime checks every waiting request once per loss, then each request as it comes to wait.
  wide_only_cost cost;
  simulation_faults f;
  f.device_failures = {{7, 1'000'000}};
  simulated_executor ex(0, f);
  rssp_policy p;
  scheduler s(cluster{8, 8, "x"}, p, ex, cost);
  s.submit(request_spec{"small", 0, {"toy", 256, 256, 1}, 200, never, 0, ""});
  s.submit(request_spec{"wide-before", 500'000, {"toy", 2048, 2048, 1}, 5, never, 0, ""});  // waits behind small: dropped at the loss
  s.submit(request_spec{"wide-after", 5'000'000, {"toy", 2048, 2048, 1}, 5, never, 0, ""});  // arrives after it
  s.submit(request_spec{"small-after", 5'000'000, {"toy", 256, 256, 1}, 5, never, 0, ""});
  s.run();
  CHECK(s.request(0).phase == request_phase::completed);
  CHECK(s.request(1).drop_reason == "device_lost_no_capacity");
  CHECK(s.request(1).finish == 1'000'000);
  CHECK(s.request(2).drop_reason == "device_lost_no_capacity");
  CHECK(s.request(2).finish == 5'000'000);
  CHECK(s.request(3).phase == request_phase::completed);
}

// ---- invariant sweeps ----------------------------------------------------------------------------

namespace {
// Every built-in policy (by name, as the tools build them), plus a static degree that does not divide G.
std::vector<std::pair<std::string, std::function<any_policy()>>> sweep_policies() {
  std::vector<std::pair<std::string, std::function<any_policy()>>> out;
  auto names = default_policy_list(1);
  names.push_back("static:3");
  names.push_back("round-based:round_steps=1:mid_round=admit");
  names.push_back("slo-aware:admission=off");
  for (const auto& n : names) {
    out.emplace_back(n, [n] { return paraflex_test::builtin_policies(64).make(n).value_or_throw(); });
  }
  return out;
}
}  // namespace

TEST_CASE("Every request ends exactly once, devices never double-book and steps run in order", "[runtime][invariants]") {
  for (auto [gpus, per_node] : {std::pair{3, 3}, {8, 8}, {8, 4}, {16, 4}}) {
    for (std::uint64_t seed : {11u, 12u}) {
      const auto reqs = random_requests(seed, 120, 0.05);
      for (auto& [name, make] : sweep_policies()) {
        INFO(name << " on " << gpus << " GPUs, seed " << seed);
        any_policy p = make();
        run_policy(p, reqs, cluster{gpus, per_node, "x"}, seed, {}, true);
      }
    }
  }
}

TEST_CASE("Faults never lose a request: failed tasks retry, lost devices end what cannot run", "[runtime][faults]") {
  const auto reqs = random_requests(5, 150, 0.05);
  simulation_faults f;
  f.fail_rate = 0.05;
  f.jitter = 0.1;
  f.device_failures = {{3, 2'000'000}, {0, 5'000'000}};
  f.stragglers = {{5, 1'000'000, 3.0}};
  for (auto& [name, make] : sweep_policies()) {
    INFO(name);
    any_policy p = make();
    const auto out = run_policy(p, reqs, cluster{8, 8, "x"}, 7, f, true);
    std::size_t retried = 0;
    for (const auto& r : out) retried += r.failures;
    REQUIRE(retried > 0);
  }
  // Losing every device that fits the degree ends the rest with a reason.
  static_degree_policy p(8);
  simulation_faults all;
  all.device_failures = {{7, 1'000'000}};
  const auto out = run_policy(p, reqs, cluster{8, 8, "x"}, 0, all);
  std::size_t no_capacity = 0;
  for (const auto& r : out) no_capacity += r.drop_reason == "device_lost_no_capacity";
  REQUIRE(no_capacity > 0);
}

TEST_CASE("A task on straggling devices runs at its slowest device's pace", "[runtime][faults]") {
  // One launch of 1 s at time 0 on `group`; returns when the simulator ends it.
  const auto end_of = [](std::vector<simulation_faults::straggler> stragglers, device_group group) {
    simulation_faults f;
    f.stragglers = std::move(stragglers);
    simulated_executor ex(0, f);
    task_launch l;
    l.id = 1;
    l.group = std::move(group);
    l.expected_duration = 1'000'000;
    ex.launch(l);
    return ex.next_event_time();
  };
  SECTION("the largest factor among its devices, not their product") {
    CHECK(end_of({{0, 0, 2.0}, {1, 0, 3.0}}, device_group{0, 1}) == 3'000'000);
    // Eight devices each 1000x slower: 1000 s, where a product wrapped around to a 0-second task.
    std::vector<simulation_faults::straggler> all;
    for (device_id d = 0; d < 8; ++d) all.push_back({d, 0, 1000.0});
    CHECK(end_of(all, device_group{0, 1, 2, 3, 4, 5, 6, 7}) == 1'000'000'000);
  }
  SECTION("a device without a straggler keeps a faster one's task at full time") {
    CHECK(end_of({{0, 0, 0.5}}, device_group{0, 1}) == 1'000'000);
    CHECK(end_of({{0, 0, 0.5}, {1, 0, 0.5}}, device_group{0, 1}) == 500'000);
  }
  SECTION("on one device the straggler that began last is in force") {
    CHECK(end_of({{0, 0, 2.0}, {0, 0, 3.0}}, device_group{0}) == 3'000'000);
    CHECK(end_of({{0, 0, 4.0}, {0, 5, 2.0}}, device_group{0}) == 4'000'000);  // the second begins later
  }
  SECTION("devices outside the task do not slow it") {
    CHECK(end_of({{2, 0, 10.0}}, device_group{0, 1}) == 1'000'000);
  }
}

TEST_CASE("The same input and seed give the same schedule", "[runtime][determinism]") {
  const auto reqs = random_requests(9, 150, 0.05);
  simulation_faults f;
  f.fail_rate = 0.02;
  f.jitter = 0.2;
  auto once = [&] {
    rssp_policy p;
    return run_policy(p, reqs, cluster{8, 4, "x"}, 42, f);
  };
  const auto a = once(), b = once();
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].finish == b[i].finish);
    REQUIRE(a[i].failures == b[i].failures);
    REQUIRE(a[i].phase == b[i].phase);
  }
}

// ---- decisions -----------------------------------------------------------------------------------

namespace {
// Assigns every waiting request to device 0, whether free or not: invalid from the second one on.
struct greedy_device0 {
  void decide(const scheduler_view& v, decision_buffer& out) {
    for (request_handle h : v.waiting()) out.assign(h, device_group{0}, decision_buffer::all_tasks);
  }
};
// Never assigns anything.
struct idle_policy {
  void decide(const scheduler_view&, decision_buffer&) {}
};
// Alternates a request between devices {0,1} and {2,3} at every step: one migration per step.
struct ping_pong {
  void decide(const scheduler_view& v, decision_buffer& out) {
    for (request_handle h : v.waiting()) {
      const auto& sg = v.request(h).state_group;
      out.assign(h, !sg.empty() && sg[0] == 0 ? device_group{2, 3} : device_group{0, 1}, 1);
    }
  }
};
}  // namespace

TEST_CASE("An invalid decision throws in strict mode and is skipped otherwise", "[runtime][decisions]") {
  toy_cost cost;
  const auto reqs = random_requests(3, 3, 0.0);
  {
    greedy_device0 p;
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost);
    for (const auto& r : reqs) s.submit(r);
    REQUIRE_THROWS_AS(s.run(), policy_error);
  }
  {
    greedy_device0 p;
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost, scheduler_options{.strict = false});
    for (const auto& r : reqs) s.submit(r);
    s.run();
    REQUIRE(s.stats().rejected > 0);
    for (const auto& r : s.state().requests) REQUIRE(r.phase == request_phase::completed);
  }
}

namespace {
// Names handle 1 at its first call, before request 1 arrives (handles are dense and in submission
// order): assigns it, drops it, or puts it in a batch with the waiting request 0.
struct ahead_of_arrival {
  enum class what { assign, drop, batch } act;
  bool first = true;
  void decide(const scheduler_view& v, decision_buffer& out) {
    if (first) {  // only that: the call's one invalid decision
      first = false;
      const std::array<request_handle, 2> both{0, 1};
      switch (act) {
        case what::assign: out.assign_to_completion(1, {1}); break;
        case what::drop: out.drop(1, "too_early"); break;
        case what::batch: out.assign_batch(both, {0}); break;
      }
      return;
    }
    for (request_handle h : v.waiting()) {  // then each on its own device, to completion
      if (v.free_devices().test(static_cast<device_id>(h))) out.assign_to_completion(h, {static_cast<device_id>(h)});
    }
  }
};
}  // namespace

TEST_CASE("A decision about a request that has not arrived yet is invalid: it runs, and ends once, after it arrives",
          "[runtime][decisions]") {
  // Regression: only the phase was checked (waiting before arrival too), so such a request ran
  // before it arrived, entered the waiting set while running, and ended twice (logic_error).
  toy_cost cost;
  for (const auto act : {ahead_of_arrival::what::assign, ahead_of_arrival::what::drop, ahead_of_arrival::what::batch}) {
    INFO("decision " << static_cast<int>(act));
    const auto submit_both = [](auto& s) {
      s.submit(request_spec{"r0", 0, {"toy", 256, 256, 1}, 4, never, 0, ""});
      s.submit(request_spec{"r1", 50'000, {"toy", 256, 256, 1}, 4, never, 0, ""});  // arrives at 0.05 s
    };
    {
      ahead_of_arrival p{act};
      simulated_executor ex;
      scheduler s(cluster{2, 2, "x"}, p, ex, cost, scheduler_options{.max_batch = 2});
      submit_both(s);
      REQUIRE_THROWS_WITH(s.run(), Catch::Contains("'r1'") && Catch::Contains("has not arrived yet (it arrives at t=50000us)"));
    }
    ahead_of_arrival p{act};
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost, scheduler_options{.strict = false, .max_batch = 2});
    testing::invariant_checker chk;
    chk.attach(s);
    submit_both(s);
    s.run();
    CHECK(s.stats().rejected == 1);
    CHECK(chk.violations(s.state()).empty());
    const auto& r1 = s.state().requests[1];
    CHECK(r1.phase == request_phase::completed);
    CHECK(r1.first_start >= 50'000);
  }
}

TEST_CASE("A request of more steps than a trajectory may have is refused at submit, by both paths", "[runtime][client]") {
  // Regression: the client took steps = 2e9, and the scheduler's thread then died building the
  // trajectory (bad_alloc), losing the submissions queued behind it.
  toy_cost cost;
  idle_policy p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  request_spec big{"big", 0, {"toy", 256, 256, 1}, max_steps + 1, never, 0, ""};
  REQUIRE_THROWS_WITH(s.submit(big), Catch::Contains("steps must be at most 100000 (got 100001)"));
  try {
    (void)s.client().submit(big);
    FAIL("the client accepted " << big.steps << " steps");
  } catch (const submit_error& e) {
    CHECK(e.kind() == submit_error::kind_type::invalid_spec);
  }
  big.steps = max_steps;
  CHECK(check_request_spec(big).empty());
}

namespace {
// Throws once from the hook or call named, at its second chance; otherwise runs each waiting request
// to completion on the first free device.
struct throws_once {
  enum class where { decide, on_task_end, on_arrival, on_request_end } at;
  int calls = 0;
  void maybe_throw(where w) {
    if (w == at && ++calls == 2) throw std::runtime_error("thrown once");
  }
  void decide(const scheduler_view& v, decision_buffer& out) {
    maybe_throw(where::decide);
    std::size_t d = 0;
    for (request_handle h : v.waiting()) {
      while (d < v.free_devices().capacity() && !v.free_devices().test(static_cast<device_id>(d))) ++d;
      if (d >= v.free_devices().capacity()) break;
      out.assign(h, {static_cast<device_id>(d++)}, 1);
    }
  }
  void on_task_end(const scheduler_view&, request_handle, bool) { maybe_throw(where::on_task_end); }
  void on_arrival(const scheduler_view&, request_handle) { maybe_throw(where::on_arrival); }
  void on_request_end(const scheduler_view&, request_handle) { maybe_throw(where::on_request_end); }
};
}  // namespace

TEST_CASE("A policy or hook that throws leaves the run where a later run() goes on: every request still ends once",
          "[runtime][decisions][faults]") {
  // Regression: an on_task_end that threw left its request running with nothing in flight (it never
  // ended, and a real-time run hung), and a decide() that threw made the next run() drop every
  // waiting request as stalled without asking the policy again.
  toy_cost cost;
  for (const auto at : {throws_once::where::decide, throws_once::where::on_task_end, throws_once::where::on_arrival,
                        throws_once::where::on_request_end}) {
    INFO("throws from " << static_cast<int>(at));
    throws_once p{at};
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost);
    testing::invariant_checker chk;
    chk.attach(s);
    for (int i = 0; i < 4; ++i) s.submit(request_spec{fmt::format("r{}", i), i * 10'000, {"toy", 256, 256, 1}, 3, never, 0, ""});
    REQUIRE_THROWS_WITH(s.run(), "thrown once");
    s.run();  // goes on from where the exception left it
    CHECK(s.unended() == 0);
    CHECK(chk.violations(s.state()).empty());
    for (const auto& r : s.state().requests) CHECK(r.phase == request_phase::completed);
  }
}

TEST_CASE("A moved-from any_policy throws logic_error when used, as an empty std::function does", "[runtime][policy]") {
  any_policy a = static_degree_policy(1);
  any_policy b = std::move(a);
  CHECK(b.name() == "static:1");
  CHECK_THROWS_AS(a.name(), std::logic_error);  // NOLINT(bugprone-use-after-move): what is tested
  CHECK_THROWS_WITH(a.tick_period(), Catch::Contains("moved from"));
  CHECK(a.target<static_degree_policy>() == nullptr);
}

namespace {
// Drops every waiting request with a fixed reason.
struct drop_all_with {
  std::string reason;
  void decide(const scheduler_view& v, decision_buffer& out) {
    for (request_handle h : v.waiting()) out.drop(h, reason);
  }
};
}  // namespace

TEST_CASE("A drop reason is a short identifier: any other is an invalid decision, naming the request and the reason",
          "[runtime][decisions][drop]") {
  STATIC_REQUIRE(is_drop_reason("deadline_unreachable"));
  STATIC_REQUIRE(is_drop_reason(""));  // the default: dropped_by_policy
  STATIC_REQUIRE(is_drop_reason("tier-2.over_budget"));
  STATIC_REQUIRE_FALSE(is_drop_reason("over budget"));
  STATIC_REQUIRE_FALSE(is_drop_reason("line\nbreak"));
  STATIC_REQUIRE_FALSE(is_drop_reason("caf\xC3\xA9"));
  REQUIRE(is_drop_reason(std::string(max_drop_reason_length, 'a')));
  REQUIRE_FALSE(is_drop_reason(std::string(max_drop_reason_length + 1, 'a')));

  toy_cost cost;
  const auto reqs = random_requests(2, 3, 0.0);
  {
    drop_all_with p{"over budget"};
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost);
    for (const auto& r : reqs) s.submit(r);
    try {
      s.run();
      FAIL("a drop with a space in its reason was accepted");
    } catch (const policy_error& e) {
      const std::string what = e.what();
      CHECK(what.find("reason 'over budget' is not a short identifier") != std::string::npos);
      CHECK(what.find("drop of request '" + reqs[0].id + "'") != std::string::npos);
    }
  }
  {  // not strict: skipped like any invalid decision; the stall guard then ends the requests
    drop_all_with p{"over budget"};
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost, scheduler_options{.strict = false});
    for (const auto& r : reqs) s.submit(r);
    s.run();
    REQUIRE(s.stats().rejected > 0);
    for (const auto& r : s.state().requests) REQUIRE(r.drop_reason == "policy_stalled");
  }
  {
    drop_all_with p{"over_budget"};
    simulated_executor ex;
    scheduler s(cluster{2, 2, "x"}, p, ex, cost);
    for (const auto& r : reqs) s.submit(r);
    s.run();
    for (const auto& r : s.state().requests) REQUIRE(r.drop_reason == "over_budget");
  }
}

TEST_CASE("static:K on a model that does not allow K is refused before the run, naming the model and its degrees",
          "[runtime][decisions][static]") {
  // heads_cost allows 1, 2, 3 and 6 (6 % k == 0). formats §5: static:K never drops a request, so a
  // workload that static:4 cannot run is an input error, not a run that drops everything.
  workload w{"w.csv", random_requests(4, 5, 0.1)};
  w.requests[0].source_line = 7;
  const heads_cost cost;
  const auto e = check_fixed_degree(w, cost, 8, 4, "static:4");
  REQUIRE(e.has_value());
  CHECK(e->file == "--policy");
  CHECK_THAT(e->what(), Catch::Contains("policy 'static:4'") && Catch::Contains("model 'toy'") && Catch::Contains("w.csv line 7") &&
                            Catch::Contains("allows 1..3, 6 of 1..8"));
  CHECK_FALSE(check_fixed_degree(w, cost, 8, 3, "static:3").has_value());
  CHECK_FALSE(check_fixed_degree(w, toy_cost{}, 8, 5, "static:5").has_value());  // no heads: any degree

  // simulate() refuses the same way, for the policy type and for any_policy built by name.
  static_degree_policy typed(4);
  CHECK(fixed_degree_of(typed) == std::optional<int>(4));
  CHECK_THROWS_WITH(simulate(w, cluster{8, 8, "x"}, cost, typed, "static:4"), Catch::Contains("model 'toy'"));
  any_policy named = paraflex_test::builtin_policies(8).make("static:4").value_or_throw();
  CHECK(fixed_degree_of(named) == std::optional<int>(4));
  CHECK_THROWS_AS(simulate(w, cluster{8, 8, "x"}, cost, named, "static:4"), input_exception);
  any_policy rssp = paraflex_test::builtin_policies(8).make("rssp").value_or_throw();
  CHECK_FALSE(fixed_degree_of(rssp).has_value());
  static_degree_policy three(3);
  const auto m = simulate(w, cluster{8, 8, "x"}, cost, three, "static:3");
  CHECK(m.completed == w.requests.size());
}

TEST_CASE("static:K run anyway on a model that does not allow K is an invalid decision, never a silent drop",
          "[runtime][decisions][static]") {
  // A caller who builds the scheduler directly skips check_fixed_degree: the policy still assigns
  // degree K, and the runtime rejects the decision (policy_error in strict mode), naming the degree.
  const auto reqs = random_requests(4, 5, 0.1);
  static_degree_policy p(4);  // 6 % 4 != 0
  CHECK_THROWS_WITH((run_policy<static_degree_policy, heads_cost>(p, reqs, cluster{8, 8, "x"})),
                    Catch::Contains("degree 4 is not allowed for toy"));
  // Lenient mode skips the decision each time; nothing can run, so the stall guard ends the requests,
  // with a reason that says so - still not a silent "degree_not_allowed" drop by the policy.
  heads_cost cost;
  simulated_executor ex;
  static_degree_policy q(4);
  scheduler s(cluster{8, 8, "x"}, q, ex, cost, scheduler_options{.strict = false});
  for (const auto& r : reqs) s.submit(r);
  s.run();
  CHECK(s.stats().rejected > 0);
  for (const auto& r : s.state().requests) CHECK(r.drop_reason == "policy_stalled");
}

TEST_CASE("A policy that never schedules cannot hang the runtime", "[runtime][decisions]") {
  idle_policy p;
  const auto out = run_policy(p, random_requests(2, 10, 0.1), cluster{4, 4, "x"});
  for (const auto& r : out) REQUIRE(r.drop_reason == "policy_stalled");
}

namespace {
// Any policy, with the time of each of its calls written down.
struct call_recording_policy {
  any_policy inner;
  std::vector<tick>* calls;
  void decide(const scheduler_view& v, decision_buffer& out) {
    calls->push_back(v.now());
    inner.decide(v, out);
  }
  void on_arrival(const scheduler_view& v, request_handle h) { inner.on_arrival(v, h); }
  void on_request_end(const scheduler_view& v, request_handle h) { inner.on_request_end(v, h); }
  void on_task_end(const scheduler_view& v, request_handle h, bool ok) { inner.on_task_end(v, h, ok); }
  void on_tick(const scheduler_view& v) { inner.on_tick(v); }
  [[nodiscard]] tick tick_period() const { return inner.tick_period(); }
};

// The times of the policy's calls in a checked run of `reqs` with min_decision_gap = gap.
std::vector<tick> decision_times(any_policy p, const std::vector<request_spec>& reqs, tick gap, std::vector<request_record>* ended = nullptr) {
  std::vector<tick> calls;
  call_recording_policy rec{std::move(p), &calls};
  toy_cost cost;
  simulated_executor ex(3, {});
  scheduler_options o;
  o.min_decision_gap = gap;
  scheduler s(cluster{8, 4, "x"}, rec, ex, cost, o);
  testing::invariant_checker chk;
  chk.attach(s);
  for (const auto& r : reqs) s.submit(r);
  s.run();
  const auto v = chk.violations(s.state());
  INFO(testing::join_lines(v));
  REQUIRE(v.empty());
  if (ended) *ended = s.state().requests;
  return calls;
}
}  // namespace

TEST_CASE("A minimum decision gap calls the policy at most once per gap and still ends every request once", "[runtime][decisions]") {
  constexpr tick gap = 40'000;  // 40 ms: several task ends and arrivals of this workload fall inside one
  const auto reqs = random_requests(21, 150, 0.01);
  for (auto& [name, make] : sweep_policies()) {
    INFO(name);
    std::vector<request_record> ended;
    const auto every_event = decision_times(make(), reqs, 0);
    const auto gapped = decision_times(make(), reqs, gap, &ended);
    const auto closest = [](const std::vector<tick>& t) {
      tick c = never;
      for (std::size_t i = 1; i < t.size(); ++i) c = std::min(c, t[i] - t[i - 1]);
      return c;
    };
    CHECK(closest(every_event) < gap);  // without the gap, calls come closer: the check below can fail
    CHECK(closest(gapped) >= gap);
    CHECK(gapped.size() < every_event.size());
    for (const auto& r : ended) CHECK(r.ended());
  }
}

TEST_CASE("A call held back by the decision gap decides, at the gap's end, what happened meanwhile", "[runtime][decisions]") {
  // static:1 on two devices: the first request starts at its arrival; the second, 1 ms later, waits
  // for the held-back call 10 ms after the first.
  std::vector<request_spec> reqs(2);
  for (int i = 0; i < 2; ++i) {
    reqs[i].id = "r" + std::to_string(i);
    reqs[i].arrival = i * 1'000;
    reqs[i].shape = {"toy", 256, 256, 1};
    reqs[i].steps = 3;
  }
  std::vector<request_record> ended;
  (void)decision_times(any_policy(static_degree_policy(1)), reqs, 10'000, &ended);
  REQUIRE(ended.size() == 2);
  CHECK(ended[0].first_start == 0);
  CHECK(ended[1].first_start == 10'000);
  (void)decision_times(any_policy(static_degree_policy(1)), reqs, 0, &ended);
  CHECK(ended[1].first_start == 1'000);

  simulated_executor ex(0, {});
  toy_cost cost;
  idle_policy idle;
  scheduler_options o;
  o.min_decision_gap = -1;
  CHECK_THROWS_WITH((scheduler{cluster{2, 2, "x"}, idle, ex, cost, o}), Catch::Contains("min_decision_gap -1 us"));
}

TEST_CASE("Moving a request to other devices migrates its state and occupies both groups", "[runtime][migration]") {
  toy_cost cost;
  ping_pong p;
  simulated_executor ex;
  scheduler s(cluster{4, 4, "x"}, p, ex, cost);
  std::vector<task_record> records;
  s.on_task_record([&](const task_record& t) { records.push_back(t); });
  s.submit(request_spec{"m", 0, {"toy", 1024, 1024, 1}, 4, never, 0, ""});
  s.run();
  const auto& r = s.request(0);
  REQUIRE(r.phase == request_phase::completed);
  REQUIRE(r.migrations == 5);  // 6 tasks, a move before each but the first
  const auto mig = std::find_if(records.begin(), records.end(), [](const task_record& t) { return t.task.kind == task_kind::migrate; });
  REQUIRE(mig != records.end());
  REQUIRE(mig->devices.size() == 4);  // destination + idle source
  REQUIRE(mig->end - mig->start == 1000);
  // 4 steps at k=2 plus 5 migrations of 1 ms.
  REQUIRE(r.finish == 4 * *to_ticks(cost.step_seconds({"toy", 1024, 1024, 1}, 2)) + 5 * 1000);
}

TEST_CASE("A cancelled request ends once: at once when waiting, after its task when running", "[runtime][embedding]") {
  toy_cost cost;
  static_degree_policy p(8);
  simulated_executor ex;
  scheduler s(cluster{8, 8, "x"}, p, ex, cost);
  int ended = 0;
  s.on_request_end([&](const request_record&) { ++ended; });
  s.submit(request_spec{"a", 0, {"toy", 1024, 1024, 1}, 10, never, 0, ""});
  s.submit(request_spec{"b", 0, {"toy", 1024, 1024, 1}, 10, never, 0, ""});
  s.cancel(1, "client_gone");  // before it ever runs
  s.on_task_record([&](const task_record& t) {
    if (t.request == 0 && t.task == task_desc{task_kind::step, 2}) s.cancel(0);  // while it runs
  });
  s.run();
  REQUIRE(ended == 2);
  REQUIRE(s.request(1).drop_reason == "client_gone");
  REQUIRE(s.request(1).position == 0);
  REQUIRE(s.request(0).drop_reason == "cancelled");
  REQUIRE(s.request(0).position == 4);  // encode + steps 0..2 finished; the step in flight was not cut
}

// ---- metrics -------------------------------------------------------------------------------------

namespace {
// One second per step at any degree; model "none" allows no degree at all.
struct unit_cost {
  double step_seconds(const request_shape&, int) const { return 1.0; }
  bool allows_degree(const request_shape& s, int k) const { return s.model != "none" && k >= 1; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.0; }
};
request_spec unit_request(std::string id, double arrival_s, int steps, double slo_s, std::string label, std::string model = "m") {
  return request_spec{std::move(id), *to_ticks(arrival_s), {std::move(model), 64, 64, 1}, steps,
                      slo_s > 0 ? *to_ticks(slo_s) : never, 0, std::move(label)};
}
}  // namespace

namespace {
// 10^11 s per step: one request fits the clock (4.0e12 s); forty-one after another on one GPU do not.
struct glacial_cost {
  double step_seconds(const request_shape&, int) const { return 1e11; }
  bool allows_degree(const request_shape&, int k) const { return k == 1; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.0; }
};
}  // namespace

TEST_CASE("A simulated run that would pass the clock's limit stops with an input error naming the request", "[runtime][time]") {
  workload w{"w.csv", {}};
  for (int i = 0; i < 60; ++i) {
    w.requests.push_back(unit_request(std::to_string(i), 0, 1, 0, "S"));
    w.requests.back().source_line = i + 2;
  }
  rssp_policy p;
  // Never a result with times saturated at the 64-bit limit: the input cannot be simulated.
  CHECK_THROWS_AS(simulate(w, cluster{1, 1, "x"}, glacial_cost{}, p, "rssp"), input_exception);
  rssp_policy q;
  CHECK_THROWS_WITH(simulate(w, cluster{1, 1, "x"}, glacial_cost{}, q, "rssp"),
                    Catch::Contains("w.csv:") && Catch::Contains("clock's limit") && Catch::Contains("request '") &&
                        Catch::Contains("each request fits it alone, but waiting behind others, a straggler or jitter"));
  // The executor itself refuses a task that would end past the limit, and says which request.
  simulated_executor ex;
  task_launch l;
  l.request = 7;
  l.expected_duration = clock_limit + 1;
  try {
    ex.launch(l);
    FAIL("no clock_overflow");
  } catch (const clock_overflow& e) {
    CHECK(e.request == 7);
  }
}

TEST_CASE("Metrics match a hand calculation on a tiny run", "[metrics]") {
  // rssp on 2 GPUs with 1 s steps at every degree runs each request on one GPU (the cheapest degree),
  // in arrival order:
  //   a: t=0, 2 steps, S, SLO 3  -> GPU 0 [0, 2]   latency 2, on time
  //   b: t=0, 3 steps, L, SLO 2  -> GPU 1 [0, 3]   latency 3, late
  //   e: t=0.5, L, SLO 5, model "none" (no allowed degree) -> dropped on arrival: no_allowed_degree
  //   c: t=1, 1 step,  S, no SLO -> GPU 0 [2, 3]   latency 2
  //   d: t=1, 4 steps, L, SLO 10 -> [3, 7]          latency 6, on time
  const workload w{"hand.csv",
                   {unit_request("a", 0, 2, 3, "S"), unit_request("b", 0, 3, 2, "L"), unit_request("e", 0.5, 2, 5, "L", "none"),
                    unit_request("c", 1, 1, 0, "S"), unit_request("d", 1, 4, 10, "L")}};
  rssp_policy p;
  const auto m = simulate(w, cluster{2, 2, "x"}, unit_cost{}, p, "rssp");
  CHECK(m.policy == "rssp");
  CHECK(m.requests == 5);
  CHECK(m.completed == 4);
  CHECK(m.dropped == 1);
  CHECK(m.dropped_by_reason == std::map<std::string, std::size_t>{{"no_allowed_degree", 1}});
  CHECK(m.slo_attainment == Approx(2.0 / 4.0));  // a and d of a, b, d, e (a drop is a miss)
  // Latencies 2, 3, 2, 6; sorted 2, 2, 3, 6; percentile q at position q x 3, linearly interpolated.
  CHECK(*m.latency_s.mean == Approx(13.0 / 4.0));
  CHECK(*m.latency_s.p50 == Approx(2.5));
  CHECK(*m.latency_s.p90 == Approx(3.0 + 0.7 * 3.0));
  CHECK(*m.latency_s.p95 == Approx(3.0 + 0.85 * 3.0));
  CHECK(*m.latency_s.p99 == Approx(3.0 + 0.97 * 3.0));
  CHECK(*m.latency_s.max == Approx(6.0));
  CHECK(m.makespan_s == Approx(7.0));           // last completion 7 - first arrival 0
  CHECK(m.throughput_rps == Approx(4.0 / 7.0));
  CHECK(m.goodput_rps == Approx(2.0 / 7.0));
  CHECK(m.gpu_busy_s == Approx(10.0));          // 2 + 3 + 1 + 4 step-seconds on one GPU each
  CHECK(m.utilization == Approx(10.0 / 14.0));
  CHECK(m.migrations == 0);
  REQUIRE(m.per_class.size() == 2);
  const auto& small = m.per_class.at("S");
  CHECK(small.requests == 2);
  CHECK(*small.slo_attainment == Approx(1.0));  // only a has a deadline
  CHECK(*small.latency_s.mean == Approx(2.0));
  CHECK(*small.latency_s.p95 == Approx(2.0));
  const auto& large = m.per_class.at("L");
  CHECK(large.requests == 3);
  CHECK(*large.slo_attainment == Approx(1.0 / 3.0));  // d of b, d, e
  CHECK(*large.latency_s.mean == Approx(4.5));
  CHECK(*large.latency_s.p95 == Approx(3.0 + 0.95 * 3.0));
  CHECK(m.decisions > 0);

  const auto none = compute_metrics("x", {}, 8, 0.0);
  CHECK_FALSE(none.slo_attainment.has_value());
  CHECK_FALSE(none.latency_s.mean.has_value());
  CHECK(none.makespan_s == 0.0);
  CHECK(none.throughput_rps == 0.0);
}

// ---- registry ------------------------------------------------------------------------------------

TEST_CASE("Policy specs parse positional and keyed parameters and name bad ones", "[policy][registry]") {
  policy_registry r;
  register_static_policies(r, 8);
  REQUIRE(r.make("static:4").has_value());
  REQUIRE(r.make("static:degree=2").value().name() == "static:2");
  REQUIRE(r.make("rssp").has_value());
  auto bad = [&](const char* spec, const char* needle) {
    auto p = r.make(spec);
    REQUIRE_FALSE(p.has_value());
    INFO(p.error().what());
    REQUIRE(p.error().what().find(needle) != std::string::npos);
  };
  bad("static:9", "out of range");
  bad("static:0", "out of range");
  bad("static", "required");
  bad("static:x", "integer");
  bad("rssp:speed=2", "unknown parameter 'speed'");
  bad("nope", "unknown policy 'nope'");
  REQUIRE(policy_registry::split_list("static:1,rssp").size() == 2);
}

TEST_CASE("A registry lists each policy's parameters with their defaults and accepted values, and an unknown key names them",
          "[policy][registry]") {
  const policy_registry r = paraflex_test::builtin_policies(8);
  const auto keys = [&](const std::string& name) {
    std::vector<std::string> out;
    for (const auto& k : r.parameters(name)) out.push_back(k.key);
    return out;
  };
  const auto static_params = r.parameters("static");  // required: described although make() fails without it
  REQUIRE(static_params.size() == 1);
  CHECK(static_params[0].key == "degree");
  CHECK(static_params[0].default_value == "required");
  CHECK(static_params[0].accepted == "[1, 8]");
  CHECK(r.parameters("rssp").empty());
  CHECK(r.parameters("edf-best-fit").empty());
  const auto slo = r.parameters("slo-aware");
  CHECK(keys("slo-aware") == std::vector<std::string>{"admission", "capacity", "reserve", "margin", "chunk", "best_effort_age", "widen", "hold",
                                                      "max_batch", "batch_margin", "batch_saving", "exact_limit", "backfill_max_gpus",
                                                      "order"});
  CHECK(slo[0].default_value == "relaxed");
  CHECK(slo[0].accepted == "relaxed|strict|off");
  CHECK(slo[1].default_value == "0.9");
  CHECK(slo[1].accepted == "[0.05, 4]");
  CHECK(slo[9].default_value == "0.3");  // batch_margin: margin + 0.1, printed without binary noise
  CHECK(slo[11].default_value == "4096");
  CHECK(slo[13].default_value == "priority");
  CHECK(slo[13].accepted == "priority|edf");
  CHECK(keys("round-based") == std::vector<std::string>{"round_steps", "round_s", "scale_up", "mid_round", "round_quantile", "max_batch",
                                                        "batch_margin"});
  CHECK(keys("throughput-first") == std::vector<std::string>{"chunk_steps", "max_inefficiency", "starvation_factor", "starvation_s"});
  // Every listed default is accepted back, and gives the policy the spec without it gives.
  for (const auto& name : r.names()) {
    for (const auto& k : r.parameters(name)) {
      if (k.default_value == "required") continue;
      INFO(name << ":" << k.key << "=" << k.default_value);
      const auto made = r.make(name + ":" + k.key + "=" + k.default_value);
      CHECK(made.has_value());
    }
  }
  const auto unknown = r.make("round-based:speed=2");
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error().what().find("unknown parameter 'speed' (it takes: round_steps, round_s, scale_up, mid_round, round_quantile, max_batch, "
                                    "batch_margin)") != std::string::npos);
  CHECK(r.make("rssp:speed=2").error().what().find("(it takes no parameters)") != std::string::npos);
}

TEST_CASE("A spec parses into its name and parameters without building the policy", "[policy][registry]") {
  policy_registry r;
  register_static_policies(r, 8);
  const auto positional = r.parse("static:4");
  REQUIRE(positional.has_value());
  CHECK(positional.value().name == "static");
  CHECK(positional.value().values == std::map<std::string, std::string>{{"degree", "4"}});  // under its key
  CHECK(r.parse("static:99").has_value());  // values are make()'s to check
  CHECK(r.parse("rssp").value().values.empty());
  const auto twice = r.parse("static:degree=2:degree=4");
  REQUIRE_FALSE(twice.has_value());
  CHECK(twice.error().what().find("given twice") != std::string::npos);
  CHECK_FALSE(r.parse("nope:x=1").has_value());
  CHECK_FALSE(r.parse("rssp:3").has_value());  // rssp has no positional parameter
}

// ---- pricing a workload before a run -------------------------------------------------------------

namespace {
struct nan_for_bad_model : toy_cost {  // a broken cost model: no time for model "bad"
  double step_seconds(const request_shape& s, int k) const {
    return s.model == "bad" ? std::numeric_limits<double>::quiet_NaN() : toy_cost::step_seconds(s, k);
  }
};
}  // namespace

TEST_CASE("A request the cost model cannot price, or whose run overflows the clock, is an input error", "[runtime][input]") {
  workload w{"w.csv", {}};
  w.requests.push_back(request_spec{"ok", 0, {"toy", 512, 512, 1}, 20, never, 0, "", 2});
  REQUIRE_FALSE(check_workload_costs(w, toy_cost{}, 8).has_value());

  w.requests.push_back(request_spec{"huge", 0, {"bad", 512, 512, 1}, 20, never, 0, "", 3});
  auto e = check_workload_costs(w, nan_for_bad_model{}, 8);
  REQUIRE(e.has_value());
  REQUIRE(e->file == "w.csv");
  REQUIRE(e->line == 3);
  REQUIRE(e->what().find("request 'huge'") != std::string::npos);
  CHECK(e->column == "model");  // the cost model cannot price it: the model is named

  // A shape too large to price names its largest dimension: the column a typo most likely hit.
  struct per_pixel_frame : toy_cost {
    double step_seconds(const request_shape& s, int) const { return 10.0 * s.height * s.width * s.frames; }
  };
  w.requests.back() = request_spec{"frames", 0, {"toy", 512, 512, 1'000'000'000}, 20, never, 0, "", 3};
  e = check_workload_costs(w, per_pixel_frame{}, 8);
  REQUIRE(e.has_value());
  CHECK(e->column == "frames");
  CHECK_THAT(e->what(), Catch::Contains("w.csv:3: column 'frames': request 'frames': cost model:") && Catch::Contains("limit of 4.0e12 s"));
  w.requests.back().shape = {"toy", 2'000'000'000, 2'000'000'000, 1};
  CHECK(check_workload_costs(w, per_pixel_frame{}, 8)->column == "height");
  w.requests.back().shape = {"toy", 512, 2'000'000'000, 1};
  CHECK(check_workload_costs(w, per_pixel_frame{}, 8)->column == "width");

  // Past the clock's end: named by what weighs more, a late arrival or the work, with the limit stated.
  w.requests.back() = request_spec{"late", *to_ticks(4.0e12), {"toy", 2048, 2048, 1}, 100'000, never, 0, "", 4};
  e = check_workload_costs(w, toy_cost{}, 8);
  REQUIRE(e.has_value());
  CHECK(e->column == "arrival_s");
  CHECK_THAT(e->what(), Catch::Contains("arriving at 4000000000000 s") && Catch::Contains("limit of 4.0e12 s"));
  // Exact at the limit, where a double cannot tell 4.0e18 us from 4.0e18 us + a few steps: a
  // trajectory ending exactly at the limit fits, one microsecond more does not.
  struct ten_us_steps : toy_cost {
    double step_seconds(const request_shape&, int) const { return 1e-5; }
  };  // no encode or decode cost: the check counts steps + 2 stages of the slowest step or stage
  w.requests.back() = request_spec{"edge", clock_limit - 30, {"toy", 512, 512, 1}, 1, never, 0, "", 4};
  CHECK_FALSE(check_workload_costs(w, ten_us_steps{}, 8).has_value());
  w.requests.back().arrival = clock_limit - 29;
  CHECK(check_workload_costs(w, ten_us_steps{}, 8).has_value());
  w.requests.back().arrival = clock_limit;
  e = check_workload_costs(w, ten_us_steps{}, 8);
  REQUIRE(e.has_value());
  CHECK_THAT(e->what(), Catch::Contains("its 1 step of up to 1e-05 s each"));
  struct slow_steps : toy_cost {
    double step_seconds(const request_shape&, int) const { return 1e8; }
  };
  w.requests.back() = request_spec{"long", 0, {"toy", 512, 512, 1}, 100'000, never, 0, "", 4};
  e = check_workload_costs(w, slow_steps{}, 8);
  REQUIRE(e.has_value());
  CHECK(e->column == "steps");
  CHECK_THAT(e->what(), Catch::Contains("100000 steps of up to 100000000 s each"));
}

// ---- simulate(): progress reports ----------------------------------------------------------------

TEST_CASE("simulate reports progress while it runs, in order, and never after the last request ended", "[runtime][simulate]") {
  const workload w{"p.csv", random_requests(21, 3000, 0.02)};  // tens of thousands of events
  rssp_policy p;
  std::vector<simulation_progress> seen;
  std::vector<std::string> labels;
  simulation_options o;
  o.progress_interval_s = 0.0;  // every check (every 1024 events): deterministic for the test
  o.progress = [&](const simulation_progress& pr) {
    seen.push_back(pr);
    labels.emplace_back(pr.label);
  };
  const auto m = simulate(w, cluster{8, 8, "x"}, toy_cost{}, p, "rssp-progress", o);
  REQUIRE(seen.size() >= 2);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    INFO("report " << i);
    CHECK(labels[i] == "rssp-progress");
    CHECK(seen[i].total == 3000);
    CHECK(seen[i].ended < seen[i].total);  // not after the end
    CHECK(seen[i].wall_s >= 0.0);
    if (i > 0) {
      CHECK(seen[i].ended >= seen[i - 1].ended);
      CHECK(seen[i].now >= seen[i - 1].now);
    }
  }
  CHECK(seen.back().ended > seen.front().ended);
  CHECK(seen.back().now <= *to_ticks(m.makespan_s) + w.requests.front().arrival);

  // The same run without a callback, or with an interval longer than the run, reports nothing and
  // gives the same figures.
  std::size_t calls = 0;
  simulation_options quiet;
  quiet.progress = [&](const simulation_progress&) { ++calls; };
  quiet.progress_interval_s = 3600.0;
  rssp_policy p2;
  const auto m2 = simulate(w, cluster{8, 8, "x"}, toy_cost{}, p2, "rssp", quiet);
  CHECK(calls == 0);
  CHECK(m2.completed == m.completed);
  CHECK(m2.makespan_s == m.makespan_s);
}

TEST_CASE("the tools' progress line says how far a run is and, once requests have ended, about how long is left", "[runtime][simulate]") {
  using paraflex_bench::progress_line;
  simulation_progress p{.label = "slo-aware", .ended = 250, .total = 1000, .now = 12'340'000, .wall_s = 5.0};
  CHECK(progress_line("paraflex-sim", p) ==
        "paraflex-sim: slo-aware: 250/1000 requests ended (25%), simulated 12.3 s, 5.0 s elapsed, about 15 s left");
  p.ended = 0;  // no rate yet: no estimate
  CHECK(progress_line("paraflex-tune", p) == "paraflex-tune: slo-aware: 0/1000 requests ended (0%), simulated 12.3 s, 5.0 s elapsed");
  p.total = 0;  // an empty workload never reports, but the line must not divide by zero
  CHECK(progress_line("t", p) == "t: slo-aware: 0/0 requests ended, simulated 12.3 s, 5.0 s elapsed");
}

// ---- Chrome trace ----------------------------------------------------------------------------------

TEST_CASE("the Chrome trace is valid JSON with one track per GPU and one slice per device of every task", "[runtime][trace]") {
  const workload w{"t.csv", random_requests(31, 40, 0.05)};
  any_policy p = paraflex_test::builtin_policies(4).make("slo-aware").value_or_throw();
  chrome_trace_recorder trace;
  std::vector<task_record> records;
  simulation_options o;
  o.faults.fail_rate = 0.05;  // failed slices too
  o.seed = 3;
  const auto m = simulate(w, cluster{4, 2, "x"}, toy_cost{}, p, "slo-aware", o, [&](auto& s) {
    s.on_task_record([&](const task_record& t) {
      records.push_back(t);
      trace.add(t, s.request(t.request).spec.id);
    });
  });
  CHECK(m.completed + m.dropped == w.requests.size());
  std::ostringstream out;
  trace.write(out, 4);
  const auto doc = nlohmann::json::parse(out.str());  // throws (fails the test) if not valid JSON
  const auto& ev = doc.at("traceEvents");
  std::set<int> named_tracks;
  std::map<int, std::vector<std::pair<tick, tick>>> slices;
  std::size_t failed = 0, total = 0;
  for (const auto& e : ev) {
    if (e.at("ph") == "M") {
      if (e.at("name") == "thread_name") named_tracks.insert(e.at("tid").get<int>());
      continue;
    }
    REQUIRE(e.at("ph") == "X");
    const int tid = e.at("tid").get<int>();
    CHECK(tid >= 0);
    CHECK(tid < 4);
    const tick ts = e.at("ts").get<tick>(), dur = e.at("dur").get<tick>();
    CHECK(dur >= 0);
    slices[tid].emplace_back(ts, ts + dur);
    CHECK(e.at("name") == e.at("args").at("request"));
    failed += e.at("cat") == "failed";
    ++total;
  }
  CHECK(named_tracks == std::set<int>{0, 1, 2, 3});
  std::size_t expected = 0, expected_failed = 0;
  for (const auto& t : records) {
    expected += t.devices.size();
    expected_failed += t.ok ? 0 : t.devices.size();
  }
  CHECK(total == expected);
  CHECK(trace.size() == expected);
  CHECK(failed == expected_failed);
  CHECK(failed > 0);
  for (auto& [tid, v] : slices) {  // one thing at a time on every track
    std::sort(v.begin(), v.end());
    for (std::size_t i = 1; i < v.size(); ++i) CHECK(v[i - 1].second <= v[i].first);
  }
}

// The bytes of a trace of `gpus` devices that chrome_trace_file writes to `path` while run(attach)
// simulates.
template <class Run>
std::string traced_to_file(const std::string& path, int gpus, Run&& run) {
  {
    chrome_trace_file file(path, gpus);
    run([&](auto& s) { file.attach(s); });
    file.finish();
  }
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST_CASE("a trace written to its file as the run goes has the recorder's bytes, and one left unfinished is removed", "[runtime][trace]") {
  const workload w{"t.csv", random_requests(17, 30, 0.05)};
  simulation_options o;
  o.faults.fail_rate = 0.05;
  o.seed = 5;
  const auto run = [&](auto&& attach) {
    any_policy p = paraflex_test::builtin_policies(4).make("slo-aware").value_or_throw();
    (void)simulate(w, cluster{4, 2, "x"}, toy_cost{}, p, "slo-aware", o, attach);
  };
  chrome_trace_recorder recorder;
  run([&](auto& s) { recorder.attach(s); });
  std::ostringstream expected;
  recorder.write(expected, 4);
  REQUIRE(recorder.size() > 0);

  const auto dir = std::filesystem::temp_directory_path() / "paraflex_trace_file_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "t.json").string();
  CHECK(traced_to_file(path, 4, run) == expected.str());

  {  // the run threw before finish(): no half-written JSON stays behind
    chrome_trace_file file(path, 4);
    CHECK(std::filesystem::exists(path));
  }
  CHECK_FALSE(std::filesystem::exists(path));
  std::filesystem::remove_all(dir);

  // A path that cannot be opened fails at once, naming where it came from.
  try {
    chrome_trace_file file((dir / "no" / "such" / "t.json").string(), 4, 1, "--trace-out");
    FAIL("no exception");
  } catch (const input_exception& e) {
    CHECK_THAT(e.what(), Catch::Contains("--trace-out '") && Catch::Contains("cannot open for writing"));
  }
}

TEST_CASE("a trace names a request by its id up to 256 bytes, and by a 200-byte prefix and a hash of the whole id beyond", "[runtime][trace]") {
  const std::string at_limit(max_trace_id_bytes, 'a');
  CHECK(trace_id(at_limit) == at_limit);
  CHECK(trace_id("r-7") == "r-7");

  // Two long ids that share their first 300 bytes: shortened, still told apart, and stable.
  const std::string stem(300, 'b');
  const std::string one = stem + "-one", two = stem + "-two";
  const std::string short_one = trace_id(one), short_two = trace_id(two);
  CHECK(short_one.size() == 200 + 4 + 16);
  CHECK(short_one.substr(0, 200) == stem.substr(0, 200));
  CHECK(short_one.substr(200, 4) == "...#");
  CHECK(short_one != short_two);
  CHECK(trace_id(one) == short_one);
  CHECK(trace_id(short_one) == short_one);  // shortening twice changes nothing

  // A two-byte character across byte 200 is left out whole, not cut.
  const std::string accented = std::string(199, 'c') + "\xC3\xA9" + std::string(100, 'c');
  CHECK(trace_id(accented).substr(0, 203) == std::string(199, 'c') + "...#");
  CHECK(is_valid_utf8(trace_id(accented)));

  // Through a run: a 1 MB id names its slices shortened, in the recorder and in the file alike.
  auto reqs = random_requests(23, 6, 0.05);
  reqs[2].id = std::string(1'000'000, 'x');
  const workload w{"t.csv", reqs};
  const auto run = [&](auto&& attach) {
    any_policy p = paraflex_test::builtin_policies(4).make("slo-aware").value_or_throw();
    (void)simulate(w, cluster{4, 2, "x"}, toy_cost{}, p, "slo-aware", simulation_options{}, attach);
  };
  chrome_trace_recorder recorder;
  run([&](auto& s) { recorder.attach(s); });
  std::ostringstream text;
  recorder.write(text, 4);
  CHECK(text.str().size() < 200'000);
  const auto doc = nlohmann::json::parse(text.str());
  std::size_t long_slices = 0;
  for (const auto& e : doc.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    CHECK(e.at("name") == e.at("args").at("request"));
    long_slices += e.at("name") == trace_id(reqs[2].id);
  }
  CHECK(long_slices > 0);

  const auto dir = std::filesystem::temp_directory_path() / "paraflex_trace_long_id_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "t.json").string();
  CHECK(traced_to_file(path, 4, run) == text.str());
  std::filesystem::remove_all(dir);
}

TEST_CASE("an output file stays only when committed, and a device or a link is never removed", "[runtime][trace]") {
  const auto dir = std::filesystem::temp_directory_path() / "paraflex_output_file_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "out.csv").string();
  {
    output_file f(path, "--bound-out");
    f.stream() << "half";
  }
  CHECK_FALSE(std::filesystem::exists(path));
  {
    output_file f(path, "--bound-out");
    f.stream() << "whole\n";
    f.commit();
    CHECK_FALSE(f.is_open());
    f.commit();  // a second commit does nothing
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  CHECK(line == "whole");
  {
    output_file moved_from(path, "x");
    output_file owner(std::move(moved_from));  // only the owner removes it
    CHECK(owner.is_open());
    CHECK_FALSE(moved_from.is_open());
  }
  CHECK_FALSE(std::filesystem::exists(path));
  { output_file f("/dev/null", "--trace-out"); }
  CHECK(std::filesystem::exists("/dev/null"));
  const auto target = dir / "target.json", link = dir / "link.json";
  { std::ofstream(target) << "x"; }
  std::filesystem::create_symlink(target, link);
  { output_file f(link.string(), "--trace-out"); }
  CHECK(std::filesystem::is_symlink(link));
  CHECK(std::filesystem::exists(target));
  try {
    output_file f((dir / "no" / "out.csv").string(), "--bound-out");
    FAIL("no exception");
  } catch (const input_exception& e) {
    CHECK(std::string(e.what()) == fmt::format("--bound-out '{}': cannot open for writing (No such file or directory)", (dir / "no" / "out.csv").string()));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("the Chrome trace stays valid JSON for request ids with quotes, control bytes and invalid UTF-8", "[runtime][trace]") {
  chrome_trace_recorder trace;
  task_record t;
  t.devices = device_group{1};
  t.task = task_desc{task_kind::step, 2};
  t.start = 10;
  t.end = 25;
  const std::string nasty = "a\"b\\c\n\x01 \xff\xfe caf\xc3\xa9 \xe2\x82";
  trace.add(t, nasty);
  trace.add(t, "\xed\xa0\x80");  // an encoded UTF-16 surrogate: not UTF-8
  std::ostringstream out;
  trace.write(out, 2);
  const auto doc = nlohmann::json::parse(out.str());
  const auto& x = doc.at("traceEvents").back();
  CHECK(x.at("name").get<std::string>() == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // three U+FFFD
  const auto& y = doc.at("traceEvents").at(doc.at("traceEvents").size() - 2);
  CHECK(y.at("name").get<std::string>() == "a\"b\\c\n\x01 \xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd");
  CHECK(y.at("args").at("task") == "step 2");
  CHECK(y.at("ts") == 10);
  CHECK(y.at("dur") == 15);
}

// ---- pricing: round_cost_seconds and make_shape_costs --------------------------------------------

TEST_CASE("round_cost_seconds rounds to the nearest microsecond and rejects times that are not durations", "[runtime][cost]") {
  const request_shape s{"m", 512, 512, 1};
  CHECK(round_cost_seconds(0.0, s, 1) == 0);
  CHECK(round_cost_seconds(1.0, s, 1) == 1'000'000);
  CHECK(round_cost_seconds(0.0000014, s, 1) == 1);
  CHECK(round_cost_seconds(0.0000016, s, 1) == 2);
  CHECK(round_cost_seconds(2.5e-7, s, 1) == 0);
  CHECK(round_cost_seconds(4.0e12, s, 1) == 4'000'000'000'000'000'000);
  CHECK_THROWS_WITH(round_cost_seconds(-0.001, s, 3), Catch::Contains("is negative") && Catch::Contains("m 512x512x1 on 3 devices"));
  CHECK_THROWS_WITH(round_cost_seconds(std::numeric_limits<double>::quiet_NaN(), s, 1), Catch::Contains("not a finite number"));
  CHECK_THROWS_WITH(round_cost_seconds(std::numeric_limits<double>::infinity(), s, 1), Catch::Contains("not a finite number"));
  // Too large says so, and what the limit is: a huge shape, not a broken cost model.
  CHECK_THROWS_WITH(round_cost_seconds(1e300, s, 1), Catch::Contains("beyond the simulated clock's limit of 4.0e12 s") &&
                                                         Catch::Contains("shape is too large"));
  CHECK_THROWS_AS(round_cost_seconds(1e300, s, 1), shape_too_large);

  struct tiny : toy_cost {  // a step of a nanosecond still takes the shortest tick: 0 means "not allowed"
    double step_seconds(const request_shape&, int) const { return 1e-9; }
  };
  const shape_costs c = make_shape_costs(tiny{}, s, 4);
  CHECK(c.allowed_degrees == std::vector<int>{1, 2, 3, 4});
  for (int k = 1; k <= 4; ++k) CHECK(c.step[static_cast<std::size_t>(k)] == 1);
  CHECK(c.fastest_degree == 1);  // ties keep the fewest devices
}

TEST_CASE("make_shape_costs and check_workload_costs price a MultiDegreeCostModel's shape in one call each", "[runtime][cost]") {
  // Even degrees only, at 1 / k s; step_seconds and allows_degree must not be asked when the model
  // lists its degrees itself.
  struct listed : toy_cost {
    mutable int lists = 0, singles = 0;
    bool allows_degree(const request_shape&, int k) const { return ++singles, k % 2 == 0; }
    double step_seconds(const request_shape&, int k) const { return ++singles, 1.0 / k; }
    void allowed_step_seconds(const request_shape&, int up_to, std::vector<std::pair<int, double>>& allowed) const {
      ++lists;
      allowed.clear();
      for (int k = 2; k <= up_to; k += 2) allowed.emplace_back(k, 1.0 / k);
    }
  };
  static_assert(MultiDegreeCostModel<listed> && !MultiDegreeCostModel<toy_cost>);
  const listed model;
  const shape_costs c = make_shape_costs(model, request_shape{"m", 512, 512, 1}, 7);
  CHECK(model.lists == 1);
  CHECK(model.singles == 0);
  CHECK(c.allowed_degrees == std::vector<int>{2, 4, 6});
  CHECK(c.step == std::vector<tick>{0, 0, 500'000, 0, 250'000, 0, 166'667, 0});
  CHECK(c.fastest_degree == 6);
  workload w;
  for (int i = 0; i < 3; ++i) w.requests.push_back(request_spec{});
  for (auto& r : w.requests) r.shape = request_shape{"m", 512, 512, 1}, r.steps = 10;
  w.requests[2].shape.height = 1024;
  CHECK_FALSE(check_workload_costs(w, model, 7).has_value());
  CHECK(model.lists == 3);  // once per distinct shape
  CHECK(model.singles == 0);
}

// ---- placement -----------------------------------------------------------------------------------

TEST_CASE("find_free_group prefers aligned blocks in the best-fitting node, then any devices", "[policy][placement]") {
  const cluster c{8, 4, "x"};  // nodes {0..3} and {4..7}
  device_set all(8, true);
  CHECK(find_free_group(all, 2, c) == device_group{0, 1});
  device_set no0 = all;
  no0.reset(0);
  CHECK(find_free_group(no0, 2, c) == device_group{2, 3});      // node 0 has 3 free: the best fit
  CHECK(find_free_group(no0, 3, c) == device_group{1, 2, 3});   // no aligned block of 3: lowest free in the node
  CHECK(find_free_group(no0, 4, c) == device_group{4, 5, 6, 7}); // only node 1 holds 4
  CHECK(find_free_group(no0, 5, c) == device_group{1, 2, 3, 4, 5}); // wider than a node: lowest free anywhere
  CHECK_FALSE(find_free_group(no0, 8, c).has_value());
  CHECK_FALSE(find_free_group(all, 0, c).has_value());
  device_set scattered(8, false);
  for (device_id d : {1, 4, 6}) scattered.set(d);
  CHECK(find_free_group(scattered, 2, c) == device_group{4, 6});  // one node holds 2, none holds 3
  CHECK(find_free_group(scattered, 3, c) == device_group{1, 4, 6});
}

namespace {
// Runs one task of request 0 on {2, 3}, then records what place() answers at its next decision.
struct place_probe {
  std::vector<std::optional<device_group>> answers;
  void decide(const scheduler_view& v, decision_buffer& out) {
    for (request_handle h : v.waiting()) {
      if (v.request(h).state_group.empty()) {
        out.assign(h, device_group{2, 3}, 1);
        continue;
      }
      const device_set free = v.free_devices();
      device_set without3 = free;
      without3.reset(3);
      answers.push_back(place(v, h, 2, free));      // keeps its degree, devices free: stays (no migration)
      answers.push_back(place(v, h, 1, free));      // another degree: find_free_group
      answers.push_back(place(v, h, 2, without3));  // its devices not all available: find_free_group
      out.assign(h, *answers.front(), decision_buffer::all_tasks);
      return;
    }
  }
};
}  // namespace

TEST_CASE("place keeps a request on its own devices when it keeps its degree, else finds a free group", "[policy][placement]") {
  toy_cost cost;
  place_probe p;
  simulated_executor ex;
  scheduler s(cluster{4, 4, "x"}, p, ex, cost);
  s.submit(request_spec{"r", 0, {"toy", 512, 512, 1}, 3, never, 0, ""});
  s.run();
  REQUIRE(p.answers.size() == 3);
  CHECK(p.answers[0] == std::optional<device_group>(device_group{2, 3}));
  CHECK(p.answers[1] == std::optional<device_group>(device_group{0}));
  CHECK(p.answers[2] == std::optional<device_group>(device_group{0, 1}));
  CHECK(s.request(0).phase == request_phase::completed);
  CHECK(s.request(0).migrations == 0);
}

// ---- fault flags ---------------------------------------------------------------------------------

TEST_CASE("fault flags parse ID@SECONDS and ID@SECONDS:FACTOR strictly, naming the flag and the reason", "[runtime][faults]") {
  const auto f = parse_device_failure("3@1.5", 8).value_or_throw();
  CHECK(f.device == 3);
  CHECK(f.at == 1'500'000);
  CHECK(parse_device_failure(" 0 @ 0 ", 1).value_or_throw().at == 0);
  const auto s = parse_straggler("7@+2:3.5", 8).value_or_throw();
  CHECK(s.device == 7);
  CHECK(s.from == 2'000'000);
  CHECK(s.factor == 3.5);
  CHECK(parse_straggler("0@0:1000", 1).value_or_throw().factor == 1000.0);

  const auto bad_failure = [](const char* text, const char* why) {
    const auto r = parse_device_failure(text, 8);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().file == "--fail-device");
    INFO(r.error().what());
    CHECK_THAT(r.error().what(), Catch::Contains(why));
    CHECK(is_valid_utf8(r.error().what()));
  };
  bad_failure("3", "expected ID@SECONDS");
  bad_failure("@1", "device ID: expected an integer, got an empty field");
  bad_failure("3@", "SECONDS: expected a number");
  bad_failure("8@1", "device ID 8 is not in [0, 7]");
  bad_failure("-1@1", "device ID -1 is not in [0, 7]");
  bad_failure("99999999999999999999@1", "integer out of range");
  bad_failure("1.5@1", "expected an integer");
  bad_failure("3@1s", "expected a number, got '1s'");
  bad_failure("3@nan", "finite");
  bad_failure("3@inf", "finite");
  bad_failure("3@-1", "SECONDS must be >= 0");
  bad_failure("3@1e300", "does not fit in the microsecond clock");
  bad_failure("3@1:2", "expected ID@SECONDS");  // a straggler's form for a failure
  bad_failure("3@\xff", "got '\\xFF'");
  const auto bad_straggler = [](const char* text, const char* why) {
    const auto r = parse_straggler(text, 8);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().file == "--straggler");
    INFO(r.error().what());
    CHECK_THAT(r.error().what(), Catch::Contains(why));
  };
  bad_straggler("3@1", "expected ID@SECONDS:FACTOR");
  bad_straggler("3@1:", "FACTOR: expected a number");
  bad_straggler("3@1:0", "FACTOR must be in [0.001, 1000]");
  bad_straggler("3@1:-2", "FACTOR must be in [0.001, 1000]");
  bad_straggler("3@1:1e-7", "FACTOR must be in [0.001, 1000]");  // would round steps to 0 us
  bad_straggler("3@1:1001", "[0.001, 1000]");
  bad_straggler("3@1:2:3", "FACTOR: expected a number, got '2:3'");
  bad_straggler("3@x:2", "SECONDS: expected a number");
}

namespace {
// Records the order in which requests arrive, and schedules nothing it does not have to: static:1.
struct arrival_recorder {
  static_degree_policy inner{1};
  std::vector<std::pair<tick, request_handle>> seen;
  void on_arrival(const scheduler_view& v, request_handle h) { seen.emplace_back(v.now(), h); }
  void decide(const scheduler_view& v, decision_buffer& out) { inner.decide(v, out); }
};
}  // namespace

TEST_CASE("requests submitted out of time order arrive in time order, ties in submission order", "[runtime][arrivals]") {
  toy_cost cost;
  simulated_executor ex;
  arrival_recorder p;
  scheduler s(cluster{4, 4, "x"}, p, ex, cost);
  s.reserve(9);
  // In order, then earlier ones (queued apart from the in-order ones), then ties with both.
  const tick at[] = {0, 1'000, 5'000, 9'000, 2'000, 1'000, 9'000, 0, 5'000};
  for (std::size_t i = 0; i < std::size(at); ++i) {
    s.submit(request_spec{"r" + std::to_string(i), at[i], {"toy", 512, 512, 1}, 2, never, 0, ""});
  }
  s.run();
  const std::vector<std::pair<tick, request_handle>> want = {{0, 0},     {0, 7},     {1'000, 1}, {1'000, 5}, {2'000, 4},
                                                             {5'000, 2}, {5'000, 8}, {9'000, 3}, {9'000, 6}};
  CHECK(p.seen == want);
  for (std::size_t i = 0; i < std::size(at); ++i) CHECK(s.request(static_cast<request_handle>(i)).phase == request_phase::completed);
}

// ---- Host timing of the policy calls ----------------------------------------------------------------

TEST_CASE("a histogram of sampled calls counts every call and weighs each sample by the calls it stands for", "[runtime][timing]") {
  duration_histogram h;
  CHECK(h.mean() == 0.0);
  CHECK(h.quantile(0.99) == 0.0);
  h.skip();  // a call that was not timed: counted, no sample
  CHECK(h.count() == 1);
  CHECK(h.mean() == 0.0);
  h.add(2.0);
  h.add(10.0, 3);  // stands for three calls
  h.skip();
  h.skip();
  CHECK(h.count() == 5);
  CHECK(h.mean() == Approx((2.0 + 3 * 10.0) / 4));
  CHECK(h.max() == 10.0);
  // Three of the four weighted calls took 10 us: the median is in 10's bucket, not 2's.
  CHECK(h.quantile(0.5) == Approx(10.0).epsilon(0.07));
  CHECK(h.quantile(0.25) == Approx(2.0).epsilon(0.07));
}

TEST_CASE("a long run, whose policy calls are timed only in part, still counts every call", "[runtime][timing]") {
  const workload w{"t.csv", random_requests(5, 3000, 0.02)};
  rssp_policy p;
  simulated_executor ex;
  toy_cost cost;
  scheduler s(cluster{8, 8, "x"}, p, ex, cost);
  for (const auto& r : w.requests) s.submit(r);
  s.run();
  const auto& st = s.stats();
  REQUIRE(st.decisions > 4 * decision_stats::timed_calls);  // most calls are past the timed ones
  CHECK(st.host_us.count() == st.decisions);
  CHECK(st.host_us.mean() > 0.0);
  CHECK(st.host_us.quantile(0.99) >= st.host_us.quantile(0.5));
  // The report's decision count is every call, timed or not.
  run_metrics m;
  set_decision_timings(m, st.host_us, 1.0);
  CHECK(m.decisions == st.decisions);
  CHECK(m.decision_us_mean == st.host_us.mean());
}
