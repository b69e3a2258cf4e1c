// paraflex/policy/round_based.hpp - TetriServe's round-based step-level scheduling (arXiv 2510.01565).
//
// Time is cut into rounds of length tau. At each round boundary every request that is waiting, or
// whose assignment ends within the round, gets a degree and a number of tasks that fit in the round:
//
//   tau     round_s seconds when given, else round_steps x a reference step time: the round_quantile
//           (default 0.5: the median) of the step times of the active requests - waiting ones at the
//           degree Step A picks, running ones at their current degree.
//   Step A  per request with a deadline: the allocation of its remaining steps that meets the deadline
//           with the fewest GPU-seconds sum k*T(k), possibly mixing two degrees: as many steps as
//           possible at the cheaper degree and only as many at the faster one as the slack needs.
//           The two degrees are adjacent vertices of the lower convex hull of (T(k), k*T(k)) over the
//           allowed degrees that fit the usable devices (efficient_degrees; for the continuous problem
//           a mix of non-adjacent degrees is never cheaper). The faster steps run first - the round
//           being planned is the one that holds the wide group; later rounds are not promised - and a
//           round at the faster degree runs the whole round at it (the group is reserved anyway).
//           No allocation meets the deadline -> the request is late.
//   Step B  group knapsack over the requests with deadlines that are not late, capacity N = usable
//           GPUs free now or freeing within the round: options {none, run the Step-A degree this
//           round}; an option "survives" if next_round_start + (remaining steps after it) x fastest
//           step time <= deadline (one that finishes inside the round: if it finishes in time).
//           Maximise the number of survivors, then use the fewest GPUs: exact DP, O(R * N * options)
//           (group_knapsack), over the requests whose survival depends on running this round.
//   then    requests with slack that the DP left out run anyway on leftover GPUs, most urgent first
//           (work conservation); late requests and requests without a deadline get best effort after
//           them, in arrival order: late ones at most 1 GPU (their smallest allowed degree), ones
//           without a deadline their most GPU-efficient degree; scale-up (scale_up=on) widens chosen
//           requests that are not late, most urgent first, where a wider degree is strictly faster.
//   place   a request keeping its degree stays on its devices (place(): no migration); the others
//           are placed widest first. A chosen request whose devices are still busy (they free within
//           the round) launches when they free, with the tasks that still fit in the round.
//
// Each chosen request gets one assignment of n tasks: every task whose cost still fits in what is left
// of the round, at least one denoising step, and zero-cost tasks (encode/decode in the profile model)
// always ride along, so a request never waits a round for a free decode. A task of this round that
// fails is retried within the round on its planned degree.
//
// Rounds are driven by decision_buffer::wake_at, not PeriodicPolicy: tau follows the active mix of
// shapes (the runtime's tick_period() is fixed at construction), an idle cluster does not tick, and a
// request that arrives at an idle cluster starts a round at once instead of waiting up to tau.
// With a fixed tau (round_s), rounds that cannot launch anything (fewer devices free or freeing in
// them than any waiting request needs) are slept through: the policy wakes at the first boundary
// whose round can, with the same rounds and launches as if it had woken at each (skip_idle_rounds).
//
// Mid-round arrivals (mid_round parameter): `wait` (TetriServe, default) - they, and requests whose
// assignment ended early, wait for the next boundary; `admit` - they are admitted at once onto GPUs
// that are idle and not promised to the round's plan, with the tasks that fit in the rest of the round.
//
// Selective batching (TetriServe section 5; max_batch > 1): when a planned request launches on g,
// waiting requests outside the plan whose state is on g and that share its shape ride along in one
// batched step, as long as no member would miss its deadline (policy/batching.hpp). The planned
// request then stays in the plan and launches again at its next step boundary. Off by default: on
// the large-image mixes of docs/results.md it costs up to 7 points (a batch lengthens the planned
// request's step for little saving); on small-image traffic it gains (results.md section D).
//
// Parameters ("round-based:KEY=VALUE"): round_steps (5), round_s (0 = adaptive tau), round_quantile
// (0.5), scale_up (on|off), mid_round (wait|admit), max_batch (1 = off), batch_margin (0.1). The policy
// never drops a request.
//
// Cost: the policy files its requests by deadline (and by age when late or without one) as they
// arrive, so a round boundary looks at no more than the C = max(256, 4 x G) most urgent waiting
// requests of each kind (and every one whose deadline is at stake in the round) instead of all W of
// them: O(C (log C + H)) for hulls of H degrees, plus the DP over the requests whose survival depends
// on this round. Below C waiting requests per kind this is exactly TetriServe's plan over all of
// them; above it, the rest (less urgent than C others that already compete for G GPUs) waits for a
// later round and counts in tau's reference step at its static degree (a tally of those kept in
// sorted blocks: the quantile costs O(W / 512 + 512) however many distinct times). Of the late requests and
// those without a deadline a round first looks at only G + 1 of each, and at C only when its plan
// reads past those (same plan; see start_round): under heavy overload nearly every waiting request
// is late. A call inside a round only launches the plan's pending requests (and, with admit, looks
// at the same C most urgent ones).
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "paraflex/core/handle_set.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/policy/batching.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/policy/degree_candidates.hpp"
#include "paraflex/policy/placement.hpp"
#include "paraflex/policy/registry.hpp"
#include "paraflex/policy/request_index.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

// ------------------------------------------------------------------------------------------------
// Building blocks, public so that tests and other policies can use them.

/// The allowed degrees (up to max_degree) of a shape worth using, cheapest (fewest GPU-seconds per
/// step) first and fastest last: the lower convex hull of the points (T(k), k*T(k)). A degree slower
/// than the cheapest one, or above the hull, is never part of a GPU-second-optimal allocation.
[[nodiscard]] inline std::vector<int> efficient_degrees(const shape_costs& c, int max_degree = 1 << 30) {
  struct point {
    int k;
    tick t;
    tick cost;
  };
  std::vector<point> pts;
  for (int k : c.allowed_degrees) {
    if (k <= max_degree) pts.push_back({k, c.step_time(k), c.step_time(k) * k});
  }
  if (pts.empty()) return {};
  // Cheapest degree (ties: the faster, then the narrower).
  const point cheapest = *std::min_element(pts.begin(), pts.end(), [](const point& a, const point& b) {
    if (a.cost != b.cost) return a.cost < b.cost;
    if (a.t != b.t) return a.t < b.t;
    return a.k < b.k;
  });
  std::erase_if(pts, [&](const point& p) { return p.t > cheapest.t || (p.t == cheapest.t && p.k != cheapest.k); });
  // Fastest first; at equal time keep the cheapest only.
  std::sort(pts.begin(), pts.end(), [](const point& a, const point& b) {
    if (a.t != b.t) return a.t < b.t;
    if (a.cost != b.cost) return a.cost < b.cost;
    return a.k < b.k;
  });
  pts.erase(std::unique(pts.begin(), pts.end(), [](const point& a, const point& b) { return a.t == b.t; }), pts.end());
  // Lower hull, x = step time ascending (monotone chain); it ends at the cheapest point.
  std::vector<point> hull;
  auto cross = [](const point& o, const point& a, const point& b) {
    // (a - o) x (b - o) in 128-bit-safe long double: ticks x ticks can exceed 2^63 for long steps.
    return static_cast<long double>(a.t - o.t) * static_cast<long double>(b.cost - o.cost) -
           static_cast<long double>(a.cost - o.cost) * static_cast<long double>(b.t - o.t);
  };
  for (const point& p : pts) {
    while (hull.size() >= 2 && cross(hull[hull.size() - 2], hull.back(), p) <= 0) hull.pop_back();
    hull.push_back(p);
  }
  std::vector<int> out;
  for (auto it = hull.rbegin(); it != hull.rend(); ++it) out.push_back(it->k);
  return out;
}

