// server.hpp - the HTTP side of paraflex-serve: routes, JSON answers, connections (Boost.Beast).
//
// Threads: a few I/O threads run the Asio io_context and call the scheduler only through its
// request_client (thread-safe); the scheduler runs on a thread of its own (main.cpp). Nothing here
// blocks an I/O thread: the short wait of DELETE for the scheduler to apply a cancel is a timer.
//
// Connections (one `session` each, on its own strand): HTTP/1.1 keep-alive; the whole of a request
// (headers and body) must arrive within --read-timeout of the first byte or of the previous response
// (slowloris: a client trickling bytes is cut off, 408); a request line over 8 KiB gets 414, the
// headers as a whole over 8 KiB 431, and so do a chunked body's extensions and trailer together
// (request_parser), bodies over the body limit 413 (from Content-Length, before
// reading the body; `Expect: 100-continue` is answered); a transfer coding other than chunked 501;
// anything the parser rejects, a Transfer-Encoding it would misread and a line ending in a bare LF
// (at once, not after the read timeout: session::parse_or_read) get 400. After an error answer the
// connection is closed gracefully (half-close, then discard what the client still sends for a
// second) so that the client reads the answer instead of a reset. Beyond --max-connections open
// connections a new one is answered 503 and closed. A client that vanishes only ends its own
// session; its accepted requests run on.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <paraflex/cost/profile_cost_model.hpp>
#include <paraflex/runtime/client.hpp>

#include "metrics.hpp"
#include "request_json.hpp"

