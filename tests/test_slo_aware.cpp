// Policy composition (compose.hpp) and the deadline-aware policies (slo_aware.hpp): the part
// concepts, swapping one part, GF-DiT's best fit, slo-aware's drops, and invariant sweeps over
// random workloads and cluster shapes (every request ends exactly once, no device runs two things
// at once, no invalid decision, same input -> same schedule).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/compose.hpp"
#include "paraflex/policy/slo_aware.hpp"
#include "paraflex/runtime/scheduler.hpp"

using namespace paraflex;

namespace {

/// Step time linear in latent tokens with sublinear scaling: small shapes gain nothing from more
/// devices, large ones about k^0.8. No Eigen, no profile file: the test owns its numbers.
struct toy_cost {
  [[nodiscard]] double step_seconds(const request_shape& s, int k) const {
    const double tokens = latent_tokens(s);
    const double work = 2e-4 * tokens;
    const double overhead = 0.01 * (k - 1);
    const double scale = tokens >= 4096 ? std::pow(static_cast<double>(k), 0.8) : tokens >= 1024 ? std::pow(static_cast<double>(k), 0.5) : 1.0;
    return work / scale + overhead;
  }
  [[nodiscard]] bool allows_degree(const request_shape&, int k) const { return k >= 1; }
  [[nodiscard]] double migration_seconds(const request_shape&, int, int, bool cross) const { return cross ? 0.004 : 0.002; }
};

request_shape square(int px) { return request_shape{"toy", px, px, 1}; }

/// Latency of a request alone at its fastest degree on g devices (what the SLO multiples refer to).
double alone_s(const toy_cost& c, const request_shape& s, int steps, int g) {
  double best = 1e300;
  for (int k = 1; k <= g; ++k) best = std::min(best, c.step_seconds(s, k));
  return best * steps;
}

request_spec make(std::string id, double arrival_s, int px, int steps, double slo_s, int priority = 0) {
  request_spec r;
  r.id = std::move(id);
  r.arrival = *to_ticks(arrival_s);
  r.shape = square(px);
  r.steps = steps;
  r.slo = slo_s > 0 ? *to_ticks(slo_s) : never;
  r.priority = priority;
  return r;
}

/// What one run produced, for comparisons and invariant checks.
struct run_result {
  std::vector<request_record> records;
  std::vector<task_record> tasks;
  std::map<std::string, int> ends;  ///< request id -> times on_request_end fired
  std::vector<bool> ran_all;        ///< every task done (read while the runtime's trajectories live)
};

template <Policy P>
run_result run(P& policy, const std::vector<request_spec>& reqs, cluster c, std::uint64_t seed = 0) {
  toy_cost cost;
  simulated_executor ex(seed);
  scheduler s(c, policy, ex, cost);  // strict: an invalid decision throws policy_error
  run_result out;
  s.on_request_end([&](const request_record& r) { ++out.ends[r.spec.id]; });
  s.on_task_record([&](const task_record& t) { out.tasks.push_back(t); });
  for (const auto& r : reqs) s.submit(r);
  s.run();
  out.records = s.state().requests;
  for (const auto& rec : out.records) out.ran_all.push_back(rec.position == rec.tasks_total());
  return out;
}

std::vector<request_spec> random_workload(std::uint64_t seed, int gpus, int n) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int sizes[] = {256, 512, 1024, 2048};
  toy_cost cost;
  std::vector<request_spec> out;
  double t = 0;
  for (int i = 0; i < n; ++i) {
    t += -std::log(1.0 - u(rng)) * 0.4;  // busy: the cluster is overloaded at times
    const int px = sizes[static_cast<std::size_t>(u(rng) * 4) % 4];
    const int steps = 3 + static_cast<int>(u(rng) * 10);
    const double p = u(rng);
    double slo = 0;  // 20% best effort, some impossible, most 1.5-5x alone
    if (p < 0.05) slo = 0.5 * alone_s(cost, square(px), steps, gpus);
    else if (p < 0.8) slo = (1.5 + 3.5 * u(rng)) * alone_s(cost, square(px), steps, gpus);
    out.push_back(make(std::to_string(i + 1), t, px, steps, slo, u(rng) < 0.2 ? 1 : 0));
  }
  return out;
}

