// The scale parts of the composed policies: degree_candidates (degrees worth trying) must never change
// which degree a Sizing part picks, and settled_until must be the last moment a running request's
// degree cannot grow. Checked against plain loops over every allowed degree on random cost tables
// where times go down and up again (as fitted models do past their best degree).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/compose.hpp"
#include "paraflex/policy/degree_candidates.hpp"
#include "paraflex/policy/slo_aware.hpp"
#include "paraflex/policy/static_degree.hpp"
#include "paraflex/runtime/scheduler.hpp"

using namespace paraflex;

namespace {

/// Per shape (by height) and degree: random step, encode and decode times, skewed so that small
/// degrees tend to get faster and large ones slower, with exceptions; some degrees not allowed.
/// With a grid (seconds), every time is a whole number of grid steps (at least one), so that finishes
/// tie across degrees and land exactly on deadlines drawn on the same grid.
struct table_cost {
  std::uint64_t seed = 1;
  double grid = 0;
  [[nodiscard]] double draw(const request_shape& s, int kind, int k) const {
    std::mt19937_64 rng(seed * 1000003u + static_cast<std::uint64_t>(s.height) * 131u + static_cast<std::uint64_t>(kind) * 17u +
                        static_cast<std::uint64_t>(k));
    std::uniform_real_distribution<double> u(0.5, 1.5);
    const double base = kind == 0 ? 0.2 : 0.05;
    const double trend = k <= 4 ? 1.0 / k : 0.25 * (1.0 + 0.2 * (k - 4));
    return on_grid(base * trend * u(rng));
  }
  [[nodiscard]] double on_grid(double seconds) const { return grid > 0 ? std::max(1.0, std::round(seconds / grid)) * grid : seconds; }
  [[nodiscard]] double step_seconds(const request_shape& s, int k) const { return draw(s, 0, k); }
  [[nodiscard]] double stage_seconds(const request_shape& s, stage_kind st, int k) const {
    return draw(s, st == stage_kind::encode ? 1 : 2, k);
  }
  [[nodiscard]] bool allows_degree(const request_shape& s, int k) const { return k == 1 || (k + s.height) % 5 != 0; }
  [[nodiscard]] double migration_seconds(const request_shape&, int, int, bool cross) const { return on_grid(cross ? 0.03 : 0.01); }
};

request_spec make(std::string id, double arrival_s, int height, int steps, double slo_s) {
  request_spec r;
  r.id = std::move(id);
  r.arrival = *to_ticks(arrival_s);
  r.shape = request_shape{"table", height, 512, 1};
  r.steps = steps;
  r.slo = slo_s > 0 ? *to_ticks(slo_s) : never;
  return r;
}

/// Each of `gpus` devices available with probability p (one uniform draw per device, in order).
device_set random_devices(int gpus, double p, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  device_set avail(static_cast<std::size_t>(gpus), false);
  for (int d = 0; d < gpus; ++d) {
    if (u(rng) < p) avail.set(static_cast<device_id>(d));
  }
  return avail;
}

/// Turns s to the end of its run. At every turn, three random offers of free devices (each device
/// with probability 0.5), and for each running request f(view, h, offered): first with the offer
/// plus its own devices (as hold_for asks), then with the offer alone.
template <class S, class F>
void ask_running_at_every_turn(S& s, int gpus, std::mt19937_64& rng, F f) {
  while (s.next_wakeup() != never) {
    s.turn_to(s.next_wakeup());
    const scheduler_view& v = s.view();
    for (int trial = 0; trial < 3; ++trial) {
      const device_set avail = random_devices(gpus, 0.5, rng);
      for (request_handle h : v.running()) {
        device_set pool = avail;
        pool.set(v.request(h).run_group);
        f(v, h, static_cast<const device_set&>(pool));
        f(v, h, avail);
      }
    }
  }
}

/// Turns the scheduler until the next event would pass t.
template <class S>
void run_until(S& s, tick t) {
  while (s.next_wakeup() <= t) s.turn_to(s.next_wakeup());
}

// estimated_finish written out from the cost table, independent of finish_estimate (which the parts
// and estimated_finish share): migration unless the state stays where it is, then what is left.
tick plain_finish(const scheduler_view& v, request_handle h, int k, const device_set& avail) {
  const auto& r = v.request(h);
  const auto& c = v.costs(h);
  const auto& sg = r.state_group;
  const bool stays = sg.empty() || (static_cast<int>(sg.size()) == k && avail.contains_all(sg));
  const tick migration = stays ? 0 : k <= v.topology().gpus_per_node ? c.migrate_intra_node : c.migrate_inter_node;
  const auto kk = static_cast<std::size_t>(k);
  const tick left = static_cast<tick>(r.steps_remaining()) * c.step[kk] + c.decode[kk] + (r.position == 0 ? c.encode[kk] : 0);
  return add_sat(v.now(), migration + left);
}

// The plain loops the parts replaced: every allowed degree, in increasing order.
int all_smallest_meeting(const scheduler_view& v, request_handle h, const device_set& avail, double margin) {
  const auto& r = v.request(h);
  const int free = static_cast<int>(avail.count());
  int fastest = 0;
  tick fastest_t = never;
  const tick left = r.has_deadline() ? r.deadline() - v.now() : never;
  const tick target = !r.has_deadline() ? never : margin <= 0 ? r.deadline() : v.now() + static_cast<tick>(static_cast<double>(left) * (1.0 - margin));
  for (int k : v.allowed_degrees(h)) {
    if (k > free) break;
    const tick t = plain_finish(v, h, k, avail);
    if (t <= target) return k;
    if (t < fastest_t) fastest = k, fastest_t = t;
  }
  return fastest;
}
int all_fastest(const scheduler_view& v, request_handle h, const device_set& avail) {
  int best = 0;
  tick best_t = never;
  for (int k : v.allowed_degrees(h)) {
    if (k > static_cast<int>(avail.count())) break;
    const tick t = plain_finish(v, h, k, avail);
    if (t < best_t) best = k, best_t = t;
  }
  return best;
}
int all_cheapest(const scheduler_view& v, request_handle h, const device_set& avail) {
  int cheap = 0, fastest = 0;
  tick cheap_cost = never, fastest_t = never;
  for (int k : v.allowed_degrees(h)) {
    if (k > static_cast<int>(avail.count())) break;
    const tick t = plain_finish(v, h, k, avail);
    if (t < fastest_t) fastest = k, fastest_t = t;
    const tick cost = static_cast<tick>(k) * (t - v.now());
    if (t <= v.request(h).deadline() && cost < cheap_cost) cheap = k, cheap_cost = cost;
  }
  return cheap != 0 ? cheap : fastest;
}

}  // namespace

