// paraflex/policy/degree_candidates.hpp - the degrees worth trying for a request.
//
// A fitted cost model allows every degree up to the cluster size (1,024 on a 1,024-GPU cluster), of
// which only the first few dozen get faster: past that, adding devices makes every stage slower. A
// policy that tries degrees in increasing order for "the smallest that meets the deadline", "the
// fastest" or "the fewest GPU-seconds" never needs a degree k that some smaller allowed degree j
// dominates (j's step, encode and decode are each no longer than k's):
//
//   - j takes no longer for anything h has left (a sum of those durations),
//   - j migrates no further (estimated migration: none for h's own group size, otherwise intra-node
//     up to gpus_per_node and inter-node beyond, so fewer devices never cost more, provided the
//     cost model's intra-node migration is no dearer than inter-node; otherwise nothing is pruned),
//   - j uses fewer devices and is tried first,
//
// so whenever k would be chosen, j (or a degree dominating j) is chosen before it, with the same
// answer as a loop over every allowed degree. The one exception is h's own group size, which moves
// for free: it is always tried. Skipping the rest makes a decision's cost independent of G.
//
//   degree_candidates c;                                  // a member of a Sizing part, say
//   c.for_each(v, h, [&](int k) {                         // increasing; true = go on
//     if (k > free) return false;
//     ...
//     return true;
//   });
//
// For "a wider group than k0, if strictly faster" (composed_policy's widen) a degree is needed when
// no degree between k0 and it dominates it: dominated_above(v, h, k, k0) says when it is not, and
// for_each_wider(v, h, k0, limit, f) offers exactly those degrees up to limit. Past a fitted model's
// best degree every degree is dominated by the one before it (the shape's chain): a scan from k0
// stops there, so widening on 65,536 GPUs looks at the first few dozen degrees, not at 65,536.
//
// Computed once per shape, on first use, in O(D^2) for D allowed degrees (worst case; the scan for a
// dominator stops at the first one found). The table is the runtime's, so a cached entry is checked
// against the shape table it came from and recomputed when that changes (another run, a new shape).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "paraflex/runtime/view.hpp"

namespace paraflex {

class degree_candidates {
 public:
  /// f(k) for each degree worth trying for h, in increasing order, until f returns false: the
  /// undominated allowed degrees of h's shape, plus the size of the group holding h's state.
  template <class F>
  void for_each(const scheduler_view& v, request_handle h, F&& f) const {
    const auto& e = entry_of(v, h);
    const int own = static_cast<int>(v.request(h).state_group.size());
    bool own_done = own == 0 || !v.allows_degree(h, own) || e.dominator[static_cast<std::size_t>(own)] == 0;
    for (int k : e.front) {
      if (!own_done && own < k) {
        own_done = true;
        if (!f(own)) return;
      }
      if (!f(k)) return;
    }
    if (!own_done) f(own);
  }

  /// True when some allowed degree j with k0 < j < k dominates k (k is not h's own group size): a
  /// move to k is then never strictly faster than the best move to a degree in (k0, k).
  [[nodiscard]] bool dominated_above(const scheduler_view& v, request_handle h, int k, int k0) const {
    if (k == static_cast<int>(v.request(h).state_group.size())) return false;
    return entry_of(v, h).dominator[static_cast<std::size_t>(k)] > k0;
  }

  /// f(k), increasing, for each allowed degree k with k0 < k <= limit that dominated_above(v, h, k, k0)
  /// keeps. From the shape's chain on (every later allowed degree dominated by the one before it) a
  /// degree above k0's successor is dominated within (k0, k), so the scan stops there (h's own group
  /// size, never dominated, is still offered in its place in the order).
  template <class F>
  void for_each_wider(const scheduler_view& v, request_handle h, int k0, int limit, F&& f) const {
    const auto& e = entry_of(v, h);
    const auto& ks = v.costs(h).allowed_degrees;
    const int own = static_cast<int>(v.request(h).state_group.size());
    for (auto i = static_cast<std::size_t>(std::upper_bound(ks.begin(), ks.end(), k0) - ks.begin()); i < ks.size() && ks[i] <= limit; ++i) {
      const int k = ks[i];
      if (i >= e.chain_from && ks[i - 1] > k0) {  // k and every later degree: dominated by the one before, in (k0, k)
        if (own >= k && own <= limit && v.allows_degree(h, own)) f(own);
        return;
      }
      if (k == own || e.dominator[static_cast<std::size_t>(k)] <= k0) f(k);
    }
  }

 private:
  struct entry {
    const shape_costs* costs = nullptr;  // the table this entry was computed from
    std::size_t degrees = 0;
    std::vector<int> front;      // undominated allowed degrees, increasing
    std::vector<int> dominator;  // by degree: the largest smaller allowed degree dominating it, 0 if none
    std::size_t chain_from = 0;  // first index (>= 1) of allowed_degrees from which each is dominated by the one before
  };

  const entry& entry_of(const scheduler_view& v, request_handle h) const {
    const std::uint32_t s = v.request(h).shape;
    const shape_costs& c = v.costs(h);
    if (by_shape_.size() <= s) by_shape_.resize(static_cast<std::size_t>(s) + 1);
    entry& e = by_shape_[s];
    if (e.costs == &c && e.degrees == c.allowed_degrees.size()) return e;
    e.costs = &c;
    e.degrees = c.allowed_degrees.size();
    e.front.clear();
    e.dominator.assign(c.step.size(), 0);
    const bool prune = c.migrate_intra_node <= c.migrate_inter_node;
    const auto& ks = c.allowed_degrees;
    for (std::size_t i = 0; i < ks.size(); ++i) {
      const auto k = static_cast<std::size_t>(ks[i]);
      for (std::size_t j = i; prune && j-- > 0;) {  // the largest dominator first
        const auto d = static_cast<std::size_t>(ks[j]);
        if (c.step[d] <= c.step[k] && c.encode[d] <= c.encode[k] && c.decode[d] <= c.decode[k]) {
          e.dominator[k] = ks[j];
          break;
        }
      }
      if (e.dominator[k] == 0) e.front.push_back(ks[i]);
    }
    e.chain_from = std::max<std::size_t>(ks.size(), 1);
    while (e.chain_from > 1 && e.dominator[static_cast<std::size_t>(ks[e.chain_from - 1])] == ks[e.chain_from - 2]) --e.chain_from;
    return e;
  }

  mutable std::vector<entry> by_shape_;  // by shape index
};

}  // namespace paraflex