/// Every request ended exactly once, with a reason when dropped; devices never overlap.
void check_invariants(const run_result& r, std::size_t n, int gpus) {
  REQUIRE(r.records.size() == n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& rec = r.records[i];
    INFO("request " << rec.spec.id);
    REQUIRE(rec.ended());
    CHECK(r.ends.at(rec.spec.id) == 1);
    if (rec.phase == request_phase::dropped) CHECK_FALSE(rec.drop_reason.empty());
    else CHECK(r.ran_all[i]);
  }
  std::vector<std::vector<std::pair<tick, tick>>> per_device(static_cast<std::size_t>(gpus));
  for (const auto& t : r.tasks) {
    for (device_id d : t.devices) per_device[d].emplace_back(t.start, t.end);
  }
  for (auto& spans : per_device) {
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i) REQUIRE(spans[i].first >= spans[i - 1].second);
  }
}

// ---- parts used by the concept and swap tests -----------------------------------------------

struct admit_small {
  admission judge(const scheduler_view& v, request_handle h) {
    return v.request(h).spec.shape.height <= 1024 ? admission::admit() : admission::defer();
  }
};
struct says_yes {
  bool judge(const scheduler_view&, request_handle);
};
struct shortest_first {
  tick key(const scheduler_view& v, request_handle h) const { return v.remaining_time(h, 1); }
};
struct by_name {
  std::string key(request_handle h) const;
};
struct unordered_key {
  std::complex<double> key(const scheduler_view&, request_handle);
};
struct always_two {
  int degree(const scheduler_view& v, request_handle h, const device_set& avail) const {
    return v.allows_degree(h, 2) && avail.count() >= 2 ? 2 : 0;
  }
};
struct no_devices {
  int degree(const scheduler_view&, request_handle) const;
};
struct lowest_ids {
  std::optional<device_group> place(const scheduler_view& v, request_handle, int k, const device_set& avail,
                                    const device_set&) const {
    return find_free_group(avail, k, v.topology());
  }
};
struct any_k {
  device_group place(int k);
};
struct counting_order {
  int arrivals = 0;
  tick key(const scheduler_view& v, request_handle h) const { return v.request(h).spec.arrival; }
  void on_arrival(const scheduler_view&, request_handle) { ++arrivals; }
};

}  // namespace

TEST_CASE("the parts of a composed policy are checked by concepts", "[policy][compose]") {
  STATIC_REQUIRE(Admission<admit_all>);
  STATIC_REQUIRE(Admission<drop_unreachable>);
  STATIC_REQUIRE(Admission<slo_admission>);
  STATIC_REQUIRE(Admission<admit_small>);
  STATIC_REQUIRE_FALSE(Admission<says_yes>);
  STATIC_REQUIRE_FALSE(Admission<int>);

  STATIC_REQUIRE(Order<fcfs_order>);
  STATIC_REQUIRE(Order<edf_order>);
  STATIC_REQUIRE(Order<least_slack_order>);
  STATIC_REQUIRE(Order<priority_edf_order>);
  STATIC_REQUIRE(Order<shortest_first>);
  STATIC_REQUIRE_FALSE(Order<by_name>);
  STATIC_REQUIRE_FALSE(Order<unordered_key>);

  STATIC_REQUIRE(Sizing<smallest_meeting_degree>);
  STATIC_REQUIRE(Sizing<fastest_degree>);
  STATIC_REQUIRE(Sizing<cheapest_degree>);
  STATIC_REQUIRE(Sizing<always_two>);
  STATIC_REQUIRE_FALSE(Sizing<no_devices>);

  STATIC_REQUIRE(Placement<sticky_placement>);
  STATIC_REQUIRE(Placement<packed_placement>);
  STATIC_REQUIRE(Placement<lowest_ids>);
  STATIC_REQUIRE_FALSE(Placement<any_k>);
}

