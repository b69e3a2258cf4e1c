// paraflex/sim/generators.hpp - deterministic synthetic workloads: arrivals x shapes x steps x SLOs.
//
// A workload_generator is a plain config struct (designated initializers welcome) that composes four
// independent choices, each drawn from its own seeded stream:
//   arrivals  - Poisson at a rate (n requests or a duration), piecewise-constant rate phases, or replay
//               of real arrival timestamps (read_arrival_trace: Azure CSV, Mooncake jsonl, Hetu-DiT
//               Request(...) lines, plain numbers), optionally time-scaled to a mean rate;
//   shapes    - a list of shape_class entries picked uniformly, skewed towards large shapes with
//               p ~ exp(tokens / max_tokens) (TetriServe), or by explicit weights;
//   steps     - fixed, or drawn uniformly from a list;
//   SLOs      - none, a fixed base per shape x scale (TetriServe: 1.5/2/3/5 s per resolution), or
//               alpha x the request's own latency (steps x a step time the caller supplies, e.g. at
//               degree 1 or at the shape's fastest degree).
// Class labels and priorities come per shape, or by a rule (resolution labels, S/M/L by size, random
// priority levels). Finally the arrival times may be rescaled so that the offered load hits a target:
//   load = sum(steps x step time on 1 GPU) / (gpus x arrival span)                (formats.md §5)
//
//   workload_generator g{.seed = 7, .requests = 300, .arrivals = poisson_arrivals{.rate = 0.2},
//                        .shapes = tetriserve_shapes("flux-dev"), .mix = shape_mix::skewed};
//   result<workload> w = generate_workload(g);
//
// Determinism: only std::mt19937_64 (whose sequence the standard fixes) and our own transforms of its
// output are used - never std::*_distribution, whose algorithms differ between standard libraries. The
// streams are separate, so e.g. changing the arrival rate keeps the sequence of shapes. Exponential
// gaps use std::log1p, which libms may round differently in the last bit; arrivals are rounded to
// microseconds, so this cannot show except in an exact tie.
//
// Step times are callables (step_time_fn) so that this header does not depend on any cost model.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <istream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "paraflex/core/csv.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

/// Seconds of one denoising step of a shape (e.g. on 1 GPU, or at the shape's fastest degree).
using step_time_fn = std::function<double(const request_shape&)>;

// ------------------------------------------------------------------------------------------------
// Random draws that give the same numbers with every standard library.

namespace draw {

/// Uniform in [0, 1): the top 53 bits of one 64-bit output as a double mantissa.
[[nodiscard]] inline double uniform01(std::mt19937_64& g) noexcept {
  return static_cast<double>(g() >> 11) * 0x1.0p-53;
}

/// Exponential with the given rate (> 0): inversion, -log(1 - u) / rate. 1 - u is in (0, 1], so finite.
[[nodiscard]] inline double exponential(std::mt19937_64& g, double rate) noexcept {
  return -std::log1p(-uniform01(g)) / rate;
}

/// Uniform integer in [0, n), n > 0, without modulo bias (rejects the incomplete last block).
[[nodiscard]] inline std::size_t index(std::mt19937_64& g, std::size_t n) noexcept {
  const std::uint64_t range = static_cast<std::uint64_t>(n);
  const std::uint64_t limit = std::uint64_t(-1) - std::uint64_t(-1) % range;  // multiple of range
  std::uint64_t x = g();
  while (x >= limit) x = g();
  return static_cast<std::size_t>(x % range);
}

/// Index i with probability weights[i] / sum (weights >= 0, sum > 0).
[[nodiscard]] inline std::size_t weighted(std::mt19937_64& g, const std::vector<double>& weights) noexcept {
  double total = 0.0;
  for (const double w : weights) total += w;
  const double x = uniform01(g) * total;
  double acc = 0.0;
  std::size_t last_positive = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] <= 0.0) continue;
    acc += weights[i];
    last_positive = i;
    if (x < acc) return i;
  }
  return last_positive;  // x == total after rounding
}