/// Step A's answer for one request: `steps - fast_steps` steps at slow_degree and fast_steps at
/// fast_degree (fast_steps == 0: one degree only).
struct mixed_allocation {
  int slow_degree = 0;
  int fast_degree = 0;
  int fast_steps = 0;
  int steps = 0;
  tick time = 0;         ///< total time, stages included
  tick device_time = 0;  ///< GPU-microseconds: sum over steps of k x T(k), stages included
  bool feasible = false; ///< time <= budget; false: the fastest degree alone, which misses the budget

  /// The degree of the next round: the faster steps go first.
  [[nodiscard]] int round_degree() const noexcept { return fast_steps > 0 ? fast_degree : slow_degree; }
};

/// The allocation of `steps` denoising steps (plus the encode when `with_encode`, and the decode) that
/// finishes within `budget` with the fewest GPU-seconds, mixing at most two adjacent degrees of `hull`
/// (efficient_degrees(c)). Stage times are charged at the more expensive of the two degrees.
[[nodiscard]] inline mixed_allocation cheapest_allocation(const shape_costs& c, std::span<const int> hull, int steps,
                                                          bool with_encode, tick budget) {
  mixed_allocation a;
  if (hull.empty()) return a;
  auto stages = [&](int k) {
    const auto kk = static_cast<std::size_t>(k);
    return (with_encode ? c.encode[kk] : 0) + c.decode[kk];
  };
  auto single = [&](int k, bool ok) {
    mixed_allocation s;
    s.slow_degree = s.fast_degree = k;
    s.steps = steps;
    s.time = stages(k) + steps * c.step_time(k);
    s.device_time = s.time * k;
    s.feasible = ok;
    return s;
  };
  const int cheapest = hull.front();
  if (stages(cheapest) + steps * c.step_time(cheapest) <= budget) return single(cheapest, true);
  for (std::size_t j = 1; j < hull.size(); ++j) {
    const int hi = hull[j];
    if (stages(hi) + steps * c.step_time(hi) > budget) continue;
    const int lo = hull[j - 1];
    const tick t_lo = c.step_time(lo);
    const tick t_hi = c.step_time(hi);
    const tick st = std::max(stages(lo), stages(hi));
    // Fewest steps at `hi` such that st + s*t_hi + (steps - s)*t_lo <= budget.
    const tick excess = st + steps * t_lo - budget;  // > 0, else `lo` alone would fit
    tick s = excess <= 0 ? 0 : (excess + (t_lo - t_hi) - 1) / (t_lo - t_hi);
    s = std::clamp<tick>(s, 0, steps);
    mixed_allocation m;
    m.slow_degree = lo;
    m.fast_degree = hi;
    m.fast_steps = static_cast<int>(s);
    m.steps = steps;
    m.time = st + s * t_hi + (steps - s) * t_lo;
    m.device_time = st * std::max(lo, hi) + s * t_hi * hi + (steps - s) * t_lo * lo;
    m.feasible = m.time <= budget;
    if (!m.feasible || m.fast_steps == steps) return single(hi, true);  // rounding: the fast degree alone
    return m;
  }
  return single(hull.back(), false);
}

/// Exact group knapsack: each item takes exactly one of its options - "none" (weight 0, value
/// none_value) or one added with add_option - within `capacity`; maximises the total value, then
/// minimises the total weight, then prefers "none" and earlier options (deterministic).
/// O(items x capacity x options) time, items x capacity choice table. Buffers are reused.
class group_knapsack {
 public:
  void clear() {
    first_.clear();
    none_value_.clear();
    options_.clear();
    result_.clear();
  }
  /// Starts a new item; returns its index.
  std::size_t add_item(std::int64_t none_value = 0) {
    first_.push_back(options_.size());
    none_value_.push_back(none_value);
    return first_.size() - 1;
  }
  /// Adds an option to the last item.
  void add_option(int weight, std::int64_t value) { options_.push_back({std::max(0, weight), value}); }
  [[nodiscard]] std::size_t items() const noexcept { return first_.size(); }

  void solve(int capacity) {
    capacity = std::max(0, capacity);
    const auto width = static_cast<std::size_t>(capacity) + 1;
    const std::size_t n = first_.size();
    value_.assign(width, 0);
    weight_.assign(width, 0);
    choice_.assign(n * width, 0);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t begin = first_[i];
      const std::size_t end = i + 1 < n ? first_[i + 1] : options_.size();
      next_value_.resize(width);
      next_weight_.resize(width);
      for (std::size_t c = 0; c < width; ++c) {
        std::int64_t best_v = value_[c] + none_value_[i];
        int best_w = weight_[c];
        std::uint32_t best_o = 0;
        for (std::size_t o = begin; o < end; ++o) {
          const auto w = static_cast<std::size_t>(options_[o].weight);
          if (w > c) continue;
          const std::int64_t v = value_[c - w] + options_[o].value;
          const int wt = weight_[c - w] + options_[o].weight;
          if (v > best_v || (v == best_v && wt < best_w)) {
            best_v = v;
            best_w = wt;
            best_o = static_cast<std::uint32_t>(o - begin + 1);
          }
        }
        next_value_[c] = best_v;
        next_weight_[c] = best_w;
        choice_[i * width + c] = best_o;
      }
      value_.swap(next_value_);
      weight_.swap(next_weight_);
    }
    best_value_ = value_[width - 1];
    best_weight_ = weight_[width - 1];
    result_.assign(n, -1);
    std::size_t c = width - 1;
    for (std::size_t i = n; i-- > 0;) {
      const std::uint32_t o = choice_[i * width + c];
      if (o == 0) continue;
      result_[i] = static_cast<int>(o - 1);
      c -= static_cast<std::size_t>(options_[first_[i] + o - 1].weight);
    }
  }
  /// After solve(): the option chosen for item i (-1 = none).
  [[nodiscard]] int choice(std::size_t i) const { return result_.at(i); }
  [[nodiscard]] std::int64_t best_value() const noexcept { return best_value_; }
  [[nodiscard]] int best_weight() const noexcept { return best_weight_; }

 private:
  struct option {
    int weight;
    std::int64_t value;
  };
  std::vector<std::size_t> first_;
  std::vector<std::int64_t> none_value_;
  std::vector<option> options_;
  std::vector<std::int64_t> value_, next_value_;
  std::vector<int> weight_, next_weight_;
  std::vector<std::uint32_t> choice_;
  std::vector<int> result_;
  std::int64_t best_value_ = 0;
  int best_weight_ = 0;
};

namespace round_based_detail {

/// Integers (request handles, step times) in increasing order, as std::sort would leave them, by an
/// LSD radix sort: 8 bits a pass, a pass where every value has the same byte skipped, `scratch` kept
/// between calls. Short lists, and any negative value, go to std::sort.
template <class T>
void radix_sort(std::vector<T>& a, std::vector<T>& scratch) {
  static_assert(std::is_integral_v<T> && sizeof(T) <= 8);
  bool short_or_negative = a.size() < 256;
  if constexpr (std::is_signed_v<T>) short_or_negative = short_or_negative || *std::min_element(a.begin(), a.end()) < 0;
  if (short_or_negative) {
    std::sort(a.begin(), a.end());
    return;
  }
  std::uint64_t any = 0, all = ~std::uint64_t{0};
  for (T x : a) any |= static_cast<std::uint64_t>(x), all &= static_cast<std::uint64_t>(x);
  scratch.resize(a.size());
  for (unsigned shift = 0; shift < 8 * sizeof(T); shift += 8) {
    if ((((any ^ all) >> shift) & 0xFFu) == 0) continue;
    std::array<std::uint32_t, 257> start{};
    for (T x : a) ++start[((static_cast<std::uint64_t>(x) >> shift) & 0xFFu) + 1];
    for (std::size_t i = 0; i < 256; ++i) start[i + 1] += start[i];
    for (T x : a) scratch[start[(static_cast<std::uint64_t>(x) >> shift) & 0xFFu]++] = x;
    a.swap(scratch);
  }
}

/// A work-conservation rank: class (0 urgent, 1 late, 2 no deadline), deadline (class 0), handle.
struct order_key {
  int cls = 0;
  tick deadline = 0;
  request_handle h = 0;
  std::uint32_t index = 0;  ///< into the candidates
  friend bool operator<(const order_key& a, const order_key& b) noexcept {
    return a.cls != b.cls ? a.cls < b.cls : a.deadline != b.deadline ? a.deadline < b.deadline : a.h < b.h;
  }
};

/// Keys read in increasing order but sorted only as far as they are read (a prefix that doubles):
/// O(n) when the reader stops early, O(n log n) at worst. The keys must be distinct.
template <class T>
class sorted_prefix {
 public:
  std::vector<T> keys;
  void reset() noexcept {
    keys.clear();
    sorted_ = 0;
  }
  [[nodiscard]] std::size_t size() const noexcept { return keys.size(); }
  [[nodiscard]] const T& at(std::size_t i) {
    if (i >= sorted_) extend(i);
    return keys[i];
  }