TEST_CASE("a composed policy models Policy and forwards only the hooks its parts have", "[policy][compose]") {
  using plain = composed_policy<admit_all, fcfs_order, fastest_degree>;
  using unkept = composed_policy<admit_all, shortest_first, fastest_degree>;  // an order keyed on progress
  using counted = composed_policy<admit_small, counting_order, always_two, lowest_ids>;
  STATIC_REQUIRE(Policy<plain>);
  STATIC_REQUIRE(NamedPolicy<plain>);
  // fcfs_order is a RequestKeyedOrder: the policy keeps its order between calls through the hooks.
  STATIC_REQUIRE(ArrivalAwarePolicy<plain>);
  STATIC_REQUIRE(TaskAwarePolicy<plain>);
  // An order that is not request-keyed is re-sorted at each call: no part has a hook, so neither does the policy.
  STATIC_REQUIRE(Policy<unkept>);
  STATIC_REQUIRE_FALSE(ArrivalAwarePolicy<unkept>);
  STATIC_REQUIRE_FALSE(TaskAwarePolicy<unkept>);
  STATIC_REQUIRE(ArrivalAwarePolicy<counted>);
  STATIC_REQUIRE_FALSE(CompletionAwarePolicy<counted>);
  STATIC_REQUIRE(Policy<edf_best_fit_policy>);
  STATIC_REQUIRE(ArrivalAwarePolicy<slo_aware_policy>);

  counted p({}, {}, {}, {}, compose_options{"counted", 1, false});
  const std::vector<request_spec> reqs = {make("a", 0, 256, 3, 0), make("b", 0.1, 512, 3, 0), make("c", 0.2, 2048, 3, 0)};
  auto r = run(p, reqs, cluster{4, 4, "toy"});
  CHECK(p.order_part().arrivals == 3);
  CHECK(p.name() == "counted");
  // admit_small defers the 2048 px request forever: the runtime's stall guard ends it.
  CHECK(r.records[0].phase == request_phase::completed);
  CHECK(r.records[1].phase == request_phase::completed);
  CHECK(r.records[2].phase == request_phase::dropped);
  for (const auto& t : r.tasks) {
    if (t.task.kind != task_kind::migrate) CHECK(t.devices.size() == 2);  // always_two sized every task
  }
}

TEST_CASE("swapping only the order part changes which request finishes first", "[policy][compose]") {
  // One device, a long request and a short one arriving together: FCFS runs the long one first,
  // shortest-first overtakes it at the first step boundary.
  const std::vector<request_spec> reqs = {make("long", 0, 2048, 10, 0), make("short", 0, 256, 10, 0)};
  composed_policy<admit_all, fcfs_order, fastest_degree> fcfs;
  composed_policy<admit_all, shortest_first, fastest_degree> sjf;
  auto a = run(fcfs, reqs, cluster{1, 1, "toy"});
  auto b = run(sjf, reqs, cluster{1, 1, "toy"});
  CHECK(a.records[0].finish < a.records[1].finish);
  CHECK(b.records[1].finish < b.records[0].finish);
  // Same work either way: the same device time, and the one device busy until the same moment.
  const auto busy = [](const run_result& r) {
    tick t = 0;
    for (const auto& task : r.tasks) t += (task.end - task.start) * static_cast<tick>(task.devices.size());
    return t;
  };
  CHECK(busy(a) == busy(b));
  CHECK(std::max(a.records[0].finish, a.records[1].finish) == std::max(b.records[0].finish, b.records[1].finish));
  // Only the order differs, and running the short one first lowers the total completion time.
  CHECK(b.records[0].finish + b.records[1].finish < a.records[0].finish + a.records[1].finish);
}

TEST_CASE("swapping only the sizing part changes the degree", "[policy][compose]") {
  const std::vector<request_spec> reqs = {make("x", 0, 2048, 4, 0)};
  composed_policy<admit_all, fcfs_order, fastest_degree> fast({}, {}, {}, {}, compose_options{"fast", 1, false});
  composed_policy<admit_all, fcfs_order, cheapest_degree> cheap({}, {}, {}, {}, compose_options{"cheap", 1, false});
  auto a = run(fast, reqs, cluster{8, 8, "toy"});
  auto b = run(cheap, reqs, cluster{8, 8, "toy"});
  CHECK(a.records[0].last_degree == 8);
  CHECK(b.records[0].last_degree == 1);  // no deadline: the fewest GPU-seconds
}