/// A well-mixed seed for stream `stream` of a generator seeded with `seed` (splitmix64 finaliser), so
/// that the streams of nearby seeds do not overlap in any visible way.
[[nodiscard]] constexpr std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) noexcept {
  std::uint64_t z = seed + (stream + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace draw

// ------------------------------------------------------------------------------------------------
// Arrival processes.

/// Poisson arrivals at `rate` requests per second, starting at time 0 (the first arrival is one gap
/// in). Stops after workload_generator::requests arrivals, or at `duration_s`, whichever comes first;
/// at least one of the two must be set (> 0).
struct poisson_arrivals {
  double rate = 1.0;
  double duration_s = 0.0;
};

/// One phase of a piecewise-constant rate: `rate` requests per second for `duration_s` seconds.
/// A rate of 0 is an idle gap.
struct rate_phase {
  double duration_s = 0.0;
  double rate = 0.0;
};

/// A Poisson process whose rate follows `phases` in order (memorylessness lets each phase start
/// afresh at its boundary). With workload_generator::requests == 0 the phases run once; otherwise
/// they repeat cyclically until that many requests arrived (a daily pattern, say).
struct phased_arrivals {
  std::vector<rate_phase> phases{};
};

/// Replay of recorded arrival times (seconds; see read_arrival_trace). The first
/// workload_generator::requests of them are used (0 = all), shifted to start at 0. With rate > 0 the
/// times are scaled so that the mean rate, (n - 1) / span, equals it.
struct trace_arrivals {
  std::vector<double> times_s{};
  double rate = 0.0;
  /// Empty, or the denoising steps of each arrival (same length as times_s, each >= 1, recorded with
  /// it: read_recorded_trace's steps): the request at times_s[i] then has steps[i] instead of a draw
  /// from workload_generator::steps.
  std::vector<int> steps{};
};

using arrival_process = std::variant<poisson_arrivals, phased_arrivals, trace_arrivals>;

namespace generators_detail {

inline constexpr std::size_t max_requests = 50'000'000;  // a guard against a typo, not a real limit

[[nodiscard]] inline input_error config_error(std::string field, std::string message) {
  return input_error{"<generator>", 0, std::move(field), std::move(message)};
}

[[nodiscard]] inline bool positive_finite(double v) noexcept { return std::isfinite(v) && v > 0.0; }

/// Positions of `times` in time order, ties in their given order: what a trace's other columns
/// (its steps) are permuted by so that they follow their arrivals.
[[nodiscard]] inline std::vector<std::size_t> time_order(const std::vector<double>& times) {
  std::vector<std::size_t> order(times.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return times[a] < times[b]; });
  return order;
}

}  // namespace generators_detail

/// Arrival times in seconds (nondecreasing) of `process`, `requests` of them (0 = as many as the
/// process yields by itself), drawn from `g`. Configuration errors name the field (file "<generator>").
/// For a trace with recorded steps, `trace_steps` (when given) receives them in the same order.
[[nodiscard]] inline result<std::vector<double>> generate_arrivals(const arrival_process& process, std::size_t requests,
                                                                   std::mt19937_64& g, std::vector<int>* trace_steps = nullptr) {
  using namespace generators_detail;
  std::vector<double> out;
  if (requests > max_requests) return config_error("requests", fmt::format("more than {} requests", max_requests));

  if (const auto* p = std::get_if<poisson_arrivals>(&process)) {
    if (!positive_finite(p->rate)) return config_error("rate", fmt::format("must be > 0, got {}", p->rate));
    if (!(p->duration_s >= 0.0) || !std::isfinite(p->duration_s)) {
      return config_error("duration_s", fmt::format("must be >= 0, got {}", p->duration_s));
    }
    if (requests == 0 && p->duration_s == 0.0) {
      return config_error("requests", "Poisson arrivals need a request count or a duration");
    }
    if (requests == 0 && p->rate * p->duration_s > static_cast<double>(max_requests)) {
      return config_error("duration_s", "rate x duration asks for too many requests");
    }
    double t = 0.0;
    for (;;) {
      t += draw::exponential(g, p->rate);
      if (p->duration_s > 0.0 && t >= p->duration_s) break;
      out.push_back(t);
      if (requests > 0 && out.size() == requests) break;
    }
  } else if (const auto* ph = std::get_if<phased_arrivals>(&process)) {
    if (ph->phases.empty()) return config_error("phases", "no phases");
    double expected = 0.0;
    for (const auto& f : ph->phases) {
      if (!positive_finite(f.duration_s)) return config_error("phases", fmt::format("phase duration must be > 0, got {}", f.duration_s));
      if (!(f.rate >= 0.0) || !std::isfinite(f.rate)) return config_error("phases", fmt::format("phase rate must be >= 0, got {}", f.rate));
      expected += f.rate * f.duration_s;
    }
    if (!(expected > 0.0)) return config_error("phases", "every phase has rate 0: no request would arrive");
    if (requests == 0 && expected > static_cast<double>(max_requests)) {
      return config_error("phases", "the phases ask for too many requests");
    }
    double start = 0.0;  // of the current phase
    for (std::size_t i = 0;; ++i) {
      if (i == ph->phases.size()) {
        if (requests == 0) break;
        i = 0;
      }
      const auto& f = ph->phases[i];
      const double end = start + f.duration_s;
      if (f.rate > 0.0) {
        for (double t = start + draw::exponential(g, f.rate); t < end; t += draw::exponential(g, f.rate)) {
          out.push_back(t);
          if (requests > 0 && out.size() == requests) return out;
        }
      }
      start = end;
    }
  } else {
    const auto& tr = std::get<trace_arrivals>(process);
    if (tr.times_s.empty()) return config_error("trace", "the trace has no arrivals");
    if (requests > tr.times_s.size()) {
      return config_error("requests", fmt::format("{} requested but the trace has only {} arrivals", requests,
                                                  tr.times_s.size()));
    }
    if (!tr.steps.empty() && tr.steps.size() != tr.times_s.size()) {
      return config_error("trace", fmt::format("{} step counts for {} arrivals: one per arrival, or none", tr.steps.size(), tr.times_s.size()));
    }
    for (const double t : tr.times_s) {
      if (!std::isfinite(t)) return config_error("trace", "the trace has a non-finite time");
    }
    for (const int s : tr.steps) {
      if (s <= 0) return config_error("trace", fmt::format("a recorded step count must be > 0, got {}", s));
    }
    std::vector<std::size_t> order = time_order(tr.times_s);
    order.resize(requests == 0 ? order.size() : requests);
    for (const std::size_t i : order) out.push_back(tr.times_s[i]);
    if (trace_steps != nullptr && !tr.steps.empty()) {
      for (const std::size_t i : order) trace_steps->push_back(tr.steps[i]);
    }
    const double first = out.front();
    for (double& t : out) t -= first;
    if (tr.rate != 0.0) {
      if (!positive_finite(tr.rate)) return config_error("rate", fmt::format("must be > 0, got {}", tr.rate));
      const double span = out.back();
      if (out.size() < 2 || !(span > 0.0)) {
        return config_error("rate", "cannot scale a trace to a rate when all its arrivals are at one instant");
      }
      const double scale = static_cast<double>(out.size() - 1) / span / tr.rate;
      for (double& t : out) t *= scale;
    }
  }
  if (out.empty()) return config_error("arrivals", "the arrival process produced no request");
  return out;
}

// ------------------------------------------------------------------------------------------------
// Recorded arrival traces.

/// How read_arrival_trace interprets its input.
enum class trace_format {
  detect,          ///< by content of the first non-comment line: '{' jsonl, "Request(" Hetu-DiT, a number
                   ///< plain, anything else a CSV header
  csv,             ///< a header and a time column (trace_columns): Azure's TIMESTAMP, Alibaba's gmt_create, arrival_s...
  mooncake_jsonl,  ///< one JSON object per line with "timestamp" in milliseconds
  hetu_dit,        ///< Python-repr lines "Request(request_id=0, timestamp=0.5, ...)", seconds
  plain,           ///< one number of seconds per line
};

namespace generators_detail {

/// Parses exactly `n` decimal digits at s[pos..] into `out`.
[[nodiscard]] inline bool digits(std::string_view s, std::size_t& pos, std::size_t n, int& out) noexcept {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += n;
  out = v;
  return true;
}

/// "YYYY-MM-DD HH:MM:SS[.fraction]" (or 'T' between date and time) as nanoseconds since 1970 UTC;
/// digits of the fraction beyond nanoseconds are dropped. Integer arithmetic: a double would lose the
/// sub-microsecond digits of an epoch-sized value. Years first_datetime_year..last_datetime_year: the
/// range of a signed 64-bit count of nanoseconds.
inline constexpr int first_datetime_year = 1678, last_datetime_year = 2261;
[[nodiscard]] inline std::optional<std::int64_t> parse_datetime_ns(std::string_view s) noexcept {
  std::size_t pos = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  auto sep = [&](char c) { return pos < s.size() && s[pos] == c ? (++pos, true) : false; };
  if (!digits(s, pos, 4, y) || !sep('-') || !digits(s, pos, 2, mo) || !sep('-') || !digits(s, pos, 2, d)) return std::nullopt;
  if (!sep(' ') && !sep('T')) return std::nullopt;
  if (!digits(s, pos, 2, h) || !sep(':') || !digits(s, pos, 2, mi) || !sep(':') || !digits(s, pos, 2, sec)) return std::nullopt;
  std::int64_t frac_ns = 0;
  if (sep('.')) {
    std::int64_t scale = 100'000'000;
    const std::size_t begin = pos;
    for (; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos) {
      frac_ns += scale * (s[pos] - '0');
      scale /= 10;
    }
    if (pos == begin) return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month{static_cast<unsigned>(mo)},
                                        std::chrono::day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return std::nullopt;  // 60: a leap second
  if (y < first_datetime_year || y > last_datetime_year) return std::nullopt;
  const std::int64_t days = std::chrono::sys_days{ymd}.time_since_epoch().count();
  return ((days * 86400 + h * 3600 + mi * 60 + sec) * 1'000'000'000) + frac_ns;
}

/// The text after `key=` in a Python-repr argument list, up to the next ',' or ')'. The key must start
/// an argument (after '(' or ','), so a prompt that mentions "timestamp=" cannot fool it.
[[nodiscard]] inline std::optional<std::string_view> repr_argument(std::string_view line, std::string_view key) {
  for (std::size_t at = line.find(key); at != std::string_view::npos; at = line.find(key, at + 1)) {
    std::size_t before = at;
    while (before > 0 && line[before - 1] == ' ') --before;
    if (before == 0 || (line[before - 1] != '(' && line[before - 1] != ',')) continue;
    std::size_t v = at + key.size();
    while (v < line.size() && line[v] == ' ') ++v;
    if (v >= line.size() || line[v] != '=') continue;
    ++v;
    const std::size_t end = line.find_first_of(",)", v);
    if (end == std::string_view::npos) return std::nullopt;
    return line.substr(v, end - v);
  }
  return std::nullopt;
}

[[nodiscard]] inline trace_format detect_trace_format(std::string_view text) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = std::min(text.find('\n', pos), text.size());
    std::string_view line = trim(text.substr(pos, nl - pos));
    if (pos == 0 && line.substr(0, 3) == "\xEF\xBB\xBF") line = trim(line.substr(3));
    pos = nl + 1;
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '{') return trace_format::mooncake_jsonl;
    if (line.substr(0, 8) == "Request(") return trace_format::hetu_dit;
    if (parse_double(line)) return trace_format::plain;
    return trace_format::csv;
  }
  return trace_format::plain;  // nothing but comments: reported as "no arrivals" below
}

}  // namespace generators_detail

