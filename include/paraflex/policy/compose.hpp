// paraflex/policy/compose.hpp - a policy built from four replaceable parts.
//
// Most continuous policies differ in one of four choices, so paraflex lets a user swap one without
// touching the others:
//
//   Admission  which waiting requests take part now: admit, run in the background only, defer, or
//              drop (with a reason)
//   Order      a priority key over waiting requests (smaller key = served first): FCFS, EDF, ...
//   Sizing     which degree a request gets, given the devices still available in this call
//   Placement  which devices form that group (default: the request's own devices, then free ones)
//
// composed_policy<Admission, Order, Sizing, Placement> models Policy. At every rescheduling point
// (arrival, task end, wake-up) it does, in one pass:
//
//   available <- free devices
//   for h in (Order::key(v, h), h) order:          (kept between calls, or sorted per call; see Cost)
//     Admission::judge(v, h) -> drop / admit (tier 1) / background (tier 2, served after tier 1) / defer
//     tier 1: k <- Sizing::degree(v, h, available); 0 = wait
//             g <- Placement::place(v, h, k, available, preferred); assign the next `chunk` tasks of h to g
//     stop as soon as no device is left to give
//   tier 2 the same, on what tier 1 left
//   spare devices (options.widen): tier-1 requests, in order, move to a wider group when that is
//     strictly faster, migration included (GF-DiT's work-conserving scale-up)
//   batching (options.max_batch > 1; TetriServe's selective batching, policy/batching.hpp): each
//     planned request, in order, lets waiting requests of its shape whose state is on its group
//     share its next step (batch_companions) - or first runs the free encodes of requests that have
//     not started there, to join at the next call (batch_recruits) - as long as no member misses
//     (options.batch_margin) and each saves enough (options.batch_saving).
//
// With options.hold, running requests take part in the order too (Admission::judge is then also
// asked about them while free devices are left to hold; anything but admit means "no hold"): when
// a running tier-1 request is reached and Sizing wants more devices for it than it has, that many
// free devices are held idle for it until its task ends. Without this, a request mid-step never
// sees the devices freed meanwhile: they go to less urgent requests at every boundary, and an
// urgent one can stay stuck at degree 1.
// Held devices are backfilled: a waiting request left without devices may use some of them when
// its next assignment (migration included) ends before the holder's task does - on clusters of up
// to compose_options::backfill_max_devices devices (all, unless set: slo-aware sets 64, because on
// hundreds of devices backfill costs attainment; docs/performance.md, "Backfill over hundreds of GPUs").
//
// "preferred" is `available` minus devices that hold the state of another waiting request not yet
// served in this call, so that a newcomer does not evict someone's latent when idle devices exist.
//
// Parts are plain classes checked by C++20 concepts (no virtual base classes). Every part may also
// have `begin(view)` (called once per decision, before any other call of that part) and the runtime
// hooks `on_arrival`, `on_request_end`, `on_task_end`; composed_policy forwards each hook to the parts
// that have it and models the matching refinement of Policy only when one part does.
//
// Cost of one decision. With a RequestKeyedOrder (every built-in order) the requests stay in key
// order between calls (request_index, kept by the runtime hooks) and a decision walks only the head
// of the order: it stops as soon as no device is left to give (or to backfill), so it costs
// O(visited x log) - the requests it hands devices to, the deferred ones it passes on the way, and
// the running ones ahead of them that may still want devices - not O(W). A running request leaves
// the kept order when the walk meets it and nothing can be done for it until its task ends (no
// hold), or for a while (hold, and Sizing::settled_until says so); on_task_end or its timer files it
// again. Otherwise every call keys and sorts the W waiting requests: O(W log W). Per group handed
// out, O(candidate degrees) for sizing (degree_candidates: dominated degrees are skipped, with the
// same answers; a running request held for and a request tried on held devices are priced once per
// task, candidate_times, then only compared) and O(G/64 + nodes) for placement. Contested devices
// are found among the free devices that hold some state (O(G/64) and their holders), widening
// tries the degrees no smaller one dominates up to the shape's chain (for_each_wider), and backfill
// looks at no more than 64 unserved requests. With max_batch > 1, each planned request adds
// O(H log H) for the H state holders of its group's first device and a look at no more than
// 16 x max_batch + 64 waiting requests for recruits (batching.hpp).
//
// Requests the walk does not reach are not judged in that call: a drop the Admission part would
// decide for one of them happens when the walk reaches it, which is before it could take a device,
// so schedules do not change.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "paraflex/policy/batching.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/policy/degree_candidates.hpp"
#include "paraflex/policy/placement.hpp"
#include "paraflex/policy/request_index.hpp"

namespace paraflex {

// ============================================================================================
// Shared estimates
// ============================================================================================

/// expected_migration and estimated_finish (below) of one request at several degrees k, with what
/// does not depend on k (its costs, progress and state, whether `available` holds that state) read
/// once: the Sizing parts try a request at every candidate degree, and on a large cluster that loop
/// is most of a decision. Valid for this call; `available` must not change while it is used.
class finish_estimate {
 public:
  finish_estimate(const scheduler_view& v, request_handle h, const device_set& available)
      : now_(v.now()), remaining_(v.remaining_time_of(h)), gpus_per_node_(v.topology().gpus_per_node) {
    const auto& sg = v.request(h).state_group;
    const auto& c = v.costs(h);
    intra_ = c.migrate_intra_node;
    inter_ = c.migrate_inter_node;
    stateless_ = sg.empty();
    stays_at_ = !stateless_ && available.contains_all(sg) ? static_cast<int>(sg.size()) : 0;
  }
  /// Migration time of running on k devices taken from `available`: 0 when the state can stay where
  /// it is (same size, its devices available) or there is no state yet.
  [[nodiscard]] tick migration(int k) const noexcept {
    if (stateless_ || k == stays_at_) return 0;
    return k <= gpus_per_node_ ? intra_ : inter_;
  }
  /// Expected finish if everything left ran on k devices from now on, uninterrupted.
  [[nodiscard]] tick operator()(int k) const { return add_sat(now_, migration(k) + remaining_(k)); }
  /// remaining_time(h, k).
  [[nodiscard]] tick remaining(int k) const { return remaining_(k); }