TEST_CASE("smallest_meeting_degree picks the smallest degree whose finish meets the deadline", "[policy][slo-aware]") {
  toy_cost cost;
  edf_best_fit_policy p;
  simulated_executor ex;
  scheduler s(cluster{8, 8, "toy"}, p, ex, cost);
  const auto shape = square(2048);
  const int steps = 10;
  // A deadline between the times on 3 and on 4 devices: 4 is the smallest that meets it.
  const double t2 = cost.step_seconds(shape, 2) * steps, t3 = cost.step_seconds(shape, 3) * steps,
               t4 = cost.step_seconds(shape, 4) * steps;
  REQUIRE(t4 < t3);
  const auto h = s.submit(make("x", 0, 2048, steps, 0.5 * (t3 + t4)));
  const auto h_easy = s.submit(make("easy", 0, 2048, steps, 10 * t2));
  const auto h_doomed = s.submit(make("doomed", 0, 2048, steps, 0.01));
  const device_set all(8, true);
  smallest_meeting_degree size;
  CHECK(size.degree(s.view(), h, all) == 4);
  CHECK(size.degree(s.view(), h_easy, all) == 1);
  CHECK(size.degree(s.view(), h_doomed, all) == 8);  // nothing meets: the fastest
  device_set three(8, false);
  for (device_id d : {0u, 1u, 2u}) three.set(d);
  CHECK(size.degree(s.view(), h, three) == 3);  // 4 does not fit: the fastest that does
  CHECK(size.degree(s.view(), h, device_set(8, false)) == 0);
  CHECK(smallest_meeting_degree{0.5}.degree(s.view(), h, all) > 4);  // a margin asks for more
}

TEST_CASE("edf-best-fit gives each request the smallest meeting degree and never drops", "[policy][slo-aware]") {
  toy_cost cost;
  const auto shape = square(2048);
  const int steps = 6;
  const double t1 = cost.step_seconds(shape, 1) * steps, t2 = cost.step_seconds(shape, 2) * steps;
  // Two requests that meet their deadline on 2 devices but not on 1, on a 4-device cluster: each
  // starts on 2 devices (no spare device is left to widen either) and keeps them while it needs 2
  // (sticky); once 1 device is enough for the rest, the degree is chosen again. Both on time.
  const std::vector<request_spec> reqs = {make("a", 0, 2048, steps, 0.5 * (t1 + t2)), make("b", 0, 2048, steps, 0.5 * (t1 + t2))};
  edf_best_fit_policy p;
  auto r = run(p, reqs, cluster{4, 4, "toy"});
  std::map<request_handle, std::vector<device_group>> steps_on;
  for (const auto& t : r.tasks) {
    if (t.task.kind == task_kind::step) steps_on[t.request].push_back(t.devices);
  }
  REQUIRE(steps_on.size() == 2);
  for (const auto& [h, groups] : steps_on) {
    CHECK(groups.front().size() == 2);
    CHECK(groups[1] == groups[0]);  // the second step stays on the same devices: no migration
  }
  for (const auto& rec : r.records) {
    CHECK(rec.phase == request_phase::completed);
    CHECK(rec.finish <= rec.deadline());
  }
  // An impossible request is still run (GF-DiT never drops), late.
  const std::vector<request_spec> late = {make("late", 0, 2048, steps, 0.001)};
  auto l = run(p, late, cluster{4, 4, "toy"});
  CHECK(l.records[0].phase == request_phase::completed);
}

TEST_CASE("slo-aware drops a request that cannot meet its deadline with deadline_unreachable", "[policy][slo-aware]") {
  toy_cost cost;
  const double alone = alone_s(cost, square(1024), 10, 8);
  const std::vector<request_spec> reqs = {make("ok", 0, 1024, 10, 3 * alone), make("hopeless", 0, 1024, 10, 0.5 * alone)};
  slo_aware_policy p;
  auto r = run(p, reqs, cluster{8, 8, "toy"});
  CHECK(r.records[0].phase == request_phase::completed);
  CHECK(r.records[0].finish <= r.records[0].deadline());
  CHECK(r.records[1].phase == request_phase::dropped);
  CHECK(r.records[1].drop_reason == "deadline_unreachable");
  CHECK(r.records[1].first_start == never);  // never ran: no GPU time wasted on it
}

