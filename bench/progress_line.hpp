// progress_line.hpp - the line paraflex-sim and paraflex-tune print on stderr while a long simulation
// runs: one wording for both tools, with an estimate of the time left.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "paraflex/core/time.hpp"
#include "paraflex/sim/simulate.hpp"

namespace paraflex_bench {

/// "TOOL: LABEL: E/T requests ended (P%), simulated S s, W s elapsed, about L s left". L assumes the
/// requests still to end take as long each as those so far; it is left out until one has ended (no
/// rate to go by yet).
inline std::string progress_line(std::string_view tool, const paraflex::simulation_progress& p) {
  std::string line = fmt::format("{}: {}: {}/{} requests ended", tool, p.label, p.ended, p.total);
  if (p.total > 0) line += fmt::format(" ({:.0f}%)", 100.0 * static_cast<double>(p.ended) / static_cast<double>(p.total));
  line += fmt::format(", simulated {:.1f} s, {:.1f} s elapsed", paraflex::to_seconds(p.now), p.wall_s);
  if (p.ended > 0 && p.ended < p.total) {
    line += fmt::format(", about {:.0f} s left", p.wall_s * static_cast<double>(p.total - p.ended) / static_cast<double>(p.ended));
  }
  return line;
}

/// A simulation_options::progress callback that prints progress_line on stderr once a run has taken
/// `after_s` seconds of host time: short runs stay silent (simulate() itself calls it at most once
/// per progress_interval_s).
inline auto progress_printer(std::string tool, double after_s = 2.0) {
  return [tool = std::move(tool), after_s](const paraflex::simulation_progress& p) {
    if (p.wall_s < after_s) return;
    std::fprintf(stderr, "%s\n", progress_line(tool, p).c_str());
  };
}

}  // namespace paraflex_bench