namespace paraflex_serve {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

struct http_options {
  std::size_t body_limit = 64 * 1024;
  std::size_t header_limit = 8 * 1024;
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds cancel_wait{250};  ///< DELETE waits at most this for a waiting request to end
  long max_connections = 512;
};

[[nodiscard]] inline std::string percent_encode(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

/// An id as one path segment: percent-encoded, and "." or ".." with its dots escaped too, since a
/// client resolves those segments away (RFC 3986 5.2.4) before it sends the path.
[[nodiscard]] inline std::string path_segment(std::string_view id) {
  if (id == "." || id == "..") return id.size() == 1 ? "%2E" : "%2E%2E";
  return percent_encode(id);
}

/// A Host header value (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3): empty, or host[:port] where host is a
/// reg-name (unreserved, sub-delims, %HH), an IPv4 address (a reg-name's characters) or an IP literal
/// in brackets, and port is at most 65535.
[[nodiscard]] inline bool valid_host(std::string_view v) {
  const auto unreserved_or_sub_delim = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos;
  };
  std::size_t i = 0;
  if (!v.empty() && v[0] == '[') {
    const auto close = v.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (const char c : v.substr(1, close - 1)) {
      if (!unreserved_or_sub_delim(c) && c != ':') return false;
    }
    i = close + 1;
  } else {
    while (i < v.size() && v[i] != ':') {
      if (v[i] == '%') {
        if (i + 2 >= v.size() || !std::isxdigit(static_cast<unsigned char>(v[i + 1])) || !std::isxdigit(static_cast<unsigned char>(v[i + 2]))) return false;
        i += 3;
      } else if (unreserved_or_sub_delim(v[i])) {
        ++i;
      } else {
        return false;
      }
    }
  }
  if (i == v.size()) return true;
  if (v[i] != ':') return false;
  const auto port = v.substr(i + 1);
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  return port.empty() || std::stoul(std::string(port)) <= 65535;
}

/// Percent-decodes one path segment; nullopt for a malformed escape.
[[nodiscard]] inline std::optional<std::string> percent_decode(std::string_view s) {
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = val(s[i + 1]), lo = val(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

/// beast::iequals for std::string_view (Boost 1.74's beast::string_view is Boost's own type).
[[nodiscard]] inline bool iequals(std::string_view a, std::string_view b) {
  return beast::iequals(beast::string_view(a.data(), a.size()), beast::string_view(b.data(), b.size()));
}

/// The path a request target routes by, query stripped. Origin-form is the path itself; absolute-form
/// (`http://host/path`, which RFC 9112 3.2.2 says a server must accept) is the part after the
/// authority, "/" when that is empty. Other forms (`*`, authority-form) come back as they are.
[[nodiscard]] inline std::string_view target_path(std::string_view target) {
  const auto s = target.find("://");
  const auto scheme = s == std::string_view::npos ? std::string_view{} : target.substr(0, s);
  if (iequals(scheme, "http") || iequals(scheme, "https")) {
    const auto rest = target.substr(s + 3);
    const auto p = rest.find_first_of("/?");
    target = p == std::string_view::npos ? std::string_view{} : rest.substr(p);
  }
  if (const auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  return target.empty() ? "/" : target;
}

/// Why a request's Transfer-Encoding leaves its body unreadable: the status and message to answer
/// with before closing; nullopt when it is absent or exactly `chunked`. Beast decodes chunked only and
/// silently ignores any other coding (`gzip` alone: no body, its bytes read as the next request), so
/// anything else is refused here, before the body is read (RFC 9112 6.1, 6.3).
[[nodiscard]] inline std::optional<std::pair<http::status, std::string>> transfer_encoding_error(const http::request_header<>& req) {
  const auto fields = req.equal_range(http::field::transfer_encoding);
  if (fields.first == fields.second) return std::nullopt;
  // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
  if (req.version() < 11) return std::pair{http::status::bad_request, std::string("an HTTP/1.0 request must not have a Transfer-Encoding")};
  auto trim = [](std::string_view v) {
    const auto b = v.find_first_not_of(" \t");
    return b == std::string_view::npos ? std::string_view{} : v.substr(b, v.find_last_not_of(" \t") - b + 1);
  };
  int chunked = 0;
  for (auto f = fields.first; f != fields.second; ++f) {
    const std::string_view list(f->value().data(), f->value().size());
    for (std::size_t at = 0; at <= list.size();) {  // comma-separated codings, each "name;params"; empty elements are allowed
      const auto comma = std::min(list.find(',', at), list.size());
      const auto element = list.substr(at, comma - at);
      at = comma + 1;
      const auto coding = trim(element.substr(0, element.find(';')));
      if (coding.empty()) continue;
      if (!iequals(coding, "chunked")) {
        return std::pair{http::status::not_implemented, fmt::format("transfer coding '{}' is not implemented (only chunked is)", coding)};
      }
      ++chunked;
    }
  }
  if (chunked != 1) return std::pair{http::status::bad_request, std::string("Transfer-Encoding must name chunked exactly once")};
  return std::nullopt;
}

/// Beast's request parser, with the chunk extensions and trailer fields of a request held, together,
/// to the header limit. Beast bounds them only by the read buffer, and a trailer field of 64 KiB or
/// more makes it throw std::length_error out of the read: the client got no answer.
class request_parser final : public http::request_parser<http::string_body> {
 public:
  explicit request_parser(std::size_t limit) : budget_(limit) {}

 private:
  void on_field_impl(http::field f, beast::string_view name, beast::string_view value, beast::error_code& ec) override {
    if (is_header_done() && !spend(name.size() + value.size() + 4, ec)) return;  // a trailer field: "name: value\r\n"
    try {
      get().insert(f, name, value);
    } catch (const std::length_error&) {  // a field of 64 KiB or more: only with a header limit above that
      ec = http::error::header_limit;
    }
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view extensions, beast::error_code& ec) override { spend(extensions.size(), ec); }
  bool spend(std::size_t n, beast::error_code& ec) {
    if (n > budget_) {
      ec = http::error::header_limit;
      return false;
    }
    budget_ -= n;
    return true;
  }
  std::size_t budget_;
};

/// A request's status as the API shows it.
[[nodiscard]] inline nlohmann::json status_json(const paraflex::request_status& s) {
  nlohmann::json j;
  j["request_id"] = s.id;
  j["state"] = paraflex::to_string(s.state);
  j["reason"] = s.state == paraflex::request_state::dropped ? nlohmann::json(s.reason) : nlohmann::json(nullptr);
  const auto lat = s.latency_s();
  j["latency_s"] = lat ? nlohmann::json(*lat) : nlohmann::json(nullptr);
  j["degree"] = s.degree > 0 ? nlohmann::json(s.degree) : nlohmann::json(nullptr);
  j["migrations"] = s.migrations;
  j["steps_done"] = s.steps_done;
  j["steps_total"] = s.steps_total;
  j["cancel_requested"] = s.cancel_requested;
  return j;
}

/// What every connection shares: the client, the request checks, the metrics, the shutdown gate.
class service {
 public:
  service(paraflex::request_client& client, const paraflex::profile_cost_model& cost, int gpus, request_limits limits,
          server_metrics& metrics, http_options options)
      : client_(client), cost_(cost), gpus_(gpus), limits_(limits), metrics_(metrics), options_(options) {}

  using request = http::request<http::string_body>;
  using response = http::response<http::string_body>;

  [[nodiscard]] const http_options& options() const noexcept { return options_; }
  [[nodiscard]] server_metrics& metrics() noexcept { return metrics_; }
  [[nodiscard]] paraflex::request_client& client() noexcept { return client_; }
  [[nodiscard]] bool draining() const noexcept { return draining_.load(std::memory_order_acquire); }

  /// Stops accepting requests: after this returns no submit() is in progress and none will start,
  /// so the scheduler can be told that nothing more will come. Returns the ids that have not ended.
  std::vector<std::string> stop_accepting() {
    std::unique_lock gate(gate_);
    draining_.store(true, std::memory_order_release);
    return unended_ids();
  }
  [[nodiscard]] std::vector<std::string> unended_ids() const {
    std::lock_guard lk(ids_mu_);
    return {unended_.begin(), unended_.end()};
  }
  /// From on_request_end (scheduler's thread): the shutdown no longer needs to cancel `id`.
  void request_ended(const std::string& id) {
    std::lock_guard lk(ids_mu_);
    unended_.erase(id);
  }

  static response json_response(http::status status, const nlohmann::json& body, unsigned version, bool keep_alive) {
    response res{status, version};
    res.set(http::field::server, "paraflex-serve");
    res.set(http::field::content_type, "application/json");
    res.keep_alive(keep_alive);
    res.body() = json_text(body) + "\n";
    res.prepare_payload();
    return res;
  }
  static response error_response(http::status status, std::string_view message, unsigned version, bool keep_alive) {
    return json_response(status, nlohmann::json{{"error", std::string(message)}}, version, keep_alive);
  }

  /// Where a request goes. `cancel_id` set: a DELETE of a known-format id, answered by the session
  /// after its short wait (cancel_now / cancel_answer); otherwise `res` is the answer.
  struct routed {
    std::optional<response> res;
    std::string cancel_id;
  };

  routed route(const request& req) {
    const unsigned v = req.version();
    const bool ka = req.keep_alive();
    // HEAD is GET without the body (the session drops it): RFC 9110 wants both on every GET route.
    const http::verb method = req.method() == http::verb::head ? http::verb::get : req.method();
    const std::string_view target = target_path({req.target().data(), req.target().size()});
    auto not_allowed = [&](const char* allow) {
      auto r = error_response(http::status::method_not_allowed, fmt::format("method {} is not allowed here (allowed: {})",
                                                                             std::string(req.method_string()), allow), v, ka);
      r.set(http::field::allow, allow);
      return routed{std::move(r), {}};
    };
    // A method the server does not know at all is 501 (RFC 9110 15.6.2), whatever the path; 405 is for
    // a known method that the path does not take.
    if (req.method() == http::verb::unknown) {
      return {error_response(http::status::not_implemented,
                             fmt::format("method {} is not implemented (this server knows GET, HEAD, POST and DELETE)",
                                         std::string(req.method_string())),
                             v, ka),
              {}};
    }
    // A fragment never travels in a request (RFC 9112 3.2); read as part of a path it would become
    // part of an id.
    if (req.target().find('#') != beast::string_view::npos) {
      return {error_response(http::status::bad_request,
                             "the request target contains '#': a URI fragment is never sent in a request (write it as %23 "
                             "where it is part of an id)",
                             v, ka),
              {}};
    }
    if (target == "/healthz") {
      if (method != http::verb::get) return not_allowed("GET, HEAD");
      if (draining()) return {json_response(http::status::service_unavailable, {{"status", "draining"}}, v, ka), {}};
      return {json_response(http::status::ok, {{"status", "ok"}}, v, ka), {}};
    }
    if (target == "/metrics") {
      if (method != http::verb::get) return not_allowed("GET, HEAD");
      response res{http::status::ok, v};
      res.set(http::field::server, "paraflex-serve");
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.keep_alive(ka);
      res.body() = metrics_.render(client_.counters(), draining());
      res.prepare_payload();
      return {std::move(res), {}};
    }
    if (target == "/v1/requests") {
      if (method != http::verb::post) return not_allowed("POST");
      return {submit(req), {}};
    }
    static constexpr std::string_view prefix = "/v1/requests/";
    if (target.starts_with(prefix)) {
      const std::string_view raw = target.substr(prefix.size());
      if (raw.empty() || raw.find('/') != std::string_view::npos) {
        return {error_response(http::status::not_found, "no such path", v, ka), {}};
      }
      const auto id = percent_decode(raw);
      if (!id) return {error_response(http::status::bad_request, "malformed percent-encoding in the request id", v, ka), {}};
      if (method == http::verb::get) {
        const auto st = client_.status(*id);
        if (!st) return {error_response(http::status::not_found, fmt::format("no request with id '{}'", *id), v, ka), {}};
        return {json_response(http::status::ok, status_json(*st), v, ka), {}};
      }
      if (method == http::verb::delete_) return {std::nullopt, *id};
      return not_allowed("GET, HEAD, DELETE");
    }
    return {error_response(http::status::not_found, "no such path", v, ka), {}};
  }

  /// The cancel itself; an answer when there is nothing to wait for (unknown id, already ended).
  std::optional<response> cancel_now(const request& req, const std::string& id) {
    const auto outcome = client_.cancel(id, "cancelled");
    if (outcome == paraflex::cancel_outcome::unknown_id) {
      return error_response(http::status::not_found, fmt::format("no request with id '{}'", id), req.version(), req.keep_alive());
    }
    if (outcome == paraflex::cancel_outcome::already_ended) return cancel_answer(req, id);
    return std::nullopt;
  }
  /// True when DELETE can answer: the cancel took effect (ended), or the request is running and will
  /// end after its task, which may be long.
  [[nodiscard]] bool cancel_settled(const std::string& id) const {
    const auto st = client_.status(id);
    return !st || st->ended() || st->state == paraflex::request_state::running;
  }
  response cancel_answer(const request& req, const std::string& id) {
    const auto st = client_.status(id);
    if (!st) return error_response(http::status::not_found, fmt::format("no request with id '{}'", id), req.version(), req.keep_alive());
    return json_response(http::status::ok, status_json(*st), req.version(), req.keep_alive());
  }

 private:
  response submit(const request& req) {
    const unsigned v = req.version();
    const bool ka = req.keep_alive();
    // Before the body: a draining server takes no request, well-formed or not (checked again below,
    // under the gate, for a shutdown that starts meanwhile).
    if (draining()) return error_response(http::status::service_unavailable, "the server is shutting down", v, false);
    auto parsed = parse_request_json(req.body(), limits_);
    if (!parsed.spec) return error_response(http::status::bad_request, parsed.error, v, ka);
    if (auto why = check_request_cost(*parsed.spec, cost_, gpus_, limits_); !why.empty()) {
      cost_.clear_extrapolation_notes();  // this copy only checks: keep its notes from growing
      return error_response(http::status::bad_request, why, v, ka);
    }
    cost_.clear_extrapolation_notes();
    std::string id = std::move(parsed.spec->id);
    {
      std::shared_lock gate(gate_);
      if (draining()) return error_response(http::status::service_unavailable, "the server is shutting down", v, false);
      {
        // Ids are checked and generated here, not by the client: it reuses the ids that --retain
        // made it forget, and the API promises 409 for them over the server's life.
        std::lock_guard lk(ids_mu_);
        if (id.empty()) {
          do id = fmt::format("r{}", ++next_generated_);
          while (every_id_.contains(id));
        } else if (every_id_.contains(id)) {
          return error_response(http::status::conflict, fmt::format("request id '{}' is already in use", id), v, ka);
        }
        every_id_.insert(id);
        unended_.insert(id);  // before submit(): the request may end before submit() returns
      }
      parsed.spec->id = id;
      auto unreserve = [&] {  // not accepted after all: the id is free again
        std::lock_guard lk(ids_mu_);
        every_id_.erase(id);
        unended_.erase(id);
      };
      try {
        client_.submit(std::move(*parsed.spec));
      } catch (const paraflex::submit_error& e) {
        unreserve();
        const bool dup = e.kind() == paraflex::submit_error::kind_type::duplicate_id;
        return error_response(dup ? http::status::conflict : http::status::bad_request, e.what(), v, ka);
      } catch (...) {  // out of memory: session::handle answers 500
        unreserve();
        throw;
      }
    }
    auto res = json_response(http::status::created, {{"request_id", id}, {"state", "waiting"}}, v, ka);
    res.set(http::field::location, "/v1/requests/" + path_segment(id));
    return res;
  }

  paraflex::request_client& client_;
  const paraflex::profile_cost_model& cost_;
  int gpus_;
  request_limits limits_;
  server_metrics& metrics_;
  http_options options_;
  mutable std::shared_mutex gate_;  // submits share it; stop_accepting takes it alone
  std::atomic<bool> draining_{false};
  mutable std::mutex ids_mu_;
  std::unordered_set<std::string> every_id_;  // every id ever accepted: kept for 409 (README: per-id cost)
  std::unordered_set<std::string> unended_;   // accepted, not yet ended: what a shutdown cancels
  std::uint64_t next_generated_ = 0;
};

/// One TCP connection.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket&& socket, service& svc, bool refuse)
      : stream_(std::move(socket)), timer_(stream_.get_executor()), read_timer_(stream_.get_executor()), svc_(svc), refuse_(refuse) {
    if (refuse_) svc_.metrics().connection_refused();
    else svc_.metrics().connection_opened();
  }
  ~session() {
    if (!refuse_) svc_.metrics().connection_closed();
  }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void run() { net::dispatch(stream_.get_executor(), beast::bind_front_handler(&session::start, shared_from_this())); }

 private:
  void start() {
    if (refuse_) {
      res_ = service::error_response(http::status::service_unavailable, "too many connections; try again", 11, false);
      write(true);
      return;
    }
    read_header();
  }

  void read_header() {
    parser_.emplace(svc_.options().header_limit);
    parser_->body_limit(svc_.options().body_limit);
    parser_->header_limit(static_cast<std::uint32_t>(svc_.options().header_limit));
    // Headers and body together must arrive in time (slowloris). Not tcp_stream's own timeout: that
    // one closes the socket, and a client that is merely slow deserves a 408 first.
    stream_.expires_never();
    read_timed_out_ = false;
    read_timer_.expires_after(svc_.options().read_timeout);
    read_timer_.async_wait([self = shared_from_this(), gen = ++read_gen_](beast::error_code ec) {
      if (ec || gen != self->read_gen_) return;  // cancelled, or a later read's deadline
      self->read_timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
    reading_header_ = true;
    parse_or_read();
  }

  // Requests are read by hand rather than with http::async_read_header and http::async_read: Beast's
  // parser ends a line at CRLF only, so a line that ends in a bare LF never completes, and those
  // reads waited out the read timeout and answered 408 to what is a malformed request. Here, each
  // time the parser needs more, the bytes it has not taken are looked at, and a bare LF among them
  // gets 400 at once. While the header or a chunk line (size, extensions, trailer) is incomplete the
  // parser takes none of it, so those bytes are exactly the unfinished lines; a body's own bytes are
  // taken as they arrive and never looked at.
  void parse_or_read() {
    for (;;) {
      if (reading_header_ ? parser_->is_header_done() : parser_->is_done()) {
        if (reading_header_) return on_header({}, 0);
        return on_read({}, 0);
      }
      if (buffer_.size() == 0) break;
      beast::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more) break;
      if (ec) return on_read_error(ec);
      if (used == 0) break;
    }
    if ((reading_header_ || parser_->chunked()) && has_bare_lf(buffer_.data())) {
      read_done();
      return fail(http::status::bad_request, "malformed HTTP request: a line ends in a bare LF (HTTP/1.1 lines end in CRLF)");
    }
    const std::size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) return on_read_error(http::error::buffer_overflow);
    stream_.async_read_some(buffer_.prepare(std::min<std::size_t>(room, 64 * 1024)),
                            beast::bind_front_handler(&session::on_bytes, shared_from_this()));
  }
  void on_bytes(beast::error_code ec, std::size_t n) {
    // The client closed: before any byte of a request, between requests; else, mid-request.
    if (ec == net::error::eof) ec = parser_->got_some() || buffer_.size() > 0 ? http::error::partial_message : http::error::end_of_stream;
    if (ec) return on_read_error(ec);
    buffer_.commit(n);
    parse_or_read();
  }
  [[nodiscard]] static bool has_bare_lf(net::const_buffer data) {
    const auto* p = static_cast<const char*>(data.data());
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) return true;  // at 0: the byte before was taken (body data)
    }
    return false;
  }
  void read_done() {
    ++read_gen_;
    read_timer_.cancel();
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    if (auto why = transfer_encoding_error(parser_->get())) {  // before any 100 Continue: the body will not be read
      read_done();
      return fail(why->first, why->second);
    }
    if (parser_->is_done()) {
      read_done();
      return handle();
    }
    // The deadline may have fired after the header arrived but before this ran: its cancel found no
    // read to abort, and the body read would have no deadline.
    if (read_timed_out_) return on_read_error(net::error::operation_aborted);
    const auto& req = parser_->get();
    if (req.version() >= 11 && beast::iequals(req[http::field::expect], "100-continue")) {  // never to HTTP/1.0 (RFC 9110 10.1.1)
      static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(cont), beast::bind_front_handler(&session::on_continue, shared_from_this()));
      return;
    }
    read_body();
  }
  void on_continue(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    if (read_timed_out_) return on_read_error(net::error::operation_aborted);  // as in on_header
    read_body();
  }
  void read_body() {
    reading_header_ = false;
    parser_->eager(true);  // the rest of the message in as few put() calls as the bytes allow
    parse_or_read();
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    read_done();
    handle();
  }

