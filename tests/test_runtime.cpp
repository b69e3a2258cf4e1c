// Tests of the runtime, following its concepts: trajectory, resource, policy, executor, scheduler.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <queue>
#include <random>
#include <limits>
#include <set>

#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/policy/static_degree.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/sim/metrics.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/testing/archetypes.hpp"

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

// Records everything a run does and checks the runtime's invariants.
struct invariant_checker {
  std::map<device_id, std::vector<std::pair<tick, tick>>> busy;
  std::map<request_handle, std::vector<task_desc>> tasks;
  std::map<request_handle, int> ends;
  tick last_end = 0;
  bool time_monotonic = true;

  template <class S>
  void attach(S& s) {
    s.on_task_record([this](const task_record& t) {
      for (device_id d : t.devices) busy[d].push_back({t.start, t.end});
      if (t.ok && t.task.kind != task_kind::migrate) tasks[t.request].push_back(t.task);
      if (t.end < last_end) time_monotonic = false;
      last_end = t.end;
    });
    s.on_request_end([this](const request_record& r) {
      ++ends[r.handle];
      if (r.finish < last_end) time_monotonic = false;
    });
  }

  void check(const scheduler_state& st, bool faults) {
    REQUIRE(time_monotonic);
    for (request_handle h = 0; h < st.requests.size(); ++h) {
      const auto& r = st.requests[h];
      INFO("request " << r.spec.id);
      REQUIRE(ends[h] == 1);
      REQUIRE(r.ended());
      if (r.phase == request_phase::dropped) REQUIRE_FALSE(r.drop_reason.empty());
      if (r.phase == request_phase::completed && !faults) {
        const auto& seq = tasks[h];
        REQUIRE(seq.size() == static_cast<std::size_t>(r.spec.steps) + 2);
        REQUIRE(seq.front().kind == task_kind::encode);
        for (int i = 0; i < r.spec.steps; ++i) REQUIRE(seq[static_cast<std::size_t>(i) + 1] == task_desc{task_kind::step, i});
        REQUIRE(seq.back().kind == task_kind::decode);
      }
    }
    for (auto& [d, slices] : busy) {
      std::sort(slices.begin(), slices.end());
      for (std::size_t i = 1; i < slices.size(); ++i) {
        INFO("device " << d);
        REQUIRE(slices[i - 1].second <= slices[i].first);
      }
    }
  }
};

template <class P, class C = toy_cost>
std::vector<request_record> run_policy(P& p, const std::vector<request_spec>& reqs, cluster c, std::uint64_t seed = 0,
                                       simulation_faults faults = {}, invariant_checker* chk = nullptr) {
  C cost;
  simulated_executor ex(seed, faults);
  scheduler s(c, p, ex, cost);
  if (chk) chk->attach(s);
  for (const auto& r : reqs) s.submit(r);
  s.run();
  if (chk) chk->check(s.state(), faults.fail_rate > 0 || !faults.device_failures.empty());
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
    out.emplace_back(n, [n] { return builtin_policies(64).make(n).value_or_throw(); });
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
        invariant_checker chk;
        run_policy(p, reqs, cluster{gpus, per_node, "x"}, seed, {}, &chk);
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
    invariant_checker chk;
    const auto out = run_policy(p, reqs, cluster{8, 8, "x"}, 7, f, &chk);
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

TEST_CASE("A disallowed degree is rejected and static:K drops requests that can never run at K", "[runtime][decisions]") {
  const auto reqs = random_requests(4, 5, 0.1);
  static_degree_policy p(4);  // 6 % 4 != 0
  const auto out = run_policy<static_degree_policy, heads_cost>(p, reqs, cluster{8, 8, "x"});
  for (const auto& r : out) REQUIRE(r.drop_reason == "degree_not_allowed");
}

TEST_CASE("A policy that never schedules cannot hang the runtime", "[runtime][decisions]") {
  idle_policy p;
  const auto out = run_policy(p, random_requests(2, 10, 0.1), cluster{4, 4, "x"});
  for (const auto& r : out) REQUIRE(r.drop_reason == "policy_stalled");
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

TEST_CASE("Metrics follow the contract's definitions", "[metrics]") {
  const auto reqs = random_requests(8, 60, 0.2);
  static_degree_policy p(2);
  const auto out = run_policy(p, reqs, cluster{8, 8, "x"});
  const auto m = compute_metrics("static:2", out, 8, 100.0);
  REQUIRE(m.completed + m.dropped == m.requests);
  REQUIRE(m.slo_attainment.has_value());
  REQUIRE(*m.slo_attainment >= 0.0);
  REQUIRE(*m.slo_attainment <= 1.0);
  REQUIRE(m.throughput_rps == Approx(static_cast<double>(m.completed) / m.makespan_s));
  REQUIRE(m.utilization == Approx(100.0 / (8 * m.makespan_s)));
  REQUIRE(m.per_class.size() == 4);
  REQUIRE(*m.latency_s.p50 <= *m.latency_s.p95);
  const auto none = compute_metrics("x", {}, 8, 0.0);
  REQUIRE_FALSE(none.slo_attainment.has_value());
  REQUIRE_FALSE(none.latency_s.mean.has_value());
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

  w.requests.back() = request_spec{"long", *to_ticks(4.0e12), {"toy", 2048, 2048, 1}, 100'000, never, 0, "", 4};
  e = check_workload_costs(w, toy_cost{}, 8);
  REQUIRE(e.has_value());
  REQUIRE(e->column == "steps");
}