 private:
  void extend(std::size_t i) {
    const std::size_t end = std::min(keys.size(), std::max(i + 1, sorted_ + std::max<std::size_t>(32, sorted_)));
    const auto first = keys.begin() + static_cast<std::ptrdiff_t>(sorted_);
    const auto last = keys.begin() + static_cast<std::ptrdiff_t>(end);
    if (end < keys.size()) std::nth_element(first, last, keys.end());
    std::sort(first, last);
    sorted_ = end;
  }
  std::size_t sorted_ = 0;
};

/// A multiset of step times, stored as (time, requests) pairs in sorted blocks of at most
/// `max_block` pairs. Filing or unfiling a request costs O(log blocks + max_block), and the quantile
/// of this set with a few times added and removed (`nth`) costs O(blocks + max_block + added +
/// removed). A round asks for that quantile every time, and random shapes give nearly every request
/// its own step time, so one flat sorted list would make every round walk every distinct time.
class step_time_tally {
 public:
  static constexpr std::size_t max_block = 512;

  /// Adds `n` requests of step time `value` (n < 0 removes them); a time left with none is dropped.
  /// Removing more requests of a time than were added is a precondition violation.
  void add(tick value, std::int64_t n) {
    if (n == 0) return;
    if (blocks_.empty()) {
      blocks_.emplace_back();
      last_.push_back(value);
      totals_.push_back(0);
    }
    // The first block whose last time is >= value, or the last block for a new largest time.
    auto b = static_cast<std::size_t>(std::lower_bound(last_.begin(), last_.end(), value) - last_.begin());
    if (b == blocks_.size()) --b;
    auto& block = blocks_[b];
    auto it = std::lower_bound(block.begin(), block.end(), value, [](const auto& e, tick x) { return e.first < x; });
    if (it == block.end() || it->first != value) it = block.insert(it, {value, 0});
    it->second += n;
    totals_[b] += n;
    total_ += n;
    assert(it->second >= 0 && "step_time_tally: removed a time more often than it was added");
    if (it->second == 0) block.erase(it);
    if (block.empty()) {
      if (blocks_.size() > 1) {
        blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(b));
        last_.erase(last_.begin() + static_cast<std::ptrdiff_t>(b));
        totals_.erase(totals_.begin() + static_cast<std::ptrdiff_t>(b));
      }
      return;
    }
    last_[b] = block.back().first;
    if (block.size() > max_block) split(b);
  }
  void clear() noexcept {
    blocks_.clear();
    last_.clear();
    totals_.clear();
    total_ = 0;
  }
  /// Requests tallied.
  [[nodiscard]] std::int64_t total() const noexcept { return total_; }
  /// Distinct times tallied.
  [[nodiscard]] std::size_t distinct() const noexcept {
    std::size_t n = 0;
    for (const auto& block : blocks_) n += block.size();
    return n;
  }

  /// The time of rank `at` (0-based, ties counted) in this multiset plus `plus` minus `minus`, both
  /// sorted; `minus` must be part of this multiset. Requires 0 <= at < total() + |plus| - |minus|.
  [[nodiscard]] tick nth(std::int64_t at, std::span<const tick> plus, std::span<const tick> minus) const {
    std::int64_t below = 0;  // of the combined multiset, below the current block
    std::size_t p = 0, m = 0;
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      std::size_t p_end = p, m_end = m;
      while (p_end < plus.size() && plus[p_end] <= last_[b]) ++p_end;
      while (m_end < minus.size() && minus[m_end] <= last_[b]) ++m_end;
      const std::int64_t through = below + totals_[b] + static_cast<std::int64_t>(p_end - p) - static_cast<std::int64_t>(m_end - m);
      if (through > at) return nth_in(blocks_[b], at - below, plus.subspan(p, p_end - p), minus.subspan(m, m_end - m));
      below = through;
      p = p_end;
      m = m_end;
    }
    assert(static_cast<std::size_t>(at - below) < plus.size() - p && "step_time_tally::nth: rank out of range");
    return plus[p + static_cast<std::size_t>(at - below)];
  }

 private:
  using block_type = std::vector<std::pair<tick, std::int64_t>>;
  // Merges one block with the added and removed times that fall in it, in order.
  [[nodiscard]] static tick nth_in(const block_type& block, std::int64_t at, std::span<const tick> plus, std::span<const tick> minus) {
    std::size_t e = 0, p = 0, m = 0;
    std::int64_t rank = 0;
    for (;;) {
      std::int64_t count = 0;
      tick value = 0;
      if (p < plus.size() && (e == block.size() || plus[p] <= block[e].first)) {
        value = plus[p++];
        count = 1;
      } else {
        assert(e < block.size() && "step_time_tally::nth: rank out of range");
        value = block[e].first;
        count = block[e++].second;
        while (m < minus.size() && minus[m] == value) ++m, --count;
      }
      if (rank + count > at) return value;
      rank += count;
    }
  }
  void split(std::size_t b) {
    const auto half = static_cast<std::ptrdiff_t>(blocks_[b].size() / 2);
    block_type upper(blocks_[b].begin() + half, blocks_[b].end());
    blocks_[b].erase(blocks_[b].begin() + half, blocks_[b].end());
    std::int64_t upper_total = 0;
    for (const auto& e : upper) upper_total += e.second;
    const auto at = static_cast<std::ptrdiff_t>(b + 1);
    last_.insert(last_.begin() + at, upper.back().first);
    totals_.insert(totals_.begin() + at, upper_total);
    totals_[b] -= upper_total;
    last_[b] = blocks_[b].back().first;
    blocks_.insert(blocks_.begin() + at, std::move(upper));
  }
  std::vector<block_type> blocks_;
  std::vector<tick> last_;            // by block: its largest time (what add() and nth() search)
  std::vector<std::int64_t> totals_;  // by block: its requests
  std::int64_t total_ = 0;
};


[[nodiscard]] inline tick task_cost(const shape_costs& c, task_kind kind, int k) noexcept {
  const auto kk = static_cast<std::size_t>(k);
  switch (kind) {
    case task_kind::encode: return c.encode[kk];
    case task_kind::decode: return c.decode[kk];
    default: return c.step[kk];
  }
}

/// Time of everything left from task position `pos` on k devices.
[[nodiscard]] inline tick time_from(const request_record& r, const shape_costs& c, std::uint32_t pos, int k) noexcept {
  if (pos >= r.tasks_total()) return 0;
  const auto kk = static_cast<std::size_t>(k);
  tick t = static_cast<tick>(r.trajectory->steps_remaining(pos)) * c.step[kk] + c.decode[kk];
  if (pos == 0) t += c.encode[kk];
  return t;
}

struct fit {
  std::uint32_t tasks = 0;
  tick time = 0;
};