 private:
  tick now_;
  scheduler_view::remaining_time_fn remaining_;
  int gpus_per_node_;
  tick intra_ = 0, inter_ = 0;
  bool stateless_ = true;
  int stays_at_ = 0;  // the state's size when `available` holds all of it, else 0 (no degree)
};

/// Migration time that running h on k devices taken from `available` would cost: 0 when its state
/// can stay where it is (same size, its devices available) or it has no state yet.
[[nodiscard]] inline tick expected_migration(const scheduler_view& v, request_handle h, int k, const device_set& available) {
  return finish_estimate(v, h, available).migration(k);
}

/// Expected finish of h if it ran everything it has left on k devices from now on, uninterrupted.
[[nodiscard]] inline tick estimated_finish(const scheduler_view& v, request_handle h, int k, const device_set& available) {
  return finish_estimate(v, h, available)(k);
}

/// The degrees worth trying for h (degree_candidates), each with what it takes from now on: the
/// migration finish_estimate expects plus everything left (of(), estimated_finish - now), or plus
/// its next n tasks only (next(), for an assignment of n tasks). None of that depends on the clock,
/// only on h's shape, progress, the size of its state and whether `available` holds that state -
/// all fixed while h waits or a task of it is in flight. composed_policy asks about the same
/// requests at decision after decision (a running one it holds devices for; the waiting ones it
/// tries to backfill), so each is priced once instead of once per call. Slots are direct-mapped by
/// handle (a collision only prices again) and each is checked against everything its times are made
/// of, so a stale one is never read. The times live in one block, so a fresh cache allocates a
/// few times in all, not once per request.
///
///   for (const auto& [k, takes] : times.of(v, h, avail, candidates)) {   // increasing k
///     if (k > free) break;
///     if (add_sat(v.now(), takes) <= target) return k;                  // = estimated_finish
///   }
class candidate_times {
 public:
  struct degree_time {
    int k;
    tick takes;  ///< expected migration + the time of what is priced, at k
  };

  /// Everything h has left: takes = estimated_finish(v, h, k, available) - now.
  [[nodiscard]] std::span<const degree_time> of(const scheduler_view& v, request_handle h, const device_set& available,
                                                const degree_candidates& candidates) const {
    return priced(v, h, available, candidates, 0);
  }
  /// h's next n >= 1 tasks: takes = expected_migration + tasks_time(h, k, n).
  [[nodiscard]] std::span<const degree_time> next(const scheduler_view& v, request_handle h, const device_set& available,
                                                  const degree_candidates& candidates, std::uint32_t n) const {
    return priced(v, h, available, candidates, std::max(n, 1u));
  }

 private:
  struct key {
    const shape_costs* costs;
    std::size_t degrees;  // devices lost change the allowed degrees (as in degree_candidates)
    const trajectory_template* trajectory;
    std::uint32_t position;
    std::uint32_t tasks;  // 0: everything left
    int state_size;
    bool state_available;
    int gpus_per_node;
    friend bool operator==(const key&, const key&) = default;
  };
  struct slot {
    bool filled = false;
    key of{};
    std::uint32_t size = 0;  // degrees in its stretch of the arena
  };
  static constexpr std::size_t slot_count = 1024;  // a power of two: the slot is h's low bits
  static constexpr std::size_t first_stride = 16;  // enough for most shapes' candidate degrees

  std::span<const degree_time> priced(const scheduler_view& v, request_handle h, const device_set& available,
                                      const degree_candidates& candidates, std::uint32_t tasks) const {
    if (slots_.empty()) slots_.resize(slot_count), scratch_.reserve(first_stride);
    const std::size_t at = h & (slot_count - 1);
    slot& s = slots_[at];
    const auto& r = v.request(h);
    const auto& c = v.costs(h);
    const auto& sg = r.state_group;
    const key now_key{&c,
                      c.allowed_degrees.size(),
                      r.trajectory.get(),
                      r.position,
                      tasks,
                      static_cast<int>(sg.size()),
                      !sg.empty() && available.contains_all(sg),
                      v.topology().gpus_per_node};
    if (s.filled && s.of == now_key) return {arena_.data() + at * stride_, s.size};
    scratch_.clear();
    const finish_estimate finish(v, h, available);
    const auto next_tasks = v.tasks_time_of(h, std::max(tasks, 1u));  // O(1); read only when tasks > 0
    candidates.for_each(v, h, [&](int k) {
      return scratch_.push_back({k, finish.migration(k) + (tasks == 0 ? finish.remaining(k) : next_tasks(k))}), true;
    });
    if (scratch_.size() > stride_) {  // every slot gets a longer stretch: a fresh start (rare: a few times a run)
      stride_ = std::max({scratch_.size(), 2 * stride_, first_stride});
      arena_.assign(slot_count * stride_, degree_time{0, 0});
      for (slot& o : slots_) o.filled = false;
    }
    std::copy(scratch_.begin(), scratch_.end(), arena_.begin() + static_cast<std::ptrdiff_t>(at * stride_));
    s.of = now_key;
    s.size = static_cast<std::uint32_t>(scratch_.size());
    s.filled = true;
    return {arena_.data() + at * stride_, s.size};
  }

  // One block for every slot's times (slot i owns [i x stride_, i x stride_ + size)): a fresh policy
  // allocates a few blocks here, not one per request asked about.
  mutable std::vector<slot> slots_;
  mutable std::vector<degree_time> arena_;
  mutable std::size_t stride_ = 0;
  mutable std::vector<degree_time> scratch_;
};

/// Time h needs for everything it has left at its fastest degree (by step time) that the usable
/// devices can hold; never when none fits. O(1) unless devices were lost.
[[nodiscard]] inline tick fastest_remaining_time(const scheduler_view& v, request_handle h) {
  const int usable = v.usable_device_count();
  const int fast = v.costs(h).fastest_degree;
  if (fast <= usable) return v.remaining_time(h, fast);
  tick best = never;
  for (int k : v.allowed_degrees(h)) {
    if (k > usable) break;
    best = std::min(best, v.remaining_time(h, k));
  }
  return best;
}

/// True when h cannot meet its deadline even alone at its fastest degree on an empty cluster.
[[nodiscard]] inline bool deadline_unreachable(const scheduler_view& v, request_handle h) {
  const auto& r = v.request(h);
  if (!r.has_deadline()) return false;
  const tick best = fastest_remaining_time(v, h);
  return best == never || add_sat(v.now(), best) > r.deadline();
}

// ============================================================================================
// Admission
// ============================================================================================

enum class admission_verdict : unsigned char {
  admit,       ///< scheduled now, in key order (tier 1)
  background,  ///< scheduled only on devices tier 1 left over (tier 2); never widened
  defer,       ///< not scheduled in this call; asked again at the next one
  drop,        ///< ended now with `reason`
};

/// What an Admission part says about one request.
struct admission {
  admission_verdict verdict = admission_verdict::admit;
  std::string_view reason;  ///< for drop: a short stable identifier with static storage

