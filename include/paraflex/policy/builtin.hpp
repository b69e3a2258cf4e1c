// paraflex/policy/builtin.hpp - every built-in policy, registered by name.
//
//   static:K          fixed groups of K GPUs, FCFS, held for life          (static_degree.hpp)
//   rssp              best fixed degree per shape, FCFS, held for life      (static_degree.hpp)
//   round-based       TetriServe: rounds, cheapest deadline-meeting mixes,
//                     knapsack over survivors                              (round_based.hpp)
//   edf-best-fit      GF-DiT's headline policy                             (slo_aware.hpp)
//   slo-aware         EDF-best-fit plus admission control                  (slo_aware.hpp)
//   throughput-first  efficient degrees, shortest remaining work first     (throughput_first.hpp)
#pragma once

#include <string>
#include <vector>

#include "paraflex/policy/registry.hpp"
#include "paraflex/policy/round_based.hpp"
#include "paraflex/policy/slo_aware.hpp"
#include "paraflex/policy/static_degree.hpp"
#include "paraflex/policy/throughput_first.hpp"

namespace paraflex {

/// A registry with every built-in policy for a cluster of `gpus` devices.
[[nodiscard]] inline policy_registry builtin_policies(int gpus) {
  policy_registry r;
  register_static_policies(r, gpus);
  register_round_based(r);
  register_slo_aware(r);
  register_throughput_first(r);
  return r;
}

/// The comparison paraflex-sim runs by default: static degrees that fit, rssp, then the elastic ones.
[[nodiscard]] inline std::vector<std::string> default_policy_list(int gpus) {
  std::vector<std::string> out;
  for (int k = 1; k <= gpus; k *= 2) out.push_back("static:" + std::to_string(k));
  for (const char* p : {"rssp", "round-based", "edf-best-fit", "slo-aware", "throughput-first"}) out.emplace_back(p);
  return out;
}

}  // namespace paraflex
