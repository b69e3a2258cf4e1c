// paraflex/data.hpp - where the bundled data files are: published step-latency profiles, arrival
// traces and the default workload.
//
// They ship in the source tree under bench/data/ and are installed by `cmake --install` under
// <prefix>/share/paraflex/ with the same layout (profiles/, traces/, default_workload.csv, NOTICE.md).
// The paraflex::paraflex target tells the compiler where (PARAFLEX_BUNDLED_DATA_DIR: the source
// tree for a build-tree or add_subdirectory consumer, the install prefix after find_package); the
// environment variable PARAFLEX_DATA_DIR overrides it at run time (a relocated install, a test).
// CMake users also get the path as ${paraflex_DATA_DIR} from find_package(paraflex).
//
//   auto profile = load_profile_csv(paraflex::bundled_data_file("profiles/step_latency.csv")).value_or_throw();
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace paraflex {

/// The directory of the bundled data: $PARAFLEX_DATA_DIR when set and not empty, else the one the
/// build recorded; empty when neither is known (a header copied without its CMake target).
[[nodiscard]] inline std::filesystem::path bundled_data_dir() {
  if (const char* env = std::getenv("PARAFLEX_DATA_DIR"); env != nullptr && *env != '\0') return env;
#ifdef PARAFLEX_BUNDLED_DATA_DIR
  return PARAFLEX_BUNDLED_DATA_DIR;
#else
  return {};
#endif
}

/// A bundled file by its relative path ("profiles/step_latency.csv", "traces/...", "default_workload.csv").
/// Throws std::runtime_error naming the path when it does not exist, with the fix in the message.
[[nodiscard]] inline std::filesystem::path bundled_data_file(std::string_view relative) {
  const auto dir = bundled_data_dir();
  if (dir.empty()) {
    throw std::runtime_error("paraflex: the bundled data directory is unknown: link paraflex::paraflex through CMake, or set PARAFLEX_DATA_DIR");
  }
  auto p = dir / std::filesystem::path(relative);
  if (!std::filesystem::exists(p)) {
    throw std::runtime_error("paraflex: bundled data file '" + p.string() + "' does not exist (set PARAFLEX_DATA_DIR to the directory holding profiles/ and traces/)");
  }
  return p;
}

}  // namespace paraflex