  [[nodiscard]] static constexpr admission admit() noexcept { return {admission_verdict::admit, {}}; }
  [[nodiscard]] static constexpr admission background() noexcept { return {admission_verdict::background, {}}; }
  [[nodiscard]] static constexpr admission defer() noexcept { return {admission_verdict::defer, {}}; }
  [[nodiscard]] static constexpr admission drop(std::string_view why) noexcept { return {admission_verdict::drop, why}; }
};

/// Decides, for each waiting request in key order, whether it takes part in this decision (and,
/// with compose_options::hold, for each running one whether devices may be held for it).
///
/// A decision walks only the head of the order (see Cost), so requests further down are not judged
/// in every call. A part that must drop requests wherever they are in the order (a strict admission
/// that tells clients at once) also provides `pending_drops()`: a range of handles that composed_policy
/// judges (and drops, when judge says drop) at every call before the walk.
///
///   struct admit_small {                                                   // valid: models Admission
///     admission judge(const scheduler_view& v, request_handle h) {
///       return v.request(h).spec.shape.height <= 1024 ? admission::admit() : admission::defer();
///     }
///   };
///   struct says_yes { bool judge(const scheduler_view&, request_handle); };  // invalid: returns bool
template <class A>
concept Admission = requires(A& a, const scheduler_view& v, request_handle h) {
  { a.judge(v, h) } -> std::same_as<admission>;
};

/// Admits every request; never drops (GF-DiT, static parallelism).
struct admit_all {
  [[nodiscard]] admission judge(const scheduler_view&, request_handle) const noexcept { return admission::admit(); }
};

/// Drops a request with "deadline_unreachable" once it cannot meet its deadline even alone at its
/// fastest degree; admits every other one.
struct drop_unreachable {
  [[nodiscard]] admission judge(const scheduler_view& v, request_handle h) const {
    return deadline_unreachable(v, h) ? admission::drop("deadline_unreachable") : admission::admit();
  }
};

// ============================================================================================
// Order
// ============================================================================================

/// A priority key per waiting request; smaller keys are served first, ties go to the earlier
/// arrival (smaller handle). The key is computed once per request per decision.
///
///   struct shortest_first {                                                // valid: models Order
///     tick key(const scheduler_view& v, request_handle h) const { return v.remaining_time(h, 1); }
///   };
///   struct by_name { std::string key(request_handle h) const; };          // invalid: no view argument
///   struct unordered_key { std::complex<double> key(const scheduler_view&, request_handle); };
///                                                                          // invalid: not totally ordered
template <class O>
concept Order = requires(O& o, const scheduler_view& v, request_handle h) {
  { o.key(v, h) } -> std::totally_ordered;
  requires std::movable<std::remove_cvref_t<decltype(o.key(v, h))>>;
};

/// An Order whose key for h depends only on h itself - its spec, its progress and its costs - never
/// on the time or on other requests. composed_policy then keeps the requests in key order between
/// decisions (request_index; re-keying a request when it finishes a task) instead of sorting them all
/// at every call, and walks only the head of the order: a decision costs what it hands out, not the
/// length of the queue. An order opts in with a constant:
///
///   struct by_deadline {                                                   // valid: kept between calls
///     static constexpr bool key_depends_only_on_request = true;
///     tick key(const scheduler_view& v, request_handle h) const { return v.request(h).deadline(); }
///   };
///   struct by_age {                                                        // must not opt in: the key
///     tick key(const scheduler_view& v, request_handle h) const {           // changes with now(), so it
///       return v.now() - v.request(h).spec.arrival; }                       // is sorted at every call
///   };
///
/// (A key that shifts with now() for every request alike, like slack, can drop the now() term.)
template <class O>
concept RequestKeyedOrder = Order<O> && requires {
  requires static_cast<bool>(O::key_depends_only_on_request);
};

/// First come, first served.
struct fcfs_order {
  static constexpr bool key_depends_only_on_request = true;
  [[nodiscard]] tick key(const scheduler_view& v, request_handle h) const noexcept { return v.request(h).spec.arrival; }
};

/// Earliest deadline first; requests without a deadline after all others, in arrival order.
struct edf_order {
  static constexpr bool key_depends_only_on_request = true;
  [[nodiscard]] tick key(const scheduler_view& v, request_handle h) const noexcept { return v.request(h).deadline(); }
};

/// Least slack first: slack = deadline - now - time left alone at the fastest degree. Favours big
/// requests whose deadline is near in terms of their own work, where EDF only sees the clock. The key
/// is the latest start that still meets the deadline, deadline - time left: slack plus now(), the same
/// order, and a key that changes only when the request progresses (so it is kept between calls).
struct least_slack_order {
  static constexpr bool key_depends_only_on_request = true;
  [[nodiscard]] tick key(const scheduler_view& v, request_handle h) const {
    const auto& r = v.request(h);
    if (!r.has_deadline()) return never;
    return r.deadline() - v.remaining_time(h, v.costs(h).fastest_degree);
  }
};

/// Higher priority class (request_spec::priority) first, then the earliest deadline. A request
/// without a deadline gets the virtual deadline arrival + best_effort_age x its latency alone at
/// the fastest degree (never when best_effort_age <= 0): best effort comes after deadline traffic
/// of its class but cannot be overtaken forever. With priority_first = false the class is left out
/// of the key: the earliest (virtual) deadline first, whatever the class (slo-aware's order=edf,
/// where the classes act through admission only).
struct priority_edf_order {
  static constexpr bool key_depends_only_on_request = true;
  double best_effort_age = 0;
  bool priority_first = true;

  struct key_type {
    std::int64_t neg_priority = 0;  ///< wider than int: -INT_MIN must not overflow
    tick deadline = never;
    friend auto operator<=>(const key_type&, const key_type&) = default;
  };
  [[nodiscard]] key_type key(const scheduler_view& v, request_handle h) const noexcept {
    return {priority_first ? -std::int64_t{v.request(h).spec.priority} : 0, effective_deadline(v, h, best_effort_age)};
  }
  /// The deadline, or the virtual one of a best-effort request (see above).
  [[nodiscard]] static tick effective_deadline(const scheduler_view& v, request_handle h, double age) noexcept {
    const auto& r = v.request(h);
    if (r.has_deadline()) return r.deadline();
    if (age <= 0) return never;
    const auto& c = v.costs(h);
    const double alone = static_cast<double>(static_cast<tick>(r.spec.steps) * c.step_time(c.fastest_degree));
    return add_sat(r.spec.arrival, static_cast<tick>(age * alone));
  }
};

// ============================================================================================
// Sizing
// ============================================================================================

/// The degree for request h given the devices still available in this call: an allowed degree
/// no larger than available.count(), or 0 to leave h waiting.
///
///   struct always_two {                                                    // valid: models Sizing
///     int degree(const scheduler_view& v, request_handle h, const device_set& avail) const {
///       return v.allows_degree(h, 2) && avail.count() >= 2 ? 2 : 0;
///     }
///   };
///   struct no_devices { int degree(const scheduler_view&, request_handle) const; };  // invalid
template <class S>
concept Sizing = requires(S& s, const scheduler_view& v, request_handle h, const device_set& available) {
  { s.degree(v, h, available) } -> std::convertible_to<int>;
};

/// GF-DiT's best fit: the smallest degree that fits in `available` and whose estimated finish
/// (migration included) meets the deadline; when none does, the fastest that fits. Without a
/// deadline every degree "meets" it, so the smallest that fits. With margin m > 0 the finish must
/// come within the first (1 - m) of the time left, so a request that is later preempted for a
/// step or two by more urgent ones still makes it (margin 0 = GF-DiT).
struct smallest_meeting_degree {
  double margin = 0;
  degree_candidates candidates{};  ///< a cache: the degrees worth trying, per shape
  candidate_times times{};         ///< a cache: per request, what each of them takes from now