TEST_CASE("degree_candidates leaves out exactly the degrees a smaller allowed degree dominates", "[policy][scale]") {
  table_cost cost;
  simulated_executor ex;
  edf_best_fit_policy p;
  scheduler s(cluster{32, 8, "table"}, p, ex, cost);
  const auto h = s.submit(make("a", 0, 7, 5, 10));
  const auto& c = s.view().costs(h);
  std::vector<int> tried;
  degree_candidates dc;
  dc.for_each(s.view(), h, [&](int k) { return tried.push_back(k), true; });
  REQUIRE(std::is_sorted(tried.begin(), tried.end()));
  for (int k : c.allowed_degrees) {
    const auto kk = static_cast<std::size_t>(k);
    const bool dominated = std::any_of(c.allowed_degrees.begin(), c.allowed_degrees.end(), [&](int j) {
      const auto jj = static_cast<std::size_t>(j);
      return j < k && c.step[jj] <= c.step[kk] && c.encode[jj] <= c.encode[kk] && c.decode[jj] <= c.decode[kk];
    });
    INFO("degree " << k);
    CHECK(dominated == !std::binary_search(tried.begin(), tried.end(), k));
  }
  CHECK(tried.size() < c.allowed_degrees.size());  // the table has dominated degrees to skip
}

