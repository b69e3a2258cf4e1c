// Batched steps on thread_executor: one gang, the real cpu_dit state of every member advanced, one event
// per member, and a failed batch leaving every member's state as it was.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "paraflex/executor/simulated.hpp"
#include "paraflex/executor/thread_executor.hpp"
#include "paraflex/policy/batching.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

launch_id next_id() {
  static launch_id next = 50'000;
  return ++next;
}

task_launch single(request_handle h, task_kind k, int step, const device_group& g, const request_shape* shape) {
  task_launch l;
  l.id = next_id();
  l.request = h;
  l.task = task_desc{k, step};
  l.group = g;
  l.shape = shape;
  l.expected_duration = 200;
  return l;
}

/// Launches `l` and collects every event carrying its id (one per member) until `expected` arrived.
std::vector<executor_event> run_until(thread_executor& ex, const task_launch& l, std::size_t expected) {
  ex.launch(l);
  std::vector<executor_event> mine, evs;
  while (mine.size() < expected) {
    ex.wait_until(ex.now() + 1'000'000);
    evs.clear();
    ex.poll(evs);
    for (const auto& e : evs) {
      if (e.id == l.id) mine.push_back(e);
    }
  }
  return mine;
}

struct batch_launch {
  std::vector<batch_member> members;
  task_launch launch;
};

batch_launch batch_of(const std::vector<std::pair<request_handle, int>>& member_steps, const device_group& g, const request_shape* shape) {
  batch_launch b;
  for (const auto& [h, step] : member_steps) b.members.push_back(batch_member{h, task_desc{task_kind::step, step}});
  b.launch = single(b.members.front().request, task_kind::step, b.members.front().task.step, g, shape);
  b.launch.batch = b.members;
  return b;
}

bool done(const executor_event& e) { return e.kind == executor_event_kind::task_done; }

}  // namespace

TEST_CASE("a batched step on threads advances every member exactly as its own steps would", "[executor][threads][batching]") {
  const request_shape shape{"toy", 256, 192, 1};
  const device_group g{0, 1};
  thread_executor batched(2), alone(2);
  for (request_handle h : {4u, 5u, 6u}) {
    REQUIRE(done(run_until(batched, single(h, task_kind::encode, -1, g, &shape), 1).front()));
    REQUIRE(done(run_until(alone, single(h, task_kind::encode, -1, g, &shape), 1).front()));
  }
  // Request 6 is one step ahead: members of a batch may be at different steps.
  REQUIRE(done(run_until(batched, single(6, task_kind::step, 0, g, &shape), 1).front()));
  REQUIRE(done(run_until(alone, single(6, task_kind::step, 0, g, &shape), 1).front()));

  const auto b = batch_of({{4, 0}, {5, 0}, {6, 1}}, g, &shape);
  const auto evs = run_until(batched, b.launch, 3);
  std::set<request_handle> seen;
  for (const auto& e : evs) {
    CHECK(done(e));
    CHECK(e.id == b.launch.id);
    seen.insert(e.request);
  }
  CHECK(seen == std::set<request_handle>{4, 5, 6});
  REQUIRE(done(run_until(alone, single(4, task_kind::step, 0, g, &shape), 1).front()));
  REQUIRE(done(run_until(alone, single(5, task_kind::step, 0, g, &shape), 1).front()));
  REQUIRE(done(run_until(alone, single(6, task_kind::step, 1, g, &shape), 1).front()));
  for (request_handle h : {4u, 5u, 6u}) {
    INFO("request " << h);
    REQUIRE(batched.state_checksum(h));
    CHECK(batched.state_checksum(h) == alone.state_checksum(h));
  }
  CHECK(batched.launched() == 5);  // 3 encodes, 1 step, 1 batch
  CHECK(batched.succeeded() == 5);
  // Decoding checks each latent bit for bit against the serial reference.
  for (request_handle h : {4u, 5u, 6u}) CHECK(done(run_until(batched, single(h, task_kind::decode, -1, g, &shape), 1).front()));
  CHECK(batched.errors().empty());
}