  [[nodiscard]] int degree(const scheduler_view& v, request_handle h, const device_set& available) const {
    const auto& r = v.request(h);
    const int free = static_cast<int>(available.count());
    int fastest = 0;
    tick fastest_t = never;
    const tick now = v.now();
    const tick left = r.has_deadline() ? r.deadline() - now : never;
    const tick target = !r.has_deadline() ? never : margin <= 0 ? r.deadline() : now + static_cast<tick>(static_cast<double>(left) * (1.0 - margin));
    if (r.phase == request_phase::running) {  // asked again at every decision until its task ends (hold)
      for (const auto& [k, takes] : times.of(v, h, available, candidates)) {  // increasing k
        if (k > free) break;
        const tick t = add_sat(now, takes);
        if (t <= target) return k;
        if (t < fastest_t) fastest = k, fastest_t = t;
      }
      return fastest;
    }
    // A waiting request is mostly asked once per position: pricing every candidate up front would
    // cost more than the loop's early stop saves.
    int meets = 0;
    const finish_estimate finish(v, h, available);
    candidates.for_each(v, h, [&](int k) {  // increasing
      if (k > free) return false;
      const tick t = finish(k);
      if (t <= target) return meets = k, false;
      if (t < fastest_t) fastest = k, fastest_t = t;
      return true;
    });
    return meets != 0 ? meets : fastest;
  }

  /// For a running h, asked with a pool that includes its run group (compose_options::hold): the
  /// latest time until which degree() cannot exceed its current degree, however many devices are
  /// free, because a degree up to it still meets the target; before now() when that is already not
  /// so. Valid until h's next task end: its position and its state's size do not change meanwhile,
  /// and the finish a degree promises only gets later with the clock while the target gets earlier.
  [[nodiscard]] tick settled_until(const scheduler_view& v, request_handle h) const {
    const auto& r = v.request(h);
    if (!r.has_deadline()) return never;  // every degree meets "no deadline"
    const int current = static_cast<int>(r.run_group.size());
    const auto& sg = r.state_group;
    // Its state may move to the run group while it runs (a migration), so a degree migrates for
    // free only when that holds before and after: no state yet, or the state already on the group.
    const bool on_group = !sg.empty() && sg.size() == r.run_group.size() &&
                          std::all_of(sg.begin(), sg.end(), [&](device_id d) { return r.run_group.contains(d); });
    tick need = never;  // the least time left at a degree up to current, migration estimated high
    candidates.for_each(v, h, [&](int k) {
      if (k > current) return false;
      const bool stays = sg.empty() || (on_group && k == current);
      const tick mig = stays ? 0 : k <= v.topology().gpus_per_node ? v.costs(h).migrate_intra_node : v.costs(h).migrate_inter_node;
      need = std::min(need, mig + v.remaining_time(h, k));
      return true;
    });
    if (need == never) return std::numeric_limits<tick>::min();
    const tick deadline = r.deadline();
    if (margin <= 0) return deadline - need;
    // degree() meets at time t when need <= budget(t): non-increasing in t; T is the last such t.
    const auto budget = [&](tick t) { return static_cast<tick>(static_cast<double>(deadline - t) * (1.0 - margin)); };
    tick t = deadline - static_cast<tick>(std::ceil(static_cast<double>(need) / (1.0 - margin)));
    while (budget(t + 1) >= need) ++t;  // the rounding is off by a tick or two at most
    while (budget(t) < need) --t;
    return t;
  }
};

/// The fastest degree that fits in `available` (migration included; ties: fewer devices).
struct fastest_degree {
  degree_candidates candidates{};  ///< a cache: the degrees worth trying, per shape

  [[nodiscard]] int degree(const scheduler_view& v, request_handle h, const device_set& available) const {
    const int free = static_cast<int>(available.count());
    int best = 0;
    tick best_t = never;
    const finish_estimate finish(v, h, available);
    candidates.for_each(v, h, [&](int k) {
      if (k > free) return false;
      const tick t = finish(k);
      if (t < best_t) best = k, best_t = t;
      return true;
    });
    return best;
  }
};

/// Among the degrees that fit and meet the deadline, the fewest GPU-seconds (k x time left);
/// when none meets it, the fastest that fits. Without a deadline: the fewest GPU-seconds.
struct cheapest_degree {
  degree_candidates candidates{};  ///< a cache: the degrees worth trying, per shape

  [[nodiscard]] int degree(const scheduler_view& v, request_handle h, const device_set& available) const {
    const auto& r = v.request(h);
    const int free = static_cast<int>(available.count());
    int cheap = 0, fastest = 0;
    tick cheap_cost = never, fastest_t = never;
    const finish_estimate finish(v, h, available);
    candidates.for_each(v, h, [&](int k) {
      if (k > free) return false;
      const tick t = finish(k);
      if (t < fastest_t) fastest = k, fastest_t = t;
      const tick cost = static_cast<tick>(k) * (t - v.now());
      if (t <= r.deadline() && cost < cheap_cost) cheap = k, cheap_cost = cost;
      return true;
    });
    return cheap != 0 ? cheap : fastest;
  }
};

// ============================================================================================
// Placement
// ============================================================================================

/// k devices for h out of `available`, or nullopt. `preferred` (a subset of available) excludes
/// devices holding the state of other waiting requests not yet served in this call. The result
/// must have exactly k distinct devices, all in `available`.
///
///   struct lowest_ids {                                                    // valid: models Placement
///     std::optional<device_group> place(const scheduler_view& v, request_handle, int k,
///                                       const device_set& avail, const device_set&) const {
///       return find_free_group(avail, k, v.topology());
///     }
///   };
///   struct any_k { device_group place(int k); };                            // invalid: signature
template <class P>
concept Placement = requires(P& p, const scheduler_view& v, request_handle h, int k, const device_set& available,
                             const device_set& preferred) {
  { p.place(v, h, k, available, preferred) } -> std::same_as<std::optional<device_group>>;
};

/// The request's own devices when it keeps its degree (no migration); else a group from the
/// preferred devices; else from any available ones (find_free_group's node-aware best fit).
struct sticky_placement {
  [[nodiscard]] std::optional<device_group> place(const scheduler_view& v, request_handle h, int k,
                                                  const device_set& available, const device_set& preferred) const {
    const auto& sg = v.request(h).state_group;
    if (static_cast<int>(sg.size()) == k && available.contains_all(sg)) return sg;
    if (auto g = find_free_group(preferred, k, v.topology())) return g;
    return find_free_group(available, k, v.topology());
  }
};

/// paraflex::place() as is: own devices, else find_free_group over everything available.
struct packed_placement {
  [[nodiscard]] std::optional<device_group> place(const scheduler_view& v, request_handle h, int k,
                                                  const device_set& available, const device_set&) const {
    return paraflex::place(v, h, k, available);
  }
};

// ============================================================================================
// composed_policy
// ============================================================================================

struct compose_options {
  std::string name = "composed";
  std::uint32_t chunk = 1;  ///< tasks per assignment: 1 = decide again at every step boundary
  bool widen = true;        ///< give spare devices to tier-1 requests that get strictly faster
  bool hold = false;        ///< keep free devices idle for running tier-1 requests that want more
  int max_batch = 1;        ///< > 1: waiting requests may share a planned request's step (batching.hpp); 1 = off
  double batch_margin = 0.1;  ///< a batch keeps every member within (1 - margin) of its time left
  double batch_saving = 0;    ///< a member joins only if it adds at most (1 - this) of a step alone
  /// With hold: held devices are backfilled only on clusters of at most this many devices (0: never).
  int backfill_max_devices = std::numeric_limits<int>::max();
};

namespace detail {
template <class T>
concept has_begin = requires(T& t, const scheduler_view& v) { t.begin(v); };
template <class T>
concept has_on_arrival = requires(T& t, const scheduler_view& v, request_handle h) { t.on_arrival(v, h); };
template <class T>
concept has_on_request_end = requires(T& t, const scheduler_view& v, request_handle h) { t.on_request_end(v, h); };
template <class T>
concept has_on_task_end = requires(T& t, const scheduler_view& v, request_handle h, bool ok) { t.on_task_end(v, h, ok); };
template <class S>
concept has_settled_until = requires(const S& s, const scheduler_view& v, request_handle h) {
  { s.settled_until(v, h) } -> std::convertible_to<tick>;
};
template <class T>
concept has_pending_drops = requires(T& t) {
  { t.pending_drops() } -> std::ranges::input_range;
};
// A part's hooks are forwarded only when callable: one declared with another signature would be skipped.
template <class T>
concept part_hooks_callable = (!declares_on_arrival<T> || has_on_arrival<T>) && (!declares_on_request_end<T> || has_on_request_end<T>) &&
                              (!declares_on_task_end<T> || has_on_task_end<T>);
}  // namespace detail

template <Admission A, Order O, Sizing S, Placement P = sticky_placement>
class composed_policy {
  static constexpr bool kept_order = RequestKeyedOrder<O>;
  static_assert(detail::part_hooks_callable<A>, "composed_policy: the Admission part declares on_arrival, on_request_end or on_task_end, but not callable as (const scheduler_view&, request_handle[, bool ok]): it would never be called");
  static_assert(detail::part_hooks_callable<O>, "composed_policy: the Order part declares on_arrival, on_request_end or on_task_end, but not callable as (const scheduler_view&, request_handle[, bool ok]): it would never be called");
  static_assert(detail::part_hooks_callable<S>, "composed_policy: the Sizing part declares on_arrival, on_request_end or on_task_end, but not callable as (const scheduler_view&, request_handle[, bool ok]): it would never be called");
  static_assert(detail::part_hooks_callable<P>, "composed_policy: the Placement part declares on_arrival, on_request_end or on_task_end, but not callable as (const scheduler_view&, request_handle[, bool ok]): it would never be called");