/// Tasks from `pos` on k devices that fit in `budget`: at least one denoising step, and zero-cost
/// tasks always (a free decode never waits for the next round).
[[nodiscard]] inline fit fit_tasks(const request_record& r, const shape_costs& c, std::uint32_t pos, int k, tick budget) {
  fit f;
  bool stepped = false;
  for (std::uint32_t p = pos; p < r.tasks_total(); ++p) {
    const task_kind kind = r.trajectory->task_at(p).kind;
    const tick cost = task_cost(c, kind, k);
    if (stepped && cost > 0 && f.time + cost > budget) break;
    f.time += cost;
    ++f.tasks;
    if (kind == task_kind::step) stepped = true;
  }
  return f;
}

/// Per-shape cache of efficient_degrees over the usable devices, keyed by the runtime's shape index
/// and checked against the shape once per policy call (`epoch`), so a policy object reused with
/// another runtime recomputes instead of reading stale data. Recomputed when devices are lost.
class hull_cache {
 public:
  const std::vector<int>& get(const scheduler_view& v, request_handle h, std::uint64_t epoch) { return entry_of(v, h, epoch).hull; }
  /// The longest step of h's shape at any allowed degree (0 when none is allowed), found with the hull.
  tick longest_step(const scheduler_view& v, request_handle h, std::uint64_t epoch) { return entry_of(v, h, epoch).longest_step; }

 private:
  struct entry;
  entry& entry_of(const scheduler_view& v, request_handle h, std::uint64_t epoch) {
    const std::uint32_t idx = v.request(h).shape;
    if (idx >= entries_.size()) entries_.resize(idx + 1);
    entry& e = entries_[idx];
    if (e.valid && e.checked == epoch) return e;
    e.checked = epoch;
    const shape_costs& c = v.costs(h);
    const int usable = v.usable_device_count();
    if (!e.valid || e.table_size != c.step.size() || e.usable != usable || !(e.shape == c.shape)) {
      e.shape = c.shape;
      e.table_size = c.step.size();
      e.usable = usable;
      e.hull = efficient_degrees(c, usable);
      e.longest_step = 0;
      for (int k : c.allowed_degrees) e.longest_step = std::max(e.longest_step, c.step_time(k));
      e.valid = true;
    }
    return e;
  }
  struct entry {
    request_shape shape;
    std::size_t table_size = 0;
    std::vector<int> hull;
    tick longest_step = 0;
    int usable = 0;
    std::uint64_t checked = 0;
    bool valid = false;
  };
  std::vector<entry> entries_;
};

}  // namespace round_based_detail

// ------------------------------------------------------------------------------------------------

struct round_based_options {
  int round_steps = 5;           ///< tau = round_steps x reference step time (when round == 0)
  tick round = 0;                ///< fixed tau in ticks; 0 = adaptive
  bool scale_up = true;          ///< widen chosen requests onto leftover GPUs where strictly faster
  bool admit_mid_round = false;  ///< mid-round arrivals take idle GPUs at once (else: next round)
  double reference_quantile = 0.5;  ///< reference step = this quantile of the active step times
  int max_batch = 1;             ///< > 1: requests outside the plan may share a planned step (policy/batching.hpp)
  double batch_margin = 0.1;     ///< a batch keeps every member within (1 - margin) of its time left
  /// With a fixed round: sleep through rounds that cannot launch anything (same schedule, fewer
  /// calls; see skip_idle_rounds). false wakes at every boundary: what tests compare against.
  bool skip_idle_rounds = true;
  /// Look at late and best-effort requests, and at those whose deadline is not at stake in the
  /// round, only as far as a round's plan reads them (same plan; see start_round). false looks at
  /// collect_cap() of each file at every round: what tests compare against.
  bool read_late_as_needed = true;
};

class round_based_policy {
 public:
  round_based_policy() = default;
  explicit round_based_policy(round_based_options o) : opt_(o) {
    opt_.round_steps = std::max(1, opt_.round_steps);
    opt_.round = std::max<tick>(0, opt_.round);
    opt_.reference_quantile = std::clamp(opt_.reference_quantile, 0.0, 1.0);
  }

  [[nodiscard]] std::string name() const { return "round-based"; }
  [[nodiscard]] const round_based_options& options() const noexcept { return opt_; }
  /// The current round (start, end); end <= start before the first round. While idle rounds are
  /// skipped (fixed round_s, too few devices free in them: see skip_idle_rounds), end is the
  /// boundary of the next round that can launch something and start that of the last one that ran.
  [[nodiscard]] tick round_start() const noexcept { return round_start_; }
  [[nodiscard]] tick round_end() const noexcept { return round_end_; }
  [[nodiscard]] std::uint64_t rounds() const noexcept { return rounds_; }

  /// A failed task of a request this round launched is retried within the round on the devices the
  /// plan gave it (the runtime calls decide right after), instead of idling them until the boundary.
  void on_task_end(const scheduler_view& v, request_handle h, bool ok) {
    catch_up(v.now());
    if (ok || h >= launched_round_.size() || launched_round_[h] != rounds_ || is_pending(h)) return;
    if (v.request(h).ended()) return;
    pending_.push_back({h, launched_degree_[h], 0});
    set_pending(h, true);
  }

  /// The hooks keep the waiting requests filed by urgency between rounds (see "Cost" above), so a
  /// round looks at the most urgent ones instead of sorting them all.
  void on_arrival(const scheduler_view& v, request_handle h) {
    catch_up(v.now());
    file(v, h);
  }
  void on_request_end(const scheduler_view& v, request_handle h) {
    catch_up(v.now());  // the last waiting request may be gone: no call may follow (skip_idle_rounds)
    unfile(h);
  }

  void decide(const scheduler_view& v, decision_buffer& out) {
    ++calls_;
    catch_up(v.now());
    if (!files_in_sync(v)) refile(v);
    if (rounds_ == 0 || v.now() >= round_end_) start_round(v, out);
    else mid_round(v, out);
    out.wake_at(round_end_);
  }

 private:
  using fit = round_based_detail::fit;

  struct candidate {
    request_handle h = 0;
    tick start = 0;              ///< when it can start: now (waiting) or its running_until (running)
    std::uint32_t pos = 0;       ///< task position at start
    tick deadline = never;
    int degree = 0;              ///< degree for this round
    bool late = false;           ///< has a deadline that no allocation can meet any more
    bool survive_run = false;
    bool survive_none = false;
    bool chosen = false;
  };
  struct planned {
    request_handle h;
    int degree;
    std::uint64_t batched_call = 0;  ///< the call in which it led a batch (or its recruits' encodes): done for that call
  };

  void start_round(const scheduler_view& v, decision_buffer& out) {
    const tick now = v.now();
    ++rounds_;
    for (const auto& p : pending_) set_pending(p.h, false);
    pending_.clear();
    if (skip_idle_rounds(v)) return;
    // A late request (deadline passed), a best-effort one or one whose deadline is not at stake in
    // the round (outside the band, see collect_waiting) has one degree, the one its step-time
    // sample was filed at, and is never an item of Step B's knapsack, so looking at it changes no
    // sample (tau, capacity and survival stay the same), only whether work conservation can choose
    // it - and each one chosen takes a device. So usable devices + 1 of each file usually cover
    // what a round reads; a plan that reads past the last one looked at in a file with devices left
    // is made again over collect_cap() of each, as every round did before. 200,000 requests on 8
    // GPUs, most of them late: 258 -> ~10 looked at a round.
    const std::size_t first_look = opt_.read_late_as_needed ? static_cast<std::size_t>(v.usable_device_count()) + 1 : collect_cap(v);
    for (std::size_t look = first_look;; look = collect_cap(v)) {
      if (plan_round(v, now, look)) break;
    }
    for (const auto& c : cands_) {
      if (!c.chosen) continue;
      pending_.push_back({c.h, c.degree, 0});
      set_pending(c.h, true);
    }
    available_ = v.free_devices();  // copy-assigned into a kept buffer: no allocation once warm
    launch_pending(v, out, available_);
  }

