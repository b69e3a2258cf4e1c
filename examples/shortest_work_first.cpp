// The policy of docs/writing-a-policy.md, written from scratch against the Policy concept, run on
// the simulator next to rssp. Kept in sync with the page by being built and run as a test.
#include <algorithm>
#include <cstdio>
#include <vector>

#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/paraflex.hpp>
#include <paraflex/sim/simulate.hpp>

#ifndef PARAFLEX_DATA_DIR
#define PARAFLEX_DATA_DIR "bench/data"
#endif

// Each waiting request runs its next step on the degree with the fewest GPU-seconds per step,
// shortest remaining work first. Deadlines are ignored; nothing is dropped.
class shortest_work_first {
 public:
  std::string name() const { return "shortest-work-first"; }

  void decide(const paraflex::scheduler_view& v, paraflex::decision_buffer& out) {
    using namespace paraflex;
    order_.assign(v.waiting().begin(), v.waiting().end());
    std::sort(order_.begin(), order_.end(), [&](request_handle a, request_handle b) {
      return v.remaining_time(a, 1) < v.remaining_time(b, 1);
    });
    device_set available = v.free_devices();
    for (request_handle h : order_) {
      const int k = cheapest_degree(v, h);
      auto group = place(v, h, k, available);
      if (!group) continue;
      available.reset(*group);
      out.assign(h, std::move(*group), 1);
    }
  }

 private:
  static int cheapest_degree(const paraflex::scheduler_view& v, paraflex::request_handle h) {
    int best = 1;
    for (int k : v.allowed_degrees(h)) {
      if (k * v.step_time(h, k) < best * v.step_time(h, best)) best = k;
    }
    return best;
  }
  std::vector<paraflex::request_handle> order_;
};
static_assert(paraflex::Policy<shortest_work_first> && paraflex::NamedPolicy<shortest_work_first>);

int main() {
  using namespace paraflex;
  try {
    const auto profile = load_profile_csv(PARAFLEX_DATA_DIR "/profiles/step_latency.csv").value_or_throw();
    const auto cost = profile_cost_model::from_profile(profile, "l20-inferred").value_or_throw();
    workload w{"three sizes, arriving together", {}};
    for (int i = 0; i < 30; ++i) {
      const int size = 256 << (i % 4);
      w.requests.push_back({std::to_string(i), i * 200'000, {"flux-dev", size, size, 1}, 28, never, 0, std::to_string(size) + "px"});
    }
    const cluster c{8, 8, "l20-inferred"};
    shortest_work_first mine;
    rssp_policy baseline;
    for (const auto& m : {simulate(w, c, cost, mine, mine.name()), simulate(w, c, cost, baseline, "rssp")}) {
      std::printf("%-20s completed %zu/%zu  mean latency %6.2f s  p95 %6.2f s\n", m.policy.c_str(), m.completed, m.requests,
                  *m.latency_s.mean, *m.latency_s.p95);
    }
    return 0;
  } catch (const input_exception& e) {
    std::fprintf(stderr, "shortest_work_first: error: %s\n", e.what());
    return 2;
  }
}
