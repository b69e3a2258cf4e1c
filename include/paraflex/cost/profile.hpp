// paraflex/cost/profile.hpp - the step-latency profile: measured seconds per denoising step.
//
// Format (formats.md §2 and §5), one header row, column order free, `#` comment lines allowed:
//   model,gpu,height,width,frames,degree,step_s   required; every other column (e.g. `source`) ignored
//   heads                                         optional int > 0: attention heads of the model, so that
//                                                 degree k is allowed only if heads % k == 0. A blank
//                                                 field means "not stated on this row"; two different
//                                                 stated values for one model are an error.
//   batch                                         optional int > 0, blank = 1: the row measures one step
//                                                 of `batch` requests of the shape run together (one
//                                                 forward over their stacked latents). A file without
//                                                 the column means what it always meant (every row 1).
//                                                 A row with batch > 1 needs the batch-1 row of the same
//                                                 (model, gpu, shape, degree): batches are priced
//                                                 relative to it, and the degree fit uses batch-1 rows only.
// `frames` is required (1 = image), as the contract lists it; there is no default, so a profile cannot
// silently describe video shapes as images.
// Errors, each an input_error with file, 1-based line and column: missing required column (at the header
// line), a model or gpu name that is not valid UTF-8 (and files that are not UTF-8 text at all, see
// core/csv.hpp), a field that is not a number or not finite, a value <= 0 where > 0 is required, an empty model or
// gpu name, a duplicate (model, gpu, height, width, frames, degree, batch) row (naming the earlier line),
// conflicting `heads` for one model, a batch row without its batch-1 row, and a file with no data rows. Beyond the contract: step_s must lie
// in [1e-6, 1e6] seconds (min_step_seconds, max_step_seconds).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "paraflex/core/csv.hpp"
#include "paraflex/core/error.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

/// The identity of a measurement, (model, gpu, height, width, frames, degree, batch): unique in a profile.
using profile_key = std::tuple<std::string, std::string, int, int, int, int, int>;

/// One measurement: seconds per denoising step of `batch` requests of `shape` run together on `degree`
/// GPUs of type `gpu` (batch 1: one request alone, the common case).
struct profile_row {
  request_shape shape;
  std::string gpu;
  int degree = 1;
  double step_s = 0.0;
  long line = 0;  ///< 1-based line in the source file; 0 for rows built in code
  int batch = 1;  ///< requests in the measured step (the optional `batch` column)

  [[nodiscard]] profile_key key() const { return {shape.model, gpu, shape.height, shape.width, shape.frames, degree, batch}; }
  /// The key of the batch-1 row a batch row is priced against.
  [[nodiscard]] profile_key single_key() const { return {shape.model, gpu, shape.height, shape.width, shape.frames, degree, 1}; }
};

/// A whole profile, rows in file order. Plain data; read_profile_csv returns only valid tables and
/// validate_profile checks one built in code.
struct profile_table {
  std::string source;                               ///< file name, or "<memory>"
  std::vector<profile_row> rows;
  std::map<std::string, int, std::less<>> heads;    ///< model -> attention heads, where stated

  /// Distinct model names, sorted.
  [[nodiscard]] std::vector<std::string> models() const {
    std::vector<std::string> out;
    for (const auto& r : rows) out.push_back(r.shape.model);
    return sorted_unique(std::move(out));
  }
  /// Distinct GPU types, sorted.
  [[nodiscard]] std::vector<std::string> gpus() const {
    std::vector<std::string> out;
    for (const auto& r : rows) out.push_back(r.gpu);
    return sorted_unique(std::move(out));
  }
  /// GPU types that have at least one row for `model`, sorted.
  [[nodiscard]] std::vector<std::string> gpus_for(std::string_view model) const {
    std::vector<std::string> out;
    for (const auto& r : rows) {
      if (r.shape.model == model) out.push_back(r.gpu);
    }
    return sorted_unique(std::move(out));
  }
  /// Models that have at least one row on `gpu`, sorted.
  [[nodiscard]] std::vector<std::string> models_on(std::string_view gpu) const {
    std::vector<std::string> out;
    for (const auto& r : rows) {
      if (r.gpu == gpu) out.push_back(r.shape.model);
    }
    return sorted_unique(std::move(out));
  }
  [[nodiscard]] bool has_model(std::string_view model) const {
    return std::any_of(rows.begin(), rows.end(), [&](const profile_row& r) { return r.shape.model == model; });
  }
  [[nodiscard]] bool has_gpu(std::string_view gpu) const {
    return std::any_of(rows.begin(), rows.end(), [&](const profile_row& r) { return r.gpu == gpu; });
  }
  [[nodiscard]] std::optional<int> heads_of(std::string_view model) const {
    const auto it = heads.find(model);
    if (it == heads.end()) return std::nullopt;
    return it->second;
  }
  /// Rows of one (model, gpu), in file order.
  [[nodiscard]] std::vector<profile_row> rows_for(std::string_view model, std::string_view gpu) const {
    std::vector<profile_row> out;
    for (const auto& r : rows) {
      if (r.shape.model == model && r.gpu == gpu) out.push_back(r);
    }
    return out;
  }