  // Steps A and B, work conservation and scale-up over the requests collect_waiting(look) finds;
  // false when the plan read the last request it looked at in a file that has more (start_round
  // then plans again looking at all: the same plan as if it had from the start).
  bool plan_round(const scheduler_view& v, const tick now, const std::size_t look) {
    using namespace round_based_detail;
    cands_.clear();
    samples_.clear();
    looked_or_running_.clear();
    collect_waiting(v, false, look);
    for (request_handle h : collected_) cands_.push_back(make_candidate(v, h, now, v.request(h).position));
    // The reference step's samples: a running request at its degree and a request looked at at its
    // Step-A degree, each in place of the static sample it is filed with. Where the two are equal
    // the tally already counts it, so neither is listed: most requests looked at (late, best effort)
    // plan at their static degree.
    for (request_handle h : v.running()) {
      const auto& r = v.request(h);
      const bool filed = h < filed_.size() && filed_[h].kind != file_kind::none;
      const tick at_degree = r.run_group.empty() ? 0 : v.step_time(h, static_cast<int>(r.run_group.size()));
      if (filed && !r.run_group.empty() && at_degree == filed_[h].sample) continue;
      if (filed) looked_or_running_.push_back(filed_[h].sample);
      if (!r.run_group.empty()) samples_.push_back(at_degree);
    }
    for (const auto& c : cands_) {
      const tick at_degree = v.step_time(c.h, c.degree);
      if (at_degree == filed_[c.h].sample) continue;
      samples_.push_back(at_degree);
      looked_or_running_.push_back(filed_[c.h].sample);
    }
    const tick reference = reference_step(v);
    const tick tau = opt_.round > 0 ? opt_.round : reference * opt_.round_steps;
    const tick window = tau;  // devices that free during the round are the round's capacity too
    round_start_ = now;
    round_end_ = add_sat(now, std::max<tick>(1, tau));

    // Requests whose assignment ends within the window plan with the others (their devices too).
    for (request_handle h : v.running()) {
      const auto& r = v.request(h);
      const std::uint32_t after = r.position + r.chunk_left;
      if (r.running_until <= now + window && after < r.tasks_total()) {
        cands_.push_back(make_candidate(v, h, std::max(now, r.running_until), after));
      }
    }
    int capacity = 0;
    for (int d = 0; d < v.device_count(); ++d) {
      const auto id = static_cast<device_id>(d);
      if (v.lost_devices().test(id)) continue;
      if (v.free_devices().test(id) || v.busy_until(id) <= now + window) ++capacity;
    }

    // Survival of each option (Step B's test).
    for (auto& c : cands_) {
      if (c.deadline == never || c.late) continue;
      const auto& r = v.request(c.h);
      const auto& costs = v.costs(c.h);
      const auto& hull = hulls_.get(v, c.h, calls_);
      const int fastest = hull.empty() ? costs.fastest_degree : hull.back();  // among usable devices
      const fit f = fit_tasks(r, costs, c.pos, c.degree, std::max<tick>(0, round_end_ - c.start));
      const std::uint32_t after = c.pos + f.tasks;
      const tick end = c.start + f.time;
      if (after >= r.tasks_total()) {
        c.survive_run = end <= c.deadline;
      } else {
        c.survive_run = add_sat(std::max(round_end_, end), time_from(r, costs, after, fastest)) <= c.deadline;
      }
      c.survive_none = add_sat(std::max(round_end_, c.start), time_from(r, costs, c.pos, fastest)) <= c.deadline;
    }

    // Step B: only requests that survive if and only if they run matter to the count.
    knapsack_.clear();
    item_of_.clear();
    for (std::size_t i = 0; i < cands_.size(); ++i) {
      const auto& c = cands_[i];
      if (c.deadline == never || c.late || !c.survive_run || c.survive_none) continue;
      knapsack_.add_item(0);
      knapsack_.add_option(c.degree, 1);
      item_of_.push_back(i);
    }
    int used = 0;
    if (knapsack_.items() > 0) {
      knapsack_.solve(capacity);
      for (std::size_t j = 0; j < item_of_.size(); ++j) {
        if (knapsack_.choice(j) >= 0) {
          cands_[item_of_[j]].chosen = true;
          used += cands_[item_of_[j]].degree;
        }
      }
    }

    // Work conservation: requests with a deadline that the DP left out, most urgent first...
    // The order is sorted only as far as it is read: once the capacity is used up nothing later can
    // be chosen (every degree is >= 1), and the order - a strict one, ties broken by handle - is the
    // same as a full sort's.
    order_.reset();
    bool zero_degree = false;
    for (std::size_t i = 0; i < cands_.size(); ++i) {
      const auto& c = cands_[i];
      const int cls = c.deadline == never ? 2 : c.late ? 1 : 0;  // urgent, then late, then no deadline
      order_.keys.push_back({cls, cls == 0 ? c.deadline : 0, c.h, static_cast<std::uint32_t>(i)});  // best effort: arrival order
      zero_degree = zero_degree || c.degree <= 0;
    }
    // A file's requests that were not looked at come after the last one looked at in this order
    // (the late file's in class 1, the best-effort file's in class 2, and the by-deadline file's in
    // class 0 by deadline: beyond the band none is late). Reading past it with devices left means
    // the plan may choose one of them: it is made again over collect_cap() of each file.
    const bool may_read_past = look < collect_cap(v);
    std::array<order_key, 3> last_looked_key{};
    for (std::size_t f = 0; f < last_looked_.size(); ++f) {
      const request_handle h = last_looked_[f];
      if (h == no_request) last_looked_key[f].cls = -1;  // none looked at: every candidate reads past
      else last_looked_key[f] = {f == 0 ? 1 : f == 1 ? 2 : 0, f == 2 ? v.request(h).deadline() : 0, h, 0};
    }
    const auto reads_past = [&](const order_key& k) {
      for (std::size_t f = 0; f < last_looked_.size(); ++f) {
        if (more_[f] && last_looked_key[f] < k) return true;
      }
      return false;
    };
    bool ran_out = false;  // of devices, before the end of the order
    for (std::size_t j = 0; j < order_.size(); ++j) {
      if (used >= capacity && !zero_degree) {
        ran_out = true;
        break;
      }
      if (may_read_past && reads_past(order_.at(j))) return false;
      auto& c = cands_[order_.at(j).index];
      if (c.chosen || used + c.degree > capacity) continue;
      c.chosen = true;
      used += c.degree;
    }
    if (may_read_past && !ran_out && (zero_degree || used < capacity) && (more_[0] || more_[1] || more_[2])) return false;
    // ... then scale-up: leftover GPUs to chosen requests that get strictly faster (not late ones).
    if (opt_.scale_up) {
      for (std::size_t j = 0; j < order_.size(); ++j) {
        if (used >= capacity) break;
        auto& c = cands_[order_.at(j).index];
        if (!c.chosen || c.late) continue;
        // The fastest degree within reach (ties: the narrower). A degree that a narrower one above
        // c.degree dominates is never strictly faster than it: for_each_wider skips those, so the
        // scan stops after a few dozen degrees on 65,536 GPUs instead of reading every one.
        int best = c.degree;
        wider_.for_each_wider(v, c.h, c.degree, c.degree + (capacity - used), [&](int k) {
          if (v.step_time(c.h, k) < v.step_time(c.h, best)) best = k;
        });
        used += best - c.degree;
        c.degree = best;
      }
    }
    return true;
  }

