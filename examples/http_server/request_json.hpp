// request_json.hpp - a POST /v1/requests body to a request_spec, or an error that names the field.
//
// The body is one JSON object whose fields are the workload CSV's columns (docs/formats.md §1) with
// the same types and rules: `model` (string), `width`, `height`, `steps` (integers > 0), `frames`
// (integer > 0, default 1), `slo_s` (number > 0, or null / absent: no deadline), `priority`
// (integer, default 0), `class` (string, default ""), `request_id` (string, default: generated).
// An optional field that is null takes its default, as an empty CSV cell does. A key may appear
// once per object, and the body holds no NUL byte (400 otherwise).
// Strings hold no control characters (C0, DEL, C1) and no U+2028/U+2029.
// Unknown fields are ignored, as unknown columns are; `arrival_s` too, since arrival is when the
// server receives the request. A server also bounds what one request may cost it (request_limits),
// because a huge shape would make the CPU stand-in allocate gigabytes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <paraflex/core/utf8.hpp>
#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/cost/shape_costs.hpp>
#include <paraflex/trajectory/request.hpp>

namespace paraflex_serve {

/// What one request may ask of this server.
struct request_limits {
  int max_side = 16384;                ///< width and height, pixels
  int max_frames = 1024;
  int max_steps = 10000;
  double max_latent_tokens = 1 << 18;  ///< latent rows the CPU stand-in holds (x channels floats)
  std::size_t max_string_bytes = 256;  ///< model, class, request_id
  int fixed_degree = 0;                ///< a static:K policy's K: a model must allow it; 0 when the policy chooses degrees
};

/// A parsed body, or why it was refused (a message that names the field).
struct parsed_request {
  std::optional<paraflex::request_spec> spec;
  std::string error;
};

/// JSON text for a message: invalid UTF-8 cannot reach it (every string came through the parser),
/// but ids from URL paths can, so replacement is the rule everywhere.
[[nodiscard]] inline std::string json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace detail {

// A wrong value for a message: arrays and objects by type only (dump() recurses once per nesting
// level, and a deep body overflows the I/O thread's stack), strings by a bounded prefix.
[[nodiscard]] inline std::string show(const nlohmann::json& v) {
  if (v.is_array() || v.is_object()) return v.type_name();
  if (!v.is_string()) return json_text(v);  // a number, a boolean: a few bytes
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() <= 58) return json_text(v);
  std::size_t n = 55;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // cut before a UTF-8 continuation byte
  return json_text(s.substr(0, n)) + "...";
}

// Integer field in [lo, hi]; a JSON float is refused even when integral, as "512.0" is in the CSV.
[[nodiscard]] inline std::string get_int(const nlohmann::json& obj, const char* key, bool required, long long fallback, long long lo,
                                         long long hi, int& out) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return fmt::format("field '{}' is required (an integer)", key);
    out = static_cast<int>(fallback);
    return {};
  }
  if (!it->is_number_integer()) return fmt::format("field '{}': expected an integer, got {}", key, show(*it));
  long long v = 0;
  if (it->is_number_unsigned()) {
    const auto u = it->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi)) return fmt::format("field '{}': {} is out of range [{}, {}]", key, u, lo, hi);
    v = static_cast<long long>(u);
  } else {
    v = it->get<std::int64_t>();
  }
  if (v < lo || v > hi) return fmt::format("field '{}': {} is out of range [{}, {}]", key, v, lo, hi);
  out = static_cast<int>(v);
  return {};
}

// The first character of `s` that a string field must not hold: a control character (C0, DEL, C1:
// U+0000-U+001F, U+007F-U+009F) or U+2028/U+2029, which end lines too (in logs, in JavaScript).
// `s` came through the JSON parser, so it is valid UTF-8.
[[nodiscard]] inline std::optional<char32_t> forbidden_char(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = std::max<std::size_t>(paraflex::utf8_sequence_length(s, i), 1);
    const auto lead = static_cast<unsigned char>(s[i]);
    char32_t c = n == 1 ? lead : lead & (0x7Fu >> n);  // the lead byte's payload bits
    for (std::size_t k = 1; k < n; ++k) c = c << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029) return c;
    i += n;
  }
  return std::nullopt;
}