/// Which columns of a CSV trace read_recorded_trace reads (other formats have one place for the time).
struct trace_columns {
  /// The arrival time. Empty: the first of TIMESTAMP (Azure), arrival_s, gmt_create (Alibaba GenAI),
  /// arrival_time, in that order, that the header has, matched without regard to case. Its values are
  /// date-times ("2023-11-16 18:17:03.97996", a 'T' between date and time allowed) or numbers of
  /// seconds, as its first row is; every row must be the same kind.
  std::string time{};
  /// Non-empty: each arrival's denoising steps come from this column (a whole number >= 1; "30.0" is
  /// 30), e.g. num_inference_steps in Alibaba's GenAI trace.
  std::string steps{};
  /// The steps of a row whose steps cell is empty (a request the service never ran has none); unset:
  /// an empty cell is an error like any other bad value.
  std::optional<int> missing_steps{};
};

/// A recorded trace: arrival times in seconds, sorted (ties as recorded) and shifted so that the first
/// is 0, and, when trace_columns::steps names a column, each arrival's steps in the same order.
struct recorded_trace {
  std::vector<double> times_s{};
  std::vector<int> steps{};
  std::size_t filled_steps = 0;  ///< rows whose empty steps cell took trace_columns::missing_steps
};

/// Reads a recorded trace (trace_format). Errors name the file, the 1-based line and the column or key
/// (the time column, timestamp, the steps column). Comment ('#') and blank lines are skipped in every
/// format; a trace without arrivals is an error, and so is a column choice for a format without columns.
[[nodiscard]] inline result<recorded_trace> read_recorded_trace(std::istream& in, std::string file_name, const trace_columns& columns = {},
                                                               trace_format format = trace_format::detect) {
  using namespace generators_detail;
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (format == trace_format::detect) format = detect_trace_format(text);
  if (format != trace_format::csv && (!columns.time.empty() || !columns.steps.empty())) {
    return input_error{file_name, 0, !columns.time.empty() ? columns.time : columns.steps,
                       "a column can be chosen only in a CSV trace (with a header); this file is read as a " +
                           std::string(format == trace_format::mooncake_jsonl ? "JSON-lines"
                                       : format == trace_format::hetu_dit     ? "Hetu-DiT Request(...)"
                                                                              : "plain (one number per line)") +
                           " trace"};
  }

  recorded_trace out;
  std::vector<double>& times = out.times_s;
  if (format == trace_format::csv) {
    std::istringstream s(text);
    csv_reader csv(s, file_name);
    // Any header is accepted (unknown columns are ignored); the columns read must be unambiguous.
    if (auto h = csv.read_header(std::span<const std::string_view>{}); !h) return h.error();
    const auto& names = csv.column_names();
    const auto same = [](std::string_view a, std::string_view b) {
      return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return (x >= 'A' && x <= 'Z' ? x - 'A' + 'a' : x) == (y >= 'A' && y <= 'Z' ? y - 'A' + 'a' : y);
             });
    };
    // The column named `name` (exactly, or else without regard to case), if exactly one matches.
    const auto find = [&](std::string_view name) -> result<std::optional<std::size_t>> {
      std::vector<std::size_t> exact, loose;
      for (std::size_t c = 0; c < names.size(); ++c) {
        if (names[c] == name) exact.push_back(c);
        if (same(names[c], name)) loose.push_back(c);
      }
      const auto& hits = exact.empty() ? loose : exact;
      if (hits.size() > 1) {
        return input_error{file_name, csv.header_line(), names[hits[1]],
                           fmt::format("columns {} and {} are both '{}': which one is meant is ambiguous", hits[0] + 1, hits[1] + 1, name)};
      }
      if (hits.empty()) return std::optional<std::size_t>{};
      return std::optional<std::size_t>{hits.front()};
    };
    // A column the caller named: there, or an error naming it and what the header has.
    const auto named = [&](const std::string& name, std::string_view role) -> result<std::optional<std::size_t>> {
      auto f = find(name);
      if (f && !f.value()) {
        return input_error{file_name, csv.header_line(), name, fmt::format("missing {} column (the header has: {})", role, csv.header_text())};
      }
      return f;
    };
    std::optional<std::size_t> c_time;
    if (!columns.time.empty()) {
      auto f = named(columns.time, "time");
      if (!f) return f.error();
      c_time = f.value();
    } else {
      for (const std::string_view candidate : {"TIMESTAMP", "arrival_s", "gmt_create", "arrival_time"}) {
        auto f = find(candidate);
        if (!f) return f.error();
        if ((c_time = f.value())) break;
      }
      if (!c_time) {
        return input_error{file_name, csv.header_line(), "TIMESTAMP",
                           "missing column: an arrival trace CSV needs a time column - TIMESTAMP, arrival_s, gmt_create or "
                           "arrival_time (any case), or the one you name (paraflex-workload --trace-time) - (the header has: " +
                               csv.header_text() + ")"};
      }
    }
    std::optional<std::size_t> c_steps;
    if (!columns.steps.empty()) {
      auto f = named(columns.steps, "steps");
      if (!f) return f.error();
      c_steps = f.value();
    }
    // Date-times stay integer nanoseconds until the first is subtracted (a double would lose the
    // sub-microsecond digits of an epoch-sized value).
    std::optional<bool> dated;  // the kind of the first row's time, which every row must share
    std::vector<std::int64_t> stamps_ns;
    for (;;) {
      auto more = csv.next_row();
      if (!more) return more.error();
      if (!more.value()) break;
      const std::string_view field = trim(csv.field(*c_time));
      const auto ns = parse_datetime_ns(field);
      if (!dated) {
        if (!ns && !parse_double(field)) {
          return csv.error_at(*c_time, fmt::format("expected a date and time like 2023-11-16 18:17:03.97996 (years 1678-2261) or a number of seconds, got '{}'",
                                                   csv.field(*c_time)));
        }
        dated = ns.has_value();
      }
      if (*dated) {
        if (!ns) {
          return csv.error_at(*c_time, fmt::format("expected a date and time like 2023-11-16 18:17:03.97996 (years 1678-2261), as in the first row, got '{}'",
                                                   csv.field(*c_time)));
        }
        stamps_ns.push_back(*ns);
      } else {
        const auto v = parse_double(field);
        if (!v) return csv.error_at(*c_time, "expected a number of seconds, as in the first row: " + v.message);
        if (!std::isfinite(*v.value)) return csv.error_at(*c_time, fmt::format("expected a finite number of seconds, got '{}'", field));
        times.push_back(*v.value);
      }
      if (c_steps) {
        const std::string_view f = trim(csv.field(*c_steps));
        if (f.empty() && columns.missing_steps) {
          out.steps.push_back(*columns.missing_steps);
          ++out.filled_steps;
          continue;
        }
        const auto v = parse_double(f);
        if (!v || !std::isfinite(*v.value) || *v.value < 1.0 || *v.value > max_steps || *v.value != std::floor(*v.value)) {
          return csv.error_at(*c_steps, fmt::format("expected a whole number of steps from 1 to {}, got '{}'", max_steps, csv.field(*c_steps)));
        }
        out.steps.push_back(static_cast<int>(*v.value));
      }
    }
    if (!stamps_ns.empty()) {
      const std::int64_t first = *std::min_element(stamps_ns.begin(), stamps_ns.end());
      // Unsigned: two stamps of the range can be more than INT64_MAX apart, never more than 2^64.
      for (const auto ns : stamps_ns) times.push_back(static_cast<double>(static_cast<std::uint64_t>(ns) - static_cast<std::uint64_t>(first)) * 1e-9);
    }
  } else {
    const std::string_view all = text;  // lines are views into it (text.substr would copy, then dangle)
    std::size_t pos = 0;
    long line_no = 0;
    while (pos < all.size()) {
      const std::size_t nl = std::min(all.find('\n', pos), all.size());
      std::string_view line = trim(all.substr(pos, nl - pos));
      if (pos == 0 && line.substr(0, 3) == "\xEF\xBB\xBF") line = trim(line.substr(3));
      pos = nl + 1;
      ++line_no;
      if (line.empty() || line.front() == '#') continue;
      auto bad = [&](std::string column, std::string message) {
        return input_error{file_name, line_no, std::move(column), std::move(message)};
      };
      if (format == trace_format::mooncake_jsonl) {
        const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) return bad({}, "expected one JSON object per line");
        const auto it = j.find("timestamp");
        if (it == j.end()) return bad("timestamp", "missing key");
        if (!it->is_number()) return bad("timestamp", fmt::format("expected a number of milliseconds, got {}", it->dump()));
        const double ms = it->get<double>();
        if (!std::isfinite(ms)) return bad("timestamp", "not a finite number");
        times.push_back(ms / 1000.0);
      } else if (format == trace_format::hetu_dit) {
        if (line.substr(0, 8) != "Request(") return bad({}, "expected a line 'Request(..., timestamp=SECONDS, ...)'");
        const auto arg = repr_argument(line, "timestamp");
        if (!arg) return bad("timestamp", "missing argument timestamp=");
        const auto v = parse_double(*arg);
        if (!v) return bad("timestamp", v.message);
        times.push_back(*v.value);
      } else {
        const auto v = parse_double(line);
        if (!v) return bad({}, v.message + " (a plain trace has one number of seconds per line)");
        times.push_back(*v.value);
      }
    }
  }
  if (times.empty()) return input_error{file_name, 0, {}, "the trace has no arrivals"};
  if (out.steps.empty()) {
    std::stable_sort(times.begin(), times.end());
  } else {
    const std::vector<std::size_t> order = time_order(times);
    recorded_trace sorted;
    sorted.filled_steps = out.filled_steps;
    sorted.times_s.reserve(order.size());
    sorted.steps.reserve(order.size());
    for (const std::size_t i : order) {
      sorted.times_s.push_back(times[i]);
      sorted.steps.push_back(out.steps[i]);
    }
    out = std::move(sorted);
  }
  const double first = out.times_s.front();
  for (double& t : out.times_s) t -= first;
  return out;
}

