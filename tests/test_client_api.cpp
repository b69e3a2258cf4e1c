// The embedding API: the thread-safe client (submit, cancel and status by id), cancel semantics,
// policy drops of running requests, driving the scheduler from an outside loop, and the view's
// accessors that a custom policy relies on.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "builtin_registry.hpp"

using namespace paraflex;

namespace {

struct flat_cost {  // 10 ms per step on one device, 6 ms on two, 4 ms on four; migration 1 ms
  double step_seconds(const request_shape&, int k) const { return k == 1 ? 0.010 : k == 2 ? 0.006 : 0.004; }
  bool allows_degree(const request_shape&, int k) const { return k == 1 || k == 2 || k == 4; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.001; }
};

request_spec spec(std::string id, int steps = 4, tick arrival = 0, tick slo = never) {
  request_spec r;
  r.id = std::move(id);
  r.arrival = arrival;
  r.shape = {"toy", 256, 256, 1};
  r.steps = steps;
  r.slo = slo;
  return r;
}

// Runs every waiting request on devices {0} one task at a time, then {1,2} (a migration), alternating.
struct alternate_groups {
  void decide(const scheduler_view& v, decision_buffer& out) {
    device_set avail = v.free_devices();
    for (request_handle h : v.waiting()) {
      const auto& sg = v.request(h).state_group;
      device_group g = !sg.empty() && sg[0] == 0 ? device_group{1, 2} : device_group{0};
      if (!avail.contains_all(g)) continue;
      avail.reset(g);
      out.assign(h, g, 1);
    }
  }
};

// First come, first served on one device, one task per assignment.
struct one_device_fcfs {
  void decide(const scheduler_view& v, decision_buffer& out) {
    if (!v.free_devices().test(0) || v.waiting().empty()) return;
    out.assign(*v.waiting().begin(), device_group{0}, 1);
  }
};

// Records every task of every request.
struct task_log {
  std::map<std::string, std::vector<task_record>> by_id;
  template <class S>
  void attach(S& s) {
    s.on_task_record([this, &s](const task_record& t) { by_id[s.request(t.request).spec.id].push_back(t); });
  }
};

}  // namespace

TEST_CASE("client().submit returns the id at once, generates one when empty and refuses duplicates", "[client]") {
  flat_cost cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  auto& client = s.client();
  REQUIRE(client.submit(spec("a")) == "a");
  const std::string generated = client.submit(spec(""));
  REQUIRE(generated == "r1");
  REQUIRE(client.submit(spec("r2")) == "r2");
  REQUIRE(client.submit(spec("")) == "r3");  // "r2" is taken: the generator skips it
  try {
    client.submit(spec("a"));
    FAIL("a duplicate id was accepted");
  } catch (const submit_error& e) {
    REQUIRE(e.kind() == submit_error::kind_type::duplicate_id);
    REQUIRE(std::string(e.what()).find("'a'") != std::string::npos);
  }
  auto bad = spec("bad", 0);
  REQUIRE_THROWS_AS(client.submit(bad), submit_error);
  REQUIRE_FALSE(client.status("bad").has_value());  // a refused request leaves no trace

  REQUIRE(client.status("a")->state == request_state::waiting);
  s.run();
  for (const char* id : {"a", "r1", "r2", "r3"}) {
    const auto st = client.status(id);
    REQUIRE(st.has_value());
    REQUIRE(st->state == request_state::completed);
    REQUIRE(st->steps_done == 4);
    REQUIRE(st->degree == 1);
    REQUIRE(st->latency_s().has_value());
  }
  REQUIRE(client.counters().submitted == 4);
  REQUIRE(client.counters().completed == 4);
  REQUIRE_FALSE(client.status("nobody").has_value());
}