  void on_read_error(beast::error_code ec) {
    const bool timed_out = read_timed_out_;
    read_done();
    if (timed_out) {
      if (!parser_->got_some()) return close_now();  // an idle keep-alive connection
      return fail(http::status::request_timeout, "the request did not arrive within the read timeout");
    }
    // The client closed its side mid-body: the request is known, and a client that only half-closed
    // still reads the answer (one that closed for good never sees it; the write fails quietly).
    if (ec == http::error::partial_message && parser_->is_header_done()) {
      return fail(http::status::bad_request, "the connection was closed before the end of the request's body");
    }
    if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == net::error::operation_aborted) {
      return close_now();  // the client closed (between requests or mid-header): nobody to answer
    }
    if (ec == http::error::body_limit) {
      return fail(http::status::payload_too_large, fmt::format("the body is larger than {} bytes", svc_.options().body_limit));
    }
    // After the header, only a chunk line or the trailer waits in the buffer: past the parser's
    // budget, or past the buffer itself.
    if ((ec == http::error::header_limit || ec == http::error::buffer_overflow) && parser_->is_header_done()) {
      return fail(http::status::request_header_fields_too_large,
                  fmt::format("the chunk extensions and trailer are larger than {} bytes", svc_.options().header_limit));
    }
    if (ec == http::error::header_limit) {
      const auto limit = svc_.options().header_limit;
      if (request_line_too_long()) {
        return fail(http::status::uri_too_long, fmt::format("the request target is too long: the request line is longer than {} bytes", limit));
      }
      return fail(http::status::request_header_fields_too_large, fmt::format("the headers are larger than {} bytes", limit));
    }
    if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
      return fail(http::status::bad_request, "malformed HTTP request: " + ec.message());
    }
    close_now();  // reset, broken pipe, ...: the connection is gone
  }

  // Beast has one limit for the request line and the headers together. The parser stores the target
  // when it has parsed the request line, and consumes nothing before: with no target yet, the buffer
  // starts with the request line, and no line end within the limit means that line alone is too long.
  [[nodiscard]] bool request_line_too_long() const {
    if (!parser_->get().target().empty()) return false;
    const auto data = buffer_.data();
    const std::string_view start(static_cast<const char*>(data.data()), std::min(data.size(), svc_.options().header_limit));
    return start.find('\n') == std::string_view::npos;
  }

  // Answers an unreadable request and closes: the stream position after it is unknown.
  void fail(http::status status, const std::string& message) {
    head_ = false;
    res_ = service::error_response(status, message, 11, false);
    write(true);
  }

  void handle() {
    req_ = parser_->release();
    if (req_.version() >= 11 && req_.count(http::field::host) != 1) {  // RFC 9112 3.2: MUST answer 400
      return fail(http::status::bad_request, "an HTTP/1.1 request needs exactly one Host header");
    }
    if (const auto host = req_.find(http::field::host); host != req_.end() && !valid_host({host->value().data(), host->value().size()})) {  // the same rule
      return fail(http::status::bad_request, "the Host header is not a valid host[:port]");
    }
    head_ = req_.method() == http::verb::head;
    try {
      auto r = svc_.route(req_);
      if (r.res) {
        res_ = std::move(*r.res);
        return write(!res_.keep_alive());
      }
      cancel_id_ = std::move(r.cancel_id);
      if (auto now = svc_.cancel_now(req_, cancel_id_)) {
        res_ = std::move(*now);
        return write(!res_.keep_alive());
      }
    } catch (const std::exception& e) {  // out of memory and the like: this request fails, the server goes on
      res_ = service::error_response(http::status::internal_server_error, std::string("internal error: ") + e.what(), req_.version(), false);
      return write(true);
    }
    cancel_deadline_ = std::chrono::steady_clock::now() + svc_.options().cancel_wait;
    poll_cancel();
  }

  // A cancelled waiting request ends at the scheduler's next turn, normally within microseconds.
  void poll_cancel() {
    if (svc_.cancel_settled(cancel_id_) || std::chrono::steady_clock::now() >= cancel_deadline_) {
      res_ = svc_.cancel_answer(req_, cancel_id_);
      return write(!res_.keep_alive());
    }
    timer_.expires_after(std::chrono::milliseconds(1));
    timer_.async_wait(beast::bind_front_handler(&session::on_cancel_timer, shared_from_this()));
  }
  void on_cancel_timer(beast::error_code) { poll_cancel(); }

  // Keep-alive goes on during a drain: its clients follow their requests with GET until the end
  // (exit does not wait for connections: main stops the io_context).
  void write(bool close_after) {
    close_after_ = close_after;
    res_.keep_alive(!close_after_);
    if (head_) res_.body().clear();  // Content-Length stays: what GET would send
    stream_.expires_after(svc_.options().write_timeout);
    http::async_write(stream_, res_, beast::bind_front_handler(&session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    svc_.metrics().response(static_cast<unsigned>(res_.result_int()));
    if (ec) return close_now();
    if (close_after_) return close_gracefully();
    read_header();
  }

  // Half-close, then read and discard until the client closes (or a second passes), so that data it
  // still sends cannot make our kernel reset the connection before it read the answer.
  void close_gracefully() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close_now();
    stream_.expires_after(std::chrono::seconds(1));
    drain();
  }
  void drain() {
    stream_.async_read_some(net::buffer(scratch_), beast::bind_front_handler(&session::on_drain, shared_from_this()));
  }
  void on_drain(beast::error_code ec, std::size_t n) {
    drained_ += n;
    if (ec || drained_ > (1u << 20)) return close_now();
    drain();
  }

  void close_now() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  net::steady_timer timer_;       // DELETE's short wait
  net::steady_timer read_timer_;  // the deadline of the request being read
  std::uint64_t read_gen_ = 0;
  bool read_timed_out_ = false;
  beast::flat_buffer buffer_{256 * 1024};  // pipelined requests wait here; more is a parse error
  std::optional<request_parser> parser_;
  bool reading_header_ = true;  // parse_or_read stops at the end of the header (on_header checks it before the body)
  service::request req_;
  service::response res_;
  service& svc_;
  bool refuse_;
  bool close_after_ = false;
  bool head_ = false;  // the request being answered is a HEAD: no body
  std::string cancel_id_;
  std::chrono::steady_clock::time_point cancel_deadline_;
  std::array<char, 4096> scratch_{};
  std::size_t drained_ = 0;
};