 public:
  using admission_type = A;
  using order_type = O;
  using sizing_type = S;
  using placement_type = P;
  using key_type = std::remove_cvref_t<decltype(std::declval<O&>().key(std::declval<const scheduler_view&>(), request_handle{}))>;

  explicit composed_policy(A a = {}, O o = {}, S s = {}, P p = {}, compose_options options = {})
      : admission_(std::move(a)), order_(std::move(o)), sizing_(std::move(s)), placement_(std::move(p)),
        options_(std::move(options)) {
    if (options_.chunk == 0) options_.chunk = 1;
  }
  // The kept order is an intrusive tree: a copy or a move rebuilds it at its next decision.
  composed_policy(const composed_policy& o)
      : admission_(o.admission_), order_(o.order_), sizing_(o.sizing_), placement_(o.placement_), options_(o.options_) {}
  composed_policy(composed_policy&& o) noexcept(std::is_nothrow_move_constructible_v<A> && std::is_nothrow_move_constructible_v<O> &&
                                                 std::is_nothrow_move_constructible_v<S> && std::is_nothrow_move_constructible_v<P>)
      : admission_(std::move(o.admission_)), order_(std::move(o.order_)), sizing_(std::move(o.sizing_)),
        placement_(std::move(o.placement_)), options_(std::move(o.options_)) {}
  composed_policy& operator=(const composed_policy&) = delete;
  composed_policy& operator=(composed_policy&&) = delete;

  [[nodiscard]] std::string name() const { return options_.name; }
  [[nodiscard]] const compose_options& options() const noexcept { return options_; }
  [[nodiscard]] A& admission_part() noexcept { return admission_; }
  [[nodiscard]] O& order_part() noexcept { return order_; }
  [[nodiscard]] S& sizing_part() noexcept { return sizing_; }
  [[nodiscard]] P& placement_part() noexcept { return placement_; }

  void decide(const scheduler_view& v, decision_buffer& out) {
    begin_part(admission_, v);
    begin_part(order_, v);
    begin_part(sizing_, v);
    begin_part(placement_, v);

    available_ = v.free_devices();
    free_count_ = static_cast<int>(available_.count());
    plan_.clear();
    tier2_.clear();
    unserved_.clear();
    if (held_.capacity() != v.topology().device_count()) held_ = device_set(v.topology().device_count(), false);
    held_.for_each([this](device_id d) { held_.reset(d); });  // left over from the last call
    held_count_ = 0;
    // Without backfill the walk stops at the last free device: no unserved request is kept.
    backfill_limit_ = v.device_count() <= options_.backfill_max_devices ? backfill_candidates : 0;
    idle_runs_.clear();
    idle_until_.clear();
    idle_sorted_ = true;
    if (free_count_ > 0) mark_contested(v);
    // Drops the Admission part wants now, whether or not the walk gets that far (a strict admission
    // tells the client at once). Parts without pending_drops() are only asked during the walk.
    ++call_;
    if constexpr (detail::has_pending_drops<A>) {
      for (request_handle h : admission_.pending_drops()) {
        if (v.request(h).phase != request_phase::waiting || dropped_in(h)) continue;
        const admission a = admission_.judge(v, h);
        if (a.verdict != admission_verdict::drop) continue;
        out.drop(h, a.reason.empty() ? std::string_view("dropped_by_policy") : a.reason);
        mark_dropped(h);
      }
    }

    if constexpr (kept_order) {
      if (!index_in_sync(v)) rebuild_index(v);
      while (!quiet_.empty() && quiet_.front().until < v.now()) {  // running requests that may want more now
        std::pop_heap(quiet_.begin(), quiet_.end(), std::greater<>());
        const quiet_timer t = quiet_.back();
        quiet_.pop_back();
        if (out_taken(t.h) != t.taken) continue;  // filed again since
        set_out(t.h, 0);
        index_.insert(t.h, order_.key(v, t.h));
      }
      for (auto it = index_.begin(); it != index_.end();) {
        const request_handle h = (*it).h;
        ++it;  // visit() may take h out of the order
        if (!visit(v, h, out)) break;
      }
    } else {
      keyed_.clear();
      for (request_handle h : v.waiting()) keyed_.emplace_back(order_.key(v, h), h);
      if (options_.hold) {
        for (request_handle h : v.running()) keyed_.emplace_back(order_.key(v, h), h);
      }
      std::sort(keyed_.begin(), keyed_.end());
      for (const auto& [key, h] : keyed_) {
        if (!visit(v, h, out)) break;
      }
    }
    for (request_handle h : tier2_) {  // background: what tier 1 left
      if (!serve_one(v, h, false)) break;
    }
    if (held_count_ > 0) backfill(v);
    if (options_.widen && free_count_ > 0) widen(v);
    if (options_.max_batch > 1) assign_batched(v, out);
    else for (auto& p : plan_) out.assign(p.request, std::move(p.group), options_.chunk);
  }

