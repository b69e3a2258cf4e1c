// paraflex/executor/concepts.hpp - the Executor concept family: where tasks actually run.
//
// The runtime hands an executor one task at a time (launch returns at once) and later collects what
// happened (poll). Completions, failures and lost devices come back as events, in order.
//
//   Executor             launch(task_launch), poll(std::vector<executor_event>&), now() -> tick
//   VirtualTimeExecutor  + next_event_time() -> tick, advance_to(tick): time moves only when told,
//                          so a whole day of serving simulates in milliseconds (the simulator, and
//                          fake executors in tests)
//   BlockingExecutor     + wait_until(tick): real time; blocks until an event is ready or the time
//                          passes (CPU-thread and CUDA executors); t may be `never` (wait for an
//                          event) or already past
//
// Every call is made on the scheduler's thread except notify(); docs/embedding.md has the contract.
//   ReleasingExecutor    + release(request_handle): called by the runtime once when a request is
//                          dropped, so that the state it left on devices is freed (a completed
//                          request's state is the executor's to free after its decode)
//   NotifiableExecutor   + notify(): callable from any thread; wakes a wait_until early (the runtime
//                          uses it when a request is submitted from another thread)
//   BatchingExecutor     + runs_batches = true: runs a batched step (several requests, one launch),
//                          reporting one event per member
//   SignallingExecutor   + on_ready(std::function<void()>): the executor calls it, from any thread,
//                          whenever an event becomes ready to poll, so that an event loop that is not
//                          the runtime's (scheduler::on_wakeup) learns of completions without polling
//
//   struct fake { void launch(const task_launch&); void poll(std::vector<executor_event>&);
//                 tick now() const; };                                    // valid: Executor
//   struct runs_inline { void run(const task_launch&); };                 // invalid: no launch/poll
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "paraflex/core/time.hpp"
#include "paraflex/policy/decision.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/trajectory/request.hpp"
#include "paraflex/trajectory/trajectory.hpp"

namespace paraflex {

using launch_id = std::uint64_t;

/// A member of a batched launch: the request and its task (a step; step indices may differ).
struct batch_member {
  request_handle request = 0;
  task_desc task;
};

/// One unit of work for an executor. For task_kind::migrate, `source` holds the request's state and
/// `group` receives it; otherwise the task runs on `group` (rank i = group[i]). A batched step
/// (BatchingExecutor only) lists every member in `batch`; `request` and `task` are then its first.
struct task_launch {
  launch_id id = 0;
  request_handle request = 0;
  task_desc task;
  device_group group;
  device_group source;           ///< migrate only
  const request_shape* shape = nullptr;  ///< into the scheduler's shape table: valid for the scheduler's life
  tick expected_duration = 0;    ///< the cost model's figure; a simulator uses it as the duration
  std::span<const batch_member> batch;  ///< a batched step's members (>= 2), else empty; valid during launch()
};

enum class executor_event_kind : unsigned char {
  task_done,    ///< the launch finished successfully
  task_failed,  ///< the launch failed; the request's state is as before the task
  device_lost,  ///< `device` is gone for good; launches on it are reported failed first
};

struct executor_event {
  tick time = 0;                ///< when it happened, for traces; the runtime uses the time of the turn that polls it
  executor_event_kind kind = executor_event_kind::task_done;
  launch_id id = 0;             ///< task_done / task_failed
  request_handle request = 0;   ///< task_done / task_failed
  device_id device = 0;         ///< device_lost
};

// Executor's requirements one member at a time: the concept is their conjunction, and the scheduler
// checks each of them with a message naming the missing member (one source of truth for both).
namespace executor_requirements {
template <class E>
concept launches = requires(E& e, const task_launch& l) { e.launch(l); };
template <class E>
concept polls = requires(E& e, std::vector<executor_event>& out) { e.poll(out); };
template <class E>
concept tells_time = requires(const E& ce) { { ce.now() } -> std::convertible_to<tick>; };
}  // namespace executor_requirements

template <class E>
concept Executor = executor_requirements::launches<E> && executor_requirements::polls<E> && executor_requirements::tells_time<E>;

template <class E>
concept VirtualTimeExecutor = Executor<E> && requires(E& e, const E& ce, tick t) {
  { ce.next_event_time() } -> std::convertible_to<tick>;
  e.advance_to(t);
};

template <class E>
concept BlockingExecutor = Executor<E> && requires(E& e, tick t) { e.wait_until(t); };

template <class E>
concept ReleasingExecutor = Executor<E> && requires(E& e, request_handle h) { e.release(h); };

template <class E>
concept NotifiableExecutor = Executor<E> && requires(E& e) { e.notify(); };

/// An executor that can run a batched step (task_launch::batch): it says so with
///   static constexpr bool runs_batches = true;
/// and reports one event per member (the same launch id, each member's request), all of them done or
/// all failed: a failed batch leaves every member's state as before it.
template <class E>
concept BatchingExecutor = Executor<E> && requires { requires static_cast<bool>(E::runs_batches); };

template <class E>
concept SignallingExecutor = Executor<E> && requires(E& e, std::function<void()> f) { e.on_ready(std::move(f)); };

}  // namespace paraflex