  // With a fixed tau (round_s), a round launches nothing when fewer usable devices are free or free
  // within it (its capacity) than the smallest degree any waiting request allows, and no running
  // request's assignment ends within it (that request would be a candidate): the knapsack, work
  // conservation and scale-up then choose no request (every candidate's degree is an allowed one).
  // Such rounds used to wake the policy at every boundary while requests waited (round_s=0.001 on
  // 10-second steps: 10,000 calls per step). Instead the round wakes at the first boundary whose
  // round can launch something, by the devices' and assignments' expected ends, and the rounds in
  // between are counted as run when the next hook or call comes (catch_up). One that comes before
  // that boundary (a task that ended early, an arrival, a cancellation) finds the round it falls in,
  // as if every round had run: same rounds, same boundaries, same launches. Requests wait all along
  // (the runtime calls decide only then; an arrival or any request end ends the skip), so every
  // skipped boundary would have called decide. (What an empty round also did, moving requests whose
  // deadline passed to the late file, every call that reads the files does first.) Above
  // skip_scan_limit waiting requests their degrees are not scanned: only rounds without any capacity
  // are skipped. Adaptive tau is left alone: it follows the waiting requests' degrees, which change
  // with time.
  bool skip_idle_rounds(const scheduler_view& v) {
    if (!opt_.skip_idle_rounds || opt_.round <= 0 || v.waiting().empty()) return false;
    const tick now = v.now(), tau = opt_.round, horizon = add_sat(now, tau);
    tick empty_until = never;  // a round [b, b + tau) is empty while b + tau < empty_until
    for (request_handle h : v.running()) {
      const auto& r = v.request(h);
      if (r.position + r.chunk_left < r.tasks_total()) empty_until = std::min(empty_until, r.running_until);
    }
    if (empty_until <= horizon) return false;
    int need = 1;  // devices a round needs to launch anything: the smallest degree a waiting request allows
    if (v.waiting().size() <= skip_scan_limit) {
      need = std::numeric_limits<int>::max();
      for (request_handle h : v.waiting()) need = std::min(need, v.costs(h).allowed_degrees.front());
    }
    std::size_t free = 0;
    busy_ends_.clear();
    for (int d = 0; d < v.device_count(); ++d) {
      const auto id = static_cast<device_id>(d);
      if (v.lost_devices().test(id)) continue;
      if (v.free_devices().test(id)) ++free;
      else busy_ends_.push_back(v.busy_until(id));
    }
    const auto needed = static_cast<std::size_t>(need);
    if (free >= needed || needed - free > busy_ends_.size()) return false;  // can launch, or never will (the runtime drops)
    const auto nth = busy_ends_.begin() + static_cast<std::ptrdiff_t>(needed - free - 1);
    std::nth_element(busy_ends_.begin(), nth, busy_ends_.end());  // when enough devices have freed
    empty_until = std::min(empty_until, *nth);
    if (empty_until <= horizon) return false;
    // The first boundary b = now + k tau (k >= 1) whose round [b, b + tau) reaches empty_until.
    const tick k = std::max<tick>(1, (empty_until - now + tau - 1) / tau - 1);
    round_start_ = now;
    round_end_ = now + k * tau;  // k tau < empty_until - now: no overflow
    skipping_ = true;
    return true;
  }
  static constexpr std::size_t skip_scan_limit = 4096;
  // Counts the rounds skip_idle_rounds skipped up to now, and puts round_start_/round_end_ on the
  // round that now falls in, as if each had run.
  void catch_up(tick now) {
    if (!skipping_) return;
    skipping_ = false;
    const tick tau = opt_.round;
    if (now >= round_end_) {  // the boundary it woke for (or later): the rounds before it were empty
      rounds_ += static_cast<std::uint64_t>((round_end_ - round_start_) / tau - 1);
      round_start_ = round_end_ - tau;
      return;
    }
    // Boundaries strictly before now were empty rounds; one at now starts a round (decide sees it).
    const tick passed = now > round_start_ ? (now - round_start_ - 1) / tau : 0;
    rounds_ += static_cast<std::uint64_t>(passed);
    round_start_ += passed * tau;
    round_end_ = add_sat(round_start_, tau);
  }

  void mid_round(const scheduler_view& v, decision_buffer& out) {
    available_ = v.free_devices();
    launch_pending(v, out, available_);
    if (opt_.admit_mid_round) admit(v, out, available_);
  }

  /// Launches the planned requests that are waiting and whose devices are free: those keeping their
  /// devices first (nobody takes them), then the widest.
  void launch_pending(const scheduler_view& v, decision_buffer& out, device_set& available) {
    if (pending_.empty()) return;
    const tick budget = std::max<tick>(0, round_end_ - v.now());
    std::sort(pending_.begin(), pending_.end(), [](const planned& a, const planned& b) {
      return a.degree != b.degree ? a.degree > b.degree : a.h < b.h;
    });
    auto launch = [&](planned& p, device_group g) {
      const auto& r = v.request(p.h);
      const fit f = round_based_detail::fit_tasks(r, v.costs(p.h), r.position, p.degree, budget);
      available.reset(g);
      if (opt_.max_batch > 1) {
        // Selective batching: waiting requests outside the plan whose state is on g ride along for
        // one step when nobody misses. The planned request stays pending: at its next step boundary
        // it launches again (alone, or batched anew) with what is left of its round.
        const auto taken = [&](request_handle o) { return is_pending(o) || assigned_now(o); };
        batch_companions(v, p.h, g, opt_.max_batch, opt_.batch_margin, taken, members_);
        batch_recruits(v, p.h, g, opt_.max_batch, opt_.batch_margin, taken, members_, recruits_);
        if (!recruits_.empty()) {  // their free encodes on g first; the batch follows at once
          for (request_handle m : recruits_) mark_assigned(m, p.degree);
          out.assign_batch(recruits_, std::move(g));
          p.batched_call = calls_;  // g is taken: the leader waits for its batch, it is not placed elsewhere
          return;
        }
        if (members_.size() > 1) {
          for (request_handle m : members_) mark_assigned(m, p.degree);
          out.assign_batch(members_, std::move(g));
          p.batched_call = calls_;  // still pending, but launched in this call: not again below
          return;
        }
      }
      out.assign(p.h, std::move(g), std::max<std::uint32_t>(1, f.tasks));
      set_pending(p.h, false);
      mark_assigned(p.h, p.degree);
      p.degree = 0;  // launched
    };
    for (auto& p : pending_) {
      const auto& r = v.request(p.h);
      if (r.ended()) {
        set_pending(p.h, false);
        p.degree = 0;
        continue;
      }
      if (r.phase != request_phase::waiting) continue;
      if (static_cast<int>(r.state_group.size()) == p.degree && available.contains_all(r.state_group)) launch(p, r.state_group);
    }
    for (auto& p : pending_) {
      if (p.degree == 0 || p.batched_call == calls_ || v.request(p.h).phase != request_phase::waiting) continue;
      if (auto g = place(v, p.h, p.degree, available)) launch(p, std::move(*g));
    }
    std::erase_if(pending_, [](const planned& p) { return p.degree == 0; });
  }

  /// mid_round=admit: waiting requests outside the plan take GPUs that the plan does not need.
  void admit(const scheduler_view& v, decision_buffer& out, device_set& available) {
    int reserved = 0;
    for (const auto& p : pending_) reserved += p.degree;
    int spare = static_cast<int>(available.count()) - reserved;
    if (spare <= 0) return;
    const tick now = v.now();
    cands_.clear();
    collect_waiting(v, true, collect_cap(v));
    for (request_handle h : collected_) cands_.push_back(make_candidate(v, h, now, v.request(h).position));
    std::sort(cands_.begin(), cands_.end(), [](const candidate& x, const candidate& y) {
      const int cx = x.deadline == never ? 2 : x.late ? 1 : 0;
      const int cy = y.deadline == never ? 2 : y.late ? 1 : 0;
      if (cx != cy) return cx < cy;
      if (cx == 0 && x.deadline != y.deadline) return x.deadline < y.deadline;
      return x.h < y.h;
    });
    const tick budget = std::max<tick>(0, round_end_ - now);
    for (const auto& c : cands_) {
      if (spare <= 0) break;
      if (c.degree > spare) continue;
      auto g = place(v, c.h, c.degree, available);
      if (!g) continue;
      const auto& r = v.request(c.h);
      const fit f = round_based_detail::fit_tasks(r, v.costs(c.h), r.position, c.degree, budget);
      available.reset(*g);
      spare -= c.degree;
      out.assign(c.h, std::move(*g), std::max<std::uint32_t>(1, f.tasks));
      mark_assigned(c.h, c.degree);
    }
  }

