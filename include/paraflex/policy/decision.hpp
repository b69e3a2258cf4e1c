// paraflex/policy/decision.hpp - what a policy may ask of the runtime at one rescheduling point.
//
// A policy never touches the executor: it writes decisions into a buffer the runtime owns and reuses
// (no allocation per call once warm). The runtime validates every decision before acting on it.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "paraflex/core/time.hpp"
#include "paraflex/resource/group.hpp"

namespace paraflex {

/// A policy asked for something the runtime cannot do (a busy device, a disallowed degree, ...), or
/// asked the view a question that has no answer (the step time of a degree the shape does not allow).
class policy_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// Dense index of a request inside one runtime (submission order). Stable for the request's life.
using request_handle = std::uint32_t;

/// Run the next `tasks` tasks of `request` back to back on `group`. If the request's state lives on
/// other devices, the runtime first migrates it (occupying source and destination devices).
struct assign_decision {
  request_handle request = 0;
  device_group group;
  std::uint32_t tasks = 1;
};

/// Run the next task of every member together, as one batched launch on `group` (TetriServe's
/// batching of identical requests): the members share one shape, are waiting, and their next task is
/// a denoising step for all (the step indices may differ: each sample keeps its own timestep) or the
/// text encode for all (so that new requests can start where a batch runs); their state lives on
/// exactly `group`'s devices or nowhere yet. A batched step costs the cost model's batched step time
/// (BatchCostModel); a batch of encodes costs the sum of the encodes. It runs on an executor that can
/// run batches and has at most scheduler_options::max_batch members. Members leave and join at every
/// step boundary.
struct batch_decision {
  boost::container::small_vector<request_handle, 8> members;
  device_group group;
};

/// End `request` now without running it further. `reason` is a short stable identifier
/// (is_drop_reason in trajectory/request.hpp; e.g. "deadline_unreachable") reported in
/// dropped_by_reason; the runtime rejects a drop with any other reason as an invalid decision.
struct drop_decision {
  request_handle request = 0;
  std::string reason;
};

/// The runtime-owned output of one policy call. Anything not assigned simply waits (deferred).
class decision_buffer {
 public:
  /// Largest task count: "everything that is left" (the runtime clips it to the remaining tasks).
  static constexpr std::uint32_t all_tasks = 0xFFFFFFFFu;

  void assign(request_handle r, device_group group, std::uint32_t tasks = 1) {
    assigns_.push_back(assign_decision{r, std::move(group), tasks});
  }
  /// Assign every remaining task: the request holds the group until it ends (static parallelism).
  void assign_to_completion(request_handle r, device_group group) { assign(r, std::move(group), all_tasks); }
  /// One batched step of every member on `group` (batch_decision). One member is a plain assign(.., 1).
  void assign_batch(std::span<const request_handle> members, device_group group) {
    if (members.size() == 1) {
      assign(members.front(), std::move(group), 1);
      return;
    }
    batches_.push_back(batch_decision{{members.begin(), members.end()}, std::move(group)});
  }
  void drop(request_handle r, std::string_view reason) { drops_.push_back(drop_decision{r, std::string(reason)}); }
  /// Call the policy again at time t even if nothing else happens (t <= now is ignored). As at any
  /// rescheduling point, the call is skipped when no request is waiting then (there is nothing to decide).
  void wake_at(tick t) {
    if (t < wake_) wake_ = t;
  }

  [[nodiscard]] const std::vector<assign_decision>& assigns() const noexcept { return assigns_; }
  [[nodiscard]] const std::vector<drop_decision>& drops() const noexcept { return drops_; }
  [[nodiscard]] const std::vector<batch_decision>& batches() const noexcept { return batches_; }
  [[nodiscard]] tick wake_time() const noexcept { return wake_; }
  [[nodiscard]] bool empty() const noexcept { return assigns_.empty() && batches_.empty() && drops_.empty() && wake_ == never; }

  /// Called by the runtime before each policy call; keeps the capacity.
  void clear() noexcept {
    assigns_.clear();
    batches_.clear();
    drops_.clear();
    wake_ = never;
  }

 private:
  std::vector<assign_decision> assigns_;
  std::vector<batch_decision> batches_;
  std::vector<drop_decision> drops_;
  tick wake_ = never;
};

}  // namespace paraflex