TEST_CASE("slo-aware admits a request left alone in its window once the others are set aside", "[policy][slo-aware]") {
  // Eight devices at a capacity of 0.2: A (priority 1) needs more than 0.2 x 8 x its time to its
  // deadline, which only the alone rule lets in. B (priority 0, one small step) shares A's
  // deadline, so the window overflows and B, of the lower class, is set aside; A is then alone
  // and must run. Setting A aside as well left nothing to run on an idle cluster: the runtime's
  // stall guard dropped both as policy_stalled. Relaxed admission defers, strict rejects B.
  toy_cost cost;
  const double slo = 2 * alone_s(cost, square(2048), 10, 8);
  const std::vector<request_spec> reqs = {make("A", 0, 2048, 10, slo, 1), make("B", 0, 512, 1, slo, 0)};
  for (const admission_mode mode : {admission_mode::relaxed, admission_mode::strict}) {
    INFO((mode == admission_mode::strict ? "strict" : "relaxed"));
    slo_aware_options o;
    o.admission = mode;
    o.capacity = 0.2;
    o.reserve = 0;
    slo_aware_policy p(o);
    auto r = run(p, reqs, cluster{8, 8, "toy"});
    CHECK(r.records[0].phase == request_phase::completed);
    CHECK(r.records[0].finish <= r.records[0].deadline());
    for (const auto& rec : r.records) CHECK(rec.drop_reason != "policy_stalled");
    if (mode == admission_mode::strict) CHECK(r.records[1].drop_reason == "over_capacity");
  }
}

TEST_CASE("slo-aware admission keeps the deadline windows within capacity", "[policy][slo-aware]") {
  toy_cost cost;
  const int steps = 10;
  const double one = cost.step_seconds(square(512), 1) * steps;  // 512 px gains little from more devices
  // Twenty identical requests at once on one device, each due in 4 x its latency alone: at most
  // four fit. strict rejects the rest at once; relaxed defers them and drops them when hopeless.
  std::vector<request_spec> reqs;
  for (int i = 0; i < 20; ++i) reqs.push_back(make(std::to_string(i), 0, 512, steps, 4.2 * one));
  slo_aware_options strict_opts;
  strict_opts.admission = admission_mode::strict;
  strict_opts.capacity = 1.0;
  slo_aware_policy strict(strict_opts);
  auto s = run(strict, reqs, cluster{1, 1, "toy"});
  int on_time = 0, over = 0;
  tick busy = 0;
  for (const auto& rec : s.records) {
    on_time += rec.phase == request_phase::completed && rec.finish <= rec.deadline();
    over += rec.drop_reason == "over_capacity";
    CHECK((rec.phase == request_phase::completed || rec.first_start == never));  // nothing wasted
  }
  for (const auto& t : s.tasks) busy += t.end - t.start;
  CHECK(on_time == 4);
  CHECK(over == 16);
  CHECK(to_seconds(busy) < 4.01 * one);  // no device time on requests that miss

  slo_aware_policy relaxed;
  auto rl = run(relaxed, reqs, cluster{1, 1, "toy"});
  int relaxed_on_time = 0, relaxed_late = 0, relaxed_dropped = 0;
  tick relaxed_busy = 0;
  for (const auto& rec : rl.records) {
    relaxed_on_time += rec.phase == request_phase::completed && rec.finish <= rec.deadline();
    relaxed_late += rec.phase == request_phase::completed && rec.finish > rec.deadline();
    relaxed_dropped += rec.phase == request_phase::dropped;
    if (rec.phase == request_phase::dropped) CHECK(rec.drop_reason == "deadline_unreachable");
  }
  for (const auto& t : rl.tasks) relaxed_busy += t.end - t.start;
  // Deferring instead of rejecting loses nothing here: the same four fit, and the other sixteen are
  // dropped once hopeless, never run late.
  CHECK(relaxed_on_time == 4);
  CHECK(relaxed_late == 0);
  CHECK(relaxed_dropped == 16);
  CHECK(to_seconds(relaxed_busy) < 4.01 * one);

  // Without admission control every request runs, sixteen of them late, on the same device time.
  edf_best_fit_policy edf;
  auto e = run(edf, reqs, cluster{1, 1, "toy"});
  int edf_on_time = 0;
  for (const auto& rec : e.records) edf_on_time += rec.phase == request_phase::completed && rec.finish <= rec.deadline();
  CHECK(edf_on_time == 4);
  CHECK(e.records.back().finish > 19 * *to_ticks(one));
}

TEST_CASE("slo-aware serves a higher priority class first", "[policy][slo-aware]") {
  toy_cost cost;
  const double one = cost.step_seconds(square(512), 1) * 10;
  // Both due at the same time, room for only one: the priority-1 request wins.
  const std::vector<request_spec> reqs = {make("low", 0, 512, 10, 1.5 * one, 0), make("high", 0, 512, 10, 1.5 * one, 1)};
  slo_aware_policy p;
  auto r = run(p, reqs, cluster{1, 1, "toy"});
  CHECK(r.records[1].phase == request_phase::completed);
  CHECK(r.records[1].finish <= r.records[1].deadline());
  CHECK_FALSE((r.records[0].phase == request_phase::completed && r.records[0].finish <= r.records[0].deadline()));
}

