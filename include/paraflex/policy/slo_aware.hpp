// paraflex/policy/slo_aware.hpp - deadline-aware continuous scheduling: "edf-best-fit" and "slo-aware".
//
// Both decide at every step boundary (no rounds) and are compositions of the parts in compose.hpp.
//
// edf_best_fit_policy ("edf-best-fit", no parameters) reproduces GF-DiT's headline policy:
//   admit_all, edf_order, smallest_meeting_degree, sticky_placement, spare devices widen.
//   In deadline order each waiting request's next task gets the smallest degree whose estimated
//   finish (migration included) meets its deadline; a doomed request gets the fastest degree that
//   fits; then spare devices go, most urgent first, to a request that gets strictly faster. It
//   never drops or defers, so under overload it spends GPU time on requests that miss anyway.
//
// slo_aware_policy ("slo-aware") replaces only the admission and the order:
//   slo_admission, priority_edf_order, smallest_meeting_degree, sticky_placement.
//   1. Unreachable: a request that cannot meet its deadline even alone at its fastest degree on an
//      empty cluster is dropped ("deadline_unreachable"). It counts as a miss either way; running
//      it late would only take devices from requests that can still make it (and lengthen the mean
//      latency of completed requests), so dropping is never worse for SLO attainment.
//   2. Capacity: at every decision, the requests with a deadline (running and waiting) are
//      checked against the cluster in every deadline window, as on a fluid machine of G devices:
//      for each deadline d, the GPU-time still needed by requests due by d, each at its cheapest
//      degree that meets its deadline from now, must fit in capacity x G x (d - now). When a window
//      overflows, the request to set aside is the one with the lowest priority class, then the
//      largest demand (Moore-Hodgson's rule, which maximises the number of on-time jobs on one
//      machine). Requests set aside are not admitted: with admission=relaxed they run in the
//      background on devices the admitted ones leave idle (and may still make it, or be admitted
//      again when room appears); with admission=strict a request that has not started yet is
//      dropped at once ("over_capacity") so its client can go elsewhere; admission=off skips the
//      check (only unreachable requests are dropped).
//   3. Reserve: a request whose SLO is longer than the mean SLO of the arrivals so far is admitted
//      against capacity - reserve in its own window, so long jobs cannot fill the cluster and a
//      little room stays for short-deadline requests arriving next.
//   4. Order: higher priority class first, then the earliest deadline; requests without a
//      deadline are best effort: they run in the background, and once older than best_effort_age
//      times their latency alone they are admitted with that virtual deadline (never starved).
//   5. Sizing, placement, scale-up: as edf-best-fit (smallest meeting degree, own devices first,
//      devices holding other waiting requests' state avoided, spare devices to admitted requests).
//   Parameters (registry): admission=relaxed|strict|off (relaxed), capacity=0.9, reserve=0.1,
//   chunk=1 (tasks per assignment), best_effort_age=10, widen=1.
//
// Cost per decision: O(R log R) over the R unfinished requests (one sort by deadline, one heap),
// the cheapest meeting degree by binary search over a per-shape cost/time frontier.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "paraflex/policy/compose.hpp"
#include "paraflex/policy/registry.hpp"

namespace paraflex {

enum class admission_mode : unsigned char { off, relaxed, strict };

/// The admission part of slo-aware (see the header comment, items 1-4).
class slo_admission {
 public:
  admission_mode mode = admission_mode::relaxed;
  double capacity = 0.9;         ///< share of the devices admitted work may plan on
  double reserve = 0.1;          ///< kept from long-SLO requests for short-SLO ones
  double best_effort_age = 10;   ///< best effort admitted after this many times its latency alone
  bool background = true;

  void on_arrival(const scheduler_view& v, request_handle h) {
    const auto& r = v.request(h);
    if (!r.has_deadline()) return;
    slo_sum_ += static_cast<double>(r.spec.slo);
    ++slo_count_;
  }