TEST_CASE("a batch that fails on one rank fails every member and leaves each state unchanged", "[executor][threads][batching]") {
  std::atomic<bool> fail{false};
  cpu_dit_body inner;
  thread_executor ex(3, [&](const task_context& c) {
    // Device 2 throws on the second member, after the first member's step ran (and was staged) everywhere.
    if (c.launch.task.kind == task_kind::step && c.device == 2 && c.member == 1 && fail.exchange(false)) throw std::runtime_error("injected");
    inner(c);
  });
  const request_shape shape{"toy", 256, 256, 1};
  const device_group g{0, 1, 2};
  for (request_handle h : {1u, 2u, 3u}) REQUIRE(done(run_until(ex, single(h, task_kind::encode, -1, g, &shape), 1).front()));
  std::map<request_handle, std::optional<std::uint64_t>> before;
  for (request_handle h : {1u, 2u, 3u}) before[h] = ex.state_checksum(h);

  fail = true;
  const auto b = batch_of({{1, 0}, {2, 0}, {3, 0}}, g, &shape);
  const auto evs = run_until(ex, b.launch, 3);
  std::set<request_handle> failed;
  for (const auto& e : evs) {
    CHECK(e.kind == executor_event_kind::task_failed);
    failed.insert(e.request);
  }
  CHECK(failed == std::set<request_handle>{1, 2, 3});
  for (request_handle h : {1u, 2u, 3u}) CHECK(ex.state_checksum(h) == before[h]);
  REQUIRE(ex.errors().size() == 1);
  CHECK_THAT(ex.errors()[0], Catch::Contains("injected") && Catch::Contains("batch member 1") && Catch::Contains("a batch of 3"));
  CHECK(ex.failed() == 1);

  // The same batch runs again on the same group (the transport was reset), and decodes exactly.
  const auto again = batch_of({{1, 0}, {2, 0}, {3, 0}}, g, &shape);
  for (const auto& e : run_until(ex, again.launch, 3)) CHECK(done(e));
  for (request_handle h : {1u, 2u, 3u}) CHECK(done(run_until(ex, single(h, task_kind::decode, -1, g, &shape), 1).front()));
}

TEST_CASE("a batch on a lost device fails every member once, before the loss", "[executor][threads][batching][faults]") {
  thread_executor ex(2);
  const request_shape shape{"toy", 128, 128, 1};
  const device_group g{0, 1};
  for (request_handle h : {1u, 2u}) REQUIRE(done(run_until(ex, single(h, task_kind::encode, -1, g, &shape), 1).front()));
  ex.fail_device(1);
  const auto b = batch_of({{1, 0}, {2, 0}}, g, &shape);
  ex.launch(b.launch);
  std::vector<executor_event> evs;
  ex.poll(evs);
  std::multiset<request_handle> failed;
  for (const auto& e : evs) {
    if (e.kind == executor_event_kind::task_failed && e.id == b.launch.id) failed.insert(e.request);
  }
  CHECK(failed == std::multiset<request_handle>{1, 2});
}

TEST_CASE("a batch of one member or the same request twice is refused at launch", "[executor][threads][batching]") {
  thread_executor ex(1);
  const request_shape shape{"toy", 128, 128, 1};
  auto one = batch_of({{1, 0}}, device_group{0}, &shape);
  CHECK_THROWS_AS(ex.launch(one.launch), std::invalid_argument);
  auto twice = batch_of({{1, 0}, {1, 0}}, device_group{0}, &shape);
  CHECK_THROWS_AS(ex.launch(twice.launch), std::invalid_argument);
}

namespace {
// 2 ms alone; a batch of b costs 1.2 ms once plus 0.8 ms per member.
struct ms_batch_cost {
  double step_seconds(const request_shape&, int k) const { return 0.002 / k; }
  double batch_step_seconds(const request_shape&, int k, int b) const { return (0.0012 + 0.0008 * b) / k; }
  bool allows_degree(const request_shape&, int) const { return true; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.0002; }
};
}  // namespace

