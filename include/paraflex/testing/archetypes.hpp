// paraflex/testing/archetypes.hpp - types that model exactly one concept and nothing more.
//
// Instantiating an algorithm with archetypes proves it needs no more than its concept says (the
// Boost.Graph graph_archetypes idea). Each archetype is usable, just deliberately minimal: the cost
// archetype prices every step at 1 ms, the executor archetype completes tasks after their expected
// duration, the policy archetype runs each waiting request's next task on device 0.
#pragma once

#include <queue>
#include <vector>

#include "paraflex/cost/concepts.hpp"
#include "paraflex/executor/concepts.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/trajectory/trajectory.hpp"

namespace paraflex::archetypes {

/// Models CostModel only (not StageCostModel).
struct cost_model {
  [[nodiscard]] double step_seconds(const request_shape&, int) const { return 0.001; }
  [[nodiscard]] bool allows_degree(const request_shape&, int) const { return true; }
  [[nodiscard]] double migration_seconds(const request_shape&, int, int, bool) const { return 0.0; }
};

/// Models Policy only: no name, no hooks, not periodic.
struct policy {
  void decide(const scheduler_view& v, decision_buffer& out) {
    if (!v.free_devices().test(0) || v.waiting().empty()) return;
    out.assign(v.waiting().front(), device_group{0}, 1);
  }
};

/// Models VirtualTimeExecutor only (not BlockingExecutor). Neither copyable nor movable, to prove the
/// runtime only holds a reference to it.
class virtual_executor {
 public:
  virtual_executor() = default;
  virtual_executor(const virtual_executor&) = delete;
  virtual_executor& operator=(const virtual_executor&) = delete;

  void launch(const task_launch& l) { pending_.push_back({now_ + l.expected_duration, l.id, l.request}); }
  void poll(std::vector<executor_event>& out) {
    for (std::size_t i = 0; i < pending_.size();) {
      if (pending_[i].end <= now_) {
        out.push_back(executor_event{pending_[i].end, executor_event_kind::task_done, pending_[i].id, pending_[i].request, 0});
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }
  [[nodiscard]] tick now() const { return now_; }
  [[nodiscard]] tick next_event_time() const {
    tick t = never;
    for (const auto& p : pending_) t = p.end < t ? p.end : t;
    return t;
  }
  void advance_to(tick t) { now_ = t; }

 private:
  struct flight { tick end; launch_id id; request_handle request; };
  tick now_ = 0;
  std::vector<flight> pending_;
};

/// Models Trajectory only.
struct trajectory {
  [[nodiscard]] std::size_t task_count() const { return 1; }
  [[nodiscard]] task_desc task_at(std::size_t) const { return {task_kind::step, 0}; }
};

static_assert(CostModel<cost_model> && !StageCostModel<cost_model>);
static_assert(Policy<policy> && !NamedPolicy<policy> && !PeriodicPolicy<policy> && !ArrivalAwarePolicy<policy>);
static_assert(VirtualTimeExecutor<virtual_executor> && !BlockingExecutor<virtual_executor>);
static_assert(Trajectory<trajectory>);

}  // namespace paraflex::archetypes