namespace {
/// A fitted model's shape: faster up to 6 devices, slower beyond, encode and decode flat, some
/// degrees not allowed. From 7 on each allowed degree is dominated by the one before it (a chain).
struct smooth_cost {
  [[nodiscard]] double step_seconds(const request_shape& s, int k) const {
    const double base = 0.02 * s.height;
    return k <= 6 ? base / k : base / 6 * (1 + 0.1 * (k - 6));
  }
  [[nodiscard]] double stage_seconds(const request_shape&, stage_kind, int) const { return 0.05; }
  [[nodiscard]] bool allows_degree(const request_shape&, int k) const { return k <= 20 || k % 7 != 0; }
  [[nodiscard]] double migration_seconds(const request_shape&, int, int, bool cross) const { return cross ? 0.03 : 0.01; }
};

// for_each_wider against the definition, from the cost table: every allowed k in (k0, limit] that no
// allowed degree in (k0, k) dominates, h's own group size always; increasing. Part-way through a run,
// so that requests hold state of several sizes. Returns how many times h's own size was offered
// although a degree in (k0, own) dominates it.
template <class Cost, class Policy>
int check_wider_degrees(const Cost& cost, Policy p, int gpus, std::uint64_t seed) {
  simulated_executor ex(seed);
  scheduler s(cluster{gpus, 8, "table"}, p, ex, cost);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int i = 0; i < 30; ++i) {
    s.submit(make(std::to_string(i), 0.05 * i, 1 + static_cast<int>(u(rng) * 9), 2 + static_cast<int>(u(rng) * 8), 0.1 + 3.0 * u(rng)));
  }
  run_until(s, *to_ticks(1.0));
  const scheduler_view& v = s.view();
  degree_candidates dc;
  int own_dominated = 0;
  for (const handle_set* list : {&v.waiting(), &v.running()}) {
    for (request_handle h : *list) {
      const auto& c = v.costs(h);
      const auto& ks = c.allowed_degrees;
      const int own = static_cast<int>(v.request(h).state_group.size());
      const auto dominated_within = [&](int k, int k0) {
        const auto kk = static_cast<std::size_t>(k);
        return std::any_of(ks.begin(), ks.end(), [&](int j) {
          const auto jj = static_cast<std::size_t>(j);
          return j > k0 && j < k && c.step[jj] <= c.step[kk] && c.encode[jj] <= c.encode[kk] && c.decode[jj] <= c.decode[kk];
        });
      };
      std::vector<int> starts{0};
      starts.insert(starts.end(), ks.begin(), ks.end());
      for (int k0 : starts) {
        for (int limit : {k0 + 1, k0 + 3, gpus / 2, gpus}) {
          std::vector<int> expected, got;
          for (int k : ks) {
            if (k <= k0 || k > limit) continue;
            const bool dominated = dominated_within(k, k0);
            if (k == own && dominated) ++own_dominated;
            if (k == own || !dominated) expected.push_back(k);
          }
          dc.for_each_wider(v, h, k0, limit, [&](int k) { got.push_back(k); });
          INFO("seed " << seed << " request " << v.request(h).spec.id << " own " << own << " k0 " << k0 << " limit " << limit);
          CHECK(got == expected);
        }
      }
    }
  }
  return own_dominated;
}
}  // namespace

TEST_CASE("degree_candidates offers for widening exactly the degrees no degree between the current one and them dominates", "[policy][scale]") {
  int own_dominated = 0;
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    // Random tables: chains short or absent. A chain from 7 devices on, where the scan stops; under
    // static:10 requests hold state on 10 devices, a size that 7..9 dominate but that moves for free.
    own_dominated += check_wider_degrees(table_cost{seed}, edf_best_fit_policy{}, 24, seed);
    own_dominated += check_wider_degrees(smooth_cost{}, edf_best_fit_policy{}, 64, seed);
    own_dominated += check_wider_degrees(smooth_cost{}, static_degree_policy{10}, 64, seed);
  }
  CHECK(own_dominated > 0);
}

