// paraflex/policy/static_degree.hpp - the fixed-parallelism baselines: static:K and rssp.
//
// Both reproduce what xDiT-style engines do today: a request gets one group for its whole life and
// holds it until it ends; requests are served strictly in arrival order (nothing overtakes).
//   static_degree_policy  floor(G/K) fixed groups of K consecutive devices (formats §5 "static:K").
//   rssp_policy           per request, the degree chosen from its shape: among allowed degrees whose
//                         latency alone meets the SLO, the fewest GPU-seconds; otherwise the fastest.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "paraflex/policy/concepts.hpp"
#include "paraflex/policy/placement.hpp"

namespace paraflex {

class static_degree_policy {
 public:
  explicit static_degree_policy(int degree) : degree_(degree) {
    if (degree < 1) throw std::invalid_argument("static: degree must be >= 1");
  }
  [[nodiscard]] std::string name() const { return fmt::format("static:{}", degree_); }
  [[nodiscard]] int degree() const noexcept { return degree_; }

  void decide(const scheduler_view& v, decision_buffer& out) {
    const int groups = v.device_count() / degree_;
    if (!v.lost_devices().none() && intact_groups(v, groups) == 0) {
      for (request_handle h : v.waiting()) out.drop(h, "device_lost_no_capacity");
      return;
    }
    // Which fixed groups are free at this call; each is handed out at most once. O(G + waiting).
    open_.assign(static_cast<std::size_t>(groups), 0);
    for (int j = 0; j < groups; ++j) open_[static_cast<std::size_t>(j)] = v.free_devices().contains_all(group(j));
    int next = 0;  // lowest group index that may still be open
    for (request_handle h : v.waiting()) {
      // No check of allows_degree here: formats §5 says a static:K request is never dropped, so a
      // model that cannot run at K is refused before the run (check_fixed_degree, exit 2 in
      // paraflex-sim); a host that skips that check gets the runtime's invalid-decision error.
      // After a failed task the request retries on its own group when that is open (no migration).
      const auto& sg = v.request(h).state_group;
      int j = -1;
      if (sg.size() == static_cast<std::size_t>(degree_) && sg[0] % static_cast<device_id>(degree_) == 0) {
        const int own = static_cast<int>(sg[0]) / degree_;
        if (own < groups && group(own) == sg && open_[static_cast<std::size_t>(own)]) j = own;
      }
      while (j < 0 && next < groups) {
        if (open_[static_cast<std::size_t>(next)]) j = next;
        ++next;
      }
      if (j < 0) break;  // strict FCFS: nobody overtakes the head of the queue
      open_[static_cast<std::size_t>(j)] = 0;
      out.assign_to_completion(h, group(j));
    }
  }

 private:
  int intact_groups(const scheduler_view& v, int groups) const {
    int intact = 0;
    for (int j = 0; j < groups; ++j) {
      bool ok = true;
      for (int d = j * degree_; d < (j + 1) * degree_; ++d) ok = ok && !v.lost_devices().test(static_cast<device_id>(d));
      intact += ok;
    }
    return intact;
  }
  [[nodiscard]] device_group group(int j) const {
    return device_group::contiguous(static_cast<device_id>(j * degree_), static_cast<std::size_t>(degree_));
  }
  int degree_;
  std::vector<char> open_;  // per fixed group: free and not yet handed out in this call
};

class rssp_policy {
 public:
  [[nodiscard]] std::string name() const { return "rssp"; }

  /// The degree rssp gives request h: the cheapest (GPU-seconds) allowed degree whose latency alone
  /// meets the SLO; if none does or there is no SLO, the fastest. Only degrees the devices left can
  /// run count: after a device loss a degree above them would never be placed, and the head of the
  /// queue would block every request behind it (the runtime drops a request no degree fits).
  [[nodiscard]] static int degree_for(const scheduler_view& v, request_handle h) {
    const auto& r = v.request(h);
    const int usable = v.usable_device_count();
    const auto& c = v.costs(h);
    int best = 0, fastest = 0;
    double best_cost = 0;
    for (int k : v.allowed_degrees(h)) {
      if (k > usable) break;  // increasing
      if (fastest == 0 || c.step_time(k) < c.step_time(fastest)) fastest = k;  // ties: fewer devices, as fastest_degree
      const tick t = v.remaining_time(h, k);
      if (!r.has_deadline() || t > r.spec.slo) continue;
      const double cost = static_cast<double>(t) * k;
      if (best == 0 || cost < best_cost) best = k, best_cost = cost;
    }
    if (best != 0) return best;
    return usable == v.device_count() || fastest == 0 ? c.fastest_degree : fastest;
  }

  void decide(const scheduler_view& v, decision_buffer& out) {
    device_set available = v.free_devices();
    for (request_handle h : v.waiting()) {
      const int k = degree_for(v, h);
      auto g = place(v, h, k, available);
      if (!g) break;  // arrival order, no overtaking
      available.reset(*g);
      out.assign_to_completion(h, std::move(*g));
    }
  }
};

static_assert(Policy<static_degree_policy> && NamedPolicy<static_degree_policy>);
static_assert(Policy<rssp_policy> && NamedPolicy<rssp_policy>);

}  // namespace paraflex
