// round-based (TetriServe) and throughput-first policies: invariants on random workloads over several
// cluster shapes, determinism, Step A's mixed allocation, Step B's knapsack against brute force, and
// the behaviours each policy exists for, in small constructed cases.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "bundled_data.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/registry.hpp"
#include "paraflex/policy/round_based.hpp"
#include "paraflex/policy/throughput_first.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/testing/invariants.hpp"

using namespace paraflex;

namespace {

/// Step times by shape height and degree (index = degree; degrees past the table keep its last value).
struct toy_cost {
  std::map<int, std::vector<double>> step;  // height -> {unused, T(1), T(2), ...}
  double step_seconds(const request_shape& s, int k) const {
    const auto& v = step.at(s.height);
    return static_cast<std::size_t>(k) < v.size() ? v[static_cast<std::size_t>(k)] : v.back();
  }
  bool allows_degree(const request_shape&, int) const { return true; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.0005; }
};
static_assert(CostModel<toy_cost>);

const profile_cost_model& flux_cost() { return paraflex_test::bundled_cost(); }

request_spec make_request(std::string id, double arrival_s, int side, int steps, double slo_s = 0) {
  request_spec r;
  r.id = std::move(id);
  r.arrival = *to_ticks(arrival_s);
  r.shape = request_shape{"flux-dev", side, side, 1};
  r.steps = steps;
  if (slo_s > 0) r.slo = *to_ticks(slo_s);
  return r;
}

/// A random FLUX workload at about full load on `gpus` GPUs: shapes 256..2048, 3-20 steps, deadlines of
/// 1-6 x the latency at the fastest degree (every fifth request has none), uniform arrivals.
std::vector<request_spec> random_workload(std::uint64_t seed, int n, int gpus) {
  std::mt19937_64 g(seed);
  auto uniform = [&] { return static_cast<double>(g() >> 11) * 0x1.0p-53; };
  const int sides[] = {256, 512, 1024, 2048};
  const int step_counts[] = {3, 5, 8, 12, 20};
  const auto& cost = flux_cost();
  std::vector<request_spec> out;
  double work = 0;
  for (int i = 0; i < n; ++i) {
    const int side = sides[g() % 4];
    const int steps = step_counts[g() % 5];
    request_spec r = make_request(std::to_string(i + 1), 0, side, steps);
    double fastest = 1e300;
    for (int k = 1; k <= gpus; ++k) fastest = std::min(fastest, cost.step_seconds(r.shape, k));
    if (i % 5 != 4) r.slo = *to_ticks((1.0 + 5.0 * uniform()) * steps * fastest);
    work += steps * cost.step_seconds(r.shape, 1);
    out.push_back(std::move(r));
  }
  const double span = work / gpus;  // load 1.0
  std::vector<double> at;
  for (int i = 0; i < n; ++i) at.push_back(span * uniform());
  std::sort(at.begin(), at.end());
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)].arrival = *to_ticks(at[static_cast<std::size_t>(i)]);
  return out;
}

struct outcome {
  std::vector<request_record> requests;  ///< copies: `trajectory` dangles once the scheduler is gone
  std::vector<int> ended;                ///< on_request_end calls per handle
  std::vector<bool> all_tasks_done;      ///< position == tasks_total() at the end
  std::vector<task_record> tasks;
  std::uint64_t decisions = 0;
};

template <Policy P, CostModel C>
outcome simulate(P& policy, cluster topology, const std::vector<request_spec>& w, const C& cost) {
  simulated_executor ex;
  scheduler sched(topology, policy, ex, cost);
  outcome o;
  o.ended.assign(w.size(), 0);
  sched.on_request_end([&](const request_record& r) { ++o.ended.at(std::stoul(r.spec.id) - 1); });
  sched.on_task_record([&](const task_record& t) { o.tasks.push_back(t); });
  for (const auto& r : w) sched.submit(r);
  sched.run();
  o.requests = sched.state().requests;
  for (const auto& r : o.requests) o.all_tasks_done.push_back(r.position == r.tasks_total());
  o.decisions = sched.stats().decisions;
  return o;
}

policy_registry registry(int gpus) {
  policy_registry r;
  register_static_policies(r, gpus);
  register_round_based(r);
  register_throughput_first(r);
  return r;
}

any_policy make_policy(const std::string& spec, int gpus) { return registry(gpus).make(spec).value_or_throw(); }

/// No device ran two things at once, judged from the task records alone.
bool devices_never_overlap(const std::vector<task_record>& tasks, int gpus) {
  std::vector<std::vector<std::pair<tick, tick>>> by_device(static_cast<std::size_t>(gpus));
  for (const auto& t : tasks) {
    for (device_id d : t.devices) by_device.at(d).emplace_back(t.start, t.end);
  }
  for (auto& v : by_device) {
    std::sort(v.begin(), v.end());
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (v[i].first < v[i - 1].second) return false;
    }
  }
  return true;
}

tick makespan(const outcome& o) {
  tick first = never, last = 0;
  for (const auto& r : o.requests) {
    first = std::min(first, r.spec.arrival);
    last = std::max(last, r.finish);
  }
  return last - first;
}

struct cluster_case {
  int gpus, per_node;
};
const cluster_case clusters[] = {{1, 1}, {3, 3}, {8, 8}, {8, 4}, {16, 8}, {16, 4}};

