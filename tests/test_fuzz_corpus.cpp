// Replays every file of the fuzz seed corpora (tests/fuzz/corpus/<target>/) through the fuzz targets'
// checks, in the ordinary unit tests: the seeds (invalid UTF-8, UTF-16, NUL bytes, lone CRs, huge
// numbers, ...) and every crash a fuzzing run found, once fixed and added there, stay tested in every
// build, with or without clang. The targets themselves are tests/fuzz/fuzz_*.cpp.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#define PARAFLEX_FUZZ_REPLAY 1
#include "fuzz/fuzz_arrival_trace.cpp"
#include "fuzz/fuzz_fault_flags.cpp"
#include "fuzz/fuzz_policy_spec.cpp"
#include "fuzz/fuzz_profile_csv.cpp"
#include "fuzz/fuzz_workload_csv.cpp"

namespace {

std::vector<std::filesystem::path> corpus(const std::string& target) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(PARAFLEX_FUZZ_CORPUS_DIR) / target)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

template <class Target>
void replay(const std::string& target, Target fn, std::size_t at_least) {
  const auto files = corpus(target);
  CHECK(files.size() >= at_least);  // the corpus is there (a wrong path would test nothing)
  for (const auto& f : files) {
    INFO(f.string());
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_NOTHROW(fn(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
  }
}

}  // namespace

TEST_CASE("the workload CSV fuzz corpus replays without a broken promise", "[fuzz][workload][csv]") {
  replay("workload_csv", paraflex_fuzz::fuzz_workload_csv, 20);
}

TEST_CASE("the profile CSV fuzz corpus replays without a broken promise", "[fuzz][cost][profile]") {
  replay("profile_csv", paraflex_fuzz::fuzz_profile_csv, 12);
}

TEST_CASE("the policy spec fuzz corpus replays without a broken promise", "[fuzz][policy][registry]") {
  replay("policy_spec", paraflex_fuzz::fuzz_policy_spec, 20);
}

TEST_CASE("the arrival trace fuzz corpus replays without a broken promise", "[fuzz][workload][trace]") {
  replay("arrival_trace", paraflex_fuzz::fuzz_arrival_trace, 12);
}

TEST_CASE("the fault flag fuzz corpus replays without a broken promise", "[fuzz][faults]") {
  replay("fault_flags", paraflex_fuzz::fuzz_fault_flags, 12);
}
