// Shared by the fuzz targets (tests/fuzz/fuzz_*.cpp).
//
// Each target is a function `int fuzz_NAME(const std::uint8_t*, std::size_t)` that feeds its bytes to
// one parser of paraflex and checks what the parser promises. Built with clang's libFuzzer
// (tests/fuzz/CMakeLists.txt) a broken promise aborts, which libFuzzer reports as a crash with the
// input saved; built into the unit tests (PARAFLEX_FUZZ_REPLAY, tests/test_fuzz_corpus.cpp) it throws,
// so every file of the seed corpus - crashes found earlier included - is replayed by ctest.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#ifdef PARAFLEX_FUZZ_REPLAY
#define PARAFLEX_FUZZ_CHECK(cond)                                                                                   \
  do {                                                                                                              \
    if (!(cond)) throw std::logic_error(std::string("fuzz check failed: ") + #cond + " (" + __FILE__ + ":" +        \
                                        std::to_string(__LINE__) + ")");                                            \
  } while (false)
#else
#define PARAFLEX_FUZZ_CHECK(cond)                                                                                   \
  do {                                                                                                              \
    if (!(cond)) {                                                                                                  \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);                           \
      std::abort();                                                                                                 \
    }                                                                                                               \
  } while (false)
#endif

/// Defines libFuzzer's entry point for `fn`, except in the replay build.
#ifdef PARAFLEX_FUZZ_REPLAY
#define PARAFLEX_FUZZ_ENTRY(fn)
#else
#define PARAFLEX_FUZZ_ENTRY(fn) \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { return fn(data, size); }
#endif
