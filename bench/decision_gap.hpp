// decision_gap.hpp - --decision-gap-ms, read the same way by every tool and the Python module:
// paraflex-sim, paraflex-tune, paraflex-serve, paraflex.simulate and paraflex.Scheduler.
#pragma once

#include <cmath>
#include <string>

#include <fmt/format.h>

#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"

namespace paraflex_bench {

/// The largest --decision-gap-ms: an hour (a longer gap would leave devices idle for longer than any step).
inline constexpr double max_decision_gap_ms = 3'600'000;

/// --decision-gap-ms (paraflex-sim, paraflex-tune; simulate(decision_gap_ms=) in Python) as the
/// runtime's scheduler_options::min_decision_gap in microseconds. Throws paraflex::input_exception
/// naming the flag for a value outside [0, max_decision_gap_ms], not finite, or above 0 but under
/// half a microsecond (it would round to no gap at all).
inline paraflex::tick decision_gap_ticks(double ms) {
  using namespace paraflex;
  if (!(ms >= 0 && ms <= max_decision_gap_ms)) {
    throw input_exception(input_error{"--decision-gap-ms", 0, "", fmt::format("{} is not a number of milliseconds in [0, {}]", ms, max_decision_gap_ms)});
  }
  const auto ticks = static_cast<tick>(std::llround(ms * 1000));
  if (ms > 0 && ticks == 0) {
    throw input_exception(input_error{"--decision-gap-ms", 0, "", fmt::format("{} ms rounds to 0 microseconds (use 0 for no gap)", ms)});
  }
  return ticks;
}

/// What the tools' first line adds for a gap: ", decisions at least G ms apart", or nothing for 0.
inline std::string decision_gap_note(paraflex::tick gap) {
  return gap > 0 ? fmt::format(", decisions at least {} ms apart", static_cast<double>(gap) / 1000.0) : std::string();
}

}  // namespace paraflex_bench