/// Arrival times of a recorded trace (read_recorded_trace with the default columns), in seconds, sorted
/// and shifted so that the first is 0.
[[nodiscard]] inline result<std::vector<double>> read_arrival_trace(std::istream& in, std::string file_name,
                                                                    trace_format format = trace_format::detect) {
  auto t = read_recorded_trace(in, std::move(file_name), {}, format);
  if (!t) return t.error();
  return std::move(t.value().times_s);
}

/// Opens `path` and reads it with read_recorded_trace; a file that cannot be opened is an error naming it.
[[nodiscard]] inline result<recorded_trace> load_recorded_trace(const std::string& path, const trace_columns& columns = {},
                                                                trace_format format = trace_format::detect) {
  std::ifstream in;
  if (auto e = open_input_file(path, "trace file", in)) return *e;
  return read_recorded_trace(in, path, columns, format);
}

/// Opens `path` and reads it with read_arrival_trace; a file that cannot be opened is an error naming it.
[[nodiscard]] inline result<std::vector<double>> load_arrival_trace(const std::string& path,
                                                                    trace_format format = trace_format::detect) {
  std::ifstream in;
  if (auto e = open_input_file(path, "trace file", in)) return *e;
  return read_arrival_trace(in, path, format);
}

// ------------------------------------------------------------------------------------------------
// Shapes, steps, SLOs, labels.