[[nodiscard]] inline std::string get_string(const nlohmann::json& obj, const char* key, bool required, bool allow_empty,
                                            std::size_t max_bytes, std::string& out) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return fmt::format("field '{}' is required (a string)", key);
    return {};
  }
  if (!it->is_string()) return fmt::format("field '{}': expected a string, got {}", key, show(*it));
  const auto& s = it->get_ref<const std::string&>();
  if (s.empty() && !allow_empty) return fmt::format("field '{}' must not be empty", key);
  if (s.size() > max_bytes) return fmt::format("field '{}' is longer than {} bytes", key, max_bytes);
  if (const auto c = forbidden_char(s)) {
    return fmt::format("field '{}' must not contain control characters or line separators (found U+{:04X})", key, static_cast<std::uint32_t>(*c));
  }
  out = s;
  return {};
}

}  // namespace detail

/// Parses and type-checks a body (no cost model involved). Arrival is left at 0: "when the
/// scheduler picks it up", i.e. now.
[[nodiscard]] inline parsed_request parse_request_json(std::string_view body, const request_limits& lim = {}) {
  parsed_request out;
  // A raw NUL is never JSON, but nlohmann's lexer takes it for the end of the input and would
  // ignore whatever follows it.
  if (const auto nul = body.find('\0'); nul != std::string_view::npos) {
    out.error = fmt::format("invalid JSON: a NUL byte at offset {}", nul);
    return out;
  }
  // A key repeated within an object: the parser would keep the last value silently, and a proxy
  // that reads the first one would see another request. A key is kept with its object's ordinal.
  std::vector<std::uint64_t> open_objects;
  std::uint64_t objects = 0;
  std::unordered_set<std::string> keys;
  std::optional<std::pair<nlohmann::json, int>> repeated;  // the first repeated key, and its depth
  auto unique_keys = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using ev = nlohmann::json::parse_event_t;
    if (event == ev::object_start) {
      open_objects.push_back(objects++);
    } else if (event == ev::object_end) {
      open_objects.pop_back();
    } else if (event == ev::key && !repeated) {
      if (!keys.insert(std::to_string(open_objects.back()) + ':' + parsed.get_ref<const std::string&>()).second) repeated.emplace(parsed, depth);
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body.begin(), body.end(), unique_keys);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number such as 1e400
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ...": keep the part after "] "
    if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    out.error = "invalid JSON: " + what;
    return out;
  }
  if (!j.is_object()) {
    out.error = fmt::format("the body must be a JSON object, got {}", j.type_name());
    return out;
  }
  if (repeated) {
    out.error = repeated->second == 1 ? fmt::format("field {} appears more than once", detail::show(repeated->first))
                                      : fmt::format("key {} appears more than once in a nested object", detail::show(repeated->first));
    return out;
  }
  paraflex::request_spec s;
  std::string e;
  if (e = detail::get_string(j, "request_id", false, false, lim.max_string_bytes, s.id); !e.empty()) return out.error = e, out;
  if (e = detail::get_string(j, "model", true, false, lim.max_string_bytes, s.shape.model); !e.empty()) return out.error = e, out;
  if (e = detail::get_int(j, "width", true, 0, 1, lim.max_side, s.shape.width); !e.empty()) return out.error = e, out;
  if (e = detail::get_int(j, "height", true, 0, 1, lim.max_side, s.shape.height); !e.empty()) return out.error = e, out;
  if (e = detail::get_int(j, "frames", false, 1, 1, lim.max_frames, s.shape.frames); !e.empty()) return out.error = e, out;
  if (e = detail::get_int(j, "steps", true, 0, 1, lim.max_steps, s.steps); !e.empty()) return out.error = e, out;
  if (e = detail::get_int(j, "priority", false, 0, std::numeric_limits<int>::min(), std::numeric_limits<int>::max(), s.priority);
      !e.empty()) {
    return out.error = e, out;
  }
  if (e = detail::get_string(j, "class", false, true, lim.max_string_bytes, s.class_label); !e.empty()) return out.error = e, out;
  if (const auto it = j.find("slo_s"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) return out.error = fmt::format("field 'slo_s': expected a number of seconds or null, got {}", detail::show(*it)), out;
    const double v = it->get<double>();
    const auto t = paraflex::to_ticks(v);
    if (!std::isfinite(v) || v <= 0 || !t || *t <= 0) {
      return out.error = fmt::format("field 'slo_s': expected a number of seconds > 0 (at least 1 us, at most about 4e12), got {}", detail::show(*it)), out;
    }
    s.slo = *t;
  }
  out.spec = std::move(s);
  return out;
}