/// Accepts connections until close(); each gets a session on its own strand.
class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(net::io_context& ioc, tcp::endpoint at, service& svc) : ioc_(ioc), acceptor_(net::make_strand(ioc)), retry_(acceptor_.get_executor()), svc_(svc) {
    acceptor_.open(at.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(at);
    acceptor_.listen(net::socket_base::max_listen_connections);
  }

  [[nodiscard]] tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  void run() { net::dispatch(acceptor_.get_executor(), beast::bind_front_handler(&listener::accept, shared_from_this())); }

  /// Stops accepting (any thread). Connections already open carry on.
  void close() {
    net::dispatch(acceptor_.get_executor(), [self = shared_from_this()] {
      self->closed_ = true;
      beast::error_code ec;
      self->acceptor_.close(ec);
      self->retry_.cancel();
    });
  }

 private:
  void accept() {
    if (closed_) return;
    acceptor_.async_accept(net::make_strand(ioc_), beast::bind_front_handler(&listener::on_accept, shared_from_this()));
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (closed_) return;
    if (ec) {
      // Out of file descriptors and the like: wait a little instead of spinning, then go on.
      const auto now = std::chrono::steady_clock::now();
      if (ec != net::error::operation_aborted && now - last_log_ >= std::chrono::seconds(1)) {  // at most one line a second
        std::fprintf(stderr, "paraflex-serve: accept: %s (retrying)\n", ec.message().c_str());
        last_log_ = now;
      }
      retry_.expires_after(std::chrono::milliseconds(50));
      retry_.async_wait([self = shared_from_this()](beast::error_code) { self->accept(); });
      return;
    }
    const bool refuse = svc_.metrics().open_connections() >= svc_.options().max_connections;
    std::make_shared<session>(std::move(socket), svc_, refuse)->run();
    accept();
  }

  net::io_context& ioc_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;
  service& svc_;
  bool closed_ = false;
  std::chrono::steady_clock::time_point last_log_{};
};

}  // namespace paraflex_serve
