// builtin_registry.hpp - paraflex::builtin_policies(), compiled once for every test file.
//
// The registry's factories instantiate all the built-in policies: about 15 s of compile time in each
// file that calls it (-O2 or ASan at -O0), in eleven files. They call paraflex_test::builtin_policies
// instead, defined in builtin_registry.cpp, and compile only the policies they name themselves.
#pragma once

#include "paraflex/policy/registry.hpp"

namespace paraflex_test {

/// paraflex::builtin_policies(gpus), from builtin_registry.cpp.
[[nodiscard]] paraflex::policy_registry builtin_policies(int gpus);

}  // namespace paraflex_test