/// One kind of request in a mix, with what the rules below may need about it.
struct shape_class {
  request_shape shape{};
  double weight = 1.0;      ///< relative frequency under shape_mix::weighted
  double base_slo_s = 0.0;  ///< base latency objective under slo_rule::kind::fixed (> 0 there)
  int priority = 0;         ///< used unless workload_generator::priority_weights is set
  std::string class_label{};  ///< used under class_labels::per_shape; empty = resolution label
};

enum class shape_mix {
  uniform,   ///< every shape equally likely
  skewed,    ///< p ~ exp(tokens / max tokens over the list) (TetriServe's "Skewed")
  weighted,  ///< p ~ shape_class::weight
};

enum class class_labels {
  per_shape,   ///< shape_class::class_label, or the resolution label when that is empty
  resolution,  ///< resolution_label(shape): "1024px", "768x1360", "720x1280x129"
  size,        ///< "S", "M", "L" by latent-token rank among the distinct shapes of the list
};

/// How each request's latency objective (slo_s) is set.
struct slo_rule {
  enum class kind {
    none,              ///< no deadlines
    fixed,             ///< shape_class::base_slo_s x scale
    latency_multiple,  ///< scale (alpha) x steps x step_s(shape): a multiple of the latency alone
  };
  kind rule = kind::none;
  double scale = 1.0;
  step_time_fn step_s{};  ///< latency_multiple only: seconds per step (at degree 1, or the fastest degree)

