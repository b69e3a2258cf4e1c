// paraflex/collectives/migration_plan.hpp - which ranks send which slice when a request changes groups.
//
// A request's state (the latent) is sharded by rank: with k ranks, rank i holds the contiguous slice
// shard_range(i, k, total) of `total` elements (rows, tokens, bytes: the unit is the caller's).
// Moving it from a source layout to a destination group is GF-DiT's layout-aware plan restricted to
// the sharded case: every destination slice is the union of its intersections with the source
// slices, and each non-empty intersection is one point-to-point edge.
//
// Local copies: the destination group fixes the devices, not which device holds which slice. A
// device in both groups keeps as much of its own data as possible: the plan chooses the destination
// layout (slice j -> device) greedily by largest overlap, so {0,1} -> {1,2} keeps half the latent on
// device 1 instead of shipping all of it. The destination layout is part of the plan; the receiver
// must remember it (rank order of the layout, not of the group, says who holds which slice).
//
//   auto p = plan_migration(device_group{0, 1}, device_group{1, 2}, 100);
//   // p.layout == {2, 1}: device 2 gets [0,50) from device 0, device 1 keeps [50,100) locally.
//
// Pure functions, no allocation beyond the result; deterministic for the same inputs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "paraflex/resource/group.hpp"

namespace paraflex {

/// A contiguous range of elements [begin, begin + count).
struct element_range {
  std::size_t begin = 0;
  std::size_t count = 0;
  [[nodiscard]] std::size_t end() const noexcept { return begin + count; }
  friend bool operator==(const element_range&, const element_range&) = default;
};

/// The slice rank `rank` of `ranks` holds: sizes differ by at most one, larger slices last.
[[nodiscard]] inline element_range shard_range(std::size_t rank, std::size_t ranks, std::size_t total) {
  if (ranks == 0 || rank >= ranks) throw std::invalid_argument("shard_range: rank " + std::to_string(rank) + " of " + std::to_string(ranks));
  // 128-bit-free: rank * total stays far below 2^64 for any latent (total < 2^40, ranks < 2^16).
  const std::size_t b = rank * total / ranks;
  const std::size_t e = (rank + 1) * total / ranks;
  return {b, e - b};
}

/// One point-to-point copy of a migration.
struct migration_edge {
  std::size_t src_rank = 0;  ///< index in the source layout (the device source[src_rank] sends)
  std::size_t dst_rank = 0;  ///< index in the destination group (the device destination[dst_rank] receives)
  std::size_t offset = 0;    ///< first element, in the whole state's numbering
  std::size_t count = 0;     ///< elements (> 0)
  bool local = false;        ///< same device on both sides: a copy in place, no transfer
  friend bool operator==(const migration_edge&, const migration_edge&) = default;
};

struct migration_plan {
  /// Destination layout: layout[j] is the device that holds shard_range(j, k, total) afterwards.
  /// Same devices as the destination group, possibly in another order.
  device_group layout;
  /// Edges ordered by destination slice, then by source rank. Every element appears in exactly one.
  std::vector<migration_edge> edges;
  std::size_t local_elements = 0;   ///< elements that stay on their device
  std::size_t remote_elements = 0;  ///< elements that cross between devices
};

namespace detail {
inline void check_group(const device_group& g, const char* what) {
  if (g.empty()) throw std::invalid_argument(std::string("plan_migration: empty ") + what + " group");
  for (std::size_t i = 0; i < g.size(); ++i) {
    for (std::size_t j = i + 1; j < g.size(); ++j) {
      if (g[i] == g[j]) {
        throw std::invalid_argument(std::string("plan_migration: device ") + std::to_string(g[i]) + " appears twice in the " + what +
                                    " group " + g.to_string());
      }
    }
  }
}
inline std::size_t rank_in(const device_group& g, device_id d) noexcept {
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (g[i] == d) return i;
  }
  return g.size();
}
inline std::size_t overlap(element_range a, element_range b) noexcept {
  const std::size_t lo = std::max(a.begin, b.begin);
  const std::size_t hi = std::min(a.end(), b.end());
  return hi > lo ? hi - lo : 0;
}
}  // namespace detail

/// The plan that moves `total` elements sharded over `source` (source[i] holds slice i) onto the
/// devices of `destination`. Throws std::invalid_argument for an empty group or a repeated device.
[[nodiscard]] inline migration_plan plan_migration(const device_group& source, const device_group& destination, std::size_t total) {
  detail::check_group(source, "source");
  detail::check_group(destination, "destination");
  const std::size_t ks = source.size();
  const std::size_t kd = destination.size();

  // Candidate (device, destination slice) pairs that keep data in place, largest overlap first.
  struct candidate {
    std::size_t overlap, slice, dst_rank;
  };
  std::vector<candidate> cands;
  for (std::size_t r = 0; r < kd; ++r) {
    const std::size_t s = detail::rank_in(source, destination[r]);
    if (s == ks) continue;
    const element_range mine = shard_range(s, ks, total);
    for (std::size_t j = 0; j < kd; ++j) {
      const std::size_t o = detail::overlap(mine, shard_range(j, kd, total));
      if (o > 0) cands.push_back({o, j, r});
    }
  }
  std::sort(cands.begin(), cands.end(), [](const candidate& a, const candidate& b) {
    if (a.overlap != b.overlap) return a.overlap > b.overlap;
    return a.slice != b.slice ? a.slice < b.slice : a.dst_rank < b.dst_rank;
  });
  constexpr std::size_t unset = static_cast<std::size_t>(-1);
  std::vector<std::size_t> holder(kd, unset);  // slice -> destination rank
  std::vector<bool> placed(kd, false);         // destination rank -> has a slice
  for (const auto& c : cands) {
    if (holder[c.slice] == unset && !placed[c.dst_rank]) {
      holder[c.slice] = c.dst_rank;
      placed[c.dst_rank] = true;
    }
  }
  // Slices nobody keeps go, in order, to the destination devices left, in group order.
  std::size_t next = 0;
  for (std::size_t j = 0; j < kd; ++j) {
    if (holder[j] != unset) continue;
    while (placed[next]) ++next;
    holder[j] = next;
    placed[next] = true;
  }

  migration_plan p;
  std::vector<device_id> layout(kd);
  for (std::size_t j = 0; j < kd; ++j) layout[j] = destination[holder[j]];
  p.layout = device_group(std::span<const device_id>(layout));
  for (std::size_t j = 0; j < kd; ++j) {
    const element_range want = shard_range(j, kd, total);
    if (want.count == 0) continue;
    // Source slices are contiguous and ordered: start at the one holding want.begin.
    for (std::size_t i = want.begin * ks / std::max<std::size_t>(total, 1); i < ks; ++i) {
      const element_range have = shard_range(i, ks, total);
      if (have.begin >= want.end()) break;
      const std::size_t o = detail::overlap(have, want);
      if (o == 0) continue;
      const bool local = source[i] == layout[j];
      p.edges.push_back({i, holder[j], std::max(have.begin, want.begin), o, local});
      (local ? p.local_elements : p.remote_elements) += o;
    }
  }
  return p;
}

}  // namespace paraflex
