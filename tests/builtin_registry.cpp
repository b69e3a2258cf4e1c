// The one definition of paraflex_test::builtin_policies (builtin_registry.hpp).
#include "builtin_registry.hpp"

#include "paraflex/policy/builtin.hpp"

namespace paraflex_test {

paraflex::policy_registry builtin_policies(int gpus) { return paraflex::builtin_policies(gpus); }

}  // namespace paraflex_test
