// paraflex/core/csv.hpp - a small, strict CSV tokenizer shared by every reader (profiles, workloads).
//
// Reads a std::istream record by record and keeps 1-based physical line numbers, so that every error
// can name file, line and column (formats.md §5). What it accepts:
//   - RFC 4180 fields: "quoted", "with ""doubled"" quotes", "commas, inside", and line breaks inside
//     quotes (the record then spans several physical lines and is reported at its first line);
//   - LF or CRLF line ends, and a UTF-8 byte-order mark at the start of the file;
//   - comment lines (first non-blank character `#`) and blank lines, anywhere outside quotes.
// What it rejects (never guesses): a quote inside an unquoted field, text after a closing quote, an
// unterminated quote, a header with an empty or duplicate column name (or, when the caller names the
// columns it reads, one of those twice: the other columns are ignored, so they may repeat or have no
// name, as a spreadsheet's trailing comma makes), and a row whose field count differs from the
// header's. Text must be UTF-8, so it also rejects, saying what the file seems to be:
// a UTF-16/UTF-32 byte-order mark, a NUL byte anywhere (UTF-16/32 without a mark, or not text), a
// carriage return outside quotes that does not end a line (CR-only line ends), and a column name that
// is not valid UTF-8. Fields that callers read as text go through get_text(), which rejects invalid
// UTF-8 naming file, line and column; fields nobody reads (unknown columns) are not checked.
//
// Unquoted fields are trimmed of spaces and tabs; quoted fields keep their content exactly. Column
// names are trimmed. Typical use:
//
//   csv_reader csv(in, "w.csv");
//   if (auto h = csv.read_header(); !h) return h.error();
//   auto col = csv.require_column("steps");            // error at the header line when missing
//   if (!col) return col.error();
//   for (;;) {
//     auto more = csv.next_row();
//     if (!more) return more.error();
//     if (!more.value()) break;                         // end of input
//     auto steps = csv.get_int(col.value());            // input_error naming file, line, column
//   }
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <istream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <fast_float/fast_float.h>

#include "paraflex/core/error.hpp"
#include "paraflex/core/utf8.hpp"

namespace paraflex {

/// Opens `path` for reading into `in`; what is wrong otherwise, as an input_error naming the file
/// (`what`: "workload file", "profile file", ...). A directory opens as a stream on Linux and then
/// reads as empty, so it is named for what it is.
[[nodiscard]] inline std::optional<input_error> open_input_file(const std::string& path, std::string_view what, std::ifstream& in) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return input_error{path, 0, {}, "is a directory, not a " + std::string(what)};
  in.open(path, std::ios::binary);
  if (!in) return input_error{path, 0, {}, "cannot open the " + std::string(what) + " for reading"};
  return std::nullopt;
}

/// `s` without leading and trailing spaces, tabs and carriage returns.
[[nodiscard]] inline std::string_view trim(std::string_view s) noexcept {
  constexpr std::string_view blanks = " \t\r";
  const auto first = s.find_first_not_of(blanks);
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(blanks);
  return s.substr(first, last - first + 1);
}

/// A value parsed from one field, or why not. The message has no location: the reader (or the caller)
/// adds file, line and column when it turns it into an input_error.
template <class T>
struct parsed {
  std::optional<T> value;
  std::string message;  ///< empty exactly when value holds

  [[nodiscard]] bool has_value() const noexcept { return value.has_value(); }
  explicit operator bool() const noexcept { return value.has_value(); }
};

namespace detail {

/// Why `text` (one field) is not valid UTF-8, or an empty string when it is.
[[nodiscard]] inline std::string utf8_problem(std::string_view text) {
  const auto at = utf8_error(text);
  if (!at) return {};
  char byte[8];
  std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(text[*at])));
  return std::string("not valid UTF-8 (byte ") + byte + " at byte " + std::to_string(*at + 1) +
         " of the field): save the file as UTF-8 (it may be Latin-1 or Windows-1252)";
}