TEST_CASE("slo-aware with order=edf serves the earlier deadline first, whatever the class", "[policy][slo-aware]") {
  toy_cost cost;
  const double one = cost.step_seconds(square(512), 1) * 10;
  // One device. "low" meets its deadline only if it runs first; "high" meets its own either way.
  // The capacity check admits both, so the order alone decides whether both make it.
  const std::vector<request_spec> reqs = {make("low", 0, 512, 10, 1.5 * one, 0), make("high", 0, 512, 10, 3 * one, 1)};
  const auto on_time = [](const request_record& rec) { return rec.phase == request_phase::completed && rec.finish <= rec.deadline(); };

  slo_aware_policy by_class;  // the default: the higher class first
  const auto c = run(by_class, reqs, cluster{1, 1, "toy"});
  CHECK(on_time(c.records[1]));
  CHECK_FALSE(on_time(c.records[0]));

  slo_aware_options o;
  o.priority_order = false;  // order=edf
  slo_aware_policy by_deadline(o);
  const auto d = run(by_deadline, reqs, cluster{1, 1, "toy"});
  CHECK(on_time(d.records[0]));
  CHECK(on_time(d.records[1]));
  CHECK(d.records[0].finish < d.records[1].finish);

  policy_registry registry;  // the registry's order=edf is that option
  register_slo_aware(registry);
  any_policy from_spec = registry.make("slo-aware:order=edf").value_or_throw();
  const auto s = run(from_spec, reqs, cluster{1, 1, "toy"});
  CHECK(s.records[0].finish == d.records[0].finish);
  CHECK(s.records[1].finish == d.records[1].finish);
}

TEST_CASE("priority_edf_order without priority_first keys by the deadline alone", "[policy][compose]") {
  const std::vector<request_spec> reqs = {make("late-high", 0, 512, 10, 30, 5), make("early-low", 0, 512, 10, 10, -5)};
  const priority_edf_order by_class{0, true}, by_deadline{0, false};
  scheduler_state s;
  s.now = 0;
  for (request_handle h = 0; h < reqs.size(); ++h) {
    request_record rec;
    rec.handle = h;
    rec.spec = reqs[h];
    s.requests.push_back(rec);
  }
  const scheduler_view v(s);
  CHECK(by_class.key(v, 0) < by_class.key(v, 1));
  CHECK(by_deadline.key(v, 1) < by_deadline.key(v, 0));
  CHECK(by_deadline.key(v, 0).neg_priority == 0);
}

TEST_CASE("slo-aware runs best-effort requests after deadline ones but never starves them", "[policy][slo-aware]") {
  toy_cost cost;
  const double one = cost.step_seconds(square(512), 1) * 5;
  std::vector<request_spec> reqs = {make("best-effort", 0, 512, 5, 0)};
  // A steady stream of deadline requests that keeps the single device busy for a long time.
  for (int i = 0; i < 60; ++i) reqs.push_back(make("d" + std::to_string(i), 0.9 * one * i, 512, 5, 3 * one));
  slo_aware_policy p;
  auto r = run(p, reqs, cluster{1, 1, "toy"});
  check_invariants(r, reqs.size(), 1);
  const auto& be = r.records[0];
  REQUIRE(be.phase == request_phase::completed);
  CHECK(to_seconds(be.finish) < 0.9 * one * 60);  // done before the stream ends
}

