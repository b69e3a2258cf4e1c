// The policies paraflex-sim knows by name: the library's built-ins (paraflex/policy/builtin.hpp).
#pragma once

#include "paraflex/policy/builtin.hpp"

namespace paraflex_bench {
inline paraflex::policy_registry builtin_registry(int gpus) { return paraflex::builtin_policies(gpus); }
inline std::vector<std::string> default_policy_list(int gpus) { return paraflex::default_policy_list(gpus); }
}  // namespace paraflex_bench