TEST_CASE("round-based with max_batch serves identical requests on threads in real batches, every latent exact", "[executor][threads][batching]") {
  auto policy = paraflex_test::builtin_policies(2).make("round-based:max_batch=4").value_or_throw();
  ms_batch_cost cost;
  cpu_dit_body body;
  body.time_scale = 1.0;
  thread_executor ex(2, body);
  scheduler s(cluster{2, 2, "toy"}, policy, ex, cost);
  int batched = 0;
  s.on_task_record([&](const task_record& t) { batched += t.batch > 1; });
  for (int i = 0; i < 24; ++i) {
    request_spec r;
    r.id = "q" + std::to_string(i);
    r.shape = {"toy", 128, 128, 1};
    r.steps = 6;
    r.arrival = 0;
    r.slo = 1'000'000;
    s.submit(r);
  }
  s.run();
  for (const auto& r : s.state().requests) CHECK(r.phase == request_phase::completed);  // decode checked every latent
  CHECK(batched > 0);
  CHECK(ex.errors().empty());
}

namespace {
// The policy of docs/writing-a-policy.md, "Batching identical requests", verbatim.
class fcfs_batching {
 public:
  explicit fcfs_batching(int max_batch = 8) : max_batch_(max_batch) {}

  void decide(const paraflex::scheduler_view& v, paraflex::decision_buffer& out) {
    using namespace paraflex;
    device_set available = v.free_devices();
    taken_.clear();
    const auto taken = [&](request_handle o) { return taken_.count(o) > 0; };
    for (request_handle h : v.waiting()) {
      if (taken(h)) continue;                                 // already rides in an earlier batch
      auto g = place(v, h, 1, available);                     // sticky: where its state is, if free
      if (!g) continue;
      batch_companions(v, h, *g, max_batch_, /*margin=*/0.1, taken, members_);
      batch_recruits(v, h, *g, max_batch_, /*margin=*/0.1, taken, members_, recruits_);
      available.reset(*g);
      if (!recruits_.empty()) {                               // their free encodes on g now, as one
        taken_.insert(recruits_.begin(), recruits_.end());    // launch; they join h's batch at the
        out.assign_batch(recruits_, std::move(*g));           // next call
        continue;
      }
      taken_.insert(members_.begin(), members_.end());
      out.assign_batch(members_, std::move(*g));              // one member: a plain assign
    }
  }

 private:
  int max_batch_;
  std::vector<paraflex::request_handle> members_, recruits_;  // reused: no allocation when warm
  std::unordered_set<paraflex::request_handle> taken_;
};

struct doc_outcome {
  int on_time = 0, batched = 0, completed = 0;
};

template <class X>
doc_outcome run_doc_policy(X& ex, int max_batch, int n) {
  fcfs_batching policy(max_batch);
  ms_batch_cost cost;
  scheduler s(cluster{2, 2, "toy"}, policy, ex, cost);
  doc_outcome o;
  s.on_task_record([&](const task_record& t) { o.batched += t.batch > 1; });
  // One identical request every 5 ms, 16 ms of steps each: 1.6x what two devices carry alone, half of
  // what they carry in batches of 8 (7.6 ms for 8 steps).
  for (int i = 0; i < n; ++i) {
    request_spec r;
    r.id = "d" + std::to_string(i);
    r.shape = {"toy", 128, 128, 1};
    r.steps = 8;
    r.arrival = i * 5'000;
    r.slo = 60'000;
    s.submit(r);
  }
  s.run();
  for (const auto& r : s.state().requests) {
    o.completed += r.phase == request_phase::completed;
    o.on_time += r.phase == request_phase::completed && r.finish <= r.deadline();
  }
  return o;
}
}  // namespace

TEST_CASE("the batching policy of writing-a-policy.md batches when allowed and gains on-time requests", "[batching][docs]") {
  simulated_executor a, b;
  const auto alone = run_doc_policy(a, 1, 80);
  const auto batched = run_doc_policy(b, 8, 80);
  CHECK(alone.batched == 0);
  CHECK(batched.batched > 0);
  CHECK(batched.completed == 80);
  CHECK(batched.on_time > alone.on_time);
  // The same policy on real threads: every latent checked against the serial reference at decode.
  thread_executor ex(2);
  const auto real = run_doc_policy(ex, 8, 24);
  CHECK(real.completed == 24);
  CHECK(real.batched > 0);
  CHECK(ex.errors().empty());
}