/// Checks that the cost model can run `s` on 1..gpus devices within the server's limits: a known
/// model, a shape it prices, an allowed degree (lim.fixed_degree itself under a static:K policy), a
/// trajectory that fits the microsecond clock.
/// Empty when all is well. Safe to call from several threads (profile_cost_model guards its notes).
[[nodiscard]] inline std::string check_request_cost(const paraflex::request_spec& s, const paraflex::profile_cost_model& cost, int gpus,
                                                    const request_limits& lim = {}) {
  if (!cost.knows_model(s.shape.model)) {
    return fmt::format("field 'model': unknown model '{}' on gpu '{}' (known: {})", s.shape.model, cost.gpu(),
                       paraflex::join_names(cost.models()));
  }
  const double tokens = paraflex::latent_tokens(s.shape);
  if (tokens > lim.max_latent_tokens) {
    return fmt::format("{}x{}x{} has {:.0f} latent tokens, more than this server's limit of {:.0f} (--max-tokens)", s.shape.width,
                       s.shape.height, s.shape.frames, tokens, lim.max_latent_tokens);
  }
  paraflex::tick worst = 0;
  try {
    const paraflex::shape_costs c = paraflex::make_shape_costs(cost, s.shape, gpus);
    if (c.allowed_degrees.empty()) return fmt::format("field 'model': no degree in 1..{} is allowed for model '{}'", gpus, s.shape.model);
    // static:K never drops a request, so one whose model does not allow K would wait for ever
    // (until the policy stalls and the runtime drops it): refuse it now, as paraflex-sim refuses such a workload.
    if (lim.fixed_degree > 0 && !std::binary_search(c.allowed_degrees.begin(), c.allowed_degrees.end(), lim.fixed_degree)) {
      return fmt::format("field 'model': this server runs every request on {} devices (--policy static:{}), which model '{}' does not "
                         "allow (its heads must be divisible by the degree, and it must not exceed --max-degree); it allows {} of 1..{}",
                         lim.fixed_degree, lim.fixed_degree, s.shape.model, paraflex::degree_ranges(c.allowed_degrees), gpus);
    }
    for (int k : c.allowed_degrees) {
      const auto kk = static_cast<std::size_t>(k);
      worst = std::max({worst, c.step[kk], c.encode[kk], c.decode[kk]});
    }
  } catch (const std::exception& e) {
    return fmt::format("the cost model cannot price {} {}x{}x{}: {}", s.shape.model, s.shape.width, s.shape.height, s.shape.frames, e.what());
  }
  // The same headroom as check_workload_costs: a whole trajectory on one device must fit the clock
  // (which, on a server, may already be far from 0).
  if (static_cast<double>(worst) * (s.steps + 2.0) > 1.0e18) {
    return fmt::format("field 'steps': {} steps of up to {} s each do not fit in the microsecond clock", s.steps, paraflex::to_seconds(worst));
  }
  return {};
}

}  // namespace paraflex_serve
