// paraflex/policy/throughput_first.hpp - most completed requests per GPU-second.
//
// Every request runs at its most efficient degree e = argmin_k k*T(k) (fewest GPU-seconds per step;
// degree 1 for every FLUX image shape on the L20 profile), so no GPU-second is spent on scaling loss.
// At each decision (every chunk boundary):
//   order     shortest remaining work first: remaining GPU-seconds at e (SRPT on the GPU-time the
//             request still needs); ties by deadline, then arrival. Deadlines are otherwise ignored.
//   guard     a request older than starvation_factor x its own latency alone at e (or older than
//             starvation_s, when set) is "aged": aged requests go first, oldest first, so large
//             requests cannot starve behind a stream of small ones.
//   fill      requests take devices in that order; one that does not fit at e takes the most
//             efficient allowed degree that does fit, so a device never idles while work waits
//             (work conservation); a request whose smallest degree does not fit is skipped.
//   widen     only when nothing is left waiting and devices are still idle: the requests placed in
//             this call are widened, in order, to the fastest allowed degree that fits, is strictly
//             faster, and costs at most max_inefficiency x the GPU-seconds per step of e.
//   place     a request keeping its degree stays on its devices (place(): no migration); others are
//             placed widest first.
// Each assignment covers chunk_steps denoising steps (the encode before the first step and the decode
// after the last ride along): 1 = re-decide at every step boundary (preemption at step granularity),
// larger = fewer decisions and fewer migrations.
//
// Cost: the waiting requests live in an ordered index (request_index: no allocation once warm) kept
// up to date by the arrival / task-end / request-end hooks (O(log W) each), so a decision costs
// O(P log W) for the P requests it places, not O(W): thousands of waiting requests cost
// microseconds when one device frees. decide() rebuilds the
// set from the view when the two disagree (a lost device resets positions; a host that does not
// forward the hooks), so correctness never depends on the hooks.
//
// Parameters ("throughput-first:KEY=VALUE"): chunk_steps (1), max_inefficiency (1.25),
// starvation_factor (10; 0 = off), starvation_s (0 = off). The policy never drops a request.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "paraflex/core/time.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/policy/placement.hpp"
#include "paraflex/policy/registry.hpp"
#include "paraflex/policy/request_index.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

struct throughput_first_options {
  int chunk_steps = 1;             ///< denoising steps per assignment
  double max_inefficiency = 1.25;  ///< widening may cost at most this x the best GPU-seconds per step
  double starvation_factor = 10;   ///< aged after this x its latency alone (0 = off)
  tick starvation = 0;             ///< aged after this long in the system (0 = off)
};

class throughput_first_policy {
 public:
  throughput_first_policy() = default;
  explicit throughput_first_policy(throughput_first_options o) : opt_(o) {
    opt_.chunk_steps = std::max(1, opt_.chunk_steps);
    opt_.max_inefficiency = std::max(1.0, opt_.max_inefficiency);
    opt_.starvation_factor = std::max(0.0, opt_.starvation_factor);
    opt_.starvation = std::max<tick>(0, opt_.starvation);
  }

  [[nodiscard]] std::string name() const { return "throughput-first"; }
  [[nodiscard]] const throughput_first_options& options() const noexcept { return opt_; }

  /// The most efficient allowed degree of h's shape (fewest GPU-seconds per step; ties: faster, then
  /// narrower).
  [[nodiscard]] int efficient_degree(const scheduler_view& v, request_handle h) { return info(v, h).order.front(); }

  // Hooks keep the queue of waiting requests up to date, so a decision costs O(P log W) rather than
  // O(W). decide() checks the queue against the view and rebuilds it when they disagree (a device
  // was lost, or the policy runs somewhere that does not forward the hooks).
  void on_arrival(const scheduler_view& v, request_handle h) {
    ++epoch_;
    enqueue(v, h);
  }
  void on_task_end(const scheduler_view& v, request_handle h, bool ok) {
    ++epoch_;
    const auto& r = v.request(h);
    if (!ok || (r.chunk_left == 0 && r.position < r.tasks_total())) enqueue(v, h);  // it waits next
  }
  void on_request_end(const scheduler_view&, request_handle h) { dequeue(h); }