  [[nodiscard]] static slo_rule none() { return {}; }
  [[nodiscard]] static slo_rule fixed(double scale) { return {kind::fixed, scale, {}}; }
  [[nodiscard]] static slo_rule latency_multiple(double alpha, step_time_fn step_s) {
    return {kind::latency_multiple, alpha, std::move(step_s)};
  }
};

/// Rescale arrival times so that the workload's offered load on `gpus` GPUs equals `load`.
struct load_target {
  double load = 1.0;
  int gpus = 1;
  step_time_fn step_s{};  ///< seconds per step on one GPU
};

/// Everything that defines a generated workload. Same config (seed included) -> same workload.
struct workload_generator {
  std::string source = "generated";  ///< becomes workload::source
  std::uint64_t seed = 1;
  std::size_t requests = 0;          ///< 0 = as many as the arrival process yields (duration, phases, trace)
  arrival_process arrivals = poisson_arrivals{};
  std::vector<shape_class> shapes{};  ///< at least one
  shape_mix mix = shape_mix::uniform;
  int spatial_factor = 16;           ///< for latent tokens under shape_mix::skewed and class_labels::size
  std::vector<int> steps = {50};     ///< one value = fixed; several = drawn uniformly
  slo_rule slo{};
  class_labels labels = class_labels::per_shape;
  std::vector<double> priority_weights{};  ///< non-empty: priority i drawn with weight [i], overriding per shape
  std::optional<load_target> load{};       ///< applied last
};

/// "1024px" for a square image, "768x1360" (height x width) for other images, "720x1280x129" for video.
[[nodiscard]] inline std::string resolution_label(const request_shape& s) {
  if (s.frames > 1) return fmt::format("{}x{}x{}", s.height, s.width, s.frames);
  if (s.height == s.width) return fmt::format("{}px", s.height);
  return fmt::format("{}x{}", s.height, s.width);
}

/// TetriServe's evaluation mix for `model`: square 256/512/1024/2048 images with base SLOs 1.5/2/3/5 s
/// (measured on H100: scale them, or use slo_rule::latency_multiple, on other hardware).
[[nodiscard]] inline std::vector<shape_class> tetriserve_shapes(const std::string& model) {
  std::vector<shape_class> out;
  for (const auto& [px, slo] : {std::pair{256, 1.5}, {512, 2.0}, {1024, 3.0}, {2048, 5.0}}) {
    shape_class c;
    c.shape = request_shape{model, px, px, 1};
    c.base_slo_s = slo;
    c.class_label = resolution_label(c.shape);
    out.push_back(std::move(c));
  }
  return out;
}

/// Probability of each entry of `shapes` under `mix` (sums to 1; zero-weight entries get 0).
[[nodiscard]] inline std::vector<double> mix_probabilities(const std::vector<shape_class>& shapes, shape_mix mix,
                                                           int spatial_factor = 16) {
  std::vector<double> p(shapes.size(), 1.0);
  if (mix == shape_mix::weighted) {
    // Scaled by the largest first: weights near the largest double would add up to infinity.
    double largest = 0.0;
    for (const auto& c : shapes) largest = std::max(largest, c.weight);
    for (std::size_t i = 0; i < shapes.size(); ++i) p[i] = largest > 0.0 && std::isfinite(largest) ? shapes[i].weight / largest : shapes[i].weight;
  } else if (mix == shape_mix::skewed) {
    double max_tokens = 0.0;
    for (const auto& c : shapes) max_tokens = std::max(max_tokens, latent_tokens(c.shape, spatial_factor));
    for (std::size_t i = 0; i < shapes.size(); ++i) p[i] = std::exp(latent_tokens(shapes[i].shape, spatial_factor) / max_tokens);
  }
  double total = 0.0;
  for (const double x : p) total += x;
  if (total > 0.0) {
    for (double& x : p) x /= total;
  }
  return p;
}