 private:
  static std::vector<std::string> sorted_unique(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  }
};

/// "a, b, c" - for error messages that list what is known.
[[nodiscard]] inline std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

/// The range of a measured step time, in seconds: from the clock's resolution (a microsecond) to
/// about eleven days. Beyond it a value is a unit mistake, and the fit's relative residuals (1 / t)
/// would under- or overflow (a denormal step time made every prediction NaN).
inline constexpr double min_step_seconds = 1e-6;
inline constexpr double max_step_seconds = 1e6;

namespace detail {

[[nodiscard]] inline std::string step_range_message(const std::string& got) {
  return "must be between 1e-06 s (a microsecond) and 1e+06 s (11.6 days), got " + got;
}

[[nodiscard]] inline std::string describe_key(const profile_row& r) {
  std::string s = r.shape.model + " on " + r.gpu + " at " + std::to_string(r.shape.height) + "x" +
                  std::to_string(r.shape.width);
  if (r.shape.frames != 1) s += "x" + std::to_string(r.shape.frames) + " frames";
  s += ", degree " + std::to_string(r.degree);
  if (r.batch != 1) s += ", batch " + std::to_string(r.batch);
  return s;
}

[[nodiscard]] inline std::string missing_single_message(const profile_row& r) {
  return "batch " + std::to_string(r.batch) + " row for " + r.shape.model + " on " + r.gpu + " at " + std::to_string(r.shape.height) + "x" +
         std::to_string(r.shape.width) + (r.shape.frames != 1 ? "x" + std::to_string(r.shape.frames) + " frames" : std::string()) +
         ", degree " + std::to_string(r.degree) + " has no batch-1 row for the same shape and degree (batches are priced relative to it)";
}

}  // namespace detail

/// Checks a table built in code by the rules the reader enforces (positive values, non-empty UTF-8
/// names, no duplicate key, every batch row with its batch-1 row, at least one row). nullopt when valid.
[[nodiscard]] inline std::optional<input_error> validate_profile(const profile_table& t) {
  if (t.rows.empty()) return input_error{t.source, 0, {}, "profile has no rows"};
  std::map<profile_key, long> seen;
  for (const auto& r : t.rows) {
    const auto bad = [&](const char* column, std::string message) {
      return input_error{t.source, r.line, column, std::move(message)};
    };
    if (r.shape.model.empty()) return bad("model", "empty model name");
    if (r.gpu.empty()) return bad("gpu", "empty gpu name");
    if (auto why = detail::utf8_problem(r.shape.model); !why.empty()) return bad("model", std::move(why));
    if (auto why = detail::utf8_problem(r.gpu); !why.empty()) return bad("gpu", std::move(why));
    if (r.shape.height <= 0) return bad("height", "must be > 0, got " + std::to_string(r.shape.height));
    if (r.shape.width <= 0) return bad("width", "must be > 0, got " + std::to_string(r.shape.width));
    if (r.shape.frames <= 0) return bad("frames", "must be > 0, got " + std::to_string(r.shape.frames));
    if (r.degree <= 0) return bad("degree", "must be > 0, got " + std::to_string(r.degree));
    if (r.batch <= 0) return bad("batch", "must be > 0, got " + std::to_string(r.batch));
    if (!(r.step_s > 0.0) || !std::isfinite(r.step_s)) {
      return bad("step_s", "must be a finite number > 0, got " + std::to_string(r.step_s));
    }
    if (r.step_s < min_step_seconds || r.step_s > max_step_seconds) return bad("step_s", detail::step_range_message(std::to_string(r.step_s)));
    const auto [it, inserted] = seen.emplace(r.key(), r.line);
    if (!inserted) {
      return input_error{t.source, r.line, {},
                         "duplicate profile row for " + detail::describe_key(r) + " (first on line " +
                             std::to_string(it->second) + ")"};
    }
  }
  for (const auto& r : t.rows) {
    if (r.batch != 1 && seen.find(r.single_key()) == seen.end()) return input_error{t.source, r.line, "batch", detail::missing_single_message(r)};
  }
  for (const auto& [model, h] : t.heads) {
    if (h <= 0) return input_error{t.source, 0, "heads", model + ": heads must be > 0, got " + std::to_string(h)};
  }
  return std::nullopt;
}

