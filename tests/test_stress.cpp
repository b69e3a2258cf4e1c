// Concurrency stress: many client threads submitting and cancelling while run() serves on the thread
// executor. What must hold whatever the interleaving: every submitted request ends exactly once, the
// client's counters add up, and no device ever runs two tasks at once. The normal suite runs a size
// that takes seconds (smaller under TSan, which is ~10x slower); the full size (100,000 requests) is
// the hidden test "[.stress-full]", run by .ci/test on its own.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "paraflex/executor/thread_executor.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/testing/invariants.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr std::size_t suite_requests = 2'000;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr std::size_t suite_requests = 2'000;
#else
constexpr std::size_t suite_requests = 10'000;
#endif
#else
constexpr std::size_t suite_requests = 10'000;
#endif

// Sub-millisecond tasks; wider groups help the larger shape only, so policies do change degrees.
struct stress_cost {
  double step_seconds(const request_shape& s, int k) const { return 0.0002 + latent_tokens(s) * 1e-7 / k; }
  bool allows_degree(const request_shape&, int k) const { return k == 1 || k == 2 || k == 4; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.00005; }
};

struct stress_outcome {
  std::size_t completed = 0, dropped = 0, cancelled = 0;
};

stress_outcome stress(const std::string& policy_spec, std::size_t requests) {
  constexpr int submitters = 8, cancellers = 2, devices = 8;
  // A tiny real body (state is created, moved and decoded) that does not sleep: the high time scale.
  thread_executor ex(devices, cpu_dit_body{0.0, 2, 1, false});
  auto policy = paraflex_test::builtin_policies(devices).make(policy_spec).value_or_throw();
  stress_cost cost;
  scheduler sched(cluster{devices, 4, "cpu"}, policy, ex, cost);
  testing::invariant_checker chk;
  sched.on_task_record([&](const task_record& t) { chk.observe_task(t); });  // the scheduler's thread: no lock
  std::vector<int> ends;
  stress_outcome out;
  sched.on_request_end([&](const request_record& r) {
    chk.observe_end(r);
    if (ends.size() <= r.handle) ends.resize(static_cast<std::size_t>(r.handle) + 1, 0);
    ++ends[r.handle];
    if (r.phase == request_phase::completed) ++out.completed;
    else ++out.dropped, out.cancelled += r.drop_reason == "stress_cancel";
  });

  // Ids submitted so far, for the cancellers to pick from.
  std::mutex ids_mutex;
  std::vector<std::string> ids;
  std::atomic<int> submitting{submitters};
  sched.open_inbox();
  std::vector<std::thread> threads;
  for (int t = 0; t < submitters; ++t) {
    threads.emplace_back([&, t] {
      const std::size_t mine = requests / submitters + (static_cast<std::size_t>(t) < requests % submitters ? 1 : 0);
      for (std::size_t i = 0; i < mine; ++i) {
        request_spec r;
        r.id = "s" + std::to_string(t) + "-" + std::to_string(i);
        r.shape = {"toy", i % 3 == 0 ? 1024 : 256, i % 3 == 0 ? 1024 : 256, 1};
        r.steps = 1 + static_cast<int>(i % 3);
        r.slo = i % 4 == 0 ? never : 50'000'000;
        r.priority = static_cast<int>(i % 2);
        auto id = sched.client().submit(std::move(r));
        const std::lock_guard lock(ids_mutex);
        ids.push_back(std::move(id));
      }
      submitting.fetch_sub(1);
    });
  }
  for (int c = 0; c < cancellers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(c) + 1);
      while (submitting.load() > 0) {
        std::string id;
        {
          const std::lock_guard lock(ids_mutex);
          if (ids.empty()) continue;
          id = ids[rng() % ids.size()];
        }
        (void)sched.client().cancel(id, "stress_cancel");  // waiting, running or already ended: all fine
        (void)sched.client().status(id);
        std::this_thread::yield();
      }
    });
  }
  std::thread closer([&] {
    for (auto& t : threads) t.join();
    sched.close_inbox();  // run() returns once every request has ended
  });
  sched.run();
  closer.join();

  INFO(policy_spec);
  REQUIRE(ids.size() == requests);
  REQUIRE(ends.size() == requests);
  for (std::size_t h = 0; h < ends.size(); ++h) {
    INFO("request handle " << h);
    REQUIRE(ends[h] == 1);
  }
  const auto counters = sched.client().counters();
  REQUIRE(counters.submitted == requests);
  REQUIRE(counters.completed + counters.dropped == requests);
  REQUIRE(counters.completed == out.completed);
  REQUIRE(counters.waiting == 0);
  REQUIRE(counters.running == 0);
  REQUIRE(ex.in_flight() == 0);
  const auto v = chk.violations(sched.state());  // a device running two tasks at once shows here
  INFO(testing::join_lines(v));
  REQUIRE(v.empty());
  return out;
}

}  // namespace

TEST_CASE("eight submitting and two cancelling threads: every request ends exactly once on the thread executor",
          "[threads][stress]") {
  for (const char* spec : {"edf-best-fit", "round-based"}) {
    const auto o = stress(spec, suite_requests);
    CHECK(o.completed > 0);
  }
}

TEST_CASE("the same stress at 100,000 requests", "[.stress-full][threads]") {
  const auto o = stress("edf-best-fit", 100'000);
  CHECK(o.completed > 0);
  CHECK(o.cancelled > 0);
}
