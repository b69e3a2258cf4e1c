// Batched steps (TetriServe's batching of identical requests) through the runtime: what a batch
// costs and holds, which batches the runtime refuses, and faults and cancels inside a batch.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/testing/invariants.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

// 100 ms per step alone; a batch of b costs 60 ms of fixed work once plus 40 ms per member.
struct batch_cost {
  double step_seconds(const request_shape&, int k) const { return 0.1 / k; }
  double batch_step_seconds(const request_shape&, int k, int b) const { return (0.06 + 0.04 * b) / k; }
  bool allows_degree(const request_shape&, int) const { return true; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.001; }
};
static_assert(BatchCostModel<batch_cost>);

struct no_batch_cost {  // cannot price batches
  double step_seconds(const request_shape&, int k) const { return 0.1 / k; }
  bool allows_degree(const request_shape&, int) const { return true; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.001; }
};

request_spec spec(std::string id, int steps = 3, int px = 256, tick arrival = 0) {
  request_spec r;
  r.id = std::move(id);
  r.arrival = arrival;
  r.shape = {"toy", px, px, 1};
  r.steps = steps;
  return r;
}

// On device 0: a waiting request whose next task is not a step runs alone; otherwise every waiting
// request of the first one's shape whose state is on {0} (or nowhere) runs in one batched step.
struct batch_on_zero {
  std::size_t max = 8;
  void decide(const scheduler_view& v, decision_buffer& out) {
    if (!v.free_devices().test(0)) return;
    std::vector<request_handle> members;
    for (request_handle h : v.waiting()) {
      const auto& r = v.request(h);
      if (r.next_task().kind != task_kind::step) {
        out.assign(h, device_group{0}, 1);
        return;
      }
      if (!members.empty() && r.shape != v.request(members.front()).shape) continue;
      if (!r.state_group.empty() && !r.state_group.same_devices(device_group{0})) continue;
      if (members.size() < max) members.push_back(h);
    }
    if (!members.empty()) out.assign_batch(members, device_group{0});
  }
};

template <class P, class C = batch_cost, class X = simulated_executor>
struct run_of {
  C cost;
  X ex;
  scheduler<P, X, C> s;
  std::vector<task_record> records;
  run_of(P& p, X x = X{}, scheduler_options o = {}) : ex(std::move(x)), s(cluster{1, 1, "toy"}, p, ex, cost, o) {
    s.on_task_record([this](const task_record& t) { records.push_back(t); });
  }
};

}  // namespace

