// paraflex/sim/workload_csv.hpp - read and write workload traces (formats.md §1 and §5).
//
// One request per row, header required, column order free, `#` comment lines, unknown columns ignored:
//
//   column      required  type          default / rule
//   arrival_s   yes       float >= 0    seconds from the start; rounded once to a microsecond tick
//   model       yes       string        must be one of `known_models` (when that list is not empty)
//   height      yes       int > 0
//   width       yes       int > 0
//   steps       yes       int > 0
//   frames      no        int > 0       1 (an empty field also means 1)
//   slo_s       no        float > 0     none (an empty field also means none); >= 1 microsecond
//   request_id  no        string        the row's 1-based physical line number; must be unique
//   priority    no        int           0 (an empty field also means 0)
//   class       no        string        ""
//
// Rows are stably sorted by arrival after reading. Every rejection is an input_error naming the file,
// the 1-based line and the column by its header name (tools turn it into exit status 2). Decisions
// beyond the spec, so that nothing is silently dropped or guessed:
//   - the file must be UTF-8 text: `model`, `request_id` and `class` must be valid UTF-8 (they end up
//     in JSON output), and UTF-16/UTF-32 files, NUL bytes and CR-only line ends are refused with a
//     message saying so (core/csv.hpp);
//   - a file with a header but no data rows is an error ("no requests"): every consumer (simulator,
//     metrics, load rescaling) needs at least one request, and an empty trace is almost always a mistake;
//   - a time that does not fit a tick (|t| >= ~4.6e12 s, e.g. 1e300) is an error, as is a slo_s that
//     rounds to 0 microseconds;
//   - an explicit request_id equal to another row's default (line number) id is a duplicate.
//
// write_workload_csv writes every column, times as exact decimal microseconds, so that reading the
// output back gives the same workload (exactly for times below 2^50 us, about 35 years).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/csv.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

namespace workload_csv_detail {

/// A time column: finite, in tick range, and (for arrival) >= 0 or (for slo) >= 1 tick.
[[nodiscard]] inline result<tick> time_field(const csv_reader& csv, std::size_t col, bool positive) {
  auto v = csv.get_double(col);
  if (!v) return v.error();
  const double s = v.value();
  if (positive ? !(s > 0.0) : s < 0.0) {
    return csv.error_at(col, fmt::format("must be {}, got {}", positive ? "> 0" : ">= 0", csv.field(col)));
  }
  const auto t = to_ticks(s);
  if (!t) return csv.error_at(col, fmt::format("{} seconds does not fit in the microsecond clock", csv.field(col)));
  if (positive && *t < 1) return csv.error_at(col, fmt::format("{} seconds rounds to 0 microseconds", csv.field(col)));
  return *t;
}

/// An integer column that must be > 0.
[[nodiscard]] inline result<int> positive_int(const csv_reader& csv, std::size_t col) {
  auto v = csv.get_int(col);
  if (!v) return v.error();
  if (v.value() <= 0) return csv.error_at(col, fmt::format("must be > 0, got {}", v.value()));
  return v.value();
}

/// RFC 4180 quoting when the reader would otherwise change the text (separators, quotes, line breaks,
/// blanks it trims, a leading '#' it could take for a comment).
inline void write_text(std::ostream& out, std::string_view s) {
  const bool needs = s.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '#' || s.back() == ' ' ||
                                     s.back() == '\t'));
  if (!needs) {
    out << s;
    return;
  }
  out << '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') out << '"';
    // The reader ends a physical line at LF and drops one CR before it (CRLF files), so a CR that is
    // the value's own, just before a line break, is written twice to come back (found by fuzzing).
    if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') out << '\r';
    out << c;
  }
  out << '"';
}

/// Exact decimal seconds of a tick ("12.000001"), so that a round trip does not depend on float printing.
[[nodiscard]] inline std::string seconds_text(tick t) {
  const bool negative = t < 0;
  // Work on the magnitude as unsigned: -min would overflow a signed tick.
  const auto mag = negative ? std::uint64_t{0} - static_cast<std::uint64_t>(t) : static_cast<std::uint64_t>(t);
  constexpr auto per_s = static_cast<std::uint64_t>(ticks_per_second);
  return fmt::format("{}{}.{:06}", negative ? "-" : "", mag / per_s, mag % per_s);
}

}  // namespace workload_csv_detail