TEST_CASE("the runtime's state_holding_devices, which contested-device marking walks, are the devices with state holders at every turn", "[policy][scale][runtime]") {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    simulation_faults faults;
    faults.fail_rate = 0.05;
    faults.device_failures.push_back({static_cast<device_id>(seed), *to_ticks(0.4)});  // its holders start over
    simulated_executor ex(seed, faults);
    slo_aware_policy p;
    const int gpus = 16;
    scheduler s(cluster{gpus, 8, "table"}, p, ex, smooth_cost{});
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int i = 0; i < 40; ++i) {
      s.submit(make(std::to_string(i), 0.03 * i, 1 + static_cast<int>(u(rng) * 9), 2 + static_cast<int>(u(rng) * 8), 0.2 + 2.0 * u(rng)));
    }
    std::size_t turns = 0, held = 0;
    while (s.next_wakeup() != never) {
      s.turn_to(s.next_wakeup());
      const scheduler_view& v = s.view();
      for (int d = 0; d < gpus; ++d) {
        const auto dev = static_cast<device_id>(d);
        INFO("seed " << seed << " turn " << turns << " device " << d);
        CHECK(v.state_holding_devices().test(dev) == !v.state_holders(dev).empty());
      }
      held += v.state_holding_devices().count();
      ++turns;
    }
    CHECK(turns > 50);
    CHECK(held > 0);
    CHECK(s.view().state_holding_devices().none());  // every request ended: no state anywhere
  }
}

TEST_CASE("the sizing parts pick the degree a loop over every allowed degree picks", "[policy][scale]") {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    table_cost cost{seed};
    simulated_executor ex(seed);
    edf_best_fit_policy p;
    const int gpus = 24;
    scheduler s(cluster{gpus, 8, "table"}, p, ex, cost);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int i = 0; i < 40; ++i) {
      const double slo = u(rng) < 0.2 ? 0.0 : 0.1 + 3.0 * u(rng);
      s.submit(make(std::to_string(i), 0.05 * i, 1 + static_cast<int>(u(rng) * 9), 2 + static_cast<int>(u(rng) * 8), slo));
    }
    // Part-way through a run, so that requests have progressed and hold state on some devices.
    run_until(s, *to_ticks(1.0));
    const scheduler_view& v = s.view();
    const smallest_meeting_degree tight{}, margin{0.2};
    const fastest_degree fast{};
    const cheapest_degree cheap{};
    for (int trial = 0; trial < 30; ++trial) {
      const device_set avail = random_devices(gpus, 0.6, rng);
      for (const handle_set* list : {&v.waiting(), &v.running()}) {
        for (request_handle h : *list) {
          INFO("seed " << seed << " request " << v.request(h).spec.id);
          for (int k : v.allowed_degrees(h)) {
            CHECK(estimated_finish(v, h, k, avail) == plain_finish(v, h, k, avail));
            for (std::uint32_t n : {1u, 2u, 5u, 1000u}) {  // the next n tasks one by one (1000: past the last)
              const auto& r = v.request(h);
              tick sum = 0;
              for (std::uint32_t i = r.position; i < std::min(r.position + n, r.tasks_total()); ++i) {
                sum += v.costs(h).task_time(r.trajectory->task_at(i).kind, static_cast<std::size_t>(k));
              }
              CHECK(v.tasks_time(h, k, n) == sum);
            }
          }
          CHECK(tight.degree(v, h, avail) == all_smallest_meeting(v, h, avail, 0));
          CHECK(margin.degree(v, h, avail) == all_smallest_meeting(v, h, avail, 0.2));
          CHECK(fast.degree(v, h, avail) == all_fastest(v, h, avail));
          if (v.request(h).has_deadline()) CHECK(cheap.degree(v, h, avail) == all_cheapest(v, h, avail));
        }
      }
    }
  }
}

TEST_CASE("smallest_meeting_degree kept across a whole run picks what a fresh loop picks at every turn", "[policy][scale]") {
  // A running request's times are priced once per task (candidate_times); the answers must follow
  // the clock, its progress, its state moving and the devices offered, turn after turn.
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    table_cost cost{seed};
    simulated_executor ex(seed);
    edf_best_fit_policy p;
    const int gpus = 16;
    scheduler s(cluster{gpus, 8, "table"}, p, ex, cost);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int i = 0; i < 30; ++i) {
      s.submit(make(std::to_string(i), 0.03 * i, 1 + static_cast<int>(u(rng) * 9), 2 + static_cast<int>(u(rng) * 8), 0.2 + 2.0 * u(rng)));
    }
    const smallest_meeting_degree kept{0.2};
    int asked = 0;
    ask_running_at_every_turn(s, gpus, rng, [&](const scheduler_view& v, request_handle h, const device_set& offered) {
      INFO("seed " << seed << " request " << v.request(h).spec.id << " at " << v.now());
      CHECK(kept.degree(v, h, offered) == all_smallest_meeting(v, h, offered, 0.2));
      ++asked;
    });
    CHECK(asked > 100);
  }
}