TEST_CASE("every request ends exactly once, with no invalid decision, over random workloads", "[policy][slo-aware][compose]") {
  struct shape_case {
    int gpus, per_node;
  };
  const shape_case clusters[] = {{1, 1}, {3, 3}, {8, 4}, {8, 8}, {16, 4}, {16, 8}};
  const char* specs[] = {"edf-best-fit", "slo-aware", "slo-aware:admission=strict", "slo-aware:admission=off",
                         "slo-aware:chunk=3:hold=0:widen=0", "slo-aware:capacity=0.5:reserve=0.2:margin=0"};
  policy_registry registry;
  register_slo_aware(registry);
  for (const auto& c : clusters) {
    for (std::uint64_t seed : {1u, 2u}) {
      const auto reqs = random_workload(seed * 7919 + static_cast<std::uint64_t>(c.gpus), c.gpus, 60);
      for (const char* spec : specs) {
        INFO(spec << " on " << c.gpus << " GPUs (" << c.per_node << " per node), seed " << seed);
        any_policy p = registry.make(spec).value_or_throw();
        run_result r;
        REQUIRE_NOTHROW(r = run(p, reqs, cluster{c.gpus, c.per_node, "toy"}));
        check_invariants(r, reqs.size(), c.gpus);
        for (const auto& rec : r.records) {
          if (rec.phase == request_phase::dropped) CHECK(rec.drop_reason != "policy_stalled");
        }
      }
      // The composed standard parts in other combinations keep the same invariants.
      composed_policy<drop_unreachable, least_slack_order, cheapest_degree, packed_placement> a;
      composed_policy<admit_all, priority_edf_order, fastest_degree> b({}, priority_edf_order{5.0});
      REQUIRE_NOTHROW(check_invariants(run(a, reqs, cluster{c.gpus, c.per_node, "toy"}), reqs.size(), c.gpus));
      REQUIRE_NOTHROW(check_invariants(run(b, reqs, cluster{c.gpus, c.per_node, "toy"}), reqs.size(), c.gpus));
    }
  }
}

TEST_CASE("priority order runs the whole int range from the largest to the smallest with INT_MIN last", "[policy][compose]") {
  // Regression: the key negated the priority in int, so INT_MIN (the least important) overflowed to
  // the most important and was served first. One device: they run one after the other.
  constexpr int lo = std::numeric_limits<int>::min(), hi = std::numeric_limits<int>::max();
  const std::vector<request_spec> reqs = {make("blocker", 0, 256, 2, 100), make("min", 0.01, 256, 2, 100, lo),
                                          make("min+1", 0.01, 256, 2, 100, lo + 1), make("zero", 0.01, 256, 2, 100, 0),
                                          make("max", 0.01, 256, 2, 100, hi)};
  composed_policy<admit_all, priority_edf_order, fastest_degree> p;
  const auto r = run(p, reqs, cluster{1, 1, "toy"});
  check_invariants(r, reqs.size(), 1);
  CHECK(r.records[4].finish < r.records[3].finish);  // max before zero
  CHECK(r.records[3].finish < r.records[2].finish);  // zero before min+1
  CHECK(r.records[2].finish < r.records[1].finish);  // min+1 before min
  // slo-aware orders by the same key.
  policy_registry registry;
  register_slo_aware(registry);
  any_policy slo = registry.make("slo-aware").value_or_throw();
  const auto s = run(slo, reqs, cluster{1, 1, "toy"});
  CHECK(s.records[2].finish < s.records[1].finish);
  CHECK(s.records[4].finish < s.records[1].finish);
}

TEST_CASE("the same input gives the same schedule", "[policy][slo-aware]") {
  const auto reqs = random_workload(42, 8, 80);
  for (const char* spec : {"slo-aware", "edf-best-fit", "slo-aware:admission=strict"}) {
    INFO(spec);
    policy_registry registry;
    register_slo_aware(registry);
    any_policy p1 = registry.make(spec).value_or_throw();
    any_policy p2 = registry.make(spec).value_or_throw();
    auto a = run(p1, reqs, cluster{8, 4, "toy"});
    auto b = run(p2, reqs, cluster{8, 4, "toy"});
    REQUIRE(a.tasks.size() == b.tasks.size());
    for (std::size_t i = 0; i < a.records.size(); ++i) {
      CHECK(a.records[i].phase == b.records[i].phase);
      CHECK(a.records[i].finish == b.records[i].finish);
      CHECK(a.records[i].drop_reason == b.records[i].drop_reason);
      CHECK(a.records[i].migrations == b.records[i].migrations);
    }
    for (std::size_t i = 0; i < a.tasks.size(); ++i) {
      CHECK(a.tasks[i].devices == b.tasks[i].devices);
      CHECK(a.tasks[i].start == b.tasks[i].start);
    }
  }
}

TEST_CASE("slo-aware meets more deadlines than edf-best-fit under overload", "[policy][slo-aware]") {
  const auto reqs = random_workload(3, 8, 200);
  slo_aware_policy slo;
  edf_best_fit_policy edf;
  auto count = [](const run_result& r) {
    int on_time = 0;
    for (const auto& rec : r.records) on_time += rec.has_deadline() && rec.phase == request_phase::completed && rec.finish <= rec.deadline();
    return on_time;
  };
  CHECK(count(run(slo, reqs, cluster{8, 8, "toy"})) > count(run(edf, reqs, cluster{8, 8, "toy"})));
}