TEST_CASE("A waiting request cancelled by id ends at once and runs nothing", "[client][cancel]") {
  flat_cost cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  task_log log;
  log.attach(s);
  s.client().submit(spec("first"));
  s.client().submit(spec("second"));
  REQUIRE(s.turn_to(0) == 0);  // both arrive at 0; "first" starts, "second" waits
  REQUIRE(s.client().status("first")->state == request_state::running);
  REQUIRE(s.client().status("second")->state == request_state::waiting);
  REQUIRE(s.client().cancel("second") == cancel_outcome::accepted);
  REQUIRE(s.client().status("second")->cancel_requested);
  s.run();
  const auto st = s.client().status("second");
  REQUIRE(st->state == request_state::dropped);
  REQUIRE(st->reason == "cancelled");
  REQUIRE(st->finish == 0);  // ended at the next turn, at time 0
  REQUIRE(log.by_id["second"].empty());
  REQUIRE(s.client().status("first")->state == request_state::completed);
  REQUIRE(s.client().cancel("first") == cancel_outcome::already_ended);
  REQUIRE(s.client().cancel("ghost") == cancel_outcome::unknown_id);
}

TEST_CASE("A running request cancelled mid-task ends when that task ends and launches nothing after", "[client][cancel]") {
  flat_cost cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  task_log log;
  log.attach(s);
  s.client().submit(spec("r", 10));
  s.turn_to(0);                          // encode launched (0 s in this cost model: ends at 0)
  while (s.next_wakeup() < 15'000) s.turn_to(s.next_wakeup());  // into the second step
  REQUIRE(s.client().status("r")->state == request_state::running);
  REQUIRE_THROWS_WITH(s.client().cancel("r", "client gone"),
                      Catch::Contains("cancel of request 'r': reason 'client gone' is not a short identifier"));
  REQUIRE(s.client().status("r")->state == request_state::running);  // a refused cancel changes nothing
  REQUIRE(s.client().cancel("r", "client_gone") == cancel_outcome::accepted);
  s.run();
  const auto st = s.client().status("r");
  REQUIRE(st->state == request_state::dropped);
  REQUIRE(st->reason == "client_gone");
  const auto& tasks = log.by_id["r"];
  REQUIRE_FALSE(tasks.empty());
  REQUIRE(st->finish == tasks.back().end);  // ended exactly when its task in flight did
  REQUIRE(tasks.size() < 12);
}

TEST_CASE("A request cancelled during its migration runs no step afterwards", "[client][cancel][migration]") {
  flat_cost cost;
  alternate_groups p;
  simulated_executor ex;
  scheduler s(cluster{4, 4, "x"}, p, ex, cost);
  task_log log;
  log.attach(s);
  s.client().submit(spec("m", 6));
  // Turn until a migration is in flight, then cancel.
  bool cancelled = false;
  while (!s.finished()) {
    const tick t = s.next_wakeup();
    if (t == never) break;
    s.turn_to(t);
    const auto& r = s.state().requests.front();
    if (!cancelled && r.phase == request_phase::running && r.launch_task.kind == task_kind::migrate) {
      REQUIRE(s.client().cancel("m") == cancel_outcome::accepted);
      cancelled = true;
    }
  }
  REQUIRE(cancelled);
  const auto& tasks = log.by_id["m"];
  REQUIRE(tasks.back().task.kind == task_kind::migrate);  // the last thing it did was the migration
  REQUIRE(s.client().status("m")->state == request_state::dropped);
  REQUIRE(s.client().status("m")->reason == "cancelled");
}

TEST_CASE("A request cancelled before its arrival ends once and never arrives", "[client][cancel]") {
  flat_cost cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  int ends = 0;
  s.on_request_end([&](const request_record&) { ++ends; });
  s.client().submit(spec("later", 4, *to_ticks(5.0)));
  s.client().cancel("later");
  s.run();
  REQUIRE(ends == 1);
  REQUIRE(s.client().status("later")->state == request_state::dropped);
  REQUIRE(s.state().waiting.empty());
  REQUIRE(s.unended() == 0);
}

namespace {
struct refuses_model_bad {  // a cost model that throws for a model it does not know
  double step_seconds(const request_shape& s, int) const {
    if (s.model == "bad") throw std::out_of_range("unknown model 'bad'");
    return 0.010;
  }
  bool allows_degree(const request_shape&, int) const { return true; }
  double migration_seconds(const request_shape&, int, int, bool) const { return 0.001; }
};
}  // namespace

TEST_CASE("A client submission whose shape the cost model refuses is dropped; run() goes on and the rest are served", "[client]") {
  refuses_model_bad cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  std::map<std::string, int> ends;
  s.on_request_end([&](const request_record& r) { ++ends[r.spec.id]; });
  auto bad = spec("b");
  bad.shape.model = "bad";
  s.client().submit(spec("a"));
  s.client().submit(bad);
  s.client().submit(spec("c"));  // queued behind the bad one: must not be lost
  REQUIRE_NOTHROW(s.run());
  REQUIRE(ends == std::map<std::string, int>{{"a", 1}, {"b", 1}, {"c", 1}});
  REQUIRE(s.client().status("a")->state == request_state::completed);
  REQUIRE(s.client().status("c")->state == request_state::completed);
  REQUIRE(s.client().status("b")->state == request_state::dropped);
  REQUIRE(s.client().status("b")->reason == "cost_model_error");
  REQUIRE(s.client().counters().dropped_by_reason.at("cost_model_error") == 1);
  REQUIRE(s.unended() == 0);
  // The raw path still says why at once.
  bad.id = "raw";
  REQUIRE_THROWS_WITH(s.submit(bad), Catch::Contains("unknown model 'bad'"));
}

namespace {
// Drops every running request whose handle is odd (once); runs each waiting one to completion on a
// free device.
struct drop_odd_running {
  std::set<request_handle> asked;
  void decide(const scheduler_view& v, decision_buffer& out) {
    for (request_handle h : v.running()) {
      if (h % 2 == 1 && asked.insert(h).second) out.drop(h, "policy_preempted");
    }
    device_set avail = v.free_devices();
    for (request_handle h : v.waiting()) {
      auto g = find_free_group(avail, 1, v.topology());
      if (!g) break;
      avail.reset(*g);
      out.assign_to_completion(h, *g);
    }
  }
};
}  // namespace

TEST_CASE("A policy may drop a running request: it ends when its task in flight ends", "[client][policy]") {
  flat_cost cost;
  drop_odd_running p;
  simulated_executor ex;
  scheduler s(cluster{4, 4, "x"}, p, ex, cost);
  task_log log;
  log.attach(s);
  // Arrivals every 5 ms call the policy while the earlier requests are mid-run (10 ms steps); the
  // last one (handle 5) arrives when nothing else will, so nobody asks to drop it.
  for (int i = 0; i < 6; ++i) s.submit(spec("q" + std::to_string(i), 5, i * 5'000));
  s.run();
  REQUIRE(s.request(1).finish < s.request(0).finish);  // it did not run to completion
  for (request_handle h = 0; h < 6; ++h) {
    const auto& r = s.request(h);
    INFO("request " << r.spec.id);
    if (h == 1 || h == 3) {
      REQUIRE(r.phase == request_phase::dropped);
      REQUIRE(r.drop_reason == "policy_preempted");
      REQUIRE(r.finish == log.by_id[r.spec.id].back().end);
      REQUIRE(log.by_id[r.spec.id].size() < 7);  // encode + 5 steps + decode would be 7
    } else {
      REQUIRE(r.phase == request_phase::completed);
    }
  }
}

TEST_CASE("Driving the scheduler turn by turn gives exactly the schedule of run()", "[client][own-loop]") {
  flat_cost cost;
  std::vector<request_spec> reqs;
  for (int i = 0; i < 30; ++i) reqs.push_back(spec("x" + std::to_string(i), 3 + i % 5, i * 7'000, 200'000));
  auto finishes = [&](bool own_loop) {
    auto policy = paraflex_test::builtin_policies(4).make("slo-aware").value_or_throw();
    simulated_executor ex;
    scheduler s(cluster{4, 4, "x"}, policy, ex, cost);
    for (const auto& r : reqs) s.submit(r);
    if (own_loop) {
      std::size_t turns = 0;
      for (tick t = s.next_wakeup(); !s.finished(); t = s.next_wakeup()) {
        REQUIRE(t != never);
        s.turn_to(t);
        ++turns;
      }
      REQUIRE(turns > 30);
    } else {
      s.run();
    }
    std::vector<std::pair<tick, std::string>> out;
    for (const auto& r : s.state().requests) out.emplace_back(r.finish, r.drop_reason);
    return out;
  };
  REQUIRE(finishes(true) == finishes(false));
}

TEST_CASE("turn_to refuses to skip an event or to go back in time", "[client][own-loop]") {
  flat_cost cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  s.submit(spec("a", 2, 1000));
  REQUIRE(s.next_wakeup() == 1000);
  REQUIRE_THROWS_AS(s.turn_to(2000), std::logic_error);
  s.turn_to(1000);
  REQUIRE_THROWS_AS(s.turn_to(500), std::logic_error);
}

TEST_CASE("Submissions and cancels from many threads each end exactly once", "[client][threads]") {
  flat_cost cost;
  auto policy = paraflex_test::builtin_policies(4).make("edf-best-fit").value_or_throw();
  simulated_executor ex;
  scheduler s(cluster{4, 4, "x"}, policy, ex, cost);
  std::atomic<int> wakeups{0};
  s.on_wakeup([&] { wakeups.fetch_add(1, std::memory_order_relaxed); });
  std::map<std::string, int> ends;
  s.on_request_end([&](const request_record& r) { ++ends[r.spec.id]; });
  constexpr int threads = 4, per_thread = 50;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const std::string id = s.client().submit(spec("t" + std::to_string(t) + "-" + std::to_string(i), 3));
        if (i % 3 == 0) s.client().cancel(id);
      }
    });
  }
  for (auto& th : pool) th.join();
  s.run();
  REQUIRE(ends.size() == static_cast<std::size_t>(threads * per_thread));
  for (const auto& [id, n] : ends) REQUIRE(n == 1);
  REQUIRE(wakeups.load() >= threads * per_thread);
  const auto c = s.client().counters();
  REQUIRE(c.submitted == threads * per_thread);
  REQUIRE(c.completed + c.dropped == threads * per_thread);
  REQUIRE(c.dropped >= 1);
}

