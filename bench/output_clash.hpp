// An output file that would overwrite a file the same run reads or writes (paraflex-sim's
// --trace-out over its --workload, paraflex-workload's -o over its --profile, ...): refused before
// anything is opened. Shared by the command-line tools and the Python binding.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>

#include <fmt/format.h>

namespace paraflex_bench {

/// A file the run is about to write, named by where it came from ("--trace-out") and its path
/// (empty: not given).
struct named_path {
  std::string_view flag;
  std::string path;
};

/// Why writing `out` would destroy another file the run uses (an input, or another output: the same
/// path or a link to the same file), or empty when it would not. Outputs are opened only after this
/// check, so a mistyped flag never overwrites a workload.
[[nodiscard]] inline std::string output_clash(const named_path& out, std::initializer_list<named_path> others) {
  if (out.path.empty()) return {};
  for (const named_path& other : others) {
    if (other.path.empty()) continue;
    std::error_code ec;  // a path that does not exist yet names no other file
    if (out.path == other.path || std::filesystem::equivalent(out.path, other.path, ec)) {
      return fmt::format("{} '{}' is the {} file: it would be overwritten", out.flag, out.path, other.flag);
    }
  }
  return {};
}

}  // namespace paraflex_bench
