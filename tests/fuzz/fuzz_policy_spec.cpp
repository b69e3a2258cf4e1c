// Fuzz target: policy specifications, "NAME[:KEY=VALUE]..." (policy/registry.hpp), as paraflex-sim's
// --policy takes them. The first byte picks the cluster size (1-16 GPUs); the rest is the spec.
// Promises checked: make() returns a policy or an input_error (never throws, never crashes) whose
// message is valid UTF-8 without control characters; a policy it builds has a name and runs a small
// mixed workload in the simulator with every request ended exactly once, devices never double-booked
// and no invalid decision (the runtime is strict: one would throw policy_error, i.e. crash here).
// A fixed-degree policy runs only requests its degree allows, as the tools' check_fixed_degree ensures.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/sim/simulate.hpp"
#include "paraflex/testing/invariants.hpp"

namespace paraflex_fuzz {

struct spec_cost {  // small shapes gain nothing from more devices, large ones scale; heads 12 limits degrees
  double step_seconds(const paraflex::request_shape& s, int k) const {
    const double t = paraflex::latent_tokens(s);
    return 0.002 + t * 2e-6 / k + (t < 2000 ? 0.001 * (k - 1) : 0.0);
  }
  bool allows_degree(const paraflex::request_shape& s, int k) const { return k >= 1 && (s.model != "heads12" || 12 % k == 0); }
  double migration_seconds(const paraflex::request_shape&, int, int, bool cross) const { return cross ? 0.0004 : 0.0001; }
};

inline int fuzz_policy_spec(const std::uint8_t* data, std::size_t size) {
  using namespace paraflex;
  if (size == 0) return 0;
  const int gpus = 1 + data[0] % 16;
  const std::string spec(reinterpret_cast<const char*>(data) + 1, size - 1);
  const policy_registry registry = builtin_policies(gpus);
  auto made = registry.make(spec);
  if (!made) {
    const std::string msg = made.error().what();
    PARAFLEX_FUZZ_CHECK(is_valid_utf8(msg) && printable(msg) == msg);
    return 0;
  }
  any_policy policy = std::move(made).value();
  PARAFLEX_FUZZ_CHECK(!policy.name().empty());
  const spec_cost cost;
  simulated_executor executor(7);
  scheduler sched(cluster{gpus, gpus % 4 == 0 ? 4 : gpus, "g"}, policy, executor, cost);
  testing::invariant_checker chk;
  chk.attach(sched);
  const int sides[] = {256, 1024, 2048, 512, 256, 1024};
  // A fixed-degree policy (static:K) on a model that cannot run at K is refused before the run
  // (check_fixed_degree; formats §5: static:K never drops), so such a run only uses the other model.
  const auto fixed = fixed_degree_of(policy);
  const bool heads12_ok = !fixed || cost.allows_degree({"heads12", 256, 256, 1}, *fixed);
  for (int i = 0; i < 6; ++i) {
    request_spec r;
    r.id = std::to_string(i);
    r.arrival = i * 3000;
    r.shape = {i == 4 && heads12_ok ? "heads12" : "m", sides[i], sides[i], 1};
    r.steps = 2 + i;
    r.slo = i == 5 ? never : 20'000 + 40'000 * i;
    r.priority = i % 2;
    r.class_label = i % 2 ? "a" : "b";
    sched.submit(r);
  }
  sched.run();
  PARAFLEX_FUZZ_CHECK(sched.unended() == 0);
  PARAFLEX_FUZZ_CHECK(chk.violations(sched.state()).empty());
  return 0;
}

}  // namespace paraflex_fuzz

PARAFLEX_FUZZ_ENTRY(paraflex_fuzz::fuzz_policy_spec)