TEST_CASE("The view refuses the time of a degree the shape does not allow and prices remaining work", "[view]") {
  flat_cost cost;  // degrees 1, 2, 4
  struct probe {
    bool checked = false;
    void decide(const scheduler_view& v, decision_buffer& out) {
      for (request_handle h : v.waiting()) {
        if (!checked) {
          checked = true;
          REQUIRE_THROWS_AS(v.step_time(h, 3), policy_error);
          REQUIRE_THROWS_AS(v.remaining_time(h, 3), policy_error);
          REQUIRE_THROWS_WITH(v.tasks_time(h, 3, 1), Catch::Contains("allowed: 1,2,4"));
          // 4 steps: 1 x 10 ms = 40 ms of GPU time; 2 x 6 = 48; 4 x 4 = 64 (stages cost 0 here).
          REQUIRE(v.remaining_work(h, 2) == 48'000);
          REQUIRE(v.remaining_work(h) == 40'000);
          REQUIRE(v.costs(h).efficient_degree == 1);
        }
        out.drop(h, "probed");
      }
    }
  } p;
  simulated_executor ex;
  scheduler s(cluster{4, 4, "x"}, p, ex, cost);
  s.submit(spec("a"));
  s.run();
  REQUIRE(p.checked);
}

TEST_CASE("An ended request can be forgotten, which frees its id; counters keep drops by reason", "[client]") {
  flat_cost cost;
  one_device_fcfs p;
  simulated_executor ex;
  scheduler s(cluster{1, 1, "x"}, p, ex, cost);
  auto& client = s.client();
  client.submit(spec("keep"));
  client.submit(spec("gone"));
  client.cancel("gone", "client_left");
  REQUIRE_FALSE(client.forget("keep"));  // not ended yet
  s.run();
  REQUIRE(client.counters().dropped_by_reason.at("client_left") == 1);
  REQUIRE(client.forget("gone"));
  REQUIRE_FALSE(client.status("gone").has_value());
  REQUIRE_FALSE(client.forget("gone"));
  REQUIRE(client.submit(spec("gone")) == "gone");  // the id is free again
  s.run();
  REQUIRE(client.status("gone")->state == request_state::completed);
  REQUIRE(client.counters().submitted == 3);
}
