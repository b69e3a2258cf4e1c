// paraflex/trajectory/request.hpp - what a client asks for: one image or video generation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "paraflex/core/time.hpp"
#include "paraflex/core/utf8.hpp"

namespace paraflex {

/// The shape of a generation: everything the cost of one denoising step depends on.
struct request_shape {
  std::string model;
  int height = 0;
  int width = 0;
  int frames = 1;  ///< 1 = image

  friend bool operator==(const request_shape&, const request_shape&) = default;
  friend auto operator<=>(const request_shape&, const request_shape&) = default;
};

/// Latent tokens of a shape: (H/s)(W/s) per latent frame, and 1+(F-1)/4 latent frames for video
/// (8x VAE with 2x2 patches gives s = 16; Wan2.2's 16x VAE gives s = 32). Integer division as the
/// models themselves do; never less than 1 so that cost formulas stay defined for tiny shapes.
[[nodiscard]] inline double latent_tokens(const request_shape& s, int spatial_factor = 16) noexcept {
  const double per_frame = static_cast<double>(s.height / spatial_factor) * static_cast<double>(s.width / spatial_factor);
  const double latent_frames = s.frames <= 1 ? 1.0 : 1.0 + static_cast<double>((s.frames - 1) / 4);
  const double t = per_frame * latent_frames;
  return t < 1.0 ? 1.0 : t;
}

/// Most denoising steps a request may have. DiTs use 1-1000; the bound keeps a typo (or a fuzzer) from
/// building a trajectory of billions of tasks. Every reader and generator of workloads applies it.
inline constexpr int max_steps = 100'000;

/// The longest drop or cancel reason (is_drop_reason).
inline constexpr std::size_t max_drop_reason_length = 64;

/// Whether `reason` may end a request: it becomes a key of dropped_by_reason (JSON, metrics labels),
/// which formats §5 defines as short stable identifiers - up to max_drop_reason_length ASCII letters,
/// digits, '_', '-' or '.'. Empty is allowed too: it stands for the caller's default
/// ("dropped_by_policy" for a drop, "cancelled" for a cancel). The runtime rejects a drop with any
/// other reason as an invalid decision, and client::cancel throws on one.
///   is_drop_reason("deadline_unreachable")  // true
///   is_drop_reason("over budget")           // false: a space
[[nodiscard]] constexpr bool is_drop_reason(std::string_view reason) noexcept {
  if (reason.size() > max_drop_reason_length) return false;
  for (const char c : reason) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

/// Why `reason` may not end a request ("reason 'x' is not a short identifier (...)"), for the
/// messages of every caller that checks it; empty when is_drop_reason(reason).
[[nodiscard]] inline std::string drop_reason_problem(std::string_view reason) {
  if (is_drop_reason(reason)) return {};
  return "reason " + detail::quote_for_message(reason) + " is not a short identifier (up to " + std::to_string(max_drop_reason_length) +
         " ASCII letters, digits, '_', '-' or '.', e.g. 'deadline_unreachable')";
}

/// One request as read from a workload: identity, shape, work and objective.
struct request_spec {
  std::string id;           ///< unique within a workload (default: the 1-based line number)
  tick arrival = 0;         ///< when the request reaches the scheduler
  request_shape shape;
  int steps = 0;            ///< denoising steps (> 0)
  tick slo = never;         ///< latency objective; never = none
  int priority = 0;         ///< larger = more important
  std::string class_label;  ///< for per-class metrics; may be empty
  long source_line = 0;     ///< 1-based line in the workload file it was read from; 0 if not from a file

  [[nodiscard]] bool has_deadline() const noexcept { return slo != never; }
  [[nodiscard]] tick deadline() const noexcept { return add_sat(arrival, slo); }
};

/// A workload: requests sorted by arrival (stable), and where they came from.
struct workload {
  std::string source;  ///< file path, or a description for generated workloads
  std::vector<request_spec> requests;
};

}  // namespace paraflex