/// Offered load of `w` on `gpus` GPUs: sum(steps x step_s(shape)) / (gpus x (last - first arrival)).
/// +infinity when all requests arrive at once (and there is work). step_s is called once per shape.
[[nodiscard]] inline double offered_load(const workload& w, int gpus, const step_time_fn& step_s) {
  std::map<request_shape, double> cache;
  double work = 0.0;
  for (const auto& r : w.requests) {
    auto it = cache.find(r.shape);
    if (it == cache.end()) it = cache.emplace(r.shape, step_s(r.shape)).first;
    work += static_cast<double>(r.steps) * it->second;
  }
  if (w.requests.empty()) return 0.0;
  const auto [lo, hi] = std::minmax_element(w.requests.begin(), w.requests.end(),
                                            [](const auto& a, const auto& b) { return a.arrival < b.arrival; });
  const double span = to_seconds(hi->arrival - lo->arrival);
  return work / (static_cast<double>(gpus) * span);
}

/// `w` with its arrival times stretched or compressed about the first arrival, so that
/// offered_load(result, gpus, step_s) == load up to the rounding of the span to a microsecond.
/// Deadlines move with their arrivals (slo_s is a duration). Errors: load, gpus or a step time not
/// positive, all requests at one instant, or times that no longer fit a tick.
[[nodiscard]] inline result<workload> rescale_to_load(workload w, double load, int gpus, const step_time_fn& step_s) {
  using namespace generators_detail;
  if (!positive_finite(load)) return config_error("load", fmt::format("must be > 0, got {}", load));
  if (gpus < 1) return config_error("gpus", fmt::format("must be >= 1, got {}", gpus));
  if (w.requests.empty()) return config_error("load", "cannot rescale an empty workload");
  std::map<request_shape, double> cache;
  double work = 0.0;
  for (const auto& r : w.requests) {
    auto it = cache.find(r.shape);
    if (it == cache.end()) {
      const double s = step_s(r.shape);
      if (!positive_finite(s)) {
        return config_error("load", fmt::format("step time of {} {} is not a positive number ({})", r.shape.model,
                                                resolution_label(r.shape), s));
      }
      it = cache.emplace(r.shape, s).first;
    }
    work += static_cast<double>(r.steps) * it->second;
  }
  tick first = never, last = -never;
  for (const auto& r : w.requests) first = std::min(first, r.arrival), last = std::max(last, r.arrival);
  if (last == first) return config_error("load", "cannot rescale: every request arrives at the same instant");
  const double target_span_us = work / (static_cast<double>(gpus) * load) * static_cast<double>(ticks_per_second);
  const double factor = target_span_us / static_cast<double>(last - first);
  constexpr double limit = 4.0e18;  // keep arrival + slo inside a tick (see to_ticks)
  if (!(target_span_us + static_cast<double>(first) < limit)) {
    return config_error("load", fmt::format("load {} stretches the arrivals beyond the microsecond clock", load));
  }
  for (auto& r : w.requests) {
    r.arrival = first + static_cast<tick>(std::nearbyint(static_cast<double>(r.arrival - first) * factor));
  }
  return w;
}