  // Hooks: each exists when some part has it, or when the policy keeps its order between calls.
  void on_arrival(const scheduler_view& v, request_handle h)
    requires(kept_order || detail::has_on_arrival<A> || detail::has_on_arrival<O> || detail::has_on_arrival<S> ||
             detail::has_on_arrival<P>)
  {
    if constexpr (detail::has_on_arrival<A>) admission_.on_arrival(v, h);
    if constexpr (detail::has_on_arrival<O>) order_.on_arrival(v, h);
    if constexpr (detail::has_on_arrival<S>) sizing_.on_arrival(v, h);
    if constexpr (detail::has_on_arrival<P>) placement_.on_arrival(v, h);
    if constexpr (kept_order) {
      set_out(h, 0);
      set_unsettled(h, false);
      index_.insert(h, order_.key(v, h));
    }
  }
  void on_request_end(const scheduler_view& v, request_handle h)
    requires(kept_order || detail::has_on_request_end<A> || detail::has_on_request_end<O> || detail::has_on_request_end<S> ||
             detail::has_on_request_end<P>)
  {
    if constexpr (detail::has_on_request_end<A>) admission_.on_request_end(v, h);
    if constexpr (detail::has_on_request_end<O>) order_.on_request_end(v, h);
    if constexpr (detail::has_on_request_end<S>) sizing_.on_request_end(v, h);
    if constexpr (detail::has_on_request_end<P>) placement_.on_request_end(v, h);
    if constexpr (kept_order) {
      index_.erase(h);
      set_out(h, 0);
    }
  }
  void on_task_end(const scheduler_view& v, request_handle h, bool ok)
    requires(kept_order || detail::has_on_task_end<A> || detail::has_on_task_end<O> || detail::has_on_task_end<S> ||
             detail::has_on_task_end<P>)
  {
    if constexpr (detail::has_on_task_end<A>) admission_.on_task_end(v, h, ok);
    if constexpr (detail::has_on_task_end<O>) order_.on_task_end(v, h, ok);
    if constexpr (detail::has_on_task_end<S>) sizing_.on_task_end(v, h, ok);
    if constexpr (detail::has_on_task_end<P>) placement_.on_task_end(v, h, ok);
    if constexpr (kept_order) {  // back in the order (it waits now, or runs on); its progress may move it
      set_out(h, 0);
      set_unsettled(h, false);
      index_.insert(h, order_.key(v, h));
    }
  }

 private:
  struct planned {
    request_handle request;
    device_group group;
    bool widenable;
    bool batchable;  ///< not on held devices: a longer batched step would outlast their idle time
  };

  template <class Part>
  static void begin_part(Part& part, const scheduler_view& v) {
    if constexpr (detail::has_begin<Part>) part.begin(v);
    else (void)part, (void)v;
  }

  // One request met in key order: judged, then served (tier 1), set aside for later (tier 2), held
  // for (running), dropped or skipped. False when nothing further down the order can matter: no
  // device left to give, none held to backfill.
  bool visit(const scheduler_view& v, request_handle h, decision_buffer& out) {
    const auto& r = v.request(h);
    if (r.ended()) {  // cannot happen while the hooks are forwarded; rebuild next time
      index_stale_ = true;
      return true;
    }
    const bool running = r.phase == request_phase::running;
    if (running && !options_.hold) {  // nothing to do for it until its task ends (on_task_end files it again)
      if constexpr (kept_order) take_out(h, never);
      return true;
    }
    if constexpr (kept_order && detail::has_settled_until<S>) {
      if (running && !unsettled(h)) {  // it wants no more devices for a while: out of the walk until then or its task end
        if (const tick quiet = sizing_.settled_until(v, h); quiet >= v.now()) {
          take_out(h, quiet);
          return true;
        }
        set_unsettled(h, true);  // and stays so until its task ends: no need to ask again
      }
    }
    if (free_count_ == 0 && (held_count_ == 0 || unserved_.size() >= backfill_limit_)) return false;
    if (running) {  // judged only when there are devices to hold (past them the walk looks for backfill)
      if (free_count_ > 0 && admission_.judge(v, h).verdict == admission_verdict::admit) hold_for(v, h);
      return true;
    }
    const admission a = admission_.judge(v, h);
    switch (a.verdict) {
      case admission_verdict::admit: serve_one(v, h, true); break;
      case admission_verdict::background:
        if (tier2_.size() < tier2_limit(v)) tier2_.push_back(h);
        break;
      case admission_verdict::defer: break;
      case admission_verdict::drop:
        if (!dropped_in(h)) {
          out.drop(h, a.reason.empty() ? std::string_view("dropped_by_policy") : a.reason);
          mark_dropped(h);
        }
        break;
    }
    return true;
  }
  [[nodiscard]] bool dropped_in(request_handle h) const noexcept { return h < dropped_call_.size() && dropped_call_[h] == call_; }
  void mark_dropped(request_handle h) {
    if (h >= dropped_call_.size()) dropped_call_.resize(static_cast<std::size_t>(h) + 1, 0);
    dropped_call_[h] = call_;
  }
  // Background requests kept for the end of a call: more than could ever be placed is never needed.
  [[nodiscard]] std::size_t tier2_limit(const scheduler_view& v) const { return 2 * static_cast<std::size_t>(v.device_count()) + backfill_limit_; }

  // Is the kept order exactly the unended arrived requests, keyed as of their last task? The hooks
  // keep it so; this catches a host that does not forward them and devices lost (positions reset).
  [[nodiscard]] bool index_in_sync(const scheduler_view& v) const {
    return !index_stale_ && index_.size() + out_count_ == v.waiting().size() + v.running().size() &&
           v.lost_devices().count() == lost_seen_;
  }
  void rebuild_index(const scheduler_view& v) {
    index_.clear();
    std::fill(out_.begin(), out_.end(), 0);
    std::fill(unsettled_.begin(), unsettled_.end(), 0);
    out_count_ = 0;
    quiet_.clear();
    for (request_handle h : v.waiting()) index_.insert(h, order_.key(v, h));
    for (request_handle h : v.running()) index_.insert(h, order_.key(v, h));
    lost_seen_ = v.lost_devices().count();
    index_stale_ = false;
  }
  // Running requests taken out of the kept order: without hold the walk has nothing to do for them,
  // with hold nothing while Sizing says they want no more devices (settled_until); under load a
  // thousand of them would otherwise sit ahead of the waiting ones at every call. on_task_end files
  // them again, and so does their timer when it comes due. out_[h]: the call that took h out, 0 if in.
  [[nodiscard]] std::uint64_t out_taken(request_handle h) const noexcept { return h < out_.size() ? out_[h] : 0; }
  void set_out(request_handle h, std::uint64_t taken) {
    const std::uint64_t was = out_taken(h);
    if (was == taken) return;
    if (out_.size() <= h) out_.resize(static_cast<std::size_t>(h) + 1, 0);
    out_[h] = taken;
    if (was == 0) ++out_count_;
    else if (taken == 0) --out_count_;
  }
  [[nodiscard]] bool unsettled(request_handle h) const noexcept { return h < unsettled_.size() && unsettled_[h] != 0; }
  void set_unsettled(request_handle h, bool u) {
    if (!u && !unsettled(h)) return;
    if (unsettled_.size() <= h) unsettled_.resize(static_cast<std::size_t>(h) + 1, 0);
    unsettled_[h] = u ? 1 : 0;
  }
  void take_out(request_handle h, tick until) {
    index_.erase(h);
    set_out(h, call_);
    if (until == never) return;
    quiet_.push_back(quiet_timer{until, h, call_});
    std::push_heap(quiet_.begin(), quiet_.end(), std::greater<>());
  }