/// from_chars (std and fast_float) reject a leading '+'; people write "+5". A sign after the '+' stays
/// an error ("+-5").
[[nodiscard]] inline std::string_view drop_plus(std::string_view s) noexcept {
  if (s.size() >= 2 && s[0] == '+' && s[1] != '+' && s[1] != '-') s.remove_prefix(1);
  return s;
}

}  // namespace detail

/// A finite double. The whole (trimmed) field must be a number: "1.5" yes, "1.5s", "", "nan", "inf" no.
[[nodiscard]] inline parsed<double> parse_double(std::string_view field) {
  const std::string_view t = trim(field);
  if (t.empty()) return {std::nullopt, "expected a number, got an empty field"};
  const std::string_view s = detail::drop_plus(t);
  double v = 0.0;
  const auto [ptr, ec] = fast_float::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size()) {
    return {std::nullopt, "expected a number, got " + detail::quote_for_message(t)};
  }
  // fast_float accepts "nan"/"inf" and turns "1e999" into inf: none is a usable input.
  if (!std::isfinite(v)) return {std::nullopt, "expected a finite number, got " + detail::quote_for_message(t)};
  return {v, {}};
}

/// An integer of type T (int by default). The whole (trimmed) field must be an integer: "12" yes, "12.0",
/// "1e3", "" no; out-of-range values are an error, never wrapped.
template <class T = int>
  requires std::is_integral_v<T>
[[nodiscard]] parsed<T> parse_integer(std::string_view field) {
  const std::string_view t = trim(field);
  if (t.empty()) return {std::nullopt, "expected an integer, got an empty field"};
  const std::string_view s = detail::drop_plus(t);
  T v{};
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return {std::nullopt, "integer out of range: " + detail::quote_for_message(t)};
  }
  if (ec != std::errc{} || ptr != s.data() + s.size()) {
    return {std::nullopt, "expected an integer, got " + detail::quote_for_message(t)};
  }
  return {v, {}};
}

[[nodiscard]] inline parsed<int> parse_int(std::string_view field) { return parse_integer<int>(field); }

/// Record-by-record reader of one CSV stream with a header row. Not copyable (it refers to the stream).
class csv_reader {
 public:
  /// `file` is the name used in error messages (a path, or "<memory>").
  csv_reader(std::istream& in, std::string file) : in_(&in), file_(std::move(file)) {}
  csv_reader(const csv_reader&) = delete;
  csv_reader& operator=(const csv_reader&) = delete;
  csv_reader(csv_reader&&) = default;
  csv_reader& operator=(csv_reader&&) = default;

  /// Reads the first record as the header and returns its column count. Errors: no header at all
  /// (empty input or only comments), an empty column name, a duplicate column name, a column name that
  /// is not UTF-8, a malformed record.
  [[nodiscard]] result<std::size_t> read_header() { return read_header_checking(std::nullopt); }

  /// The same for a reader that reads only the columns named in `read`: only those must not repeat.
  /// Any other column is ignored, so it may have no name or share one with another ignored column
  /// ("unknown columns are ignored", formats.md §1). Names must still be UTF-8 (they appear in messages).
  [[nodiscard]] result<std::size_t> read_header(std::initializer_list<std::string_view> read) {
    return read_header_checking(std::span<const std::string_view>(read.begin(), read.size()));
  }
  /// The same with the names known only at run time (a column the user names).
  [[nodiscard]] result<std::size_t> read_header(std::span<const std::string_view> read) { return read_header_checking(read); }

  /// Advances to the next data row: true when there is one, false at the end of the input, an error for
  /// a malformed record or a wrong field count. After an error the reader stays at the end.
  [[nodiscard]] result<bool> next_row() {
    if (!header_read_) throw std::logic_error("csv_reader::next_row called before read_header");
    auto got = read_record();
    if (!got || !got.value()) return got;
    if (spans_.size() != names_.size()) {
      failed_ = true;
      return input_error{file_, record_line_, {},
                         "expected " + std::to_string(names_.size()) + " fields as in the header on line " +
                             std::to_string(header_line_) + ", got " + std::to_string(spans_.size())};
    }
    ++rows_;
    return true;
  }

  // --- header -------------------------------------------------------------------------------------