void check_invariants(const std::string& spec) {
  for (const auto& cc : clusters) {
    for (std::uint64_t seed : {1u, 2u}) {
      INFO(spec << " on " << cc.gpus << " GPUs, " << cc.per_node << " per node, seed " << seed);
      const auto w = random_workload(seed * 97 + static_cast<std::uint64_t>(cc.gpus), 60, cc.gpus);
      any_policy p = make_policy(spec, cc.gpus);
      outcome o;
      REQUIRE_NOTHROW(o = simulate(p, cluster{cc.gpus, cc.per_node, "l20-inferred"}, w, flux_cost()));
      for (std::size_t i = 0; i < w.size(); ++i) {
        CHECK(o.ended[i] == 1);
        CHECK(o.requests[i].phase == request_phase::completed);  // neither policy drops
        CHECK(o.all_tasks_done[i]);
      }
      CHECK(devices_never_overlap(o.tasks, cc.gpus));
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Invariants and determinism.

TEST_CASE("round-based ends every request exactly once on random workloads and cluster shapes", "[policy][round-based]") {
  for (const char* spec : {"round-based", "round-based:mid_round=admit", "round-based:scale_up=off",
                           "round-based:round_steps=1", "round-based:round_s=0.5", "round-based:round_quantile=0"}) {
    check_invariants(spec);
  }
}

TEST_CASE("throughput-first ends every request exactly once on random workloads and cluster shapes",
          "[policy][throughput-first]") {
  for (const char* spec : {"throughput-first", "throughput-first:chunk_steps=4", "throughput-first:max_inefficiency=4",
                           "throughput-first:starvation_s=2:starvation_factor=0"}) {
    check_invariants(spec);
  }
}

TEST_CASE("round-based and throughput-first are deterministic", "[policy][round-based][throughput-first]") {
  const auto w = random_workload(11, 80, 8);
  for (const char* spec : {"round-based", "round-based:mid_round=admit", "throughput-first"}) {
    INFO(spec);
    any_policy a = make_policy(spec, 8), b = make_policy(spec, 8);
    const auto x = simulate(a, cluster{8, 4, "l20-inferred"}, w, flux_cost());
    const auto y = simulate(b, cluster{8, 4, "l20-inferred"}, w, flux_cost());
    REQUIRE(x.tasks.size() == y.tasks.size());
    for (std::size_t i = 0; i < x.tasks.size(); ++i) {
      CHECK(x.tasks[i].request == y.tasks[i].request);
      CHECK(x.tasks[i].start == y.tasks[i].start);
      CHECK(x.tasks[i].end == y.tasks[i].end);
      CHECK(x.tasks[i].devices == y.tasks[i].devices);
    }
    CHECK(x.decisions == y.decisions);
  }
}

/// A round-based run with a fixed round, driven step by step so that requests can be cancelled at a
/// time: at cancel_at, every waiting request (cancel_all) or the one of handle `cancel_one`.
struct round_run {
  std::vector<task_record> tasks;
  std::uint64_t rounds = 0, calls = 0;
  std::vector<request_record> requests;
};
template <CostModel C>
round_run run_fixed_rounds(round_based_options o, cluster topology, const C& cost, const std::vector<request_spec>& w,
                           const simulation_faults& faults, tick cancel_at = never, bool cancel_all = false,
                           request_handle cancel_one = 0) {
  round_based_policy policy(o);
  simulated_executor ex(7, faults);
  scheduler sched(std::move(topology), policy, ex, cost);
  round_run out;
  sched.on_task_record([&](const task_record& t) { out.tasks.push_back(t); });
  for (const auto& r : w) sched.submit(r);
  while (sched.unended() > 0) {
    const tick t = sched.next_wakeup();
    if (t == never) break;
    if (t >= cancel_at) {
      sched.turn_to(cancel_at);
      std::vector<request_handle> gone{cancel_one};
      if (cancel_all) gone.assign(sched.state().waiting.begin(), sched.state().waiting.end());
      for (request_handle h : gone) sched.cancel(h);
      cancel_at = never;
      sched.turn_to(sched.state().now);  // the cancellations are applied at once
      continue;
    }
    sched.turn_to(t);
  }
  out.rounds = policy.rounds();
  out.calls = sched.stats().decisions;
  out.requests = sched.state().requests;
  return out;
}

/// The same run under two sets of options that must not change the plan: the same tasks, request
/// ends and rounds; returns the two runs' policy calls.
template <CostModel C>
std::pair<std::uint64_t, std::uint64_t> check_same_schedule(const round_based_options& a, const round_based_options& b,
                                                            const cluster& topology, const C& cost, const std::vector<request_spec>& w,
                                                            const simulation_faults& faults, tick cancel_at = never,
                                                            bool cancel_all = false, request_handle cancel_one = 0) {
  const round_run x = run_fixed_rounds(a, topology, cost, w, faults, cancel_at, cancel_all, cancel_one);
  const round_run y = run_fixed_rounds(b, topology, cost, w, faults, cancel_at, cancel_all, cancel_one);
  REQUIRE(x.tasks.size() == y.tasks.size());
  for (std::size_t i = 0; i < x.tasks.size(); ++i) {
    INFO("task " << i);
    CHECK(x.tasks[i].request == y.tasks[i].request);
    CHECK(x.tasks[i].start == y.tasks[i].start);
    CHECK(x.tasks[i].end == y.tasks[i].end);
    CHECK(x.tasks[i].devices == y.tasks[i].devices);
  }
  REQUIRE(x.requests.size() == y.requests.size());
  for (std::size_t h = 0; h < x.requests.size(); ++h) {
    CHECK(x.requests[h].phase == y.requests[h].phase);
    CHECK(x.requests[h].finish == y.requests[h].finish);
  }
  CHECK(x.rounds == y.rounds);
  return {x.calls, y.calls};
}

/// The same run sleeping through idle rounds (skip_idle_rounds) and waking at every boundary (the
/// rounds slept through are counted as run); returns the two runs' policy calls.
template <CostModel C>
std::pair<std::uint64_t, std::uint64_t> check_sleeping_changes_nothing(round_based_options o, const cluster& topology, const C& cost,
                                                                       const std::vector<request_spec>& w, const simulation_faults& faults,
                                                                       tick cancel_at = never, bool cancel_all = false,
                                                                       request_handle cancel_one = 0) {
  round_based_options woke = o;
  o.skip_idle_rounds = true;
  woke.skip_idle_rounds = false;
  return check_same_schedule(o, woke, topology, cost, w, faults, cancel_at, cancel_all, cancel_one);
}

/// random_workload on 8 GPUs at `load` x full load, with task times off by up to 30%, 5% of tasks
/// failing and device `lost` failing at `lost_at_s`: the runs on which two modes are compared.
static std::pair<std::vector<request_spec>, simulation_faults> overloaded_with_faults(std::uint64_t seed, int n, tick load, device_id lost,
                                                                                     double lost_at_s) {
  auto w = random_workload(seed, n, 8);
  for (auto& r : w) r.arrival /= load;
  simulation_faults faults;
  faults.jitter = 0.3;
  faults.fail_rate = 0.05;
  faults.device_failures.push_back({lost, *to_ticks(lost_at_s)});
  return {std::move(w), std::move(faults)};
}

TEST_CASE("round-based sleeps through rounds that cannot launch anything without changing the schedule",
          "[policy][round-based]") {
  // Rounds far shorter than a step (10 ms against 0.1-10 s steps) on a cluster at load 5: most
  // boundaries find every device busy. Early and late task ends (jitter), failed tasks and a lost
  // device come between skipped boundaries, and at 30 s every waiting request is cancelled (the
  // skip then ends in a hook, with no call after it).
  const auto [w, faults] = overloaded_with_faults(5, 120, 5, 3, 20.0);
  for (const bool admit : {false, true}) {
    INFO("mid_round=" << (admit ? "admit" : "wait"));
    round_based_options o;
    o.round = *to_ticks(0.01);
    o.admit_mid_round = admit;
    const auto [slept_calls, woke_calls] =
        check_sleeping_changes_nothing(o, cluster{8, 4, "l20-inferred"}, flux_cost(), w, faults, *to_ticks(30.0), true);
    CHECK(slept_calls * 4 < woke_calls * 3);  // the calls of the rounds slept through are gone (half of all, here)
  }
}

TEST_CASE("round-based picks up the rounds it slept through where an early end or a cancellation falls",
          "[policy][round-based]") {
  // One GPU, rounds of 1 s, steps of 10 s. A (2 steps) starts at 0; B (1 step) arrives at 0.5 and
  // waits; at the 1 s boundary the GPU is busy until 10 s, so the policy sleeps until the 9 s
  // boundary. A's step ends early on a faster device:
  //  - at 8 s exactly, a boundary: a round starts there (not mid-round until 9 s);
  //  - at 8.5 s after B was cancelled at 2.5 s: with nothing waiting since then no boundary called
  //    the policy, so the round starts at 8.5 s.
  toy_cost cost{{{512, {0, 10.0}}}};
  const std::vector<request_spec> w{make_request("1", 0, 512, 2), make_request("2", 0.5, 512, 1)};
  round_based_options o;
  o.round = *to_ticks(1.0);
  for (const auto& [factor, cancel] : {std::pair{0.8, false}, std::pair{0.85, true}}) {
    INFO("A's step takes " << factor * 10 << " s" << (cancel ? ", B cancelled at 2.5 s" : ""));
    simulation_faults faults;
    faults.stragglers.push_back({0, 0, factor});
    const auto [slept_calls, woke_calls] =
        check_sleeping_changes_nothing(o, cluster{1, 1, "toy"}, cost, w, faults, cancel ? *to_ticks(2.5) : never, false, 1);
    CHECK(slept_calls < woke_calls);
  }
}

/// Each shape (by height) allows degrees from its own minimum up.
struct toy_cost_min_degree : toy_cost {
  std::map<int, int> min_degree;
  bool allows_degree(const request_shape& s, int k) const { return k >= min_degree.at(s.height); }
};

/// Rounds of `round` (0: of `round_steps` reference steps) on four GPUs, reading late, best-effort and
/// not-at-stake requests as needed: checks the schedule against reading them all, and returns each
/// request's first start.
std::map<request_handle, tick> first_starts_reading_as_needed(tick round, const toy_cost_min_degree& cost,
                                                              const std::vector<request_spec>& w, int round_steps = 5) {
  round_based_options as_needed;
  as_needed.round = round;
  as_needed.round_steps = round_steps;
  round_based_options all = as_needed;
  all.read_late_as_needed = false;
  check_same_schedule(as_needed, all, cluster{4, 4, "toy"}, cost, w, {});
  const round_run run = run_fixed_rounds(as_needed, cluster{4, 4, "toy"}, cost, w, {});
  std::map<request_handle, tick> first_start;
  for (const auto& t : run.tasks) first_start.try_emplace(t.request, t.start);
  return first_start;
}

TEST_CASE("round-based sleeps while fewer devices are free than any waiting request needs", "[policy][round-based]") {
  round_based_options o;
  o.round = *to_ticks(1.0);
  SECTION("until enough devices free") {
    // Three GPUs, degrees of 2 or more, steps of 10 s. A runs on two GPUs from 0; B arrives at 0.5
    // and cannot start on the one free GPU until A's GPUs free (10 s, or 8 s on faster devices).
    toy_cost_min_degree cost;
    cost.step = {{512, {0, 10.0, 10.0}}};
    cost.min_degree = {{512, 2}};
    const std::vector<request_spec> w{make_request("1", 0, 512, 2), make_request("2", 0.5, 512, 1)};
    for (const double factor : {1.0, 0.8}) {
      INFO("A's step takes " << factor * 10 << " s");
      simulation_faults faults;
      if (factor != 1.0) faults.stragglers = {{0, 0, factor}, {1, 0, factor}, {2, 0, factor}};
      const auto [slept_calls, woke_calls] = check_sleeping_changes_nothing(o, cluster{3, 3, "toy"}, cost, w, faults);
      CHECK(slept_calls < woke_calls);
    }
  }
  SECTION("until a running request's assignment ends, though the devices it frees are not enough") {
    // Four GPUs. C (degrees >= 2, one 50 s step) and A (any degree, two 10 s steps) start at 0 on
    // two GPUs and one; B (degrees >= 3) arrives at 0.5. The round [9 s, 10 s) plans A's second step
    // (its first ends within it) although 2 devices are not enough for B; A's step ends early (9.5 s
    // on faster devices) and launches at once.
    toy_cost_min_degree cost;
    cost.step = {{1024, {0, 50.0, 50.0, 50.0}}, {256, {0, 10.0}}, {512, {0, 10.0}}};
    cost.min_degree = {{1024, 2}, {256, 1}, {512, 3}};
    std::vector<request_spec> w{make_request("1", 0, 1024, 1), make_request("2", 0, 256, 2), make_request("3", 0.5, 512, 1)};
    simulation_faults faults;
    faults.stragglers = {{0, 0, 0.95}, {1, 0, 0.95}, {2, 0, 0.95}, {3, 0, 0.95}};
    const auto [slept_calls, woke_calls] = check_sleeping_changes_nothing(o, cluster{4, 4, "toy"}, cost, w, faults);
    CHECK(slept_calls < woke_calls);
  }
}

/// A (best effort, degrees >= 2, `a_steps` steps of `a_step_s`) from 0; five one-GPU requests of one
/// 10 s step (deadline 31.9 s) at 0.1 s; B (degrees >= 2, two 10 s steps, deadline 34.8 s) at 0.2 s,
/// handle 6. B is at stake by 10 s (latest start 14.8 s), the five are not.
std::pair<toy_cost_min_degree, std::vector<request_spec>> five_before_one_at_stake(double a_step_s, int a_steps) {
  toy_cost_min_degree cost;
  cost.step = {{2048, {0, a_step_s, a_step_s}}, {512, {0, 10.0}}, {1024, {0, 10.0, 10.0}}};
  cost.min_degree = {{2048, 2}, {512, 1}, {1024, 2}};
  std::vector<request_spec> w{make_request("A", 0, 2048, a_steps)};
  for (int i = 0; i < 5; ++i) w.push_back(make_request(std::to_string(i + 1), 0.1, 512, 1, 31.9));
  w.push_back(make_request("B", 0.2, 1024, 2, 34.8));
  return {std::move(cost), std::move(w)};
}

TEST_CASE("round-based looks at late and best-effort requests only as far as a round reads them, without changing the schedule",
          "[policy][round-based]") {
  SECTION("a request at stake behind others that are not, by deadline") {
    // Four GPUs, 10 s rounds. A (best effort, degrees >= 2) runs on two GPUs from 0 for 100 s. Five
    // one-GPU requests of one 10 s step (deadline 32 s) and B (degrees >= 2, two 10 s steps, deadline
    // 35 s) arrive and wait for the round at 10 s. The five come first by deadline but are not at
    // stake; B is: its whole run (20 s) leaves less than a round spare, and it makes its deadline
    // only if it runs now. So the round looks at B although five come before it (usable devices + 1
    // by deadline), and the knapsack starts it at 10 s on the two free GPUs, as a round that looks at
    // them all does.
    const auto [cost, w] = five_before_one_at_stake(100.0, 1);
    CHECK(first_starts_reading_as_needed(*to_ticks(10.0), cost, w).at(6) == *to_ticks(10.0));  // handle 6: B
  }
  SECTION("adaptive rounds: the band of requests at stake reaches the longest step any filed shape takes") {
    // Section one with rounds of one reference step (round_s unset, round_steps=1): A now takes 10 s
    // steps, so every round lasts 10 s and so may the longest, which bounds how far the round looks
    // for requests at stake. At 10 s, B (latest start 14.8 s) is at stake behind the five; a band
    // any shorter than 10 s misses it, and the five fill the four GPUs instead.
    const auto [cost, w] = five_before_one_at_stake(10.0, 10);
    CHECK(first_starts_reading_as_needed(0, cost, w, 1).at(6) == *to_ticks(10.0));  // handle 6: B
  }
  SECTION("an overloaded run with faults, most requests late or none at stake for a long time") {
    // Load 20 on 8 GPUs: hundreds of late requests wait at every round; every fifth request has no
    // deadline. Adaptive and fixed rounds, mid-round arrivals waiting or admitted. With deadlines
    // 1,000 times further away, hundreds wait with a deadline no round puts at stake, and those of
    // 2048 px (1-GPU runs of minutes) reach the band long before the small ones.
    for (const tick slo_scale : {tick{1}, tick{1000}}) {
      auto [w, faults] = overloaded_with_faults(11, 300, 20, 5, 10.0);
      for (auto& r : w) {
        if (r.slo != never) r.slo *= slo_scale;
      }
      for (const tick round : {tick{0}, *to_ticks(0.05)}) {
        for (const bool admit : {false, true}) {
          INFO("SLOs x" << slo_scale << ", round " << round << " us, mid_round=" << (admit ? "admit" : "wait"));
          round_based_options as_needed;
          as_needed.round = round;
          as_needed.admit_mid_round = admit;
          round_based_options all = as_needed;
          all.read_late_as_needed = false;
          check_same_schedule(as_needed, all, cluster{8, 4, "l20-inferred"}, flux_cost(), w, faults);
        }
      }
    }
  }
  SECTION("a round that reads past the ones it looked at first") {
    // Four GPUs, 10 s steps. A request of degree >= 2 runs on two GPUs from 0 for 100 s. Six requests
    // that need 3 GPUs and then two that need one arrive, all late by the round at 1 s (or all
    // without a deadline). The 2 free GPUs fit neither of the first five looked at (usable devices
    // + 1): the round must look further and start the two that need one GPU at once, as a round
    // that looks at them all does.
    toy_cost_min_degree cost;
    cost.step = {{1024, {0, 100.0}}, {512, {0, 10.0}}, {256, {0, 10.0}}};
    cost.min_degree = {{1024, 2}, {512, 3}, {256, 1}};
    for (const double slo : {0.001, 0.0, 10000.0}) {
      INFO((slo > 1 ? "deadline not at stake" : slo > 0 ? "late" : "best effort"));
      std::vector<request_spec> w{make_request("1", 0, 1024, 1)};
      for (int i = 0; i < 6; ++i) w.push_back(make_request(std::to_string(i + 2), 0.1, 512, 1, slo));
      for (int i = 0; i < 2; ++i) w.push_back(make_request(std::to_string(i + 8), 0.2, 256, 1, slo));
      const auto first_start = first_starts_reading_as_needed(*to_ticks(1.0), cost, w);
      CHECK(first_start.at(7) == *to_ticks(1.0));  // handles 7 and 8: the one-GPU requests
      CHECK(first_start.at(8) == *to_ticks(1.0));
    }
  }
}

TEST_CASE("the policies keep many waiting requests on many GPUs correct", "[policy][round-based][throughput-first]") {
  std::vector<request_spec> w;
  for (int i = 0; i < 1500; ++i) {
    const int side = (i % 4 == 0) ? 1024 : 256;
    w.push_back(make_request(std::to_string(i + 1), 0.001 * (i % 50), side, 4, i % 3 == 0 ? 0 : 30.0 + (i % 7)));
  }
  for (const char* spec : {"round-based", "throughput-first"}) {
    INFO(spec);
    any_policy p = make_policy(spec, 128);
    simulated_executor ex;
    scheduler sched(cluster{128, 8, "l20-inferred"}, p, ex, flux_cost());
    testing::invariant_checker chk;
    chk.attach(sched);
    for (const auto& r : w) sched.submit(r);
    REQUIRE_NOTHROW(sched.run());
    // Ended once, tasks in trajectory order, no device double-booked, nothing before its arrival.
    const auto v = chk.violations(sched.state());
    INFO(testing::join_lines(v));
    CHECK(v.empty());
    CHECK(chk.tasks_observed() >= w.size() * 6);  // encode, 4 steps, decode each (plus migrations)
    // Neither policy drops, and with 128 GPUs for 1500 requests of at most 4 steps all of them run.
    std::size_t completed = 0;
    for (const auto& r : sched.state().requests) completed += r.phase == request_phase::completed;
    CHECK(completed == w.size());
  }
}

TEST_CASE("the registry builds both policies and rejects bad parameters", "[policy][registry]") {
  const auto r = registry(8);
  for (const char* ok : {"round-based", "round-based:round_steps=3:round_s=1.5:scale_up=off:mid_round=admit", "round-based:round_s=1e-6",
                         "throughput-first:chunk_steps=2:max_inefficiency=1.5:starvation_s=30:starvation_factor=0"}) {
    INFO(ok);
    auto p = r.make(ok);
    REQUIRE(p.has_value());
    CHECK((std::string(ok).rfind(p.value().name(), 0) == 0));
  }
  for (const char* bad : {"round-based:round_steps=0", "round-based:scale_up=maybe", "round-based:mid_round=later",
                          "round-based:bogus=1", "throughput-first:max_inefficiency=0.5",
                          "throughput-first:chunk_steps=0", "throughput-first:round_steps=5"}) {
    INFO(bad);
    CHECK_FALSE(r.make(bad).has_value());
  }
  // Shorter than the clock's microsecond: an error, not a round quietly rounded up to 1 us.
  const auto too_short = r.make("round-based:round_s=4e-7");
  REQUIRE_FALSE(too_short.has_value());
  CHECK_THAT(too_short.error().what(), Catch::Matchers::Contains("round_s") && Catch::Matchers::Contains("1 us"));
}

// ------------------------------------------------------------------------------------------------
// Step A: the cheapest allocation, mixing two degrees.

namespace {

shape_costs toy_shape(std::vector<tick> step_by_degree) {  // index 0 unused
  shape_costs c;
  c.step = std::move(step_by_degree);
  c.encode.assign(c.step.size(), 0);
  c.decode.assign(c.step.size(), 0);
  tick best = never;
  for (std::size_t k = 1; k < c.step.size(); ++k) {
    c.allowed_degrees.push_back(static_cast<int>(k));
    if (c.step[k] < best) best = c.step[k], c.fastest_degree = static_cast<int>(k);
  }
  return c;
}

}  // namespace

TEST_CASE("efficient_degrees keeps the lower convex hull from the cheapest to the fastest degree",
          "[policy][round-based]") {
  // k*T: 100, 120, 165 (above the 2-4 segment), 160, 250 (slower than 4: useless).
  const auto c = toy_shape({0, 100, 60, 55, 40, 50});
  CHECK(efficient_degrees(c) == std::vector<int>{1, 2, 4});
  // Degree 1 slower and no cheaper than 2: never used.
  CHECK(efficient_degrees(toy_shape({0, 100, 50, 40})) == std::vector<int>{2, 3});
}

TEST_CASE("cheapest_allocation mixes two degrees and is within one step of the brute-force optimum",
          "[policy][round-based]") {
  std::mt19937_64 g(5);
  for (int trial = 0; trial < 300; ++trial) {
    // Random sublinear scaling over 1..6 degrees.
    std::vector<tick> step{0};
    tick t = 50'000 + static_cast<tick>(g() % 200'000);
    for (int k = 1; k <= 6; ++k) {
      step.push_back(t);
      t = std::max<tick>(1000, t * (55 + static_cast<tick>(g() % 50)) / 100);
    }
    const auto c = toy_shape(step);
    const auto hull = efficient_degrees(c);
    const int steps = 1 + static_cast<int>(g() % 40);
    const tick fastest = steps * c.step_time(c.fastest_degree);
    const tick budget = fastest + static_cast<tick>(g() % static_cast<std::uint64_t>(3 * steps * step[1]));
    const auto a = cheapest_allocation(c, hull, steps, true, budget);
    // Brute force over every pair of degrees and every split.
    tick best = never;
    tick max_step_cost = 0;
    for (int k1 = 1; k1 <= 6; ++k1) {
      max_step_cost = std::max(max_step_cost, k1 * c.step_time(k1));
      for (int k2 = 1; k2 <= 6; ++k2) {
        for (int s = 0; s <= steps; ++s) {
          const tick time = s * c.step_time(k2) + (steps - s) * c.step_time(k1);
          if (time <= budget) best = std::min(best, s * k2 * c.step_time(k2) + (steps - s) * k1 * c.step_time(k1));
        }
      }
    }
    INFO("trial " << trial << " steps " << steps << " budget " << budget);
    REQUIRE(a.feasible);  // the budget always allows the fastest degree
    CHECK(a.time <= budget);
    CHECK(a.steps == steps);
    CHECK(a.device_time >= best);
    CHECK(a.device_time <= best + max_step_cost);
  }
  // Infeasible: even the fastest degree is too slow.
  const auto c = toy_shape({0, 100, 60});
  CHECK_FALSE(cheapest_allocation(c, efficient_degrees(c), 10, false, 500).feasible);
}

TEST_CASE("round-based meets a deadline by mixing degrees with fewer GPU-seconds than the fast degree alone",
          "[policy][round-based]") {
  // One request: 20 steps, 100 ms on 1 GPU, 60 ms on 2. Alone on 1 GPU it takes 2.0 s, on 2 it takes 1.2 s
  // (2.4 GPU-s). The deadline of 1.65 s needs 9 steps on 2 GPUs and allows 11 on 1 (2.18 GPU-s).
  toy_cost cost{{{512, {0, 0.100, 0.060}}}};
  auto spec = make_request("1", 0, 512, 20, 1.65);
  const auto c = toy_shape({0, 100'000, 60'000});
  const auto a = cheapest_allocation(c, efficient_degrees(c), 20, true, *to_ticks(1.65));
  CHECK(a.slow_degree == 1);
  CHECK(a.fast_degree == 2);
  CHECK(a.fast_steps == 9);

  round_based_policy policy(round_based_options{.scale_up = false});  // keep the spare GPU idle
  const auto o = simulate(policy, cluster{2, 2, "toy"}, {spec}, cost);
  const auto& r = o.requests.at(0);
  REQUIRE(r.phase == request_phase::completed);
  CHECK(r.finish <= r.deadline());
  std::map<std::size_t, int> steps_at;
  for (const auto& t : o.tasks) {
    if (t.task.kind == task_kind::step) ++steps_at[t.devices.size()];
  }
  CHECK(steps_at[1] > 0);
  CHECK(steps_at[2] > 0);
  CHECK(steps_at[1] + steps_at[2] == 20);
  CHECK(r.gpu_busy_s < 2.4 - 1e-9);
}

// ------------------------------------------------------------------------------------------------
// Step B: the group knapsack.

TEST_CASE("group_knapsack matches brute force on small instances", "[policy][round-based][knapsack]") {
  std::mt19937_64 g(9);
  group_knapsack ks;
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = 1 + static_cast<int>(g() % 4);
    const int capacity = static_cast<int>(g() % 9);
    struct opt {
      int w;
      std::int64_t v;
    };
    std::vector<std::int64_t> none(static_cast<std::size_t>(n));
    std::vector<std::vector<opt>> options(static_cast<std::size_t>(n));
    ks.clear();
    for (int i = 0; i < n; ++i) {
      none[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(g() % 2);
      ks.add_item(none[static_cast<std::size_t>(i)]);
      const int m = 1 + static_cast<int>(g() % 3);
      for (int j = 0; j < m; ++j) {
        opt o{static_cast<int>(g() % 6), static_cast<std::int64_t>(g() % 4)};
        options[static_cast<std::size_t>(i)].push_back(o);
        ks.add_option(o.w, o.v);
      }
    }
    ks.solve(capacity);
    // Brute force: every combination of choices (-1 = none).
    std::int64_t best_v = -1;
    int best_w = 0;
    std::vector<int> choice(static_cast<std::size_t>(n), -1);
    auto rec = [&](auto&& self, int i, int w, std::int64_t v) -> void {
      if (w > capacity) return;
      if (i == n) {
        if (v > best_v || (v == best_v && w < best_w)) best_v = v, best_w = w;
        return;
      }
      const auto& ops = options[static_cast<std::size_t>(i)];
      self(self, i + 1, w, v + none[static_cast<std::size_t>(i)]);
      for (const auto& o : ops) self(self, i + 1, w + o.w, v + o.v);
    };
    rec(rec, 0, 0, 0);
    INFO("trial " << trial);
    CHECK(ks.best_value() == best_v);
    CHECK(ks.best_weight() == best_w);
    // The reported choices achieve it.
    std::int64_t v = 0;
    int w = 0;
    for (int i = 0; i < n; ++i) {
      const int c = ks.choice(static_cast<std::size_t>(i));
      if (c < 0) {
        v += none[static_cast<std::size_t>(i)];
      } else {
        const auto& o = options[static_cast<std::size_t>(i)].at(static_cast<std::size_t>(c));
        v += o.v;
        w += o.w;
      }
    }
    CHECK(v == best_v);
    CHECK(w == best_w);
    CHECK(w <= capacity);
  }
}

TEST_CASE("step_time_tally answers every rank of the tally with times added and removed as a sorted merge would",
          "[policy][round-based][tally]") {
  // Against a plain std::multiset: values from a small range (many repeats) and a wide one (nearly
  // all distinct, so blocks split, and later empty out and are dropped).
  for (const tick range : {tick{40}, tick{1'000'000'000}}) {
    std::mt19937_64 g(static_cast<std::uint64_t>(range));
    round_based_detail::step_time_tally tally;
    std::multiset<tick> reference;
    const auto check_ranks = [&](int trial) {
      REQUIRE(tally.total() == static_cast<std::int64_t>(reference.size()));
      REQUIRE(tally.distinct() == std::set<tick>(reference.begin(), reference.end()).size());
      // plus: a few times not necessarily tallied; minus: a few tallied ones.
      std::vector<tick> plus, minus;
      for (int i = static_cast<int>(g() % 6); i > 0; --i) plus.push_back(static_cast<tick>(g() % static_cast<std::uint64_t>(range + 2)));
      std::multiset<tick> left = reference;
      for (int i = static_cast<int>(g() % 6); i > 0 && !left.empty(); --i) {
        auto it = std::next(left.begin(), static_cast<std::ptrdiff_t>(g() % left.size()));
        minus.push_back(*it);
        left.erase(it);
      }
      std::sort(plus.begin(), plus.end());
      std::sort(minus.begin(), minus.end());
      std::vector<tick> merged(left.begin(), left.end());
      merged.insert(merged.end(), plus.begin(), plus.end());
      std::sort(merged.begin(), merged.end());
      INFO("range " << range << ", trial " << trial << ", " << merged.size() << " times");
      for (std::size_t at = 0; at < merged.size(); at += 1 + merged.size() / 32) {
        CHECK(tally.nth(static_cast<std::int64_t>(at), plus, minus) == merged[at]);
      }
      if (!merged.empty()) CHECK(tally.nth(static_cast<std::int64_t>(merged.size() - 1), plus, minus) == merged.back());
    };
    // Grow to about 4,000 times (some 8 blocks when nearly all distinct), then shrink to none, with
    // adds and removes mixed while growing; every fourth step checked (a check copies the multiset).
    for (int trial = 0; !reference.empty() || trial < 100; ++trial) {
      const bool growing = trial < 100;
      for (int i = 0; i < 40; ++i) {
        if (!reference.empty() && (!growing || g() % 3 == 0)) {
          auto it = std::next(reference.begin(), static_cast<std::ptrdiff_t>(g() % reference.size()));
          tally.add(*it, -1);
          reference.erase(it);
        } else if (growing) {
          const auto t = static_cast<tick>(g() % static_cast<std::uint64_t>(range));
          const auto n = static_cast<std::int64_t>(1 + g() % 3);
          tally.add(t, n);
          for (std::int64_t k = 0; k < n; ++k) reference.insert(t);
        }
      }
      if (trial % 4 == 0 || reference.empty()) check_ranks(trial);
    }
    REQUIRE(reference.empty());
    tally.add(7, 2);
    CHECK(tally.nth(0, {}, {}) == 7);
    CHECK(tally.nth(1, std::vector<tick>{3}, std::vector<tick>{7}) == 7);
    CHECK(tally.nth(0, std::vector<tick>{3}, std::vector<tick>{7}) == 3);
  }
}

TEST_CASE("round-based packs the requests that maximise survivors instead of the most urgent one",
          "[policy][round-based][knapsack]") {
  // 4 GPUs, 10 steps each, all arriving at once; rounds of 0.5 s.
  //   A (1024): 0.4/0.2/0.14/0.1 s per step; deadline 1.04 s: only 4 GPUs from the start make it.
  //   B, C (256): 0.2/0.1/0.1/0.1 s per step; deadline 1.05 s: 2 GPUs each from the start make it.
  // EDF would give the round to A (1 survivor); the knapsack gives it to B and C (2 survivors).
  toy_cost cost{{{1024, {0, 0.4, 0.2, 0.14, 0.1}}, {256, {0, 0.2, 0.1, 0.1, 0.1}}}};
  const std::vector<request_spec> w{make_request("1", 0, 1024, 10, 1.04), make_request("2", 0, 256, 10, 1.05),
                                    make_request("3", 0, 256, 10, 1.05)};
  // Brute force over the first round's choices, from the library's own Step A: each request either
  // waits, or runs the round at cheapest_allocation's degree for its deadline. A request survives the
  // round if it can still finish by its deadline at its fastest degree afterwards (TetriServe's rule).
  const tick round = *to_ticks(0.5);
  struct option {
    int degree;
    bool survives_if_run, survives_if_idle;
  };
  std::vector<option> options;
  for (const auto& r : w) {
    const shape_costs c = make_shape_costs(cost, r.shape, 4);
    const auto a = cheapest_allocation(c, efficient_degrees(c), r.steps, true, r.slo);
    const int k = a.round_degree();
    const tick fastest = c.step_time(c.fastest_degree);
    const tick steps_in_round = std::min<tick>(r.steps, round / c.step_time(k));
    options.push_back({k, round + (r.steps - steps_in_round) * fastest <= r.deadline(), round + r.steps * fastest <= r.deadline()});
  }
  CHECK(options[0].degree == 4);
  CHECK(options[1].degree == 2);
  int best = -1;
  unsigned best_mask = 0;
  for (unsigned mask = 0; mask < 8; ++mask) {
    int gpus = 0, survivors = 0;
    for (std::size_t i = 0; i < 3; ++i) {
      const bool run = (mask >> i) & 1u;
      gpus += run ? options[i].degree : 0;
      survivors += run ? options[i].survives_if_run : options[i].survives_if_idle;
    }
    if (gpus <= 4 && survivors > best) best = survivors, best_mask = mask;
  }
  REQUIRE(best == 2);
  REQUIRE(best_mask == 0b110u);  // B and C, not A

  round_based_policy policy(round_based_options{.round = *to_ticks(0.5)});
  const auto o = simulate(policy, cluster{4, 4, "toy"}, w, cost);
  const auto met = [&](std::size_t i) { return o.requests[i].finish <= o.requests[i].deadline(); };
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("request " << w[i].id);
    CHECK(met(i) == (((best_mask >> i) & 1u) != 0));  // the policy's knapsack finds the brute-force optimum
  }
  CHECK(o.requests[0].phase == request_phase::completed);  // late, but served (best effort)
}

TEST_CASE("round-based leaves mid-round arrivals to the next round unless admit is set", "[policy][round-based]") {
  // A long request starts a 1 s round alone on 1 of 2 GPUs; a short one arrives at 0.1 s.
  toy_cost cost{{{512, {0, 0.1, 0.1}}}};
  const std::vector<request_spec> w{make_request("1", 0, 512, 20), make_request("2", 0.1, 512, 2)};
  round_based_policy wait(round_based_options{.round = *to_ticks(1.0), .scale_up = false});
  round_based_policy admit(round_based_options{.round = *to_ticks(1.0), .scale_up = false, .admit_mid_round = true});
  const auto a = simulate(wait, cluster{2, 2, "toy"}, w, cost);
  const auto b = simulate(admit, cluster{2, 2, "toy"}, w, cost);
  CHECK(a.requests[1].first_start == *to_ticks(1.0));
  CHECK(b.requests[1].first_start == *to_ticks(0.1));
}

TEST_CASE("round-based's round length counts each request at the degree it plans or runs at, not the one it is filed at",
          "[policy][round-based]") {
  // Rounds of two reference steps, the reference being the median step time of the active requests
  // (the lower one of an even count). X has 3 steps of 2.0 s on 1 GPU (its cheapest degree, which
  // it is filed at) or 1.2 s on 2; its deadline of 3.7 s needs 2 GPUs for every step. C has one step
  // of 1.5 s, without a deadline. Counted at 2.0 s instead of 1.2, X would make the median 1.5 s.
  toy_cost cost{{{512, {0, 2.0, 1.2}}, {1024, {0, 1.5}}, {256, {0, 0.25}}, {768, {0, 0.27}}, {2048, {0, 1.6}}}};
  const round_based_options o{.round_steps = 2, .scale_up = false};
  round_based_policy policy(o);
  simulated_executor ex(7);
  scheduler sched(cluster{8, 8, "toy"}, policy, ex, cost);
  sched.submit(make_request("X", 0, 512, 3, 3.7));
  sched.submit(make_request("C", 0, 1024, 1));
  SECTION("a waiting request at the degree the round plans for it") {
    sched.turn_to(0);
    CHECK(policy.rounds() == 1);
    CHECK(policy.round_end() == *to_ticks(2.4));
  }
  SECTION("a running request at the degree it runs at") {
    // B (0.25 s) and D (0.27 s) make the first round 0.54 s long and end within it; X and C run past
    // its end. E (1.6 s, no deadline) arrives within it and waits for the next: its median is C's
    // 1.5 s of {1.2, 1.5, 1.6} (1.6 s with X at 2.0).
    sched.submit(make_request("B", 0, 256, 1));
    sched.submit(make_request("D", 0, 768, 1));
    sched.submit(make_request("E", 0.3, 2048, 1));
    sched.turn_to(0);
    CHECK(policy.round_end() == *to_ticks(0.54));
    while (policy.rounds() < 2 && sched.next_wakeup() != never) sched.turn_to(sched.next_wakeup());
    REQUIRE(policy.rounds() == 2);
    CHECK(policy.round_start() == *to_ticks(0.54));
    CHECK(sched.state().requests[0].phase == request_phase::running);
    CHECK(sched.state().requests[0].run_group.size() == 2);
    CHECK(sched.state().requests[2].ended());
    CHECK(sched.state().requests[3].ended());
    CHECK(policy.round_end() == *to_ticks(0.54 + 3.0));
  }
}

// ------------------------------------------------------------------------------------------------
// throughput-first.

TEST_CASE("throughput-first runs small shapes on one GPU", "[policy][throughput-first]") {
  std::vector<request_spec> w;
  for (int i = 0; i < 40; ++i) w.push_back(make_request(std::to_string(i + 1), 0.05 * i, i % 2 ? 256 : 512, 10));
  throughput_first_policy policy;
  const auto o = simulate(policy, cluster{8, 8, "l20-inferred"}, w, flux_cost());
  int steps = 0;
  for (const auto& t : o.tasks) {
    if (t.task.kind != task_kind::step) continue;
    ++steps;
    CHECK(t.devices.size() == 1);
  }
  CHECK(steps == 400);

  // The most efficient degree is 1 for every FLUX shape of the profile.
  simulated_executor ex;
  throughput_first_policy probe;
  scheduler sched(cluster{8, 8, "l20-inferred"}, probe, ex, flux_cost());
  for (int side : {128, 256, 512, 1024, 2048}) {
    const request_handle h = sched.submit(make_request(std::to_string(side), 0, side, 10));
    CHECK(probe.efficient_degree(sched.view(), h) == 1);
  }
}

TEST_CASE("throughput-first widens an idle cluster's lone request to the fastest degree within its cost limit", "[policy][throughput-first]") {
  // GPU-seconds per step k x T(k): 1.0, 1.1, 1.2, 1.28, 1.5, 1.74, then 0.31 x k from 7 on (slower
  // than 6): every degree up to the cluster is allowed, the best within the limit is near the start.
  toy_cost cost{{{512, {0, 1.0, 0.55, 0.4, 0.32, 0.3, 0.29, 0.31}}}};
  const std::vector<request_spec> w{make_request("1", 0, 512, 4)};
  const auto step_degrees = [&](double max_inefficiency, int gpus) {
    throughput_first_policy policy(throughput_first_options{.max_inefficiency = max_inefficiency});
    std::set<std::size_t> sizes;
    for (const auto& t : simulate(policy, cluster{gpus, gpus, "toy"}, w, cost).tasks) {
      if (t.task.kind == task_kind::step) sizes.insert(t.devices.size());
    }
    return sizes;
  };
  CHECK(step_degrees(1.25, 64) == std::set<std::size_t>{3});  // 4 devices cost 1.28 > 1.25
  CHECK(step_degrees(2.0, 64) == std::set<std::size_t>{6});   // the fastest; 7 costs 2.17 and is slower
  CHECK(step_degrees(2.0, 1024) == std::set<std::size_t>{6});
  CHECK(step_degrees(2.0, 4) == std::set<std::size_t>{4});    // no more devices than that
  CHECK(step_degrees(1.0, 64) == std::set<std::size_t>{1});   // no widening costs nothing
}

TEST_CASE("round-based's scale-up widens a lone request to the fastest degree within reach, however far it is",
          "[policy][round-based]") {
  // Fastest at 6 among the first degrees, 0.31 s from 7 to 99 (each dominated by the one before),
  // then 100 is faster than all of them and 101 on slower again. Scale-up skips dominated degrees,
  // so it must still find 100 past the long dominated run.
  struct dip_cost {
    double step_seconds(const request_shape&, int k) const {
      static constexpr double first[] = {0, 1.0, 0.55, 0.4, 0.32, 0.3, 0.29};
      return k <= 6 ? first[k] : k < 100 ? 0.31 : k == 100 ? 0.2 : 0.25;
    }
    bool allows_degree(const request_shape&, int) const { return true; }
    double migration_seconds(const request_shape&, int, int, bool) const { return 0.0005; }
  };
  const std::vector<request_spec> w{make_request("1", 0, 512, 4, 100.0)};
  const auto first_step_degree = [&](int gpus) {
    round_based_policy policy;
    for (const auto& t : simulate(policy, cluster{gpus, 8, "toy"}, w, dip_cost{}).tasks) {
      if (t.task.kind == task_kind::step) return t.devices.size();
    }
    return std::size_t{0};
  };
  CHECK(first_step_degree(8) == 6);
  CHECK(first_step_degree(99) == 6);     // 100 is out of reach
  CHECK(first_step_degree(100) == 100);
  CHECK(first_step_degree(1024) == 100);
  CHECK(first_step_degree(65536) == 100);
}

TEST_CASE("throughput-first beats static:8 in throughput on a saturated small-shape workload",
          "[policy][throughput-first]") {
  std::vector<request_spec> w;
  for (int i = 0; i < 120; ++i) w.push_back(make_request(std::to_string(i + 1), 0.1 * i, i % 3 ? 256 : 512, 30));
  any_policy tf = make_policy("throughput-first", 8);
  any_policy st = make_policy("static:8", 8);
  const auto a = simulate(tf, cluster{8, 8, "l20-inferred"}, w, flux_cost());
  const auto b = simulate(st, cluster{8, 8, "l20-inferred"}, w, flux_cost());
  const double rps_tf = 120.0 / to_seconds(makespan(a));
  const double rps_static = 120.0 / to_seconds(makespan(b));
  INFO("throughput-first " << rps_tf << " req/s, static:8 " << rps_static << " req/s");
  CHECK(rps_tf > 3.0 * rps_static);
}

TEST_CASE("throughput-first runs the shortest remaining work first and its starvation guard bounds waiting",
          "[policy][throughput-first]") {
  // One GPU. A long request (20 steps of 1 s) at t=0, then a short one (1 step of 0.2 s) every 0.25 s
  // for 75 s: shortest-first gives the long one only the gaps; the guard lets it through.
  toy_cost cost{{{2048, {0, 1.0}}, {256, {0, 0.2}}}};
  std::vector<request_spec> w{make_request("1", 0, 2048, 20)};
  for (int i = 0; i < 300; ++i) w.push_back(make_request(std::to_string(i + 2), 0.5 + 0.25 * i, 256, 1));
  throughput_first_policy plain(throughput_first_options{.starvation_factor = 0});
  throughput_first_policy guarded(throughput_first_options{.starvation_factor = 0, .starvation = *to_ticks(5.0)});
  const auto a = simulate(plain, cluster{1, 1, "toy"}, w, cost);
  const auto b = simulate(guarded, cluster{1, 1, "toy"}, w, cost);
  CHECK(to_seconds(a.requests[0].finish) > 60.0);  // starved behind the stream
  CHECK(to_seconds(b.requests[0].finish) < 30.0);
}
