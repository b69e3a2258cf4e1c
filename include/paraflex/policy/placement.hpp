// paraflex/policy/placement.hpp - choosing which free devices form a group of k.
//
// Shared by the built-in policies; a custom policy may use it or ignore it. Preference order:
//   1. the request's own devices when it keeps its degree (no migration: GF-DiT's stickiness),
//   2. an aligned contiguous block inside one node (keeps the free space in large blocks),
//   3. any k free devices inside one node, from the node with the fewest free devices that fit
//      (best fit: leaves whole nodes for wide groups),
//   4. the lowest-numbered free devices across nodes (collectives then cross the network).
#pragma once

#include <optional>
#include <vector>

#include "paraflex/resource/cluster.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex {

/// k devices from `available`, by the order above (steps 2-4), or nullopt when fewer than k are free.
/// No allocation for groups of up to 16 devices: free devices are counted per node with popcounts.
[[nodiscard]] inline std::optional<device_group> find_free_group(const device_set& available, int k, const cluster& c) {
  if (k <= 0) return std::nullopt;
  const int g = c.gpus;
  const int per_node = c.gpus_per_node;
  const auto node_range = [&](int n) {
    const auto first = static_cast<device_id>(n * per_node);
    return std::pair{first, static_cast<device_id>(std::min(g, n * per_node + per_node))};
  };
  if (static_cast<int>(available.count()) < k) return std::nullopt;
  if (k <= per_node) {
    // Best-fit node: the fewest free devices that still holds k.
    int best_node = -1;
    std::size_t best_free = 0;
    for (int n = 0; n < c.node_count(); ++n) {
      const auto [first, end] = node_range(n);
      const std::size_t f = available.count_range(first, end);
      if (f >= static_cast<std::size_t>(k) && (best_node < 0 || f < best_free)) best_node = n, best_free = f;
      if (best_free == static_cast<std::size_t>(k) && best_node >= 0) break;  // an exact fit: no later node is better
    }
    if (best_node >= 0) {
      const auto [node_first, node_end] = node_range(best_node);
      const auto kk = static_cast<device_id>(k);
      for (device_id start = node_first; start + kk <= node_end; start += kk) {  // aligned blocks
        if (available.all_in_range(start, start + kk)) return device_group::contiguous(start, static_cast<std::size_t>(k));
      }
      device_group::builder picked;
      for (device_id d = node_first; d < node_end && static_cast<int>(picked.size()) < k; ++d) {
        if (available.test(d)) picked.push_back(d);
      }
      return std::move(picked).build();
    }
  }
  device_group::builder picked;
  available.for_each([&](device_id d) {
    if (static_cast<int>(picked.size()) < k) picked.push_back(d);
  });
  return std::move(picked).build();
}

/// A group of k devices for request h: its current devices when it keeps the degree and they are
/// available (no migration), else find_free_group.
[[nodiscard]] inline std::optional<device_group> place(const scheduler_view& v, request_handle h, int k,
                                                        const device_set& available) {
  const auto& sg = v.request(h).state_group;
  if (static_cast<int>(sg.size()) == k && available.contains_all(sg)) return sg;
  return find_free_group(available, k, v.topology());
}

}  // namespace paraflex
