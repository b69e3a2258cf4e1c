// paraflex/core/time.hpp - virtual and real time as integer microseconds.
//
// Every duration the scheduler reasons about is an integer count of microseconds, so that the same
// input always produces the same schedule: floating point is used only at the edges (reading a
// file, printing a metric) and is rounded exactly once.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

namespace paraflex {

/// A point in time or a duration, in microseconds. Signed so that differences are safe.
using tick = std::int64_t;

inline constexpr tick ticks_per_second = 1'000'000;
/// "Never": later than any finite event. Used for absent deadlines and empty queues.
inline constexpr tick never = std::numeric_limits<tick>::max();

/// Seconds (finite, >= 0 or negative) to the nearest microsecond; nullopt when the value is not finite
/// or does not fit in a tick with room to add durations (|t| < 2^62 us, about 146,000 years).
[[nodiscard]] inline std::optional<tick> to_ticks(double seconds) noexcept {
  if (!std::isfinite(seconds)) return std::nullopt;
  const double us = std::nearbyint(seconds * static_cast<double>(ticks_per_second));
  constexpr double limit = 4.6e18;  // below 2^62: sums of two in-range ticks cannot overflow
  if (us > limit || us < -limit) return std::nullopt;
  return static_cast<tick>(us);
}

[[nodiscard]] constexpr double to_seconds(tick t) noexcept {
  return static_cast<double>(t) / static_cast<double>(ticks_per_second);
}

/// The latest time a simulated run may reach: 4.0e18 us (about 127,000 years). Workloads are
/// checked against it (check_workload_costs) and so is every simulated task's end, so that times
/// and their sums never come near the 64-bit limit, where they would saturate or wrap.
inline constexpr tick clock_limit = 4'000'000'000'000'000'000;

/// Thrown by a virtual-time executor when a task would end past clock_limit: the run cannot be
/// represented (each request fits alone, but queued one after another they do not). `request` is
/// the launching request's handle (simulate(): its position in the workload).
class clock_overflow : public std::overflow_error {
 public:
  clock_overflow(const std::string& what, std::uint32_t request_handle) : std::overflow_error(what), request(request_handle) {}
  std::uint32_t request;
};

/// Saturating addition: a deadline of `never` plus a duration stays `never`.
[[nodiscard]] constexpr tick add_sat(tick a, tick b) noexcept {
  if (b > 0 && a > never - b) return never;
  return a + b;
}

}  // namespace paraflex