TEST_CASE("the registry builds slo-aware and edf-best-fit and rejects bad parameters", "[policy][slo-aware]") {
  policy_registry r;
  register_slo_aware(r);
  CHECK(r.contains("slo-aware"));
  CHECK(r.contains("edf-best-fit"));
  auto ok = r.make("slo-aware:admission=strict:capacity=0.8:reserve=0.05:chunk=2");
  REQUIRE(ok.has_value());
  CHECK(ok.value().name() == "slo-aware");
  CHECK(r.make("edf-best-fit").value().name() == "edf-best-fit");
  CHECK_FALSE(r.make("slo-aware:admission=sometimes").has_value());
  CHECK_FALSE(r.make("slo-aware:capacity=0").has_value());
  CHECK_FALSE(r.make("slo-aware:capacity=0.5:reserve=0.6").has_value());
  CHECK_FALSE(r.make("slo-aware:colour=blue").has_value());
  CHECK(r.make("slo-aware:order=edf").has_value());
  CHECK(r.make("slo-aware:order=priority").has_value());
  REQUIRE_FALSE(r.make("slo-aware:order=fifo").has_value());
  CHECK(std::string(r.make("slo-aware:order=fifo").error().what()).find("order") != std::string::npos);
  CHECK_FALSE(r.make("edf-best-fit:admission=strict").has_value());
  const auto err = r.make("slo-aware:admission=sometimes").error().what();
  CHECK(err.find("admission") != std::string::npos);
  // The range --list-policies gives for capacity starts at 0.05, below the default reserve (0.1):
  // the message says which reserve and that it was the default, so the user knows what to lower.
  const std::string low = r.make("slo-aware:capacity=0.05").error().what();
  CHECK(low.find("0.1 must be smaller than capacity (0.05)") != std::string::npos);
  CHECK(low.find("default") != std::string::npos);
  CHECK(r.make("slo-aware:capacity=0.05:reserve=0").has_value());
  const std::string set = r.make("slo-aware:capacity=0.5:reserve=0.6").error().what();
  CHECK(set.find("0.6 must be smaller than capacity (0.5)") != std::string::npos);
  CHECK(set.find("default") == std::string::npos);
}

TEST_CASE("slo-aware backfills held devices only on clusters of up to backfill_max_gpus GPUs", "[policy][slo-aware][compose]") {
  policy_registry registry;
  register_slo_aware(registry);
  const auto schedule = [&](const char* spec, const std::vector<request_spec>& reqs, int gpus) {
    any_policy p = registry.make(spec).value_or_throw();
    auto r = run(p, reqs, cluster{gpus, 8, "toy"});
    check_invariants(r, reqs.size(), gpus);
    std::vector<std::pair<tick, std::vector<device_id>>> tasks;
    for (const auto& t : r.tasks) tasks.emplace_back(t.start, std::vector<device_id>(t.devices.begin(), t.devices.end()));
    return tasks;
  };
  // Arrivals compressed so that g GPUs are overloaded: devices are held, and some backfilled.
  const auto overloaded = [](std::uint64_t seed, int gpus, int n) {
    auto reqs = random_workload(seed, gpus, n);
    for (auto& r : reqs) r.arrival = r.arrival * 8 / gpus;
    return reqs;
  };
  SECTION("8 GPUs: backfilled by default; a limit below the cluster turns it off") {
    const auto reqs = overloaded(5, 8, 120);
    const auto by_default = schedule("slo-aware", reqs, 8);
    CHECK(by_default == schedule("slo-aware:backfill_max_gpus=8", reqs, 8));
    const auto off = schedule("slo-aware:backfill_max_gpus=0", reqs, 8);
    CHECK(off != by_default);
    CHECK(off == schedule("slo-aware:backfill_max_gpus=7", reqs, 8));
  }
  SECTION("128 GPUs: not backfilled by default (the limit is 64)") {
    const auto reqs = overloaded(6, 128, 600);
    const auto by_default = schedule("slo-aware", reqs, 128);
    CHECK(by_default == schedule("slo-aware:backfill_max_gpus=0", reqs, 128));
    CHECK(by_default != schedule("slo-aware:backfill_max_gpus=128", reqs, 128));
  }
}