  [[nodiscard]] const std::string& file() const noexcept { return file_; }
  [[nodiscard]] long header_line() const noexcept { return header_line_; }
  [[nodiscard]] const std::vector<std::string>& column_names() const noexcept { return names_; }
  [[nodiscard]] std::size_t column_count() const noexcept { return names_.size(); }

  [[nodiscard]] std::optional<std::size_t> column_index(std::string_view name) const noexcept {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == name) return i;
    }
    return std::nullopt;
  }
  [[nodiscard]] bool has_column(std::string_view name) const noexcept { return column_index(name).has_value(); }

  /// Index of a column that must be present; otherwise an error at the header line naming it and
  /// listing the columns the file has.
  [[nodiscard]] result<std::size_t> require_column(std::string_view name) const {
    if (auto i = column_index(name)) return *i;
    return input_error{file_, header_line_, std::string(name), "missing required column (the header has: " + header_text() + ")"};
  }

  /// The header's column names as a message lists them: "a, b, (no name)".
  [[nodiscard]] std::string header_text() const {
    std::string have;
    for (const auto& n : names_) have += (have.empty() ? "" : ", ") + (n.empty() ? std::string("(no name)") : n);
    return have;
  }

  // --- current row --------------------------------------------------------------------------------

  /// 1-based line where the current record starts (the header's line before the first next_row()).
  [[nodiscard]] long line() const noexcept { return record_line_; }
  /// Data rows returned so far by next_row().
  [[nodiscard]] long rows_read() const noexcept { return rows_; }

  /// Field `index` of the current row: trimmed when unquoted, exact when quoted. Valid until next_row().
  [[nodiscard]] std::string_view field(std::size_t index) const {
    if (index >= spans_.size()) throw std::out_of_range("csv_reader::field: index past the last field");
    return raw(index);
  }
  /// Field of the current row by column name; std::out_of_range when the header has no such column
  /// (a caller bug: check has_column / require_column first).
  [[nodiscard]] std::string_view field(std::string_view column) const {
    const auto i = column_index(column);
    if (!i) throw std::out_of_range("csv_reader::field: no column '" + std::string(column) + "'");
    return raw(*i);
  }

  /// The current row's field in `index` as text that is valid UTF-8, or an input_error naming file,
  /// line and column. Use it for every field that is kept as a string (names, ids, labels).
  [[nodiscard]] result<std::string_view> get_text(std::size_t index) const {
    const std::string_view f = field(index);
    if (auto why = detail::utf8_problem(f); !why.empty()) return error_at(index, std::move(why));
    return f;
  }

  /// The current row's field in `index` as a finite double, or an input_error naming file, line, column.
  [[nodiscard]] result<double> get_double(std::size_t index) const { return located(parse_double(field(index)), index); }
  [[nodiscard]] result<int> get_int(std::size_t index) const { return located(parse_int(field(index)), index); }
  [[nodiscard]] result<double> get_double(std::string_view column) const { return get_double(index_of(column)); }
  [[nodiscard]] result<int> get_int(std::string_view column) const { return get_int(index_of(column)); }

  /// An input_error at the current row and the named column (for checks the caller makes itself).
  [[nodiscard]] input_error error_at(std::string_view column, std::string message) const {
    return input_error{file_, record_line_, std::string(column), std::move(message)};
  }
  [[nodiscard]] input_error error_at(std::size_t index, std::string message) const {
    return error_at(index < names_.size() ? std::string_view(names_[index]) : std::string_view{}, std::move(message));
  }
  /// An input_error about the file as a whole (line 0).
  [[nodiscard]] input_error error_at_file(std::string message) const {
    return input_error{file_, 0, {}, std::move(message)};
  }

 private:
  // read_header(), strict when `read` is null, else only the names in `read` must be unique.
  [[nodiscard]] result<std::size_t> read_header_checking(std::optional<std::span<const std::string_view>> read) {
    const auto checked = [&](std::string_view name) { return !read || std::find(read->begin(), read->end(), name) != read->end(); };
    if (header_read_) throw std::logic_error("csv_reader::read_header called twice");
    auto got = read_record();
    if (!got) return got.error();
    if (!got.value()) return error_at_file("empty file: expected a header row");
    header_read_ = true;
    header_line_ = record_line_;
    names_.clear();
    for (std::size_t i = 0; i < spans_.size(); ++i) {
      std::string name(trim(raw(i)));
      if (name.empty() && !read) {
        return input_error{file_, header_line_, {}, "header: column " + std::to_string(i + 1) + " has no name"};
      }
      if (auto why = detail::utf8_problem(name); !why.empty()) {
        return input_error{file_, header_line_, {}, "header: column " + std::to_string(i + 1) + " name " + why};
      }
      names_.push_back(std::move(name));
    }
    // Duplicates by sorting (name, column) pairs: comparing every pair took 23 s on a 200,000-column
    // header. Reported as the first column, in file order, that repeats an earlier name.
    std::vector<std::pair<std::string_view, std::size_t>> sorted;
    sorted.reserve(names_.size());
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (checked(names_[i])) sorted.emplace_back(names_[i], i);
    }
    std::sort(sorted.begin(), sorted.end());
    std::optional<std::pair<std::size_t, std::size_t>> first_repeat;  // (earlier column, repeating column)
    for (std::size_t k = 1; k < sorted.size(); ++k) {
      // A run of one name is in column order: its first repeat is the second of the run.
      const bool repeats = sorted[k].first == sorted[k - 1].first && (k == 1 || sorted[k - 2].first != sorted[k].first);
      if (repeats && (!first_repeat || sorted[k].second < first_repeat->second)) first_repeat = {sorted[k - 1].second, sorted[k].second};
    }
    if (first_repeat) {
      return input_error{file_, header_line_, names_[first_repeat->second],
                         "duplicate column name in header (columns " + std::to_string(first_repeat->first + 1) + " and " +
                             std::to_string(first_repeat->second + 1) + ")"};
    }
    return names_.size();
  }

  struct span {
    std::size_t offset;
    std::size_t size;
  };

  [[nodiscard]] std::string_view raw(std::size_t i) const noexcept {
    return std::string_view(buf_).substr(spans_[i].offset, spans_[i].size);
  }

  [[nodiscard]] std::size_t index_of(std::string_view column) const {
    const auto i = column_index(column);
    if (!i) throw std::out_of_range("csv_reader: no column '" + std::string(column) + "'");
    return *i;
  }

  template <class T>
  [[nodiscard]] result<T> located(parsed<T> p, std::size_t index) const {
    if (p.value) return *p.value;
    return error_at(index, std::move(p.message));
  }

  /// One physical line without its line end; false at the end of the input; an error for bytes that
  /// show the file is not UTF-8 text (a UTF-16/32 byte-order mark, a NUL byte).
  result<bool> read_line(std::string& out) {
    if (!std::getline(*in_, out)) return false;
    ++physical_line_;
    if (physical_line_ == 1) {
      if (out.size() >= 3 && out.compare(0, 3, "\xEF\xBB\xBF") == 0) {
        out.erase(0, 3);
      } else if (out.size() >= 2 && (out.compare(0, 2, "\xFF\xFE") == 0 || out.compare(0, 2, "\xFE\xFF") == 0)) {
        return fail(1, std::string("the file starts with a UTF-16 byte-order mark (") +
                           (out[0] == '\xFF' ? "FF FE, little-endian" : "FE FF, big-endian") +
                           "): it is UTF-16 (or UTF-32) text; save it as UTF-8");
      } else if (out.size() >= 4 && out.compare(0, 4, std::string("\0\0\xFE\xFF", 4)) == 0) {
        return fail(1, "the file starts with a UTF-32 byte-order mark (00 00 FE FF): save it as UTF-8");
      }
    }
    if (const auto nul = out.find('\0'); nul != std::string::npos) {
      return fail(physical_line_, "NUL byte at byte " + std::to_string(nul + 1) +
                                      " of the line: the file is UTF-16 or UTF-32 text without a byte-order mark, or "
                                      "not text at all; save it as UTF-8");
    }
    if (!out.empty() && out.back() == '\r') out.pop_back();
    return true;
  }

  static constexpr std::string_view lone_cr_message =
      "carriage return (CR) inside a line: the file seems to have CR-only (classic Mac) line ends, or a "
      "stray CR; save it with LF or CRLF line ends (a CR is allowed only inside a quoted field)";

  /// Splits the next record (skipping comments and blank lines) into buf_/spans_.
  result<bool> read_record() {
    spans_.clear();
    buf_.clear();
    if (failed_) return false;
    std::string& line = line_;
    for (;;) {
      auto got = read_line(line);
      if (!got || !got.value()) return got;
      const std::string_view t = trim(line);
      if (!t.empty() && t.front() != '#') break;
      // A comment swallowing a CR-only file would otherwise make it look empty.
      if (!t.empty() && t.find('\r') != std::string_view::npos) return fail(physical_line_, "comment: " + std::string(lone_cr_message));
    }
    record_line_ = physical_line_;

    std::size_t pos = 0;  // position in `line`
    for (;;) {
      // One field starting at pos. Leading blanks are insignificant in both forms.
      while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
      const std::size_t start = buf_.size();
      if (pos < line.size() && line[pos] == '"') {
        ++pos;
        for (;;) {
          if (pos >= line.size()) {
            // The quoted field continues on the next physical line; the line break is part of it.
            auto got = read_line(line);
            if (!got) return got;
            if (!got.value()) {
              return fail(record_line_, "unterminated quoted field (the quote opens on line " +
                                            std::to_string(record_line_) + ")");
            }
            buf_ += '\n';
            pos = 0;
            continue;
          }
          const char c = line[pos++];
          if (c != '"') {
            buf_ += c;
          } else if (pos < line.size() && line[pos] == '"') {
            buf_ += '"';
            ++pos;
          } else {
            break;  // closing quote
          }
        }
        spans_.push_back({start, buf_.size() - start});
        while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
        if (pos < line.size() && line[pos] == '\r') return fail_in_field(spans_.size(), std::string(lone_cr_message));
        if (pos < line.size() && line[pos] != ',') {
          return fail_in_field(spans_.size(), "unexpected text after a closing quote (a quote inside a field must be doubled)");
        }
      } else {
        const std::size_t end = std::min(line.find(',', pos), line.size());
        if (std::string_view(line).substr(pos, end - pos).find('\r') != std::string_view::npos) {
          return fail_in_field(spans_.size() + 1, std::string(lone_cr_message));
        }
        const std::string_view text = trim(std::string_view(line).substr(pos, end - pos));
        if (text.find('"') != std::string_view::npos) {
          return fail_in_field(spans_.size() + 1, "quote inside an unquoted field (quote the whole field and double the quote)");
        }
        buf_.append(text);
        spans_.push_back({start, text.size()});
        pos = end;
      }
      if (pos >= line.size()) return true;
      ++pos;  // the comma; a trailing comma means one more (empty) field
    }
  }

  // A malformed field (1-based) of the current physical line: in a data row it is named by its
  // header name, as every other error about a cell is; in the header, past the header's last column
  // or under a column without a name, by its number.
  result<bool> fail_in_field(std::size_t field, std::string message) {
    if (header_read_ && field >= 1 && field <= names_.size() && !names_[field - 1].empty()) {
      return fail(physical_line_, std::move(message), names_[field - 1]);
    }
    return fail(physical_line_, "field " + std::to_string(field) + ": " + std::move(message));
  }

  result<bool> fail(long at_line, std::string message, std::string column = {}) {
    failed_ = true;
    spans_.clear();
    return input_error{file_, at_line, std::move(column), std::move(message)};
  }

  std::istream* in_;
  std::string file_;
  std::vector<std::string> names_;
  std::string line_;        // the physical line being split (kept to reuse its capacity)
  std::string buf_;         // unquoted/unescaped text of the current record's fields, back to back
  std::vector<span> spans_;
  long physical_line_ = 0;
  long record_line_ = 0;
  long header_line_ = 0;
  long rows_ = 0;
  bool header_read_ = false;
  bool failed_ = false;
};

}  // namespace paraflex
