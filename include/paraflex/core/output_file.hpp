// paraflex/core/output_file.hpp - a file that a long run writes: opened before the run, so that a path
// that cannot be written fails at once rather than after minutes of work, and removed again unless the
// run gets to commit() it, so that a run that fails leaves no half-written file behind.
//
//   output_file out("trace.json", "--trace-out");   // input_exception: "--trace-out 'trace.json': cannot open ..."
//   out.stream() << ...;                            // during the run
//   out.commit();                                   // closes; input_exception "...: write failed" (a full disk)
//
// Only a plain file is ever removed: never /dev/null, /dev/stdout, or what a symbolic link points to.
#pragma once

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "paraflex/core/error.hpp"

namespace paraflex {

class output_file {
 public:
  /// Opens `path` for writing (truncating it). `flag` names where the path came from in errors
  /// ("--trace-out"); an input_exception when the file cannot be opened.
  output_file(std::string path, std::string_view flag) : path_(std::move(path)), flag_(flag) {
    out_ = std::make_unique<std::ofstream>(path_, std::ios::binary);
    if (!*out_) {
      const int err = errno;
      out_.reset();
      throw input_exception(error(fmt::format("cannot open for writing ({})", std::strerror(err))));
    }
  }
  output_file(output_file&&) noexcept = default;  // the moved-from file owns nothing
  output_file& operator=(output_file&&) = delete;
  output_file(const output_file&) = delete;
  output_file& operator=(const output_file&) = delete;
  ~output_file() {
    if (!out_) return;
    out_.reset();
    discard();  // not committed: not a finished file
  }

  /// The stream to write to, until commit().
  [[nodiscard]] std::ostream& stream() noexcept { return *out_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  /// False once committed (or moved from).
  [[nodiscard]] bool is_open() const noexcept { return out_ != nullptr; }

  /// Closes the file, which then stays; an input_exception naming the path when anything could not
  /// be written (the file is removed). A second call does nothing.
  void commit() {
    if (!out_) return;
    out_->close();
    const bool ok = !out_->fail();
    out_.reset();
    if (!ok) {
      discard();
      throw input_exception(error("write failed"));
    }
  }

  /// An error about this file: "FLAG 'PATH': message".
  [[nodiscard]] input_error error(std::string message) const {
    return input_error{fmt::format("{} '{}'", flag_, path_), 0, {}, std::move(message)};
  }

 private:
  void discard() const noexcept {
    std::error_code ec;
    if (std::filesystem::is_regular_file(std::filesystem::symlink_status(path_, ec))) std::filesystem::remove(path_, ec);
  }

  std::string path_, flag_;
  std::unique_ptr<std::ofstream> out_;  // null once committed
};

}  // namespace paraflex
