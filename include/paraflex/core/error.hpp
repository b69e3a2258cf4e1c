// paraflex/core/error.hpp - input errors that say where they are, and a small expected-like result.
//
// g++ 12 has no std::expected; readers return result<T> so callers can report every error the same
// way (file, 1-based line, column by header name) and tools can map it to exit status 2.
// what() is always valid UTF-8 without control characters, whatever bytes the input held (invalid
// bytes print as \xNN), so a message can go to a terminal, a log or a Python str unchanged.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include "paraflex/core/utf8.hpp"

namespace paraflex {

/// Where and why an input (workload, profile, flag) was rejected.
struct input_error {
  std::string file;    ///< path as given by the user, or "<flag>" / "<memory>"
  long line = 0;       ///< 1-based; 0 when the error is about the file as a whole
  std::string column;  ///< header name of the offending column; empty when not about one column
  std::string message;

  /// "file:line: column 'x': message" - the form every tool prints after "error: ".
  [[nodiscard]] std::string what() const {
    std::string s = printable(file);
    if (line > 0) s += ":" + std::to_string(line);
    s += ": ";
    if (!column.empty()) s += "column '" + printable(column) + "': ";
    return s + printable(message);
  }
};

/// Thrown by result<T>::value_or_throw() when a result holds an error.
class input_exception : public std::runtime_error {
 public:
  explicit input_exception(input_error e) : std::runtime_error(e.what()), error_(std::move(e)) {}
  [[nodiscard]] const input_error& error() const noexcept { return error_; }

 private:
  input_error error_;
};

/// A value or an input_error. Deliberately tiny: has_value(), value(), error(), and value_or_throw().
template <class T>
class result {
 public:
  result(T value) : v_(std::move(value)) {}                   // NOLINT: implicit like std::expected
  result(input_error error) : v_(std::move(error)) {}         // NOLINT
  [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  [[nodiscard]] T& value() & { return std::get<0>(v_); }
  [[nodiscard]] const T& value() const& { return std::get<0>(v_); }
  [[nodiscard]] T&& value() && { return std::get<0>(std::move(v_)); }
  [[nodiscard]] const input_error& error() const { return std::get<1>(v_); }
  /// The value, or throws input_exception carrying the error.
  T value_or_throw() && {
    if (!has_value()) throw input_exception(error());
    return std::get<0>(std::move(v_));
  }

 private:
  std::variant<T, input_error> v_;
};

}  // namespace paraflex
