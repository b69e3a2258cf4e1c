// The policies paraflex-sim knows by name.
#pragma once

#include <string>
#include <vector>

#include "paraflex/policy/registry.hpp"

namespace paraflex_bench {

inline paraflex::policy_registry builtin_registry(int gpus) {
  paraflex::policy_registry r;
  paraflex::register_static_policies(r, gpus);
  return r;
}

/// What runs when --policy is not given: the static degrees that fit, rssp, then the elastic ones.
inline std::vector<std::string> default_policy_list(int gpus) {
  std::vector<std::string> out;
  for (int k = 1; k <= gpus; k *= 2) out.push_back("static:" + std::to_string(k));
  out.push_back("rssp");
  const auto r = builtin_registry(gpus);
  for (const char* elastic : {"round-based", "slo-aware", "throughput-first"}) {
    if (r.contains(elastic)) out.emplace_back(elastic);
  }
  return out;
}

}  // namespace paraflex_bench