  // Free devices holding the state of a waiting request that takes part in this call (admit or
  // background): others avoid them if they can. Found through the devices, not the queue: only the
  // holders of a free device can contest it, and only the free devices that hold some state are
  // looked at (the runtime's bitmap of them, word by word).
  void mark_contested(const scheduler_view& v) {
    if (contested_.size() != static_cast<std::size_t>(v.device_count())) {
      contested_.assign(static_cast<std::size_t>(v.device_count()), 0);
      contested_list_.clear();
    }
    for (device_id d : contested_list_) contested_[d] = 0;  // the last call's (release_contested only lowers them)
    contested_list_.clear();
    preferred_ = available_;
    const device_set& holding = v.state_holding_devices();
    const std::size_t words = std::min(available_.word_count(), holding.word_count());
    for (std::size_t w = 0; w < words; ++w) {
      for (std::uint64_t bits = available_.word(w) & holding.word(w); bits; bits &= bits - 1) {
        const auto d = static_cast<device_id>(w * 64 + static_cast<std::size_t>(std::countr_zero(bits)));
        for (request_handle h : v.state_holders(d)) {
          if (v.request(h).phase != request_phase::waiting) continue;
          const admission_verdict verdict = admission_.judge(v, h).verdict;
          if (verdict == admission_verdict::admit || verdict == admission_verdict::background) ++contested_[d];
        }
        if (contested_[d] > 0) preferred_.reset(d), contested_list_.push_back(d);
      }
    }
  }
  void release_contested(const scheduler_view& v, request_handle h) {
    for (device_id d : v.request(h).state_group) {
      if (!available_.test(d) || contested_[d] == 0) continue;
      if (--contested_[d] == 0) preferred_.set(d);
    }
  }

  // Sizes and places one waiting request; false when no device is left at all.
  bool serve_one(const scheduler_view& v, request_handle h, bool widenable) {
    if (free_count_ == 0) {
      if (held_count_ == 0 || unserved_.size() >= backfill_limit_) return false;
      unserved_.push_back(h);
      return true;
    }
    release_contested(v, h);
    const int k = sizing_.degree(v, h, available_);
    auto g = k > 0 ? placement_.place(v, h, k, available_, preferred_) : std::nullopt;
    if (!g || g->size() != static_cast<std::size_t>(k) || !available_.contains_all(*g)) {
      if (unserved_.size() < backfill_limit_) unserved_.push_back(h);
      return true;
    }
    available_.reset(*g);
    preferred_.reset(*g);
    free_count_ -= k;
    plan_.push_back(planned{h, std::move(*g), widenable, true});
    return true;
  }

  // A running request that wants more devices than it has keeps free ones idle until its task ends.
  void hold_for(const scheduler_view& v, request_handle h) {
    const auto& rg = v.request(h).run_group;
    device_set& pool = pool_;  // reused: assigning over a set of the same cluster copies words in place
    pool = available_;
    pool.set(rg);
    const int want = sizing_.degree(v, h, pool) - static_cast<int>(rg.size());
    if (want <= 0) return;
    auto g = find_free_group(available_, std::min(want, free_count_), v.topology());
    if (!g) return;
    available_.reset(*g);
    preferred_.reset(*g);
    free_count_ -= static_cast<int>(g->size());
    if (held_until_.size() < static_cast<std::size_t>(v.device_count())) held_until_.resize(static_cast<std::size_t>(v.device_count()));
    const tick until = v.request(h).running_until;
    for (device_id d : *g) held_until_[d] = until;
    held_.set(*g);
    held_count_ += static_cast<int>(g->size());
    idle_runs_.push_back(idle_run{until, static_cast<int>(g->size())});  // sorted by backfill, if it gets that far
    idle_sorted_ = false;
  }

  // Held devices idle until their holder's task ends: a waiting request whose next assignment
  // ends before that may use them meanwhile (smallest degree that fits in time).
  void backfill(const scheduler_view& v) {
    for (request_handle h : unserved_) {
      if (held_count_ == 0) return;
      if (!idle_sorted_) sort_idle_times();  // once per call, and only when a request is left to try
      // An assignment of one task that is a step ends no sooner than that step at its fastest
      // degree: only the held devices idle until then can take it, so no degree above their count.
      const auto& r = v.request(h);
      int fit = held_count_;
      if (options_.chunk == 1 && r.position < r.tasks_total() && r.next_task().kind == task_kind::step) {
        const tick soonest = add_sat(v.now(), v.step_time(h, v.costs(h).fastest_degree));
        const auto idle = std::partition_point(idle_until_.begin(), idle_until_.end(), [&](tick t) { return t >= soonest; });
        fit = static_cast<int>(idle - idle_until_.begin());
        if (fit == 0) continue;  // no degree fits: no need to price any
      }
      for (const auto& [k, takes] : backfill_times_.next(v, h, held_, sizing_candidates_, options_.chunk)) {
        // The smallest degree that fits in time (held_ changes only once h is served).
        if (k > fit) break;
        const tick end = add_sat(v.now(), takes);
        if (idle_until_[static_cast<std::size_t>(k) - 1] < end) continue;  // fewer than k held devices idle that long
        picked_.clear();
        const auto& sg = v.request(h).state_group;
        const auto fits = [&](device_id d) { return held_.test(d) && held_until_[d] >= end; };
        if (static_cast<int>(sg.size()) == k && std::all_of(sg.begin(), sg.end(), fits)) {
          picked_.assign(sg.begin(), sg.end());  // its own devices: no migration
        } else {
          held_.for_each([&, k = k](device_id d) {  // k copied: clang before 16 cannot capture a structured binding
            if (static_cast<int>(picked_.size()) < k && held_until_[d] >= end) picked_.push_back(d);
          });
        }
        device_group g{std::span<const device_id>(picked_)};
        held_.reset(g);
        held_count_ -= k;
        for (device_id d : picked_) {  // their idle times leave the sorted list (equal times are interchangeable)
          idle_until_.erase(std::lower_bound(idle_until_.begin(), idle_until_.end(), held_until_[d], std::greater<>()));
        }
        plan_.push_back(planned{h, std::move(g), false, false});
        break;
      }
    }
  }
  // The held devices' idle times, latest first: the holds' runs sorted, then one entry per device.
  void sort_idle_times() {
    std::sort(idle_runs_.begin(), idle_runs_.end(), [](const idle_run& a, const idle_run& b) { return a.until > b.until; });
    idle_until_.resize(static_cast<std::size_t>(held_count_));  // nothing backfilled yet: every held device
    auto at = idle_until_.begin();
    for (const idle_run& run : idle_runs_) at = std::fill_n(at, run.devices, run.until);
    idle_sorted_ = true;
  }

