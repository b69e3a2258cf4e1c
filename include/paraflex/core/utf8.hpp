// paraflex/core/utf8.hpp - checking and escaping UTF-8 text that comes from outside.
//
// Names, ids and labels read from files end up in JSON (paraflex-sim --format json, Chrome traces)
// and in error messages, which must stay valid, readable UTF-8 whatever bytes a user or a library
// caller hands in. Three tools:
//   utf8_error       offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong
//                    forms, no surrogates, nothing above U+10FFFF), or nothing when all is well;
//   printable        a copy for messages: invalid bytes and control characters become \xNN;
//   append_json_string  a JSON string literal: quotes, backslashes and control characters
//                    escaped, each invalid byte replaced by U+FFFD, so the output always parses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace paraflex {

/// Length of the well-formed UTF-8 sequence that starts at s[i] (1-4), or 0 when it is not one.
[[nodiscard]] constexpr std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
  const auto at = [&](std::size_t j) { return static_cast<unsigned char>(s[j]); };
  const unsigned char c = at(i);
  if (c < 0x80) return 1;
  const auto cont = [&](std::size_t j, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return j < s.size() && at(j) >= lo && at(j) <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c == 0xE0) return cont(i + 1, 0xA0) && cont(i + 2) ? 3 : 0;           // no overlong forms
  if (c == 0xED) return cont(i + 1, 0x80, 0x9F) && cont(i + 2) ? 3 : 0;     // no UTF-16 surrogates
  if (c >= 0xE1 && c <= 0xEF) return cont(i + 1) && cont(i + 2) ? 3 : 0;
  if (c == 0xF0) return cont(i + 1, 0x90) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (c == 0xF4) return cont(i + 1, 0x80, 0x8F) && cont(i + 2) && cont(i + 3) ? 4 : 0;  // <= U+10FFFF
  return 0;  // a continuation byte out of place, C0/C1 (overlong) or F5-FF
}

/// Offset of the first byte of `s` that does not start a well-formed UTF-8 sequence; nullopt when
/// the whole of `s` is valid UTF-8.
[[nodiscard]] constexpr std::optional<std::size_t> utf8_error(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

[[nodiscard]] constexpr bool is_valid_utf8(std::string_view s) noexcept { return !utf8_error(s).has_value(); }

/// Whether code point `cp` shows as nothing, or as a blank, where a message quotes it: C1 controls,
/// no-break and zero-width spaces, soft hyphen, direction marks and overrides, word joiners, the
/// byte-order mark. A field that differs from the expected text only by one looks identical.
[[nodiscard]] constexpr bool is_invisible_code_point(std::uint32_t cp) noexcept {
  return (cp >= 0x80 && cp <= 0xA0) || cp == 0xAD || (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
         (cp >= 0x2060 && cp <= 0x206F) || cp == 0xFEFF;
}

/// The code point of the well-formed n-byte UTF-8 sequence at s[i] (n from utf8_sequence_length).
[[nodiscard]] constexpr std::uint32_t code_point(std::string_view s, std::size_t i, std::size_t n) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + k])); };
  if (n == 1) return byte(0);
  std::uint32_t cp = byte(0) & (0x7Fu >> n);  // the lead byte's payload: 5, 4 or 3 bits
  for (std::size_t k = 1; k < n; ++k) cp = cp << 6 | (byte(k) & 0x3Fu);
  return cp;
}

/// `s` for a message: valid UTF-8 text as it is, every invalid byte and every control character
/// (below 0x20, and DEL) as \xNN, and every invisible character (is_invisible_code_point) as
/// <U+XXXX>. The result is always valid UTF-8 without control characters.
[[nodiscard]] inline std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    const auto c = static_cast<unsigned char>(s[i]);
    if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7F))) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned>(c));
      out += buf;
      ++i;
    } else if (const std::uint32_t cp = code_point(s, i, n); is_invisible_code_point(cp)) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "<U+%04X>", static_cast<unsigned>(cp));
      out += buf;
      i += n;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

/// The longest prefix of `s` of at most `max_bytes` bytes that does not cut a UTF-8 sequence.
[[nodiscard]] constexpr std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes) noexcept {
  if (s.size() <= max_bytes) return s;
  std::size_t end = 0;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    const std::size_t next = i + (n == 0 ? 1 : n);
    if (next > max_bytes) break;
    end = i = next;
  }
  return s.substr(0, end);
}

/// Appends `s` to `out` as a JSON string literal, quotes included. Invalid UTF-8 bytes become
/// U+FFFD (the replacement character), so the output is valid JSON for any input bytes.
inline void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    const auto c = static_cast<unsigned char>(s[i]);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n == 1) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  out += '"';
}

namespace detail {

/// Quotes a field for an error message, shortened (never inside a UTF-8 sequence) so that a pasted
/// binary blob stays readable; invalid bytes and control characters show as \xNN.
[[nodiscard]] inline std::string quote_for_message(std::string_view s) {
  constexpr std::size_t max_shown = 40;
  const std::string_view shown = utf8_prefix(s, max_shown);
  return "'" + printable(shown) + (shown.size() < s.size() ? "...'" : "'");
}

}  // namespace detail

/// `s` as a JSON string literal (see append_json_string).
[[nodiscard]] inline std::string json_string(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  append_json_string(out, s);
  return out;
}

}  // namespace paraflex
