// Fuzz target: the fault flags of paraflex-sim (sim/fault_flags.hpp). The first byte picks the flag
// (even: --fail-device ID@SECONDS, odd: --straggler ID@SECONDS:FACTOR) and the cluster size (1-8
// GPUs); the rest is the flag's text, which may hold several values separated by newlines.
// Promises checked: a parser returns a value in range or an input_error naming the flag, with a
// valid UTF-8 message; the faults it accepts, injected into a small simulation, never lose a
// request (each ends exactly once) and never double-book a device.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/policy/builtin.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/sim/fault_flags.hpp"
#include "paraflex/testing/invariants.hpp"

namespace paraflex_fuzz {

struct flag_cost {
  double step_seconds(const paraflex::request_shape& s, int k) const { return 0.001 + paraflex::latent_tokens(s) * 1e-6 / k; }
  bool allows_degree(const paraflex::request_shape&, int k) const { return k >= 1; }
  double migration_seconds(const paraflex::request_shape&, int, int, bool) const { return 0.0002; }
};

inline int fuzz_fault_flags(const std::uint8_t* data, std::size_t size) {
  using namespace paraflex;
  if (size == 0) return 0;
  const bool straggler = data[0] & 1;
  const int gpus = 1 + (data[0] >> 1) % 8;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  simulation_faults faults;
  for (int n = 0; n < 4 && !rest.empty(); ++n) {
    const auto nl = rest.find('\n');
    const std::string_view text = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    if (straggler) {
      auto s = parse_straggler(text, gpus);
      if (!s) {
        PARAFLEX_FUZZ_CHECK(s.error().file == "--straggler");
        PARAFLEX_FUZZ_CHECK(is_valid_utf8(s.error().what()) && printable(s.error().what()) == s.error().what());
        continue;
      }
      PARAFLEX_FUZZ_CHECK(s.value().device < static_cast<device_id>(gpus) && s.value().from >= 0);
      PARAFLEX_FUZZ_CHECK(s.value().factor >= min_straggler_factor && s.value().factor <= max_straggler_factor);
      faults.stragglers.push_back(s.value());
    } else {
      auto f = parse_device_failure(text, gpus);
      if (!f) {
        PARAFLEX_FUZZ_CHECK(f.error().file == "--fail-device");
        PARAFLEX_FUZZ_CHECK(is_valid_utf8(f.error().what()) && printable(f.error().what()) == f.error().what());
        continue;
      }
      PARAFLEX_FUZZ_CHECK(f.value().device < static_cast<device_id>(gpus) && f.value().at >= 0);
      faults.device_failures.push_back(f.value());
    }
  }
  if (faults.device_failures.empty() && faults.stragglers.empty()) return 0;
  const flag_cost cost;
  for (const char* spec : {"rssp", "slo-aware"}) {
    any_policy policy = builtin_policies(gpus).make(spec).value_or_throw();
    simulated_executor executor(3, faults);
    scheduler sched(cluster{gpus, gpus, "g"}, policy, executor, cost);
    testing::invariant_checker chk;
    chk.attach(sched);
    for (int i = 0; i < 5; ++i) {
      sched.submit(request_spec{std::to_string(i), i * 2000, {"m", 512 * (1 + i % 2), 512, 1}, 3 + i, i % 2 ? never : 200'000, 0, ""});
    }
    sched.run();
    PARAFLEX_FUZZ_CHECK(sched.unended() == 0);
    PARAFLEX_FUZZ_CHECK(chk.violations(sched.state()).empty());
  }
  return 0;
}

}  // namespace paraflex_fuzz

PARAFLEX_FUZZ_ENTRY(paraflex_fuzz::fuzz_fault_flags)