  // The plan as decisions, with selective batching (policy/batching.hpp): a planned request leads a
  // batched step of the waiting requests of its shape whose state is on its group, or first runs the
  // free encodes of recruits there; it then waits for the next call (at the same time: the encodes
  // cost nothing) and leads the batch with them. Nobody handed out in this call joins, nor anyone
  // the Admission part drops; a request it defers may ride along, as a batch makes no member miss.
  void assign_batched(const scheduler_view& v, decision_buffer& out) {
    for (const auto& p : plan_) mark_batched(p.request);
    const auto taken = [&](request_handle o) {
      return batched_in(o) || dropped_in(o) || admission_.judge(v, o).verdict == admission_verdict::drop;
    };
    for (auto& p : plan_) {
      if (p.batchable) {
        batch_companions(v, p.request, p.group, options_.max_batch, options_.batch_margin, taken, members_, options_.batch_saving);
        batch_recruits(v, p.request, p.group, options_.max_batch, options_.batch_margin, taken, members_, recruits_, options_.batch_saving);
        if (!recruits_.empty()) {
          for (request_handle m : recruits_) mark_batched(m);
          out.assign_batch(recruits_, std::move(p.group));
          continue;
        }
        if (members_.size() > 1) {
          for (request_handle m : members_) mark_batched(m);
          out.assign_batch(members_, std::move(p.group));
          continue;
        }
      }
      out.assign(p.request, std::move(p.group), options_.chunk);
    }
  }
  [[nodiscard]] bool batched_in(request_handle h) const noexcept { return h < batched_call_.size() && batched_call_[h] == call_; }
  void mark_batched(request_handle h) {
    if (h >= batched_call_.size()) batched_call_.resize(static_cast<std::size_t>(h) + 1, 0);
    batched_call_[h] = call_;
  }

  // GF-DiT's work-conserving scale-up: in priority order, a wider group if strictly faster.
  void widen(const scheduler_view& v) {
    for (auto& p : plan_) {
      if (free_count_ == 0) return;
      if (!p.widenable) continue;
      device_set& pool = pool_;  // reused, as in hold_for: no heap block per widening
      pool = available_;
      pool.set(p.group);
      const int k0 = static_cast<int>(p.group.size());
      const int limit = k0 + free_count_;
      const tick current = v.migration_time(p.request, p.group) + v.remaining_time(p.request, k0);
      int best = k0;
      tick best_t = current;
      const finish_estimate on_pool(v, p.request, pool);
      // Degrees some degree in (k0, k) dominates are never strictly faster: not offered.
      sizing_candidates_.for_each_wider(v, p.request, k0, limit, [&](int k) {
        const tick t = on_pool.migration(k) + on_pool.remaining(k);
        if (t < best_t) best = k, best_t = t;
      });
      if (best == k0) continue;
      auto g = placement_.place(v, p.request, best, pool, pool);
      if (!g || g->size() != static_cast<std::size_t>(best) || !pool.contains_all(*g)) continue;
      pool.reset(*g);
      std::swap(available_, pool_);  // pool_ keeps the old words as the next call's scratch
      free_count_ -= best - k0;
      p.group = std::move(*g);
    }
  }

  A admission_;
  O order_;
  S sizing_;
  P placement_;
  compose_options options_;
  // The kept order (RequestKeyedOrder): every unended arrived request, running ones included.
  struct no_index {};
  std::conditional_t<kept_order, request_index<key_type>, no_index> index_;
  std::size_t lost_seen_ = 0;
  bool index_stale_ = false;
  std::uint64_t call_ = 0;                  // decide() calls
  std::vector<std::uint64_t> dropped_call_;  // by handle: the call that dropped it (no drop twice)
  std::vector<std::uint64_t> batched_call_;  // by handle: the call that planned or batched it (max_batch > 1)
  std::vector<request_handle> members_, recruits_;  // a batched step being formed
  // Scratch reused across calls.
  std::vector<std::pair<key_type, request_handle>> keyed_;  // orders sorted per call
  std::vector<request_handle> tier2_;
  std::vector<planned> plan_;
  std::vector<std::uint32_t> contested_;
  std::vector<device_id> contested_list_;  // devices with contested_ > 0 at the end of mark_contested
  device_set available_, preferred_;
  device_set pool_;     // scratch of hold_for and widen: available_ plus a request's own devices
  int free_count_ = 0;  // available_.count(), kept up to date
  // Devices held for running requests, until when, and who may fill them meanwhile.
  static constexpr std::size_t backfill_candidates = 64;
  std::size_t backfill_limit_ = backfill_candidates;  // this call's: 0 when the cluster is too large to backfill
  device_set held_;
  std::vector<tick> held_until_;
  int held_count_ = 0;
  std::vector<request_handle> unserved_;
  std::vector<device_id> picked_;
  // Until when the held devices stay idle: one run per hold, appended (at 1,024 GPUs a call makes
  // ~24 holds of ~3 devices; a sorted insert per hold cost more), then, once per call and only when
  // backfill has a request to try, sorted into one entry per device, latest first: at least k of
  // them are idle until `end` exactly when idle_until_[k - 1] >= end.
  struct idle_run {
    tick until;
    int devices;
  };
  std::vector<idle_run> idle_runs_;
  std::vector<tick> idle_until_;
  bool idle_sorted_ = true;
  degree_candidates sizing_candidates_;  // for backfill and widen
  candidate_times backfill_times_;       // the unserved requests' next tasks, priced on the held devices
  std::vector<std::uint64_t> out_;  // by handle: running, taken out of the kept order (see set_out)
  std::size_t out_count_ = 0;
  struct quiet_timer {
    tick until;  // back in the order after this
    request_handle h;
    std::uint64_t taken;  // the call that took it out: a stale timer does not match out_[h]
    friend auto operator<=>(const quiet_timer&, const quiet_timer&) = default;
  };
  std::vector<quiet_timer> quiet_;          // a min-heap
  std::vector<unsigned char> unsettled_;    // by handle: settled_until() was past when last asked, this task
};

static_assert(Admission<admit_all> && Admission<drop_unreachable>);
static_assert(Order<fcfs_order> && Order<edf_order> && Order<least_slack_order> && Order<priority_edf_order>);
static_assert(Sizing<smallest_meeting_degree> && Sizing<fastest_degree> && Sizing<cheapest_degree>);
static_assert(Placement<sticky_placement> && Placement<packed_placement>);
static_assert(RequestKeyedOrder<fcfs_order> && RequestKeyedOrder<edf_order> && RequestKeyedOrder<least_slack_order> &&
              RequestKeyedOrder<priority_edf_order>);
static_assert(Policy<composed_policy<admit_all, fcfs_order, fastest_degree>> &&
              NamedPolicy<composed_policy<admit_all, fcfs_order, fastest_degree>>);
static_assert(ArrivalAwarePolicy<composed_policy<admit_all, fcfs_order, fastest_degree>>);  // keeps its order

}  // namespace paraflex
