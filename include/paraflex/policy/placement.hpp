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
[[nodiscard]] inline std::optional<device_group> find_free_group(const device_set& available, int k, const cluster& c) {
  if (k <= 0) return std::nullopt;
  const int g = c.gpus;
  const int per_node = c.gpus_per_node;
  std::vector<int> free_per_node(static_cast<std::size_t>(c.node_count()), 0);
  int total_free = 0;
  available.for_each([&](device_id d) {
    ++free_per_node[static_cast<std::size_t>(c.node_of(d))];
    ++total_free;
  });
  if (total_free < k) return std::nullopt;
  if (k <= per_node) {
    // Best-fit node: the fewest free devices that still holds k.
    int best_node = -1;
    for (int n = 0; n < c.node_count(); ++n) {
      const int f = free_per_node[static_cast<std::size_t>(n)];
      if (f >= k && (best_node < 0 || f < free_per_node[static_cast<std::size_t>(best_node)])) best_node = n;
    }
    if (best_node >= 0) {
      const int node_first = best_node * per_node;
      const int node_end = std::min(g, node_first + per_node);
      for (int start = node_first; start + k <= node_end; start += k) {  // aligned blocks
        bool all = true;
        for (int d = start; d < start + k && all; ++d) all = available.test(static_cast<device_id>(d));
        if (all) return device_group::contiguous(static_cast<device_id>(start), static_cast<std::size_t>(k));
      }
      std::vector<device_id> picked;
      for (int d = node_first; d < node_end && static_cast<int>(picked.size()) < k; ++d) {
        if (available.test(static_cast<device_id>(d))) picked.push_back(static_cast<device_id>(d));
      }
      return device_group(std::span<const device_id>(picked));
    }
  }
  std::vector<device_id> picked;
  available.for_each([&](device_id d) {
    if (static_cast<int>(picked.size()) < k) picked.push_back(d);
  });
  return device_group(std::span<const device_id>(picked));
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