/// Reads a profile from `in`; `file_name` is used in error messages.
[[nodiscard]] inline result<profile_table> read_profile_csv(std::istream& in, std::string file_name) {
  csv_reader csv(in, file_name);
  // The columns read here (formats.md §2); any other is ignored, whatever its name.
  if (auto h = csv.read_header({"model", "gpu", "height", "width", "frames", "degree", "step_s", "heads", "batch"}); !h) return h.error();

  struct columns {
    std::size_t model, gpu, height, width, frames, degree, step_s;
  } col{};
  const std::pair<const char*, std::size_t*> required[] = {
      {"model", &col.model},   {"gpu", &col.gpu},       {"height", &col.height}, {"width", &col.width},
      {"frames", &col.frames}, {"degree", &col.degree}, {"step_s", &col.step_s}};
  for (const auto& [name, index] : required) {
    auto i = csv.require_column(name);
    if (!i) return i.error();
    *index = i.value();
  }
  const std::optional<std::size_t> heads_col = csv.column_index("heads");
  const std::optional<std::size_t> batch_col = csv.column_index("batch");

  profile_table table;
  table.source = std::move(file_name);
  std::map<std::string, long, std::less<>> heads_line;  // model -> line where its heads was first stated
  std::map<profile_key, long> first_line;

  const auto positive_int = [&](std::size_t index) -> result<int> {
    auto v = csv.get_int(index);
    if (v && v.value() <= 0) return csv.error_at(index, "must be > 0, got " + std::to_string(v.value()));
    return v;
  };

  for (;;) {
    auto more = csv.next_row();
    if (!more) return more.error();
    if (!more.value()) break;

    profile_row r;
    r.line = csv.line();
    auto model = csv.get_text(col.model);
    if (!model) return model.error();
    r.shape.model = std::string(model.value());
    if (r.shape.model.empty()) return csv.error_at(col.model, "empty model name");
    auto gpu = csv.get_text(col.gpu);
    if (!gpu) return gpu.error();
    r.gpu = std::string(gpu.value());
    if (r.gpu.empty()) return csv.error_at(col.gpu, "empty gpu name");

    const std::pair<std::size_t, int*> ints[] = {
        {col.height, &r.shape.height}, {col.width, &r.shape.width}, {col.frames, &r.shape.frames}, {col.degree, &r.degree}};
    for (const auto& [index, out] : ints) {
      auto v = positive_int(index);
      if (!v) return v.error();
      *out = v.value();
    }
    auto step = csv.get_double(col.step_s);
    if (!step) return step.error();
    if (step.value() <= 0.0) return csv.error_at(col.step_s, "must be > 0, got '" + std::string(trim(csv.field(col.step_s))) + "'");
    if (step.value() < min_step_seconds || step.value() > max_step_seconds) {
      return csv.error_at(col.step_s, detail::step_range_message("'" + std::string(trim(csv.field(col.step_s))) + "'"));
    }
    r.step_s = step.value();
    if (batch_col && !trim(csv.field(*batch_col)).empty()) {
      auto b = positive_int(*batch_col);
      if (!b) return b.error();
      r.batch = b.value();
    }

    if (heads_col && !trim(csv.field(*heads_col)).empty()) {
      auto h = positive_int(*heads_col);
      if (!h) return h.error();
      const auto it = table.heads.find(r.shape.model);
      if (it == table.heads.end()) {
        table.heads.emplace(r.shape.model, h.value());
        heads_line.emplace(r.shape.model, r.line);
      } else if (it->second != h.value()) {
        return csv.error_at(*heads_col, "conflicting heads for model '" + r.shape.model + "': " +
                                            std::to_string(h.value()) + " here, " + std::to_string(it->second) +
                                            " on line " + std::to_string(heads_line.at(r.shape.model)));
      }
    }

    const auto [it, inserted] = first_line.emplace(r.key(), r.line);
    if (!inserted) {
      return input_error{table.source, r.line, {},
                         "duplicate profile row for " + detail::describe_key(r) + " (first on line " +
                             std::to_string(it->second) + ")"};
    }
    table.rows.push_back(std::move(r));
  }
  if (table.rows.empty()) return input_error{table.source, 0, {}, "profile has a header but no data rows"};
  for (const auto& r : table.rows) {  // after the whole file: the batch-1 row may come later
    if (r.batch != 1 && first_line.find(r.single_key()) == first_line.end()) {
      return input_error{table.source, r.line, "batch", detail::missing_single_message(r)};
    }
  }
  return table;
}

/// Reads the profile at `path`; an error when the file cannot be opened.
[[nodiscard]] inline result<profile_table> load_profile_csv(const std::string& path) {
  std::ifstream in;
  if (auto e = open_input_file(path, "profile file", in)) return *e;
  return read_profile_csv(in, path);
}

}  // namespace paraflex
