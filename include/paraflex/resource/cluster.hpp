// paraflex/resource/cluster.hpp - the devices a scheduler owns and how they are grouped into nodes.
#pragma once

#include <cstddef>
#include <string>

#include "paraflex/resource/group.hpp"

namespace paraflex {

/// A homogeneous cluster: `gpus` devices of one type, `gpus_per_node` per node (NVLink/PCIe island).
/// Device d lives on node d / gpus_per_node. Plain data: validate with valid() before use.
struct cluster {
  int gpus = 8;
  int gpus_per_node = 8;
  std::string gpu_type;  ///< matches the profile's `gpu` column

  [[nodiscard]] bool valid() const noexcept { return gpus >= 1 && gpus_per_node >= 1 && gpus_per_node <= gpus; }
  [[nodiscard]] std::size_t device_count() const noexcept { return static_cast<std::size_t>(gpus); }
  [[nodiscard]] int node_of(device_id d) const noexcept { return static_cast<int>(d) / gpus_per_node; }
  [[nodiscard]] int node_count() const noexcept { return (gpus + gpus_per_node - 1) / gpus_per_node; }
  /// True when every device of g is on one node (collectives stay on the fast intra-node links).
  [[nodiscard]] bool within_one_node(const device_group& g) const noexcept {
    if (g.empty()) return true;
    const int n = node_of(g[0]);
    for (device_id d : g) {
      if (node_of(d) != n) return false;
    }
    return true;
  }
};

}  // namespace paraflex