TEST_CASE("smallest_meeting_degree picks what a fresh loop picks when finishes tie and land on the target", "[policy][scale]") {
  // Times, arrivals and SLOs on a 20 ms grid: several degrees finish at the same time (the first
  // of them is the quickest) and finishes fall exactly on the deadline (which meets it, margin 0).
  int asked = 0, on_target = 0;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    table_cost cost{seed, 0.02};
    simulated_executor ex(seed);
    edf_best_fit_policy p;
    const int gpus = 16;
    scheduler s(cluster{gpus, 8, "table"}, p, ex, cost);
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> grid_steps(5, 60);
    for (int i = 0; i < 30; ++i) {
      s.submit(make(std::to_string(i), 0.02 * (i * 3), 1 + i % 9, 2 + i % 7, 0.02 * grid_steps(rng)));
    }
    const smallest_meeting_degree kept{0};
    ask_running_at_every_turn(s, gpus, rng, [&](const scheduler_view& v, request_handle h, const device_set& offered) {
      INFO("seed " << seed << " request " << v.request(h).spec.id << " at " << v.now());
      const int k = kept.degree(v, h, offered);
      CHECK(k == all_smallest_meeting(v, h, offered, 0));
      if (k > 0 && plain_finish(v, h, k, offered) == v.request(h).deadline()) ++on_target;
      ++asked;
    });
  }
  CHECK(asked > 500);
  CHECK(on_target > 10);
}

TEST_CASE("a running request's degree cannot grow until settled_until, and can just after", "[policy][scale]") {
  table_cost cost{3};
  simulated_executor ex(3);
  edf_best_fit_policy p;
  const int gpus = 16;
  scheduler s(cluster{gpus, 8, "table"}, p, ex, cost);
  for (int i = 0; i < 12; ++i) s.submit(make(std::to_string(i), 0.01 * i, 2 + i % 7, 6, 0.3 + 0.2 * (i % 5)));
  run_until(s, *to_ticks(0.2));
  const scheduler_view& v = s.view();
  REQUIRE_FALSE(v.running().empty());
  const device_set all(static_cast<std::size_t>(gpus), true);
  for (const double m : {0.0, 0.2, 0.5}) {
    const smallest_meeting_degree size{m};
    for (request_handle h : v.running()) {
      const auto& r = v.request(h);
      const int current = static_cast<int>(r.run_group.size());
      const tick until = size.settled_until(v, h);
      // The degree at a later time, by the same rule (a copy of degree() with another clock).
      const auto degree_at = [&](tick t) {
        const tick target = m <= 0 ? r.deadline() : t + static_cast<tick>(static_cast<double>(r.deadline() - t) * (1.0 - m));
        int fastest = 0;
        tick fastest_t = never;
        for (int k : v.allowed_degrees(h)) {
          const tick f = add_sat(t, expected_migration(v, h, k, all) + v.remaining_time(h, k));
          if (f <= target) return k;
          if (f < fastest_t) fastest = k, fastest_t = f;
        }
        return fastest;
      };
      INFO("margin " << m << " request " << r.spec.id << " settled until " << until);
      if (until >= v.now()) {
        CHECK(degree_at(until) <= current);
        CHECK(degree_at(v.now()) <= current);
      }
      // Just after, no degree up to the current one meets the target any more (a wider one may).
      int meets_up_to_current = 0;
      const tick after = std::max(until + 1, v.now());
      const tick target = m <= 0 ? r.deadline() : after + static_cast<tick>(static_cast<double>(r.deadline() - after) * (1.0 - m));
      for (int k : v.allowed_degrees(h)) {
        if (k > current) break;
        if (add_sat(after, expected_migration(v, h, k, all) + v.remaining_time(h, k)) <= target) ++meets_up_to_current;
      }
      if (r.state_group.empty() || r.state_group == r.run_group) CHECK(meets_up_to_current == 0);
    }
  }
}
