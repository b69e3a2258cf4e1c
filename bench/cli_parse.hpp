// Parsing a tool's command line with CLI11, the same way in every tool of the project (paraflex-sim,
// paraflex-tune, paraflex-workload, paraflex-serve): --help prints and exits 0, a bad flag is a usage
// error (exit status 2, formats §3).
#pragma once

#include <optional>

#include <CLI/CLI.hpp>

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

}  // namespace paraflex_bench
