// metrics.hpp - what GET /metrics reports, in the Prometheus text exposition format (version 0.0.4).
//
// Request outcomes are counted by the scheduler's on_request_end callback (one call per request,
// exactly once), so completed, dropped-by-reason and the latency histogram always agree with each
// other; submitted and the gauges come from the client's counters. While requests are in flight a
// scrape may see submitted > completed + dropped; once everything has ended they are equal.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include <paraflex/runtime/client.hpp>

namespace paraflex_serve {

/// Latency buckets in (profile) seconds: from small images (~1 s) to long videos (~30 min).
inline constexpr std::array<double, 15> latency_buckets_s{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};

/// A label value as the exposition format wants it: backslash, quote and newline escaped.
[[nodiscard]] inline std::string prometheus_label(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

class server_metrics {
 public:
  /// A request ended (scheduler's thread). latency_s: arrival to completion, completed ones only.
  void request_ended(bool completed, const std::string& reason, double latency_s) {
    std::lock_guard lk(mu_);
    if (!completed) {
      ++dropped_[reason.empty() ? std::string("unknown") : reason];
      return;
    }
    ++completed_;
    latency_sum_ += latency_s;
    for (std::size_t i = 0; i < latency_buckets_s.size(); ++i) {
      if (latency_s <= latency_buckets_s[i]) ++buckets_[i];  // cumulative, as Prometheus wants
    }
  }

  /// " (reason: n, ...)" over the drops so far, or "" when there were none.
  [[nodiscard]] std::string dropped_summary() const {
    std::lock_guard lk(mu_);
    std::string out;
    for (const auto& [reason, n] : dropped_) out += fmt::format("{}{}: {}", out.empty() ? " (" : ", ", reason, n);
    return out.empty() ? out : out + ")";
  }

  /// One HTTP response sent, by status code (any thread).
  void response(unsigned status) {
    if (status < codes_.size()) codes_[status].fetch_add(1, std::memory_order_relaxed);
  }
  void connection_opened() { open_.fetch_add(1, std::memory_order_relaxed); accepted_.fetch_add(1, std::memory_order_relaxed); }
  void connection_closed() { open_.fetch_sub(1, std::memory_order_relaxed); }
  void connection_refused() { refused_.fetch_add(1, std::memory_order_relaxed); }
  [[nodiscard]] long open_connections() const { return open_.load(std::memory_order_relaxed); }

  /// The whole exposition. `draining`: a shutdown is in progress.
  [[nodiscard]] std::string render(const paraflex::client_counters& c, bool draining) const {
    std::string out;
    auto head = [&](const char* name, const char* type, const char* help) { out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type); };
    std::uint64_t completed = 0;
    std::map<std::string, std::uint64_t> dropped;
    std::array<std::uint64_t, latency_buckets_s.size()> buckets{};
    double sum = 0;
    {
      std::lock_guard lk(mu_);
      completed = completed_;
      dropped = dropped_;
      buckets = buckets_;
      sum = latency_sum_;
    }
    head("paraflex_requests_submitted_total", "counter", "Requests accepted by POST /v1/requests.");
    out += fmt::format("paraflex_requests_submitted_total {}\n", c.submitted);
    head("paraflex_requests_completed_total", "counter", "Accepted requests that ended completed.");
    out += fmt::format("paraflex_requests_completed_total {}\n", completed);
    head("paraflex_requests_dropped_total", "counter", "Accepted requests that ended dropped, by reason.");
    if (!dropped.contains("cancelled")) dropped["cancelled"] = 0;  // always present, so sums and rates work
    for (const auto& [reason, n] : dropped) out += fmt::format("paraflex_requests_dropped_total{{reason=\"{}\"}} {}\n", prometheus_label(reason), n);
    head("paraflex_requests_waiting", "gauge", "Requests the scheduler holds that have no task in flight.");
    out += fmt::format("paraflex_requests_waiting {}\n", c.waiting);
    head("paraflex_requests_running", "gauge", "Requests with a task or a migration in flight.");
    out += fmt::format("paraflex_requests_running {}\n", c.running);
    head("paraflex_devices_busy", "gauge", "Devices running a task or a migration.");
    out += fmt::format("paraflex_devices_busy {}\n", c.busy_devices);
    head("paraflex_devices", "gauge", "Devices in the cluster.");
    out += fmt::format("paraflex_devices {}\n", c.devices);
    head("paraflex_request_latency_seconds", "histogram", "Arrival to completion of completed requests, in profile seconds.");
    for (std::size_t i = 0; i < latency_buckets_s.size(); ++i) {
      out += fmt::format("paraflex_request_latency_seconds_bucket{{le=\"{}\"}} {}\n", latency_buckets_s[i], buckets[i]);
    }
    out += fmt::format("paraflex_request_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", completed);
    out += fmt::format("paraflex_request_latency_seconds_sum {}\n", sum);
    out += fmt::format("paraflex_request_latency_seconds_count {}\n", completed);
    head("paraflex_http_responses_total", "counter", "HTTP responses sent, by status code.");
    for (std::size_t code = 0; code < codes_.size(); ++code) {
      if (const auto n = codes_[code].load(std::memory_order_relaxed); n > 0) out += fmt::format("paraflex_http_responses_total{{code=\"{}\"}} {}\n", code, n);
    }
    head("paraflex_http_connections_open", "gauge", "HTTP connections open now.");
    out += fmt::format("paraflex_http_connections_open {}\n", open_.load(std::memory_order_relaxed));
    head("paraflex_http_connections_accepted_total", "counter", "HTTP connections accepted.");
    out += fmt::format("paraflex_http_connections_accepted_total {}\n", accepted_.load(std::memory_order_relaxed));
    head("paraflex_http_connections_refused_total", "counter", "Connections answered 503 because --max-connections were open.");
    out += fmt::format("paraflex_http_connections_refused_total {}\n", refused_.load(std::memory_order_relaxed));
    head("paraflex_draining", "gauge", "1 while a shutdown is in progress.");
    out += fmt::format("paraflex_draining {}\n", draining ? 1 : 0);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::uint64_t completed_ = 0;
  std::map<std::string, std::uint64_t> dropped_;
  std::array<std::uint64_t, latency_buckets_s.size()> buckets_{};
  double latency_sum_ = 0;
  std::array<std::atomic<std::uint64_t>, 600> codes_{};
  std::atomic<long> open_{0};
  std::atomic<std::uint64_t> accepted_{0}, refused_{0};
};

}  // namespace paraflex_serve