  /// Step A for one request starting at `start` from task `pos`: its degree for the round.
  candidate make_candidate(const scheduler_view& v, request_handle h, tick start, std::uint32_t pos) {
    const auto& r = v.request(h);
    const auto& costs = v.costs(h);
    candidate c;
    c.h = h;
    c.start = start;
    c.pos = pos;
    c.deadline = r.has_deadline() ? r.deadline() : never;
    // A deadline already passed: no allocation meets it, since no time is negative (the runtime's
    // tables refuse one). Such requests were 40% of the candidates on a deep-queue file.
    if (c.deadline < start) {
      c.late = true;
      c.degree = costs.allowed_degrees.front();
      return c;
    }
    if (c.deadline == never) {
      // Best effort, the most efficient degree: as filed (the files are in sync with the hulls).
      const bool filed = h < filed_.size() && filed_[h].kind == file_kind::no_deadline;
      c.degree = filed ? filed_[h].degree : static_degree(v, h, file_kind::no_deadline);
      return c;
    }
    const auto& hull = hulls_.get(v, h, calls_);
    const mixed_allocation a = cheapest_allocation(costs, hull, r.trajectory->steps_remaining(pos), pos == 0,
                                                   c.deadline - start);
    if (a.feasible) {
      c.degree = a.round_degree();
    } else {
      c.late = true;
      c.degree = costs.allowed_degrees.front();  // at most 1 GPU (or the smallest allowed degree)
    }
    return c;
  }

  // ---- The waiting requests a round looks at --------------------------------------------------
  // Every unended request is filed under exactly one of: by_deadline_ (a deadline not yet passed at
  // the last round start, keyed by it), expired_ (its deadline passed: late for good) and
  // no_deadline_. A round looks at the waiting requests of each file in the order it serves them
  // (earliest deadline; oldest first): every one within the band - whose deadline leaves less than
  // one round plus its own whole run at its cheapest degree, so that its plan depends on this
  // round; by_latest_start_ keys each by that latest start - and at least collect_cap() of each
  // file. Beyond those,
  // each request's plan is known without looking at it (its cheapest degree, no deadline at stake
  // this round), so tau's reference step counts it through a per-file tally of static step times,
  // and the plan is exactly TetriServe's over all requests unless more than collect_cap() requests
  // of one file would be needed to fill the GPUs.

  [[nodiscard]] static std::size_t collect_cap(const scheduler_view& v) {
    return std::max<std::size_t>(256, 4 * static_cast<std::size_t>(v.device_count()));
  }
  enum class file_kind : unsigned char { none, by_deadline, expired, no_deadline };
  // The degree a request's step time is sampled at while the round does not look at it: Step A with
  // all the time in the world (the cheapest efficient degree) for a deadline not at stake, the
  // smallest allowed degree when late, the most efficient one without a deadline (make_candidate's
  // answers); 0 when no degree is allowed (sample 0).
  [[nodiscard]] int static_degree(const scheduler_view& v, request_handle h, file_kind k) {
    const auto& c = v.costs(h);
    if (c.allowed_degrees.empty()) return 0;
    const auto& hull = hulls_.get(v, h, calls_);
    return k == file_kind::expired || hull.empty() ? c.allowed_degrees.front() : hull.front();
  }
  void file(const scheduler_view& v, request_handle h) {
    const auto& r = v.request(h);
    file_kind k = file_kind::by_deadline;
    if (!r.has_deadline()) k = file_kind::no_deadline, no_deadline_.insert(h);
    else if (rounds_ > 0 && r.deadline() < round_start_) k = file_kind::expired, expired_.insert(h);
    else by_deadline_.insert(h, r.deadline());
    set_file(v, h, k);
    if (k == file_kind::by_deadline) by_latest_start_.insert(h, r.deadline() - cheapest_run(v, h));
  }
  // The request's whole run at its cheapest degree: the latest it can start is its deadline minus this.
  [[nodiscard]] tick cheapest_run(const scheduler_view& v, request_handle h) {
    const auto& c = v.costs(h);
    const auto& hull = hulls_.get(v, h, calls_);
    const int cheap = hull.empty() ? (c.allowed_degrees.empty() ? 0 : c.allowed_degrees.front()) : hull.front();
    if (cheap <= 0) return 0;
    const auto kk = static_cast<std::size_t>(cheap);
    return add_sat(c.encode[kk] + c.decode[kk], static_cast<tick>(steps_of(v, h)) * c.step[kk]);
  }
  void set_file(const scheduler_view& v, request_handle h, file_kind k) {
    if (h >= filed_.size()) filed_.resize(static_cast<std::size_t>(h) + 1);
    auto& f = filed_[h];
    if (f.kind != file_kind::none) static_samples_.add(f.sample, -1);
    f.kind = k;
    f.degree = k == file_kind::none ? 0 : static_degree(v, h, k);
    f.sample = f.degree == 0 ? 0 : v.costs(h).step_time(f.degree);
    if (k != file_kind::none) {
      static_samples_.add(f.sample, 1);
      // The longest a round can be (see collect_waiting).
      longest_step_ = std::max(longest_step_, hulls_.longest_step(v, h, calls_));  // once per shape, not per filing
    }
  }
  [[nodiscard]] static int steps_of(const scheduler_view& v, request_handle h) { return v.request(h).spec.steps; }
  void unfile(request_handle h) {
    by_deadline_.erase(h);
    by_latest_start_.erase(h);
    expired_.erase(h);
    no_deadline_.erase(h);
    if (h < filed_.size() && filed_[h].kind != file_kind::none) {
      static_samples_.add(filed_[h].sample, -1);
      filed_[h] = {};
    }
  }
  [[nodiscard]] bool files_in_sync(const scheduler_view& v) const {
    return by_deadline_.size() + expired_.size() + no_deadline_.size() == v.waiting().size() + v.running().size() &&
           v.lost_devices().count() == lost_seen_;
  }
  void refile(const scheduler_view& v) {  // a host that does not forward the hooks, or lost devices
    by_deadline_.clear();
    by_latest_start_.clear();
    expired_.clear();
    no_deadline_.clear();
    static_samples_.clear();
    for (auto& f : filed_) f = {};
    lost_seen_ = v.lost_devices().count();
    for (request_handle h : v.waiting()) file(v, h);
    for (request_handle h : v.running()) file(v, h);
  }
  // collected_ <- the waiting requests a round looks at (without those pending or assigned in this
  // call, with `exclude_planned`), in handle order.
  // Every request of the band, and of each file at most the first `look` (<= collect_cap(v)) in its
  // order: last_looked_ and more_ say which was the last one looked at in each and whether the file
  // had more within the cap. Any other gets its static degree (make_candidate), so whether it is
  // looked at changes no sample, only whether the plan can choose it; none is at stake.
  void collect_waiting(const scheduler_view& v, bool exclude_planned, std::size_t look) {
    const tick now = v.now();
    while (!by_deadline_.empty() && (*by_deadline_.begin()).key < now) {
      const request_handle h = (*by_deadline_.begin()).h;
      by_deadline_.erase(h);
      by_latest_start_.erase(h);
      expired_.insert(h);
      set_file(v, h, file_kind::expired);
    }
    collected_.clear();
    const std::size_t cap = collect_cap(v);
    const tick tau_max = opt_.round > 0 ? opt_.round : longest_step_ * opt_.round_steps;
    const tick band_end = add_sat(now, tau_max);  // a latest start before it: at stake in this round
    ++collect_stamp_;
    if (collected_stamp_.size() < filed_.size()) collected_stamp_.resize(filed_.size(), 0);
    const auto look_once = [&](request_handle h) {
      if (collected_stamp_[h] == collect_stamp_) return;
      collected_stamp_[h] = collect_stamp_;
      if (!(exclude_planned && (is_pending(h) || assigned_now(h)))) collected_.push_back(h);
    };
    for (auto it = by_latest_start_.begin(); it != by_latest_start_.end() && (*it).key < band_end; ++it) {
      if (v.request((*it).h).phase == request_phase::waiting) look_once((*it).h);
    }
    // The first `look` waiting requests of each file in its order (the band's already looked at).
    const std::size_t limit = std::min(look, cap);
    const auto look_at_prefix = [&](std::size_t f, auto first, auto last, auto handle_of) {
      last_looked_[f] = no_request;
      more_[f] = false;
      std::size_t n = 0;
      for (auto it = first; it != last && n < cap; ++it) {
        const request_handle h = handle_of(it);
        if (v.request(h).phase != request_phase::waiting) continue;
        if (n == limit) {
          more_[f] = true;
          break;
        }
        look_once(h);
        if (!(exclude_planned && (is_pending(h) || assigned_now(h)))) last_looked_[f] = h;
        ++n;
      }
    };
    look_at_prefix(0, expired_.begin(), expired_.end(), [](auto it) { return *it; });
    look_at_prefix(1, no_deadline_.begin(), no_deadline_.end(), [](auto it) { return *it; });
    look_at_prefix(2, by_deadline_.begin(), by_deadline_.end(), [](auto it) { return (*it).h; });
    if (exclude_planned) return;  // admit() takes them in the order found
    round_based_detail::radix_sort(collected_, sort_scratch_);
  }
  // The reference step: the round_quantile of the step times of every active request - running ones
  // at their degree, the waiting ones looked at at their Step-A degree (samples_), the others at
  // their static one (static_samples_ without looked_or_running_; plan_round lists only the samples
  // that differ from the static ones).
  [[nodiscard]] tick reference_step(const scheduler_view&) {
    const auto total = static_cast<std::int64_t>(samples_.size()) + static_samples_.total() - static_cast<std::int64_t>(looked_or_running_.size());
    if (total <= 0) return ticks_per_second;
    const auto at = static_cast<std::int64_t>(opt_.reference_quantile * static_cast<double>(total - 1));
    round_based_detail::radix_sort(samples_, samples_scratch_);
    round_based_detail::radix_sort(looked_or_running_, samples_scratch_);
    return std::max<tick>(1, static_samples_.nth(at, samples_, looked_or_running_));
  }