TEST_CASE("A batched step runs every member at once, costs the batched time and holds its devices once", "[batching]") {
  batch_on_zero p;
  run_of<batch_on_zero> r(p);
  for (int i = 0; i < 4; ++i) r.s.submit(spec("b" + std::to_string(i)));
  r.s.run();
  // Encodes and decodes are free and run alone; the three steps run as batches of four: 60 + 4 x 40 ms.
  for (const auto& rec : r.s.state().requests) {
    REQUIRE(rec.phase == request_phase::completed);
    REQUIRE(rec.finish == 3 * 220'000);
  }
  std::map<launch_id, std::vector<task_record>> by_launch;
  for (const auto& t : r.records) by_launch[t.launch].push_back(t);
  int batched = 0;
  for (const auto& [id, tasks] : by_launch) {
    if (tasks.front().batch == 1) continue;
    ++batched;
    REQUIRE(tasks.size() == 4);
    for (const auto& t : tasks) {
      REQUIRE(t.batch == 4);
      REQUIRE(t.end - t.start == 220'000);
      REQUIRE(t.task.kind == task_kind::step);
    }
  }
  REQUIRE(batched == 3);
  // The device was busy 3 x 220 ms, counted once, and each member is charged a quarter of it.
  REQUIRE(r.s.gpu_busy_seconds() == Approx(0.66));
  for (const auto& rec : r.s.state().requests) REQUIRE(rec.gpu_busy_s == Approx(0.165));
}

TEST_CASE("The invariant checker lets the members of one batched step share its devices, and still flags two launches on one device", "[batching][invariants]") {
  batch_on_zero p;
  run_of<batch_on_zero> r(p);
  testing::invariant_checker chk;
  r.s.on_task_record([&](const task_record& t) { r.records.push_back(t); chk.observe_task(t); });
  r.s.on_request_end([&](const request_record& rec) { chk.observe_end(rec); });
  for (int i = 0; i < 4; ++i) r.s.submit(spec("b" + std::to_string(i)));
  r.s.run();
  REQUIRE(std::any_of(r.records.begin(), r.records.end(), [](const task_record& t) { return t.batch == 4; }));
  const auto v = chk.violations(r.s.state());
  INFO(testing::join_lines(v));
  REQUIRE(v.empty());
  // Two different launches overlapping on device 0 are still a violation.
  testing::invariant_checker bad;
  bad.observe_task(task_record{0, {task_kind::encode, -1}, device_group{0}, 0, 10, true, 1, 1});
  bad.observe_task(task_record{1, {task_kind::encode, -1}, device_group{0}, 5, 15, true, 2, 1});
  const auto w = bad.violations(scheduler_state{});
  REQUIRE(std::count_if(w.begin(), w.end(), [](const std::string& m) { return m.find("device 0 ran two things at once") != std::string::npos; }) == 1);
}

TEST_CASE("Members with different step indices batch together and each keeps its own trajectory", "[batching]") {
  batch_on_zero p;
  run_of<batch_on_zero> r(p);
  r.s.submit(spec("early", 4));
  r.s.submit(spec("late", 2, 256, 150'000));  // arrives while "early" runs its first step alone
  r.s.run();
  std::map<std::string, std::vector<int>> steps_of;
  bool mixed = false;
  std::map<launch_id, std::set<int>> launch_steps;
  for (const auto& t : r.records) {
    if (t.task.kind != task_kind::step) continue;
    steps_of[r.s.request(t.request).spec.id].push_back(t.task.step);
    launch_steps[t.launch].insert(t.task.step);
  }
  for (const auto& [id, set] : launch_steps) mixed = mixed || set.size() > 1;
  REQUIRE(mixed);  // one batch held step k of one request and step j != k of the other
  REQUIRE(steps_of["early"] == std::vector<int>{0, 1, 2, 3});
  REQUIRE(steps_of["late"] == std::vector<int>{0, 1});
}

namespace {
// Proposes one batch from the test, once, then does nothing.
struct one_batch {
  std::vector<request_handle> members;
  device_group group{0};
  bool done = false;
  void decide(const scheduler_view&, decision_buffer& out) {
    if (done) return;
    done = true;
    out.assign_batch(members, group);
  }
};
template <class C = batch_cost>
std::string rejection_of(std::vector<request_spec> reqs, std::vector<request_handle> members, int warm_steps = 0, int max_batch = 8) {
  // warm_steps: run the first request's encode (and so many steps) alone on device 1 first; the
  // second request's encode runs on device 0 (encodes are free in batch_cost).
  struct warm_then_batch {
    one_batch inner;
    int warm;
    bool second_encoded = false;
    void decide(const scheduler_view& v, decision_buffer& out) {
      if (!second_encoded && v.waiting().contains(1) && v.free_devices().test(0)) {
        second_encoded = true;
        out.assign(1, device_group{0}, 1);
        return;
      }
      if (warm > 0 && v.waiting().contains(0) && v.free_devices().test(1)) {
        --warm;
        out.assign(0, device_group{1}, 1);
        return;
      }
      if (warm == 0) inner.decide(v, out);
    }
  } p{{members}, warm_steps, false};
  C cost;
  simulated_executor ex;
  scheduler_options o;
  o.max_batch = max_batch;
  scheduler s(cluster{2, 2, "toy"}, p, ex, cost, o);
  for (auto& r : reqs) s.submit(r);
  try {
    s.run();
  } catch (const policy_error& e) {
    return e.what();
  }
  return "accepted";
}
}  // namespace

TEST_CASE("The runtime refuses a batch that breaks a rule, and says which", "[batching]") {
  SECTION("different shapes") {
    CHECK_THAT(rejection_of({spec("a", 3, 256), spec("b", 3, 512)}, {0, 1}, 1), Catch::Contains("another shape"));
  }
  SECTION("a next task that is not a step") {
    // "b" ran its encode: its next task is a step, "a" has not: they cannot share a launch.
    CHECK_THAT(rejection_of({spec("a"), spec("b")}, {0, 1}), Catch::Contains("next tasks differ"));
  }
  SECTION("state on other devices") {
    // "a" ran its encode and a step on device 1, "b" its encode on device 0: a batch on 0 would move "a".
    CHECK_THAT(rejection_of({spec("a"), spec("b")}, {0, 1}, 2), Catch::Contains("lives on {1}"));
  }
  SECTION("more members than max_batch") {
    CHECK_THAT(rejection_of({spec("a"), spec("b"), spec("c")}, {0, 1, 2}, 0, 2), Catch::Contains("at most"));
  }
  SECTION("a member listed twice") {
    CHECK_THAT(rejection_of({spec("a"), spec("b")}, {0, 0}), Catch::Contains("listed twice"));
  }
  SECTION("a cost model that cannot price batches") {
    batch_on_zero p;
    run_of<batch_on_zero, no_batch_cost> r(p);
    r.s.submit(spec("a"));
    r.s.submit(spec("b"));
    CHECK_THROWS_WITH(r.s.run(), Catch::Contains("prices batches of toy up to 1"));
  }
}

TEST_CASE("A failed batched step fails every member, which retry, and a cancel ends one member after it", "[batching][faults]") {
  batch_on_zero p;
  simulation_faults f;
  f.fail_rate = 0.3;
  run_of<batch_on_zero> r(p, simulated_executor(7, f));
  for (int i = 0; i < 5; ++i) r.s.submit(spec("f" + std::to_string(i), 6));
  std::map<std::string, int> ends;
  r.s.on_request_end([&](const request_record& rec) { ++ends[rec.spec.id]; });
  r.s.client().submit(spec("cancel-me", 6));
  // Cancel it once it is in a batch.
  bool cancelled = false;
  while (!r.s.finished()) {
    r.s.turn_to(r.s.next_wakeup());
    if (!cancelled) {
      for (const auto& rec : r.s.state().requests) {
        if (rec.spec.id == "cancel-me" && rec.launch_batch >= 2) {
          r.s.client().cancel("cancel-me");
          cancelled = true;
        }
      }
    }
  }
  REQUIRE(cancelled);
  REQUIRE(ends.size() == 6);
  for (const auto& [id, n] : ends) REQUIRE(n == 1);
  // A failed batch is all-or-nothing: every launch has all members ok or all failed.
  std::map<launch_id, std::set<bool>> outcomes;
  std::size_t failed = 0;
  for (const auto& t : r.records) {
    outcomes[t.launch].insert(t.ok);
    failed += !t.ok;
  }
  REQUIRE(failed > 0);
  for (const auto& [id, o] : outcomes) REQUIRE(o.size() == 1);
  // The device never ran two launches at once.
  std::map<launch_id, std::pair<tick, tick>> spans;
  for (const auto& t : r.records) spans[t.launch] = {t.start, t.end};
  std::vector<std::pair<tick, tick>> v;
  for (const auto& [id, sp] : spans) v.push_back(sp);
  std::sort(v.begin(), v.end());
  for (std::size_t i = 1; i < v.size(); ++i) REQUIRE(v[i - 1].second <= v[i].first);
  const auto& c = r.s.request(5);
  REQUIRE(c.phase == request_phase::dropped);
  REQUIRE(c.drop_reason == "cancelled");
}

namespace {
// Identical small requests at 1.5x what two devices carry alone (1 s of work each, one every 1/3 s),
// within what they carry in batches of four (1.8x the throughput); deadlines 3x their latency.
std::vector<request_spec> small_burst(int n) {
  std::vector<request_spec> out;
  for (int i = 0; i < n; ++i) {
    auto r = spec("s" + std::to_string(i), 10, 256, i * 333'333);
    r.slo = 3'000'000;
    out.push_back(r);
  }
  return out;
}
struct outcome {
  int on_time = 0;
  int completed = 0;
  int batched_tasks = 0;
  double gpu_busy_s = 0;
  std::vector<std::tuple<request_handle, int, tick, tick, std::vector<device_id>, std::uint32_t>> schedule;  // every task
};
template <class C = batch_cost>
outcome run_policy(const std::string& spec_text, const std::vector<request_spec>& reqs, int gpus) {
  auto policy = paraflex_test::builtin_policies(gpus).make(spec_text).value_or_throw();
  C cost;
  simulated_executor ex;
  scheduler s(cluster{gpus, gpus, "toy"}, policy, ex, cost);
  outcome o;
  s.on_task_record([&](const task_record& t) {
    o.batched_tasks += t.batch > 1;
    o.schedule.emplace_back(t.request, t.task.step, t.start, t.end, std::vector<device_id>(t.devices.begin(), t.devices.end()), t.batch);
  });
  for (const auto& r : reqs) s.submit(r);
  s.run();
  for (const auto& r : s.state().requests) {
    o.completed += r.phase == request_phase::completed;
    o.on_time += r.phase == request_phase::completed && r.finish <= r.deadline();
  }
  o.gpu_busy_s = s.gpu_busy_seconds();
  return o;
}
}  // namespace

TEST_CASE("round-based batches identical small requests when it helps and not at max_batch=1", "[batching][round-based]") {
  const auto reqs = small_burst(60);
  const outcome alone = run_policy("round-based", reqs, 2);
  const outcome batched = run_policy("round-based:max_batch=4", reqs, 2);
  CHECK(alone.batched_tasks == 0);
  CHECK(batched.batched_tasks > 0);
  CHECK(batched.on_time > alone.on_time);
}

TEST_CASE("slo-aware batches identical small requests under overload: more on time for less GPU time", "[batching][slo-aware]") {
  const auto reqs = small_burst(60);
  const outcome alone = run_policy("slo-aware", reqs, 2);
  const outcome batched = run_policy("slo-aware:max_batch=4", reqs, 2);
  CHECK(alone.batched_tasks == 0);
  CHECK(batched.batched_tasks > 0);
  CHECK(batched.on_time > alone.on_time);
  CHECK(batched.completed >= alone.completed);
  CHECK(batched.gpu_busy_s < alone.gpu_busy_s);
}

TEST_CASE("slo-aware never batches a step that would make a member miss its deadline", "[batching][slo-aware]") {
  // One device, two identical requests of ten 100 ms steps; a batch of two costs 140 ms a step.
  // "tight" needs 1 s alone and has 1.05 s: one batched step (0.14 s + 0.9 s) breaks its 10% margin.
  auto tight = spec("tight", 10);
  tight.slo = 1'050'000;
  auto loose = spec("loose", 10);
  loose.slo = 3'000'000;
  const outcome o = run_policy("slo-aware:max_batch=4:batch_margin=0.1", {tight, loose}, 1);
  CHECK(o.batched_tasks == 0);
  CHECK(o.on_time == 2);
  // With 1.2 s the tight one has room: they share a step while it still ends within 90% of its time
  // left (1.04 s <= 1.08 s, then 1.08 <= 1.094, not 1.12 > 1.108 at 0.28 s: the margin shrinks with
  // the time left, so two more later) and both stay on time.
  tight.slo = 1'200'000;
  const outcome roomy = run_policy("slo-aware:max_batch=4:batch_margin=0.1", {tight, loose}, 1);
  CHECK(roomy.batched_tasks == 4 * 2);
  CHECK(roomy.on_time == 2);
  // The default margin (0.3 = slo-aware's margin + 0.1) waits until 0.7 s to batch; without a margin
  // it batches up to the deadline exactly (1.2 s), never past it.
  const outcome cautious = run_policy("slo-aware:max_batch=4", {tight, loose}, 1);
  CHECK(cautious.batched_tasks == 3 * 2);
  CHECK(cautious.on_time == 2);
  CHECK(run_policy("slo-aware:max_batch=4:margin=0", {tight, loose}, 1).schedule == roomy.schedule);  // follows margin
  const outcome edge = run_policy("slo-aware:max_batch=4:batch_margin=0", {tight, loose}, 1);
  CHECK(edge.batched_tasks > roomy.batched_tasks);
  CHECK(edge.on_time == 2);
  tick tight_end = 0;
  for (const auto& t : edge.schedule) {
    if (std::get<0>(t) == 0) tight_end = std::max(tight_end, std::get<3>(t));
  }
  CHECK(tight_end == 1'200'000);
}

TEST_CASE("slo-aware batches only when each member saves at least batch_saving of a step alone", "[batching][slo-aware]") {
  // In batch_cost a member adds 40 ms to a batched step where it would take 100 ms alone: it saves 60%.
  const auto reqs = small_burst(40);
  const outcome plain = run_policy("slo-aware", reqs, 2);
  const outcome saves_enough = run_policy("slo-aware:max_batch=4:batch_saving=0.55", reqs, 2);
  const outcome saves_too_little = run_policy("slo-aware:max_batch=4:batch_saving=0.65", reqs, 2);
  CHECK(saves_enough.batched_tasks > 0);
  CHECK(saves_too_little.batched_tasks == 0);
  CHECK(saves_too_little.schedule == plain.schedule);
}

TEST_CASE("slo-aware at max_batch=1, or on a cost model that cannot price batches, runs exactly the unbatched schedule", "[batching][slo-aware]") {
  const auto reqs = small_burst(40);
  const outcome plain = run_policy("slo-aware", reqs, 2);
  const outcome one = run_policy("slo-aware:max_batch=1", reqs, 2);
  CHECK(one.schedule == plain.schedule);
  CHECK(one.batched_tasks == 0);
  // max_batch=8 where no batch can be priced: batch_companions finds nobody, the policy degrades.
  const outcome unpriced = run_policy<no_batch_cost>("slo-aware:max_batch=8", reqs, 2);
  const outcome unpriced_plain = run_policy<no_batch_cost>("slo-aware", reqs, 2);
  CHECK(unpriced.schedule == unpriced_plain.schedule);
  CHECK(unpriced.batched_tasks == 0);
  CHECK_FALSE(plain.schedule.empty());
}

TEST_CASE("slo-aware names a bad max_batch, batch_margin or batch_saving and refuses it", "[batching][slo-aware][registry]") {
  const auto r = paraflex_test::builtin_policies(4);
  const auto error_of = [&](const char* text) {
    auto p = r.make(text);
    REQUIRE_FALSE(p.has_value());
    return p.error().what();
  };
  CHECK_THAT(error_of("slo-aware:max_batch=0"), Catch::Contains("policy 'slo-aware', parameter 'max_batch': 0 is out of range [1, 64]"));
  CHECK_THAT(error_of("slo-aware:max_batch=65"), Catch::Contains("parameter 'max_batch'"));
  CHECK_THAT(error_of("slo-aware:max_batch=four"), Catch::Contains("parameter 'max_batch': expected an integer, got 'four'"));
  CHECK_THAT(error_of("slo-aware:max_batch=2.5"), Catch::Contains("parameter 'max_batch'"));
  CHECK_THAT(error_of("slo-aware:batch_margin=1"), Catch::Contains("parameter 'batch_margin': 1 is out of range"));
  CHECK_THAT(error_of("slo-aware:batch_margin=x"), Catch::Contains("parameter 'batch_margin': expected a number"));
  CHECK_THAT(error_of("slo-aware:batch_saving=1"), Catch::Contains("parameter 'batch_saving': 1 is out of range [0, 0.95]"));
  CHECK_THAT(error_of("slo-aware:max_batches=4"), Catch::Contains("max_batches"));
  REQUIRE(r.make("slo-aware:max_batch=8:batch_margin=0.2:batch_saving=0").has_value());
  REQUIRE(r.make("slo-aware:max_batch=1").has_value());
}