  void decide(const scheduler_view& v, decision_buffer& out) {
    ++epoch_;
    const tick now = v.now();
    if (stale_ || queue_.size() != v.waiting().size() || v.lost_devices().count() != lost_seen_) rebuild(v);
    // Requests that aged while waiting move to the front group.
    while (!aging_.empty() && aging_.top().first < now) {
      const request_handle h = aging_.top().second;
      aging_.pop();
      if (queued(h) && !queue_.key(h).aged) {
        dequeue(h);
        enqueue(v, h);
      }
    }
    int free_count = static_cast<int>(v.free_devices().count());
    if (free_count == 0 || queue_.empty()) return;

    // Fill, best first: degrees by counting only (find_free_group succeeds whenever enough devices are
    // free).
    picks_.clear();
    bool all_taken = true;
    for (auto it = queue_.begin(); it != queue_.end() && free_count > 0; ++it) {
      const request_handle h = (*it).h;
      if (v.request(h).phase != request_phase::waiting) {  // out of sync: rebuild next time
        stale_ = true;
        continue;
      }
      const shape_info& s = info(v, h);
      int k = 0;
      for (int d : s.order) {  // most efficient first
        if (d <= free_count) {
          k = d;
          break;
        }
      }
      if (k == 0) {  // even its smallest degree does not fit now
        all_taken = false;
        continue;
      }
      free_count -= k;
      picks_.push_back({h, k, 0});
    }
    if (picks_.size() < queue_.size()) all_taken = false;

    // Widen only when nobody is left waiting for the idle devices.
    if (all_taken && free_count > 0) {
      for (auto& p : picks_) {
        if (free_count == 0) break;
        const shape_info& s = info(v, p.h);
        const double limit = opt_.max_inefficiency * static_cast<double>(s.best_cost);
        int best = p.degree;
        // No step is shorter than the fastest degree's, so from the first k with that step x k over
        // the limit on, none fits: a scan of the few dozen degrees below, not of every allowed one
        // (65,536 on 65,536 GPUs).
        const auto fastest_t = static_cast<double>(v.step_time(p.h, v.costs(p.h).fastest_degree));
        const auto degrees = v.allowed_degrees(p.h);
        for (auto it = std::upper_bound(degrees.begin(), degrees.end(), p.degree); it != degrees.end(); ++it) {
          const int k = *it;
          if (k - p.degree > free_count || fastest_t * k > limit) break;  // increasing k: so is every later one
          const tick t = v.step_time(p.h, k);
          if (t < v.step_time(p.h, best) && static_cast<double>(t) * k <= limit) best = k;
        }
        free_count -= best - p.degree;
        p.degree = best;
      }
    }

    // Place: keepers on their own devices first, then widest first.
    // Reused members, not locals: a copy of the free set and stable_sort's buffer would allocate each call.
    device_set& available = available_;
    available = v.free_devices();
    for (std::size_t i = 0; i < picks_.size(); ++i) picks_[i].rank = static_cast<std::uint32_t>(i);
    std::sort(picks_.begin(), picks_.end(), [](const pick& a, const pick& b) {  // widest first, else queue order
      return a.degree != b.degree ? a.degree > b.degree : a.rank < b.rank;
    });
    for (auto& p : picks_) {
      const auto& sg = v.request(p.h).state_group;
      if (static_cast<int>(sg.size()) == p.degree && available.contains_all(sg)) {
        available.reset(sg);
        out.assign(p.h, sg, chunk_tasks(v, p.h));
        dequeue(p.h);
        p.degree = 0;
      }
    }
    for (auto& p : picks_) {
      if (p.degree == 0) continue;
      if (auto g = place(v, p.h, p.degree, available)) {
        available.reset(*g);
        out.assign(p.h, std::move(*g), chunk_tasks(v, p.h));
        dequeue(p.h);
      }
    }
  }

 private:
  struct key {
    request_handle h;
    bool aged;
    tick primary;  ///< aged: arrival; else remaining GPU-microseconds at the efficient degree
    tick deadline;
  };
  // The queue's order: aged first (oldest first), then shortest remaining work, deadline, arrival
  // (request_index breaks the last tie by handle).
  struct queue_key {
    bool aged = false;
    tick primary = 0;
    tick deadline = never;
    friend bool operator<(const queue_key& a, const queue_key& b) noexcept {
      if (a.aged != b.aged) return a.aged;
      if (a.primary != b.primary) return a.primary < b.primary;
      return a.deadline < b.deadline;
    }
  };
  struct pick {
    request_handle h;
    int degree;
    std::uint32_t rank = 0;  ///< position in the queue walk (ties keep it)
  };
  struct shape_info {
    request_shape shape;
    std::size_t table_size = 0;
    std::vector<int> order;  ///< allowed degrees by GPU-seconds per step, then step time, then width
    tick best_cost = 0;      ///< k x T(k) of order.front()
    std::uint64_t checked = 0;  ///< epoch of the last check against the runtime's shape table
    bool valid = false;
  };

  /// Per-shape degree order, cached by the runtime's shape index (checked against the shape so that a
  /// policy object reused with another runtime does not read stale data).
  const shape_info& info(const scheduler_view& v, request_handle h) {
    const std::uint32_t idx = v.request(h).shape;
    const shape_costs& c = v.costs(h);
    if (idx >= shapes_.size()) shapes_.resize(idx + 1);
    shape_info& s = shapes_[idx];
    if (s.valid && s.checked == epoch_) return s;
    s.checked = epoch_;
    if (!s.valid || s.table_size != c.step.size() || !(s.shape == c.shape)) {
      s.shape = c.shape;
      s.table_size = c.step.size();
      s.order.assign(c.allowed_degrees.begin(), c.allowed_degrees.end());
      std::sort(s.order.begin(), s.order.end(), [&](int a, int b) {
        const tick ca = c.step_time(a) * a, cb = c.step_time(b) * b;
        if (ca != cb) return ca < cb;
        if (c.step_time(a) != c.step_time(b)) return c.step_time(a) < c.step_time(b);
        return a < b;
      });
      s.best_cost = s.order.empty() ? 0 : c.step_time(s.order.front()) * s.order.front();
      s.valid = true;
    }
    return s;
  }