  void begin(const scheduler_view& v) {
    jobs_.clear();
    const tick now = v.now();
    auto visit = [&](request_handle h, bool waiting) {
      if (verdict_.size() <= h) verdict_.resize(static_cast<std::size_t>(h) + 1, verdict::admit);
      const auto& r = v.request(h);
      if (!r.has_deadline()) {
        const tick virtual_deadline = priority_edf_order::effective_deadline(v, h, best_effort_age);
        verdict_[h] = virtual_deadline <= now ? verdict::admit : verdict::background;
        return;
      }
      verdict_[h] = verdict::admit;
      if (waiting && deadline_unreachable(v, h)) {
        verdict_[h] = verdict::unreachable;
        return;
      }
      if (mode == admission_mode::off) return;
      const tick w = demand(v, h);
      if (w < 0) return;  // running and already late: dropped when its task ends
      const bool long_slo = slo_count_ > 0 && static_cast<double>(r.spec.slo) > slo_sum_ / static_cast<double>(slo_count_);
      jobs_.push_back(job{r.deadline(), h, w, r.spec.priority, long_slo});
    };
    for (request_handle h : v.running()) visit(h, false);
    for (request_handle h : v.waiting()) visit(h, true);
    if (mode == admission_mode::off) return;

    // Moore-Hodgson over deadline windows: keep the windows within capacity, setting aside the
    // lowest priority, then the largest demand.
    std::sort(jobs_.begin(), jobs_.end(), [](const job& a, const job& b) { return a.deadline != b.deadline ? a.deadline < b.deadline : a.h < b.h; });
    heap_.clear();
    const auto evict_first = [](const job& a, const job& b) {  // heap top = first to set aside
      if (a.priority != b.priority) return a.priority > b.priority;
      if (a.w != b.w) return a.w < b.w;
      return a.h < b.h;
    };
    const double devices = static_cast<double>(v.usable_device_count());
    double demand_sum = 0;
    for (const job& j : jobs_) {
      heap_.push_back(j);
      std::push_heap(heap_.begin(), heap_.end(), evict_first);
      demand_sum += static_cast<double>(j.w);
      const double share = j.long_slo ? capacity - reserve : capacity;
      const double limit = share * devices * static_cast<double>(j.deadline - now);
      while (demand_sum > limit && !heap_.empty()) {
        std::pop_heap(heap_.begin(), heap_.end(), evict_first);
        const job& out = heap_.back();
        demand_sum -= static_cast<double>(out.w);
        const bool started = v.request(out.h).first_start != never;
        verdict_[out.h] = mode == admission_mode::strict && !started ? verdict::reject : (background ? verdict::background : verdict::deferred);
        heap_.pop_back();
      }
    }
  }

  [[nodiscard]] admission judge(const scheduler_view&, request_handle h) const {
    switch (h < verdict_.size() ? verdict_[h] : verdict::admit) {
      case verdict::background: return admission::background();
      case verdict::deferred: return admission::defer();
      case verdict::unreachable: return admission::drop("deadline_unreachable");
      case verdict::reject: return admission::drop("over_capacity");
      case verdict::admit: break;
    }
    return admission::admit();
  }

  /// GPU-time (device x microseconds) h still needs at its cheapest degree that meets its deadline
  /// if it runs from now on; -1 when no degree meets it.
  [[nodiscard]] tick demand(const scheduler_view& v, request_handle h) {
    const auto& f = frontier(v, h);
    const tick slack = v.request(h).deadline() - v.now();
    const int usable = v.usable_device_count();
    // Along the frontier the cost grows and the time shrinks: the first entry that meets the
    // deadline is the cheapest one.
    std::size_t lo = 0, hi = f.size();
    while (lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      if (v.remaining_time(h, f[mid]) <= slack) hi = mid;
      else lo = mid + 1;
    }
    for (std::size_t i = lo; i < f.size(); ++i) {
      const int k = f[i];
      const tick t = v.remaining_time(h, k);
      if (k <= usable && t <= slack) return static_cast<tick>(k) * t;
    }
    return -1;
  }

 private:
  enum class verdict : unsigned char { admit, background, deferred, unreachable, reject };
  struct job {
    tick deadline;
    request_handle h;
    tick w;
    int priority;
    bool long_slo;
  };

