// Parsing a tool's command line with CLI11, the same way in every tool of the project (paraflex-sim,
// paraflex-tune, paraflex-workload, paraflex-serve): --help prints and exits 0, a bad flag is a usage
// error (exit status 2, formats §3).
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "decision_gap.hpp"

namespace paraflex_bench {

/// Parses argc/argv into `app`. Returns the exit status when the tool should stop now: 0 after --help
/// (CLI11 has printed it), or 2 after `usage_error(message)` has reported a bad flag (a tool's own
/// usage_error may also exit by itself). Returns nothing when the tool goes on.
template <class UsageError>
[[nodiscard]] std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv, UsageError&& usage_error) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {  // CLI::CallForHelp too: a ParseError with exit code 0
    if (e.get_exit_code() == 0) return app.exit(e);
    usage_error(e.what());
    return 2;
  }
  return std::nullopt;
}

/// A value that must not be empty (a file name, a GPU type): `--workload "$FILE"` with FILE unset is a
/// mistake, not a request for the default.
inline const CLI::Validator non_empty{[](std::string& s) { return s.empty() ? std::string("empty value") : std::string(); }, "", "non-empty"};

/// A finite number in [lo, hi]. CLI::Range lets NaN through (every comparison with NaN is false).
inline CLI::Validator finite_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) {
        // strtod, not from_chars: libstdc++'s floating from_chars pulls locale code into a static
        // link that made libgfortran's exit handler (Clp's LAPACK) crash.
        char* end = nullptr;
        const double x = s.empty() ? std::nan("") : std::strtod(s.c_str(), &end);
        if (end != s.c_str() + s.size() || !std::isfinite(x) || x < lo || x > hi) {
          return "expected a finite number in [" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + "], got '" + s + "'";
        }
        return std::string();
      },
      "", "finite number");
}

/// --decision-gap-ms: every check of decision_gap_ticks, so that the Python module's message (which
/// calls it directly) is this one.
inline const CLI::Validator decision_gap_ms{[](std::string& s) {
                                              char* end = nullptr;
                                              const double ms = s.empty() ? std::nan("") : std::strtod(s.c_str(), &end);
                                              if (end != s.c_str() + s.size()) return "expected a number of milliseconds, got '" + s + "'";
                                              try {
                                                (void)decision_gap_ticks(ms);
                                              } catch (const paraflex::input_exception& e) {
                                                return e.error().message;
                                              }
                                              return std::string();
                                            },
                                            "", "milliseconds"};

namespace detail {
// Leading zeros off a string of decimal digits ("010" -> "10", "000" -> "0"): CLI11 reads a leading
// 0 as octal (and "0x10" as hex), so "--gpus 010" would run on 8 GPUs and "--seed 010" as seed 8.
inline void strip_leading_zeros(std::string& s, std::size_t from) {
  const std::size_t first = s.find_first_not_of('0', from);
  s.erase(from, (first == std::string::npos ? s.size() - 1 : first) - from);
}
}  // namespace detail

/// A signed integer written in decimal digits (an optional '-' or '+', then 0-9), normalised to the
/// form CLI11 reads as decimal. Added with ->transform() (it rewrites the value) before any range check.
inline const CLI::Validator decimal_integer{[](std::string& s) {
                                              const std::size_t digits = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
                                              if (s.size() == digits || s.find_first_not_of("0123456789", digits) != std::string::npos) {
                                                return "expected a decimal integer, got '" + s + "'";
                                              }
                                              if (s[0] == '+') s.erase(0, 1);
                                              detail::strip_leading_zeros(s, s[0] == '-' ? 1 : 0);
                                              if (s == "-0") s = "0";
                                              return std::string();
                                            },
                                            "", "decimal integer"};

/// An unsigned 64-bit integer written in decimal digits: CLI11 alone turns "-1" into 2^64 - 1 and
/// clamps larger values, so two different seeds would silently run the same draw. Added with
/// ->transform(): leading zeros are taken off, so that "010" is 10 and not octal.
inline const CLI::Validator uint64_digits{[](std::string& s) {
                                            std::uint64_t x = 0;
                                            const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
                                            if (s.empty() || s[0] == '-' || ec != std::errc{} || end != s.data() + s.size()) {
                                              return "expected an integer in [0, 18446744073709551615], got '" + s + "'";
                                            }
                                            detail::strip_leading_zeros(s, 0);
                                            return std::string();
                                          },
                                          "", "unsigned 64-bit integer"};

}  // namespace paraflex_bench
