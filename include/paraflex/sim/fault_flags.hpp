// paraflex/sim/fault_flags.hpp - fault injection written as text (formats §5 "Flags").
//
//   ID@SECONDS          a device failure: device ID is lost for good at SECONDS     (--fail-device)
//   ID@SECONDS:FACTOR   a straggler: tasks touching device ID run FACTOR times longer from SECONDS
//                                                                                    (--straggler)
// ID is an integer in [0, gpus); SECONDS a finite number >= 0 that fits the microsecond clock; FACTOR
// a number in (0, 1000] (a slower device than 1000x is a lost one, and the bound keeps stretched
// durations inside the clock). Blanks around each part are allowed, nothing else: "3@1.5" yes, "3@1.5s",
// "3@", "@1", "3@nan", "3@-1", "9@1" on 8 GPUs no. Every rejection is an input_error whose file is
// the flag's name, with the text and the reason, so tools print "--fail-device '9@1': ..." and exit 2.
// paraflex-sim, the fuzz targets and bindings share these parsers.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

#include "paraflex/core/csv.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/executor/simulated.hpp"

namespace paraflex {

/// Largest straggler slow-down accepted from text.
inline constexpr double max_straggler_factor = 1000.0;
/// Smallest factor (a device that fast): below it steps of a few milliseconds would round to 0 us,
/// and a run of zero-length tasks has no makespan to measure throughput over.
inline constexpr double min_straggler_factor = 0.001;

namespace fault_flags_detail {

struct parts {
  device_id device = 0;
  tick at = 0;
  std::string_view rest;  ///< after SECONDS' ':' (straggler factor); empty when there is none
  bool has_rest = false;
};

[[nodiscard]] inline input_error bad(std::string_view flag, std::string_view text, const std::string& why) {
  return input_error{std::string(flag), 0, {}, fmt::format("{}: {}", detail::quote_for_message(text), why)};
}

/// ID@SECONDS[:REST], with ID in [0, gpus).
[[nodiscard]] inline result<parts> split(std::string_view flag, std::string_view text, int gpus, bool with_factor) {
  const char* form = with_factor ? "expected ID@SECONDS:FACTOR" : "expected ID@SECONDS";
  const auto at = text.find('@');
  if (at == std::string_view::npos) return bad(flag, text, form);
  parts p;
  const auto id = parse_integer<long long>(text.substr(0, at));
  if (!id) return bad(flag, text, "device ID: " + id.message);
  if (*id.value < 0 || *id.value >= gpus) {
    return bad(flag, text, fmt::format("device ID {} is not in [0, {}] ({} GPUs)", *id.value, gpus - 1, gpus));
  }
  p.device = static_cast<device_id>(*id.value);
  std::string_view seconds = text.substr(at + 1);
  if (const auto colon = seconds.find(':'); colon != std::string_view::npos) {
    p.rest = seconds.substr(colon + 1);
    p.has_rest = true;
    seconds = seconds.substr(0, colon);
  }
  if (p.has_rest != with_factor) return bad(flag, text, form);
  const auto s = parse_double(seconds);
  if (!s) return bad(flag, text, "SECONDS: " + s.message);
  if (*s.value < 0) return bad(flag, text, "SECONDS must be >= 0");
  const auto t = to_ticks(*s.value);
  if (!t) return bad(flag, text, "SECONDS does not fit in the microsecond clock");
  p.at = *t;
  return p;
}

}  // namespace fault_flags_detail

/// "ID@SECONDS": device ID of a `gpus`-device cluster is lost at SECONDS. `flag` names the source in
/// errors (e.g. "--fail-device").
[[nodiscard]] inline result<simulation_faults::device_failure> parse_device_failure(std::string_view text, int gpus,
                                                                                    std::string_view flag = "--fail-device") {
  auto p = fault_flags_detail::split(flag, text, gpus, false);
  if (!p) return p.error();
  return simulation_faults::device_failure{p.value().device, p.value().at};
}

/// "ID@SECONDS:FACTOR": tasks touching device ID run FACTOR times longer from SECONDS on.
[[nodiscard]] inline result<simulation_faults::straggler> parse_straggler(std::string_view text, int gpus,
                                                                          std::string_view flag = "--straggler") {
  auto p = fault_flags_detail::split(flag, text, gpus, true);
  if (!p) return p.error();
  const auto f = parse_double(p.value().rest);
  if (!f) return fault_flags_detail::bad(flag, text, "FACTOR: " + f.message);
  if (!(*f.value >= min_straggler_factor) || *f.value > max_straggler_factor) {
    return fault_flags_detail::bad(flag, text, fmt::format("FACTOR must be in [{}, {}]", min_straggler_factor, max_straggler_factor));
  }
  return simulation_faults::straggler{p.value().device, p.value().at, *f.value};
}

}  // namespace paraflex
