// paraflex/runtime/client.hpp - the thread-safe face of a scheduler: submit, cancel and query by id.
//
// A serving system talks to the scheduler from many threads (HTTP handlers, a Python event loop)
// while the scheduler itself runs on one. request_client is that boundary: every member may be called
// from any thread, at any time while the scheduler lives. Nothing here is a template, so a server or
// a language binding can hold a request_client& without knowing the policy or executor types.
//
//   auto& client = sched.client();
//   std::string id = client.submit(spec);          // returns at once; the scheduler picks it up
//   client.cancel(id);                             // waiting: ends now; running: after its task
//   if (auto s = client.status(id)) print(s->state);
//
// What happens on which thread: submit() and cancel() only queue; the scheduler's thread applies
// them at its next turn (run() is woken through the executor's notify() or the on_wakeup callback).
// status() reads a table the scheduler's thread publishes at every change of a client-submitted
// request (waiting, running on k devices, ended). Requests given to scheduler::submit() directly
// (the simulator's path) are not in that table and have no id check: that path trusts its caller.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/time.hpp"
#include "paraflex/core/utf8.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex {

/// Where a request stands, as a client sees it.
enum class request_state : unsigned char {
  waiting,    ///< submitted, not ended, no task in flight (also: not yet picked up by the scheduler)
  running,    ///< a task or a migration is in flight
  completed,  ///< ended: every task done
  dropped,    ///< ended without completing; `reason` says why
};

[[nodiscard]] constexpr const char* to_string(request_state s) noexcept {
  switch (s) {
    case request_state::waiting: return "waiting";
    case request_state::running: return "running";
    case request_state::completed: return "completed";
    case request_state::dropped: return "dropped";
  }
  return "?";
}

/// A snapshot of one request, by value (safe to keep after the call).
struct request_status {
  std::string id;
  request_state state = request_state::waiting;
  std::string reason;           ///< dropped: the reason ("cancelled", "deadline_unreachable", ...); else empty
  tick arrival = 0;             ///< when it reached (or will reach) the scheduler, in its clock
  tick first_start = never;     ///< first task launched; never before
  tick finish = never;          ///< ended; never before
  int degree = 0;               ///< devices of the task in flight, else of the last task; 0 before the first
  std::uint32_t migrations = 0;
  int steps_done = 0;
  int steps_total = 0;
  bool cancel_requested = false;  ///< a cancel was accepted and has not taken effect yet

  [[nodiscard]] bool ended() const noexcept { return state == request_state::completed || state == request_state::dropped; }
  /// Arrival to completion, in seconds, for a completed request.
  [[nodiscard]] std::optional<double> latency_s() const noexcept {
    if (state != request_state::completed) return std::nullopt;
    return to_seconds(finish - arrival);
  }
};

enum class cancel_outcome : unsigned char {
  accepted,       ///< it will end ("cancelled" or the given reason): at once if waiting, else after its task
  already_ended,  ///< it had ended (completed or dropped) before the cancel
  unknown_id,     ///< no client-submitted request has this id
};

/// Scheduler-wide numbers, refreshed by the scheduler's thread at the end of every turn.
struct client_counters {
  std::uint64_t submitted = 0;  ///< through this client
  std::uint64_t completed = 0;  ///< of those, ended completed
  std::uint64_t dropped = 0;    ///< of those, ended dropped
  std::map<std::string, std::uint64_t> dropped_by_reason;  ///< of those, by reason
  std::size_t waiting = 0;      ///< every request the scheduler holds, however submitted
  std::size_t running = 0;
  std::size_t busy_devices = 0;
  std::size_t devices = 0;
};

/// Why a submit() was refused.
class submit_error : public std::invalid_argument {
 public:
  enum class kind_type : unsigned char { duplicate_id, invalid_spec };
  submit_error(kind_type k, const std::string& what) : std::invalid_argument(what), kind_(k) {}
  [[nodiscard]] kind_type kind() const noexcept { return kind_; }

 private:
  kind_type kind_;
};

/// Checks what the runtime needs of a spec from outside; empty when it is acceptable.
[[nodiscard]] inline std::string check_request_spec(const request_spec& spec) {
  if (spec.steps <= 0) return fmt::format("steps must be > 0 (got {})", spec.steps);
  // Above it the scheduler's thread would build a trajectory of billions of tasks (bad_alloc there).
  if (spec.steps > max_steps) return fmt::format("steps must be at most {} (got {})", max_steps, spec.steps);
  if (spec.shape.model.empty()) return "model must not be empty";
  if (spec.shape.height <= 0 || spec.shape.width <= 0) return fmt::format("height and width must be > 0 (got {}x{})", spec.shape.height, spec.shape.width);
  if (spec.shape.frames <= 0) return fmt::format("frames must be > 0 (got {})", spec.shape.frames);
  if (spec.arrival < 0) return "arrival must be >= 0";
  if (spec.slo != never && spec.slo <= 0) return "slo must be > 0 (or none)";
  return {};
}

namespace detail {
// The state shared by a request_client (any thread) and its scheduler (one thread), under `mu`.
struct client_shared {
  struct pending_submit {
    request_spec spec;
    std::uint32_t slot;
  };
  struct pending_cancel {
    std::uint32_t slot;
    std::string reason;
  };