/// Builds the workload described by `g`. Request ids are "1".."n" in arrival order. Errors name the
/// offending field (file "<generator>").
[[nodiscard]] inline result<workload> generate_workload(const workload_generator& g) {
  using namespace generators_detail;
  if (g.shapes.empty()) return config_error("shapes", "no shapes to draw from");
  for (const auto& c : g.shapes) {
    const auto& s = c.shape;
    if (s.model.empty() || s.height <= 0 || s.width <= 0 || s.frames <= 0) {
      return config_error("shapes", fmt::format("invalid shape '{}' {}x{}x{}", s.model, s.height, s.width, s.frames));
    }
  }
  if (g.spatial_factor < 1) return config_error("spatial_factor", "must be >= 1");
  if (g.steps.empty()) return config_error("steps", "no step counts to draw from");
  for (const int s : g.steps) {
    if (s <= 0) return config_error("steps", fmt::format("must be > 0, got {}", s));
    if (s > max_steps) return config_error("steps", fmt::format("must be at most {} (what a workload file may hold), got {}", max_steps, s));
  }
  const auto probabilities = mix_probabilities(g.shapes, g.mix, g.spatial_factor);
  for (const double p : probabilities) {
    if (!(p >= 0.0) || !std::isfinite(p)) return config_error("shapes", "weights must be finite and >= 0");
  }
  if (std::none_of(probabilities.begin(), probabilities.end(), [](double p) { return p > 0.0; })) {
    return config_error("shapes", "every weight is 0");
  }
  if (!g.priority_weights.empty()) {
    double total = 0.0;
    for (const double w : g.priority_weights) {
      if (!(w >= 0.0) || !std::isfinite(w)) return config_error("priority_weights", "must be finite and >= 0");
      total += w;
    }
    if (!(total > 0.0)) return config_error("priority_weights", "every weight is 0");
  }

  // Per-shape SLO (seconds) and label, computed once.
  std::vector<std::optional<double>> slo_s(g.shapes.size());
  std::vector<std::string> labels(g.shapes.size());
  if (g.slo.rule != slo_rule::kind::none && !positive_finite(g.slo.scale)) {
    return config_error("slo", fmt::format("scale must be > 0, got {}", g.slo.scale));
  }
  if (g.slo.rule == slo_rule::kind::latency_multiple && !g.slo.step_s) {
    return config_error("slo", "latency_multiple needs a step time function");
  }
  std::vector<std::size_t> by_size(g.shapes.size());
  for (std::size_t i = 0; i < by_size.size(); ++i) by_size[i] = i;
  std::stable_sort(by_size.begin(), by_size.end(), [&](std::size_t a, std::size_t b) {
    return latent_tokens(g.shapes[a].shape, g.spatial_factor) < latent_tokens(g.shapes[b].shape, g.spatial_factor);
  });
  // Distinct token counts, in increasing order: the size classes S/M/L split these.
  std::vector<double> sizes;
  for (const auto i : by_size) {
    const double t = latent_tokens(g.shapes[i].shape, g.spatial_factor);
    if (sizes.empty() || sizes.back() != t) sizes.push_back(t);
  }
  for (std::size_t i = 0; i < g.shapes.size(); ++i) {
    const auto& c = g.shapes[i];
    switch (g.labels) {
      case class_labels::per_shape:
        labels[i] = c.class_label.empty() ? resolution_label(c.shape) : c.class_label;
        break;
      case class_labels::resolution:
        labels[i] = resolution_label(c.shape);
        break;
      case class_labels::size: {
        // Rank 0..m-1 spread over S, M, L (2 sizes: S and L; 1 size: M).
        const auto m = sizes.size();
        const auto rank = static_cast<std::size_t>(
            std::lower_bound(sizes.begin(), sizes.end(), latent_tokens(c.shape, g.spatial_factor)) - sizes.begin());
        const auto k = m == 1 ? std::size_t{1}
                              : static_cast<std::size_t>(std::lround(2.0 * static_cast<double>(rank) /
                                                                     static_cast<double>(m - 1)));
        labels[i] = std::string(1, "SML"[k]);
        break;
      }
    }
    if (g.slo.rule == slo_rule::kind::fixed) {
      if (!positive_finite(c.base_slo_s)) {
        return config_error("slo", fmt::format("shape {} {} needs a base SLO > 0 for the fixed rule", c.shape.model,
                                               resolution_label(c.shape)));
      }
      slo_s[i] = c.base_slo_s * g.slo.scale;
    } else if (g.slo.rule == slo_rule::kind::latency_multiple) {
      const double step = g.slo.step_s(c.shape);
      if (!positive_finite(step)) {
        return config_error("slo", fmt::format("step time of {} {} is not a positive number ({})", c.shape.model,
                                               resolution_label(c.shape), step));
      }
      slo_s[i] = step;  // times steps x alpha per request below
    }
  }

  // Independent streams: changing one choice (say the arrival rate) keeps the others' draws.
  std::mt19937_64 arrival_rng(draw::stream_seed(g.seed, 0));
  std::mt19937_64 shape_rng(draw::stream_seed(g.seed, 1));
  std::mt19937_64 steps_rng(draw::stream_seed(g.seed, 2));
  std::mt19937_64 priority_rng(draw::stream_seed(g.seed, 3));

  std::vector<int> recorded_steps;  // a trace's own step counts, when it has them
  auto times = generate_arrivals(g.arrivals, g.requests, arrival_rng, &recorded_steps);
  if (!times) return times.error();

  workload w;
  w.source = g.source;
  w.requests.reserve(times.value().size());
  for (std::size_t n = 0; n < times.value().size(); ++n) {
    request_spec r;
    r.id = std::to_string(n + 1);
    const auto arrival = to_ticks(times.value()[n]);
    if (!arrival) return config_error("arrivals", fmt::format("arrival {} s does not fit in the microsecond clock", times.value()[n]));
    r.arrival = *arrival;
    const std::size_t i = draw::weighted(shape_rng, probabilities);
    const auto& c = g.shapes[i];
    r.shape = c.shape;
    if (!recorded_steps.empty()) r.steps = recorded_steps[n];
    else r.steps = g.steps.size() == 1 ? g.steps.front() : g.steps[draw::index(steps_rng, g.steps.size())];
    r.priority = g.priority_weights.empty() ? c.priority : static_cast<int>(draw::weighted(priority_rng, g.priority_weights));
    r.class_label = labels[i];
    if (slo_s[i]) {
      const double s = g.slo.rule == slo_rule::kind::latency_multiple
                           ? g.slo.scale * static_cast<double>(r.steps) * *slo_s[i]
                           : *slo_s[i];
      const auto t = to_ticks(s);
      if (!t || *t < 1) return config_error("slo", fmt::format("SLO of {} s is outside the microsecond clock", s));
      r.slo = *t;
    }
    w.requests.push_back(std::move(r));
  }

  if (g.load) {
    if (!g.load->step_s) return config_error("load", "a load target needs a step time function");
    return rescale_to_load(std::move(w), g.load->load, g.load->gpus, g.load->step_s);
  }
  return w;
}

}  // namespace paraflex