  // Degrees of a shape on the cost/time Pareto frontier: by growing GPU-seconds per step, each one
  // strictly faster than every cheaper one. Computed once per shape.
  const std::vector<int>& frontier(const scheduler_view& v, request_handle h) {
    const std::uint32_t s = v.request(h).shape;
    if (frontiers_.size() <= s) frontiers_.resize(static_cast<std::size_t>(s) + 1);
    auto& f = frontiers_[s];
    if (!f.empty()) return f;
    const auto& c = v.costs(h);
    std::vector<std::pair<tick, int>> by_cost;
    for (int k : c.allowed_degrees) by_cost.emplace_back(static_cast<tick>(k) * c.step_time(k), k);
    std::sort(by_cost.begin(), by_cost.end());
    tick best = never;
    for (const auto& [cost, k] : by_cost) {
      if (c.step_time(k) < best) f.push_back(k), best = c.step_time(k);
    }
    return f;
  }

  double slo_sum_ = 0;
  std::uint64_t slo_count_ = 0;
  std::vector<verdict> verdict_;  // by handle, refreshed for every unfinished request in begin()
  std::vector<job> jobs_, heap_;
  std::vector<std::vector<int>> frontiers_;
};

// ============================================================================================

/// GF-DiT's EDF-best-fit, parameter-free.
class edf_best_fit_policy : public composed_policy<admit_all, edf_order, smallest_meeting_degree, sticky_placement> {
 public:
  edf_best_fit_policy() : composed_policy({}, {}, {}, {}, compose_options{"edf-best-fit", 1, true}) {}
};

struct slo_aware_options {
  admission_mode admission = admission_mode::relaxed;
  double capacity = 0.9;
  double reserve = 0.1;
  std::uint32_t chunk = 1;
  double best_effort_age = 10;
  bool widen = true;
  bool background = true;
};

/// EDF-best-fit plus admission control, priority classes and best effort (see the header comment).
class slo_aware_policy : public composed_policy<slo_admission, priority_edf_order, smallest_meeting_degree, sticky_placement> {
 public:
  explicit slo_aware_policy(slo_aware_options o = {})
      : composed_policy(make_admission(o), priority_edf_order{o.best_effort_age}, {}, {},
                        compose_options{"slo-aware", o.chunk, o.widen}) {}

 private:
  static slo_admission make_admission(const slo_aware_options& o) {
    slo_admission a;
    a.mode = o.admission;
    a.capacity = o.capacity;
    a.reserve = o.reserve;
    a.best_effort_age = o.best_effort_age;
    a.background = o.background;
    return a;
  }
};

static_assert(Policy<edf_best_fit_policy> && NamedPolicy<edf_best_fit_policy> && !ArrivalAwarePolicy<edf_best_fit_policy>);
static_assert(Policy<slo_aware_policy> && NamedPolicy<slo_aware_policy> && ArrivalAwarePolicy<slo_aware_policy>);

/// Registers "slo-aware" (parameters above) and "edf-best-fit" (none).
inline void register_slo_aware(policy_registry& r) {
  r.add("slo-aware", "", "EDF best fit + admission against deadline-window capacity, priority classes, best effort",
        [](policy_params& p) -> any_policy {
          slo_aware_options o;
          const auto mode = p.get_choice("admission", "relaxed", {"relaxed", "strict", "off"});
          o.admission = mode == "strict" ? admission_mode::strict : mode == "off" ? admission_mode::off : admission_mode::relaxed;
          o.capacity = p.get_double("capacity", o.capacity, 0.05, 2.0);
          o.reserve = p.get_double("reserve", o.reserve, 0.0, 0.95);
          if (o.reserve >= o.capacity) p.fail("reserve", "must be smaller than capacity");
          o.chunk = static_cast<std::uint32_t>(p.get_int("chunk", o.chunk, 1, 1000000));
          o.best_effort_age = p.get_double("best_effort_age", o.best_effort_age, 0.0, 1e6);
          o.widen = p.get_int("widen", 1, 0, 1) != 0;
          o.background = p.get_int("background", 1, 0, 1) != 0;
          return slo_aware_policy(o);
        });
  r.add("edf-best-fit", "", "GF-DiT: EDF, smallest degree meeting the deadline, spare GPUs widen; never drops",
        [](policy_params&) -> any_policy { return edf_best_fit_policy{}; });
}

}  // namespace paraflex
