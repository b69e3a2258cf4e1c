// Fuzz target: the step-latency profile reader (cost/profile.hpp) and the cost model built from what
// it accepts (cost/profile_cost_model.hpp). Promises checked: an error message is valid UTF-8 without
// control characters; an accepted table passes validate_profile; a cost model builds for every GPU
// type in it, answers every profile row exactly, and prices other shapes and degrees with a time that
// is not NaN, not negative and not zero (an infinite time is an input error for the runtime, which
// check_workload_costs reports, so it is allowed here); allows_degree follows the stated heads.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "fuzz_check.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/cost/profile.hpp"
#include "paraflex/cost/profile_cost_model.hpp"

namespace paraflex_fuzz {

inline int fuzz_profile_csv(const std::uint8_t* data, std::size_t size) {
  using namespace paraflex;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  auto r = read_profile_csv(in, "fuzz.csv");
  if (!r) {
    const std::string msg = r.error().what();
    PARAFLEX_FUZZ_CHECK(msg.rfind("fuzz.csv", 0) == 0);
    PARAFLEX_FUZZ_CHECK(is_valid_utf8(msg) && printable(msg) == msg);
    return 0;
  }
  const profile_table& t = r.value();
  PARAFLEX_FUZZ_CHECK(!validate_profile(t).has_value());
  if (t.rows.size() > 64) return 0;  // a fit per model: keep each input cheap
  for (const auto& gpu : t.gpus()) {
    auto built = profile_cost_model::from_profile(t, gpu);
    PARAFLEX_FUZZ_CHECK(built.has_value());
    const profile_cost_model& cm = built.value();
    for (const auto& row : t.rows) {
      if (row.gpu != gpu) continue;
      const auto e = cm.estimate(row.shape, row.degree);
      PARAFLEX_FUZZ_CHECK(e.seconds == row.step_s && e.source == provenance::exact);
      const auto heads = t.heads_of(row.shape.model);
      for (int k : {1, 2, 3, 5, 8, 64}) {
        PARAFLEX_FUZZ_CHECK(cm.allows_degree(row.shape, k) == (!heads || *heads % k == 0));
        for (const request_shape& s : {row.shape, request_shape{row.shape.model, row.shape.height, row.shape.width / 2 + 1, row.shape.frames},
                                       request_shape{row.shape.model, 16, 16, 1}}) {
          const double v = cm.step_seconds(s, k);
          PARAFLEX_FUZZ_CHECK(!std::isnan(v) && v > 0.0);
        }
      }
    }
    for (const auto& note : cm.extrapolation_notes()) PARAFLEX_FUZZ_CHECK(is_valid_utf8(note));
  }
  return 0;
}

}  // namespace paraflex_fuzz

PARAFLEX_FUZZ_ENTRY(paraflex_fuzz::fuzz_profile_csv)
