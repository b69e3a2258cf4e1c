// Fuzz target: the recorded-trace reader (read_recorded_trace in sim/generators.hpp: CSV with a time
// column and a steps column, Mooncake JSON lines, Hetu-DiT Request(...) lines, plain numbers), and the
// generator that replays what it accepts. The first byte chooses the columns: bit 0 names the time
// column "t", bit 1 asks for the steps column "s", bit 2 gives empty steps cells 7 steps. Promises
// checked: no crash, hang or exception; an error names the file and is valid UTF-8 without control
// characters; an accepted trace has at least one arrival, sorted, finite, starting at 0, and one step
// count per arrival in [1, 1,000,000] exactly when steps were asked for; a replay of its first arrivals
// is a workload whose requests carry those steps, or a configuration error.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "fuzz_check.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/sim/generators.hpp"

namespace paraflex_fuzz {

inline int fuzz_arrival_trace(const std::uint8_t* data, std::size_t size) {
  using namespace paraflex;
  if (size == 0) return 0;
  trace_columns columns;
  if (data[0] & 1) columns.time = "t";
  if (data[0] & 2) columns.steps = "s";
  if (data[0] & 4) columns.missing_steps = 7;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data + 1), size - 1));
  auto r = read_recorded_trace(in, "fuzz.csv", columns);
  if (!r) {
    const std::string msg = r.error().what();
    PARAFLEX_FUZZ_CHECK(msg.rfind("fuzz.csv", 0) == 0);
    PARAFLEX_FUZZ_CHECK(is_valid_utf8(msg));
    PARAFLEX_FUZZ_CHECK(printable(msg) == msg);
    PARAFLEX_FUZZ_CHECK(r.error().line >= 0);
    return 0;
  }
  const recorded_trace& t = r.value();
  PARAFLEX_FUZZ_CHECK(!t.times_s.empty());
  PARAFLEX_FUZZ_CHECK(t.times_s.front() == 0.0);
  PARAFLEX_FUZZ_CHECK(std::is_sorted(t.times_s.begin(), t.times_s.end()));
  PARAFLEX_FUZZ_CHECK(std::all_of(t.times_s.begin(), t.times_s.end(), [](double x) { return std::isfinite(x) && x >= 0.0; }));
  PARAFLEX_FUZZ_CHECK(t.steps.size() == (columns.steps.empty() ? 0 : t.times_s.size()));
  PARAFLEX_FUZZ_CHECK(std::all_of(t.steps.begin(), t.steps.end(), [](int s) { return s >= 1 && s <= 1'000'000; }));
  PARAFLEX_FUZZ_CHECK(t.filled_steps <= t.steps.size() && (t.filled_steps == 0 || columns.missing_steps));

  // Replay the first arrivals (a few, so that a large step count stays cheap).
  workload_generator g;
  g.requests = std::min<std::size_t>(t.times_s.size(), 16);
  g.shapes = {shape_class{request_shape{"m", 256, 256, 1}}};
  g.arrivals = trace_arrivals{t.times_s, 0.0, t.steps};
  auto w = generate_workload(g);
  if (!w) {
    PARAFLEX_FUZZ_CHECK(is_valid_utf8(w.error().what()));
    return 0;
  }
  PARAFLEX_FUZZ_CHECK(w.value().requests.size() == g.requests);
  for (std::size_t i = 0; i < w.value().requests.size(); ++i) {
    PARAFLEX_FUZZ_CHECK(w.value().requests[i].steps == (t.steps.empty() ? 50 : t.steps[i]));
  }
  return 0;
}

}  // namespace paraflex_fuzz

PARAFLEX_FUZZ_ENTRY(paraflex_fuzz::fuzz_arrival_trace)