/// Reads a workload CSV from `in`. `file_name` names the input in errors and becomes workload::source.
/// `known_models`: the models a request may name (the cost profile's); empty = accept any model.
[[nodiscard]] inline result<workload> read_workload_csv(std::istream& in, std::string file_name,
                                                        const std::vector<std::string>& known_models = {}) {
  using namespace workload_csv_detail;
  csv_reader csv(in, file_name);
  // The columns read here (formats.md §1); any other is ignored, whatever its name.
  if (auto h = csv.read_header({"arrival_s", "model", "height", "width", "steps", "frames", "slo_s", "request_id", "priority", "class"}); !h) {
    return h.error();
  }

  std::size_t c_arrival = 0, c_model = 0, c_height = 0, c_width = 0, c_steps = 0;
  for (auto [name, index] : {std::pair<const char*, std::size_t*>{"arrival_s", &c_arrival},
                             {"model", &c_model},
                             {"height", &c_height},
                             {"width", &c_width},
                             {"steps", &c_steps}}) {
    auto c = csv.require_column(name);
    if (!c) return c.error();
    *index = c.value();
  }
  const auto c_frames = csv.column_index("frames");
  const auto c_slo = csv.column_index("slo_s");
  const auto c_id = csv.column_index("request_id");
  const auto c_priority = csv.column_index("priority");
  const auto c_class = csv.column_index("class");

  workload w;
  w.source = file_name;
  std::unordered_map<std::string, long> id_lines;  // id -> line that used it first
  for (;;) {
    auto more = csv.next_row();
    if (!more) return more.error();
    if (!more.value()) break;

    request_spec r;
    auto arrival = time_field(csv, c_arrival, false);
    if (!arrival) return arrival.error();
    r.arrival = arrival.value();

    auto model = csv.get_text(c_model);
    if (!model) return model.error();
    r.shape.model = std::string(model.value());
    if (r.shape.model.empty()) return csv.error_at(c_model, "empty model name");
    if (!known_models.empty() &&
        std::find(known_models.begin(), known_models.end(), r.shape.model) == known_models.end()) {
      return csv.error_at(c_model, fmt::format("unknown model {} (known: {})", detail::quote_for_message(r.shape.model),
                                               fmt::join(known_models, ", ")));
    }

    for (auto [col, out] : {std::pair{c_height, &r.shape.height}, {c_width, &r.shape.width}, {c_steps, &r.steps}}) {
      auto v = positive_int(csv, col);
      if (!v) return v.error();
      *out = v.value();
    }
    if (r.steps > max_steps) {
      return csv.error_at(c_steps, fmt::format("{} steps is more than the {} a trajectory may have", r.steps, max_steps));
    }
    if (c_frames && !trim(csv.field(*c_frames)).empty()) {
      auto v = positive_int(csv, *c_frames);
      if (!v) return v.error();
      r.shape.frames = v.value();
    }
    if (c_slo && !trim(csv.field(*c_slo)).empty()) {
      auto v = time_field(csv, *c_slo, true);
      if (!v) return v.error();
      r.slo = v.value();
    }
    if (c_priority && !trim(csv.field(*c_priority)).empty()) {
      auto v = csv.get_int(*c_priority);
      if (!v) return v.error();
      r.priority = v.value();
    }
    if (c_class) {
      auto label = csv.get_text(*c_class);
      if (!label) return label.error();
      r.class_label = std::string(label.value());
    }
    if (c_id) {
      auto id = csv.get_text(*c_id);
      if (!id) return id.error();
      r.id = std::string(id.value());
    }
    if (r.id.empty()) r.id = std::to_string(csv.line());
    const auto [it, inserted] = id_lines.emplace(r.id, csv.line());
    if (!inserted) {
      return csv.error_at("request_id", fmt::format("duplicate request_id {} (first used on line {})", detail::quote_for_message(r.id),
                                                    it->second));
    }
    r.source_line = csv.line();
    w.requests.push_back(std::move(r));
  }
  if (w.requests.empty()) return csv.error_at_file("no requests: the file has a header but no data rows");

  // A file is usually in arrival order already: then stable_sort would only cost its temporary
  // buffer (a copy of every request: fresh pages, each a page fault).
  const auto by_arrival = [](const request_spec& a, const request_spec& b) { return a.arrival < b.arrival; };
  if (!std::is_sorted(w.requests.begin(), w.requests.end(), by_arrival)) std::stable_sort(w.requests.begin(), w.requests.end(), by_arrival);
  return w;
}

/// Opens `path` and reads it with read_workload_csv; a file that cannot be opened is an error naming it.
[[nodiscard]] inline result<workload> load_workload_csv(const std::string& path,
                                                        const std::vector<std::string>& known_models = {}) {
  std::ifstream in;
  if (auto e = open_input_file(path, "workload file", in)) return *e;
  return read_workload_csv(in, path, known_models);
}

/// Writes `w` with every column, in its order; `comment` (may span lines) goes first as `# ` lines.
/// Reading the output back yields the same requests (ids written explicitly, times as exact decimals).
inline void write_workload_csv(std::ostream& out, const workload& w, std::string_view comment = {}) {
  using namespace workload_csv_detail;
  while (!comment.empty()) {
    const auto nl = comment.find('\n');
    out << "# " << comment.substr(0, nl) << '\n';
    comment = nl == std::string_view::npos ? std::string_view{} : comment.substr(nl + 1);
  }
  // arrival_s first: a data line then never starts with '#', whatever the ids look like.
  out << "arrival_s,request_id,model,height,width,frames,steps,slo_s,priority,class\n";
  for (const auto& r : w.requests) {
    out << seconds_text(r.arrival) << ',';
    write_text(out, r.id);
    out << ',';
    write_text(out, r.shape.model);
    out << ',' << r.shape.height << ',' << r.shape.width << ',' << r.shape.frames << ',' << r.steps << ',';
    if (r.has_deadline()) out << seconds_text(r.slo);
    out << ',' << r.priority << ',';
    write_text(out, r.class_label);
    out << '\n';
  }
}

}  // namespace paraflex