  mutable std::mutex mu;
  std::unordered_map<std::string, std::uint32_t> slot_of_id;
  std::deque<request_status> slots;          // deque: appends never move published snapshots
  std::vector<pending_submit> submits;
  std::vector<pending_cancel> cancels;
  std::uint64_t next_generated = 0;
  client_counters counters;
  std::atomic<bool> pending{false};  // submits or cancels queued: lets the scheduler skip the lock
  std::atomic<bool> open{false};
  std::function<void()> wake;        // set by the scheduler: executor notify() + on_wakeup
};
}  // namespace detail

/// The thread-safe client of one scheduler (see the file comment). Obtained from scheduler::client().
class request_client {
 public:
  explicit request_client(detail::client_shared& shared) noexcept : s_(&shared) {}

  /// Queues a request and returns its id at once. An empty id gets a generated one ("r1", "r2", ...,
  /// skipping ids already taken). Arrival is read in the scheduler's clock; one in the past (0 for
  /// "now") means as soon as the scheduler picks it up. Throws submit_error for a duplicate id (ids
  /// are unique over the client's life, ended requests included) or an invalid spec.
  std::string submit(request_spec spec) {
    if (auto why = check_request_spec(spec); !why.empty()) {
      throw submit_error(submit_error::kind_type::invalid_spec, fmt::format("request '{}': {}", spec.id, why));
    }
    std::string id;
    {
      std::lock_guard lk(s_->mu);
      if (spec.id.empty()) {
        do spec.id = fmt::format("r{}", ++s_->next_generated);
        while (s_->slot_of_id.contains(spec.id));
      } else if (s_->slot_of_id.contains(spec.id)) {
        throw submit_error(submit_error::kind_type::duplicate_id, fmt::format("request id '{}' is already in use", spec.id));
      }
      const auto slot = static_cast<std::uint32_t>(s_->slots.size());
      request_status st;
      st.id = spec.id;
      st.arrival = spec.arrival;
      st.steps_total = spec.steps;
      s_->slots.push_back(std::move(st));
      s_->slot_of_id.emplace(spec.id, slot);
      id = spec.id;
      s_->submits.push_back({std::move(spec), slot});
      ++s_->counters.submitted;
      s_->pending.store(true, std::memory_order_release);
    }
    wake();
    return id;
  }

  /// Asks the scheduler to end request `id` with `reason`: a waiting one ends at its next turn, a
  /// running one when its task in flight (a migration included) ends; nothing is launched for it after.
  /// std::invalid_argument when `reason` is not a short identifier (is_drop_reason; empty = "cancelled").
  cancel_outcome cancel(std::string_view id, std::string reason = "cancelled") {
    if (const std::string problem = drop_reason_problem(reason); !problem.empty()) {
      throw std::invalid_argument(fmt::format("cancel of request {}: {}", detail::quote_for_message(id), problem));
    }
    {
      std::lock_guard lk(s_->mu);
      auto it = s_->slot_of_id.find(std::string(id));
      if (it == s_->slot_of_id.end()) return cancel_outcome::unknown_id;
      auto& st = s_->slots[it->second];
      if (st.ended()) return cancel_outcome::already_ended;
      if (st.cancel_requested) return cancel_outcome::accepted;
      st.cancel_requested = true;
      s_->cancels.push_back({it->second, reason.empty() ? std::string("cancelled") : std::move(reason)});
      s_->pending.store(true, std::memory_order_release);
    }
    wake();
    return cancel_outcome::accepted;
  }

  /// The latest published snapshot of request `id`; nullopt for an id this client never accepted.
  [[nodiscard]] std::optional<request_status> status(std::string_view id) const {
    std::lock_guard lk(s_->mu);
    auto it = s_->slot_of_id.find(std::string(id));
    if (it == s_->slot_of_id.end()) return std::nullopt;
    return s_->slots[it->second];
  }

  /// Forgets an ended request: its status is no longer kept and its id may be used again (a server
  /// that runs for days calls this once a client has read the outcome). Returns false when `id` is
  /// unknown or has not ended. The scheduler's own record of it (scheduler::request) stays.
  bool forget(std::string_view id) {
    std::lock_guard lk(s_->mu);
    auto it = s_->slot_of_id.find(std::string(id));
    if (it == s_->slot_of_id.end() || !s_->slots[it->second].ended()) return false;
    auto& st = s_->slots[it->second];
    st.id.clear();
    st.id.shrink_to_fit();
    st.reason.clear();
    st.reason.shrink_to_fit();
    s_->slot_of_id.erase(it);
    return true;
  }

  [[nodiscard]] client_counters counters() const {
    std::lock_guard lk(s_->mu);
    return s_->counters;
  }

  /// While open, run() keeps serving when every request has ended (a server); close() lets it return
  /// once everything submitted so far has ended. Submissions are accepted either way.
  void open() { s_->open.store(true, std::memory_order_release); }
  void close() {
    s_->open.store(false, std::memory_order_release);
    wake();
  }
  [[nodiscard]] bool is_open() const noexcept { return s_->open.load(std::memory_order_acquire); }

 private:
  void wake() const {
    if (s_->wake) s_->wake();
  }
  detail::client_shared* s_;
};

}  // namespace paraflex