  void set_pending(request_handle h, bool on) {
    if (h >= pending_flag_.size()) pending_flag_.resize(static_cast<std::size_t>(h) + 1, 0);
    pending_flag_[h] = on ? 1 : 0;
  }
  [[nodiscard]] bool is_pending(request_handle h) const { return h < pending_flag_.size() && pending_flag_[h] != 0; }
  void mark_assigned(request_handle h, int degree) {
    if (h >= assigned_call_.size()) {
      assigned_call_.resize(static_cast<std::size_t>(h) + 1, 0);
      launched_round_.resize(static_cast<std::size_t>(h) + 1, 0);
      launched_degree_.resize(static_cast<std::size_t>(h) + 1, 0);
    }
    assigned_call_[h] = calls_;
    launched_round_[h] = rounds_;
    launched_degree_[h] = degree;
  }
  [[nodiscard]] bool assigned_now(request_handle h) const { return h < assigned_call_.size() && assigned_call_[h] == calls_; }

  round_based_options opt_;
  tick round_start_ = 0;
  tick round_end_ = 0;
  std::uint64_t rounds_ = 0;
  bool skipping_ = false;  // round_end_ is a later boundary than round_start_ + tau (skip_idle_rounds)
  std::vector<tick> busy_ends_;  // skip_idle_rounds' scratch
  round_based_detail::hull_cache hulls_;
  degree_candidates wider_;  // scale-up's degrees worth trying
  std::vector<planned> pending_;         // chosen this round, not launched yet
  std::vector<unsigned char> pending_flag_;  // by handle
  std::vector<std::uint64_t> assigned_call_; // by handle: the call that last assigned it
  std::vector<std::uint64_t> launched_round_;  // by handle: the round that last launched it
  std::vector<int> launched_degree_;           // by handle: at which degree
  std::uint64_t calls_ = 0;
  request_index<tick> by_deadline_;      // see collect_waiting()
  request_index<tick> by_latest_start_;  // the same requests, by deadline minus cheapest_run()
  std::vector<std::uint64_t> collected_stamp_;  // by handle: the collect_waiting() that last looked at it
  std::uint64_t collect_stamp_ = 0;
  static constexpr request_handle no_request = std::numeric_limits<request_handle>::max();
  // collect_waiting: the last request looked at in the late, best-effort and by-deadline files, and
  // whether the file has more waiting within collect_cap().
  std::array<request_handle, 3> last_looked_{no_request, no_request, no_request};
  std::array<bool, 3> more_{};
  handle_set expired_, no_deadline_;
  struct filing {
    file_kind kind = file_kind::none;
    int degree = 0;  // static_degree() when filed
    tick sample = 0;  // its step time
  };
  std::vector<filing> filed_;                                  // by handle
  round_based_detail::step_time_tally static_samples_;  // filed requests' samples (filing::sample)
  std::vector<tick> looked_or_running_;                 // ... of those looked at and running, where resampled (plan_round)
  tick longest_step_ = 0;    // longest step at any allowed degree, over every request filed
  std::size_t lost_seen_ = 0;
  // Scratch, kept between calls for their capacity.
  std::vector<request_handle> collected_;
  device_set available_;  // the free devices of this call (reused)
  std::vector<request_handle> members_, recruits_;  // a batched step being formed
  std::vector<candidate> cands_;
  std::vector<tick> samples_;
  std::vector<std::size_t> item_of_;
  round_based_detail::sorted_prefix<round_based_detail::order_key> order_;  // start_round's work-conservation order
  std::vector<request_handle> sort_scratch_;
  std::vector<tick> samples_scratch_;
  group_knapsack knapsack_;
};

static_assert(Policy<round_based_policy> && NamedPolicy<round_based_policy> && TaskAwarePolicy<round_based_policy> &&
              ArrivalAwarePolicy<round_based_policy> && CompletionAwarePolicy<round_based_policy>);

/// Registers "round-based" (parameters round_steps, round_s, round_quantile, scale_up, mid_round).
inline void register_round_based(policy_registry& r) {
  r.add("round-based", "",
        "TetriServe: rounds of ~round_steps steps; per round the fewest-GPU-seconds allocation per request "
        "and a knapsack that maximises requests still able to meet their deadline",
        [](policy_params& p) -> any_policy {
          round_based_options o;
          o.round_steps = static_cast<int>(p.get_int("round_steps", 5, 1, 1000));
          const double round_s = p.get_double("round_s", 0.0, 0.0, 86400.0);
          // Time is whole microseconds: a shorter round would silently become 1 us.
          if (round_s > 0 && round_s < 1e-6) {
            p.fail("round_s", fmt::format("{} s is shorter than the clock's 1 us; give at least 1e-6, or 0 for the adaptive round length", round_s));
          }
          o.round = round_s > 0 ? std::max<tick>(1, to_ticks(round_s).value_or(1)) : 0;
          o.scale_up = p.get_choice("scale_up", "on", {"on", "off"}) == "on";
          o.admit_mid_round = p.get_choice("mid_round", "wait", {"wait", "admit"}) == "admit";
          o.reference_quantile = p.get_double("round_quantile", 0.5, 0.0, 1.0);
          o.max_batch = static_cast<int>(p.get_int("max_batch", o.max_batch, 1, 64));
          o.batch_margin = p.get_double("batch_margin", o.batch_margin, 0.0, 0.9);
          return round_based_policy(o);
        });
}

}  // namespace paraflex