  /// When h counts as starving: arrival + the tighter of the two thresholds (never when both are off).
  tick aged_at(const scheduler_view& v, request_handle h) {
    const auto& r = v.request(h);
    tick at = never;
    if (opt_.starvation > 0) at = add_sat(r.spec.arrival, opt_.starvation);
    if (opt_.starvation_factor > 0) {
      const int e = info(v, h).order.front();
      const auto& c = v.costs(h);
      const auto ee = static_cast<std::size_t>(e);
      const double alone = static_cast<double>(c.encode[ee] + static_cast<tick>(r.spec.steps) * c.step[ee] + c.decode[ee]);
      const double limit = opt_.starvation_factor * alone;
      if (limit < 4e18) at = std::min(at, add_sat(r.spec.arrival, static_cast<tick>(limit)));
    }
    return at;
  }

  key make_key(const scheduler_view& v, request_handle h) {
    const auto& r = v.request(h);
    const int e = info(v, h).order.front();
    key k{h, false, v.remaining_time(h, e) * e, r.has_deadline() ? r.deadline() : never};
    if (aged_at(v, h) < v.now()) {
      k.aged = true;
      k.primary = r.spec.arrival;
    }
    return k;
  }

  [[nodiscard]] bool queued(request_handle h) const { return queue_.contains(h); }

  void enqueue(const scheduler_view& v, request_handle h) {
    if (h >= aging_pushed_.size()) aging_pushed_.resize(static_cast<std::size_t>(h) + 1, 0);
    const key k = make_key(v, h);
    queue_.insert(h, queue_key{k.aged, k.primary, k.deadline});  // re-files it when queued
    if (!k.aged && !aging_pushed_[h]) {  // once per request: the time it starts to starve
      const tick at = aged_at(v, h);
      if (at != never) aging_.emplace(at, h);
      aging_pushed_[h] = 1;
    }
  }

  void dequeue(request_handle h) { queue_.erase(h); }

  void rebuild(const scheduler_view& v) {
    queue_.clear();
    for (request_handle h : v.waiting()) enqueue(v, h);
    lost_seen_ = v.lost_devices().count();
    stale_ = false;
  }

  /// Tasks covering the next chunk_steps denoising steps, with the encode before and the decode after.
  [[nodiscard]] std::uint32_t chunk_tasks(const scheduler_view& v, request_handle h) const {
    const auto& r = v.request(h);
    std::uint32_t n = 0;
    int steps = 0;
    for (std::uint32_t p = r.position; p < r.tasks_total(); ++p) {
      const task_kind kind = r.trajectory->task_at(p).kind;
      if (kind == task_kind::step) {
        if (steps == opt_.chunk_steps) break;
        ++steps;
      }
      ++n;
    }
    return std::max<std::uint32_t>(1, n);
  }

  throughput_first_options opt_;
  std::vector<shape_info> shapes_;
  request_index<queue_key> queue_;               // waiting requests, best first (no allocation once warm)
  std::vector<unsigned char> aging_pushed_;      // by handle
  std::priority_queue<std::pair<tick, request_handle>, std::vector<std::pair<tick, request_handle>>, std::greater<>> aging_;
  std::size_t lost_seen_ = 0;
  bool stale_ = false;
  std::uint64_t epoch_ = 0;  // decide() calls: shape caches check their key once per call
  std::vector<pick> picks_;
  device_set available_;
};

static_assert(Policy<throughput_first_policy> && NamedPolicy<throughput_first_policy>);

/// Registers "throughput-first" (parameters chunk_steps, max_inefficiency, starvation_factor,
/// starvation_s).
inline void register_throughput_first(policy_registry& r) {
  r.add("throughput-first", "",
        "most completed requests per GPU-second: each request at its most GPU-efficient degree, shortest "
        "remaining work first, no idle device while work waits",
        [](policy_params& p) -> any_policy {
          throughput_first_options o;
          o.chunk_steps = static_cast<int>(p.get_int("chunk_steps", 1, 1, 1'000'000));
          o.max_inefficiency = p.get_double("max_inefficiency", 1.25, 1.0, 1e6);
          o.starvation_factor = p.get_double("starvation_factor", 10.0, 0.0, 1e9);
          o.starvation = to_ticks(p.get_double("starvation_s", 0.0, 0.0, 1e9)).value_or(0);
          return throughput_first_policy(o);
        });
}

}  // namespace paraflex
