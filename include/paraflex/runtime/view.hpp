// paraflex/runtime/view.hpp - the read-only view of scheduler state that a policy decides from.
//
// A scheduler_view is valid for one policy call and is never a copy: it reads the runtime's own
// tables. Costs are precomputed per (shape, degree) in integer microseconds when a shape first
// arrives, so a policy's inner loops are table look-ups.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "paraflex/core/handle_set.hpp"
#include "paraflex/core/time.hpp"
#include "paraflex/policy/decision.hpp"
#include "paraflex/resource/cluster.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/trajectory/request.hpp"
#include "paraflex/trajectory/trajectory.hpp"

namespace paraflex {

enum class request_phase : unsigned char {
  waiting,    ///< arrived; no task in flight; the policy may assign it
  running,    ///< a task (or a migration) is in flight on run_group
  completed,  ///< ended: all tasks done
  dropped,    ///< ended: dropped with a reason
};

/// Costs of one shape on this cluster, rounded once to microseconds. Index k = degree; a 0 entry
/// (and index 0) means the degree is not allowed for this shape.
struct shape_costs {
  request_shape shape;
  std::vector<tick> step;    ///< one denoising step on k devices
  std::vector<tick> encode;  ///< text encoding on k devices
  std::vector<tick> decode;  ///< VAE decoding on k devices
  tick migrate_intra_node = 0;
  tick migrate_inter_node = 0;
  std::vector<int> allowed_degrees;  ///< increasing
  int fastest_degree = 1;            ///< allowed degree with the smallest step time (ties: fewer devices)
  int efficient_degree = 1;          ///< allowed degree with the fewest device-microseconds per step, k x T(k)
                                     ///< (ties: faster, then fewer devices)
  /// Batched steps (BatchCostModel): batch_step[(b - 2) * step.size() + k] is one step of b requests of
  /// this shape together on k devices, for b = 2..max_batch; empty when the model cannot price batches.
  /// A 0 entry is not priced yet: price_batch prices it on first use (the runtime's tables), so a
  /// run that never batches never asks the cost model - nor notes an estimate it did not use. With
  /// price_batch the table itself is made at the first batched step asked for: (max_batch - 1) x
  /// step.size() entries per shape were 57 KB of zeros each on 1,024 GPUs, two thirds of a shape's
  /// memory, in runs that never batch.
  mutable std::vector<tick> batch_step;
  int max_batch = 1;
  /// Prices one batched step (k allowed, 2 <= b <= max_batch) in whole microseconds, at least 1;
  /// empty when every entry was priced up front.
  std::function<tick(int k, int b)> price_batch;

  [[nodiscard]] bool allows(int k) const noexcept {
    return k >= 1 && static_cast<std::size_t>(k) < step.size() && step[static_cast<std::size_t>(k)] > 0;
  }
  /// One task of this kind on k devices, for a k already checked (allows(k)): the runtime's launch path.
  [[nodiscard]] tick task_time(task_kind kind, std::size_t k) const noexcept {
    return (kind == task_kind::step ? step : kind == task_kind::encode ? encode : decode)[k];
  }
  /// One step on k devices. Asking for a degree the shape does not allow is a policy_error (an
  /// answer of 0 would silently corrupt sort keys and estimates).
  [[nodiscard]] tick step_time(int k) const {
    if (!allows(k)) [[unlikely]] throw_not_allowed(k);
    return step[static_cast<std::size_t>(k)];
  }
  /// One step of b requests of this shape run together on k devices (b = 1: step_time(k)). A batch
  /// larger than max_batch, or any batch when the cost model cannot price them, is a policy_error.
  /// The first ask for a (k, b) may call the cost model (price_batch); later ones read the table.
  [[nodiscard]] tick batch_step_time(int k, int b) const {
    if (b == 1) return step_time(k);
    if (!allows(k)) [[unlikely]] throw_not_allowed(k);
    if (b < 1 || b > max_batch) [[unlikely]] {
      throw policy_error("a batch of " + std::to_string(b) + " " + shape.model + " " + std::to_string(shape.height) + "x" +
                         std::to_string(shape.width) + " requests: " +
                         (max_batch <= 1 ? std::string("the cost model cannot price batches") : "at most " + std::to_string(max_batch)));
    }
    if (batch_step.empty()) batch_step.assign(static_cast<std::size_t>(max_batch - 1) * step.size(), 0);  // priced on first use
    tick& t = batch_step[static_cast<std::size_t>(b - 2) * step.size() + static_cast<std::size_t>(k)];
    if (t == 0) [[unlikely]] t = price_batch(k, b);  // first use (always >= 1 once priced)
    return t;
  }
  [[noreturn]] void throw_not_allowed(int k) const {
    std::string list;
    for (int a : allowed_degrees) list += (list.empty() ? "" : ",") + std::to_string(a);
    throw policy_error("degree " + std::to_string(k) + " is not allowed for " + shape.model + " " + std::to_string(shape.height) + "x" +
                       std::to_string(shape.width) + "x" + std::to_string(shape.frames) + " (allowed: " + (list.empty() ? "none" : list) + ")");
  }
};

/// Everything the runtime knows about one request.
struct request_record {
  request_handle handle = 0;                ///< this record's index in the runtime (for callbacks)
  request_spec spec;
  std::uint32_t shape = 0;                  ///< index into the shape table
  const shape_costs* costs = nullptr;       ///< that entry (the table is a deque: entries never move)
  std::shared_ptr<const trajectory_template> trajectory;  ///< shared by all requests with this step count
  std::uint32_t position = 0;               ///< tasks completed so far
  request_phase phase = request_phase::waiting;
  device_group state_group;                 ///< where the request's state lives; empty before its first task
  device_group run_group;                   ///< devices of the task in flight (running only)
  std::uint32_t chunk_left = 0;             ///< tasks still to run in the current assignment
  tick running_until = never;               ///< expected end of the current assignment (running only)
  tick first_start = never;
  tick finish = never;
  int last_degree = 0;                      ///< degree of the last task run; 0 before the first
  std::uint32_t migrations = 0;
  std::uint32_t failures = 0;               ///< failed task attempts (retried)
  double gpu_busy_s = 0;                    ///< device-seconds spent on this request, migrations included
  std::string drop_reason;

  // The launch in flight (runtime bookkeeping; meaningful while running).
  std::uint64_t launch = 0;
  tick launch_start = 0;
  task_desc launch_task;
  device_group occupied;  ///< a migration in flight: the devices it holds (run_group + idle sources); else empty
  std::uint32_t launch_batch = 0;  ///< members of the batched step in flight (0: it runs alone)

  [[nodiscard]] bool ended() const noexcept { return phase == request_phase::completed || phase == request_phase::dropped; }
  [[nodiscard]] std::uint32_t tasks_total() const noexcept { return static_cast<std::uint32_t>(trajectory->task_count()); }
  [[nodiscard]] std::uint32_t tasks_remaining() const noexcept { return tasks_total() - position; }
  [[nodiscard]] int steps_remaining() const noexcept { return trajectory->steps_remaining(position); }
  [[nodiscard]] const task_desc& next_task() const { return trajectory->task_at(position); }
  [[nodiscard]] tick deadline() const noexcept { return spec.deadline(); }
  [[nodiscard]] bool has_deadline() const noexcept { return spec.has_deadline(); }
};

/// The mutable state the runtime owns; policies see it only through scheduler_view.
struct scheduler_state {
  using holder_list = boost::container::small_vector<request_handle, 4>;

  cluster topology;
  tick now = 0;
  std::vector<request_record> requests;   ///< by handle
  std::deque<shape_costs> shapes;          ///< deque: task_launch::shape points in, and must not move
  handle_set waiting;                     ///< phase waiting (arrived), in handle order
  handle_set running;                     ///< phase running, in handle order
  device_set free;                        ///< devices with nothing in flight and not lost
  device_set lost;                        ///< devices that failed; never used again
  std::vector<tick> busy_until;           ///< expected end of what each device runs (now when free)
  std::vector<holder_list> holders;       ///< per device: unended requests whose state lives there
  device_set holding;                     ///< devices whose holders list is not empty
};

/// Read-only view handed to a policy. Cheap to pass by reference; valid for one call.
class scheduler_view {
 public:
  explicit scheduler_view(const scheduler_state& s) noexcept : s_(&s) {}

  [[nodiscard]] tick now() const noexcept { return s_->now; }
  [[nodiscard]] const cluster& topology() const noexcept { return s_->topology; }
  [[nodiscard]] int device_count() const noexcept { return s_->topology.gpus; }
  /// Devices with nothing in flight (lost devices excluded).
  [[nodiscard]] const device_set& free_devices() const noexcept { return s_->free; }
  [[nodiscard]] const device_set& lost_devices() const noexcept { return s_->lost; }
  /// Devices usable at all (not lost).
  [[nodiscard]] int usable_device_count() const noexcept { return device_count() - static_cast<int>(s_->lost.count()); }
  /// Expected time at which device d finishes what it runs (now() when it is free).
  [[nodiscard]] tick busy_until(device_id d) const noexcept { return s_->busy_until[d]; }

  /// Requests that arrived, have not ended and have no task in flight, in handle order (submission
  /// order; arrival order for a workload). A set: O(1) size() and contains(), iteration in order.
  [[nodiscard]] const handle_set& waiting() const noexcept { return s_->waiting; }
  /// Requests with a task or migration in flight, in handle order.
  [[nodiscard]] const handle_set& running() const noexcept { return s_->running; }
  /// Unended requests whose state (latent) lives at least partly on device d: who would have to
  /// migrate if d were given to someone else. Short: a device holds few requests' state.
  [[nodiscard]] std::span<const request_handle> state_holders(device_id d) const noexcept {
    return {s_->holders[d].data(), s_->holders[d].size()};
  }
  /// The devices whose state_holders() is not empty. A policy that looks for the holders of free
  /// devices walks free_devices() and this word by word (O(G / 64)) instead of asking every free
  /// device: on 65,536 GPUs, most of them hold nothing.
  [[nodiscard]] const device_set& state_holding_devices() const noexcept { return s_->holding; }
  [[nodiscard]] const request_record& request(request_handle h) const noexcept { return s_->requests[h]; }
  [[nodiscard]] const shape_costs& costs(request_handle h) const noexcept { return *request(h).costs; }  // not shapes[shape]: a deque index costs ~4% of a run

  [[nodiscard]] bool allows_degree(request_handle h, int k) const noexcept { return costs(h).allows(k); }
  [[nodiscard]] std::span<const int> allowed_degrees(request_handle h) const noexcept { return costs(h).allowed_degrees; }
  /// One denoising step of h on k devices. The time accessors below throw policy_error for a degree
  /// h's shape does not allow (allows_degree / allowed_degrees say which are).
  [[nodiscard]] tick step_time(request_handle h, int k) const { return costs(h).step_time(k); }

  /// tasks_time(h, k, n) at several degrees k: the shape's costs and the task counts read once.
  class tasks_time_fn {
   public:
    tasks_time_fn(const shape_costs& c, const request_record& r, std::uint32_t n)
        : c_(&c), counts_(r.trajectory->counts(r.position, static_cast<std::size_t>(std::min<std::uint64_t>(
                                                                std::uint64_t{r.position} + n, r.tasks_total())))) {}  // O(1)
    [[nodiscard]] tick operator()(int k) const {
      if (!c_->allows(k)) [[unlikely]] c_->throw_not_allowed(k);
      const auto kk = static_cast<std::size_t>(k);
      return static_cast<tick>(counts_.encode) * c_->encode[kk] + static_cast<tick>(counts_.step) * c_->step[kk] +
             static_cast<tick>(counts_.decode) * c_->decode[kk];
    }

   private:
    const shape_costs* c_;
    trajectory_template::kind_counts counts_;
  };
  [[nodiscard]] tasks_time_fn tasks_time_of(request_handle h, std::uint32_t n) const { return {costs(h), request(h), n}; }
  /// Time of the next `n` tasks of h on k devices from its current position (no migration).
  [[nodiscard]] tick tasks_time(request_handle h, int k, std::uint32_t n) const { return tasks_time_of(h, n)(k); }
  /// remaining_time(h, k) at several degrees k of one request: its shape's costs and its progress are
  /// read once (a Sizing part that tries every candidate degree calls it in a loop). Valid for this call.
  class remaining_time_fn {
   public:
    remaining_time_fn(const shape_costs& c, const request_record& r) noexcept
        : c_(&c), steps_(static_cast<tick>(r.steps_remaining())), encode_left_(r.position == 0) {}
    [[nodiscard]] tick operator()(int k) const {
      if (!c_->allows(k)) [[unlikely]] c_->throw_not_allowed(k);
      const auto kk = static_cast<std::size_t>(k);
      tick t = steps_ * c_->step[kk] + c_->decode[kk];
      if (encode_left_) t += c_->encode[kk];
      return t;
    }

   private:
    const shape_costs* c_;
    tick steps_;
    bool encode_left_;
  };
  [[nodiscard]] remaining_time_fn remaining_time_of(request_handle h) const noexcept { return {costs(h), request(h)}; }
  /// Time for everything h has left, all on k devices (closed form: stages + steps x step time).
  [[nodiscard]] tick remaining_time(request_handle h, int k) const { return remaining_time_of(h)(k); }
  /// One step of a batch of b requests of h's shape on k devices (b = 1: step_time(h, k)).
  [[nodiscard]] tick batch_step_time(request_handle h, int k, int b) const { return costs(h).batch_step_time(k, b); }
  /// The largest batch of h's shape the runtime accepts (1: no batching for it).
  [[nodiscard]] int max_batch(request_handle h) const noexcept { return costs(h).max_batch; }
  /// GPU-time h still needs on k devices, in device-microseconds: k x remaining_time(h, k).
  [[nodiscard]] tick remaining_work(request_handle h, int k) const { return static_cast<tick>(k) * remaining_time(h, k); }
  /// GPU-time h still needs at its most GPU-efficient degree (shape_costs::efficient_degree), in
  /// device-microseconds: the least any schedule must spend on it. to_seconds() gives GPU-seconds.
  [[nodiscard]] tick remaining_work(request_handle h) const { return remaining_work(h, costs(h).efficient_degree); }

  /// True when running h on g means moving its state first.
  [[nodiscard]] bool needs_migration(request_handle h, const device_group& g) const {
    const auto& sg = request(h).state_group;
    return !sg.empty() && !sg.same_devices(g);
  }
  /// Cost of moving h's state onto g (0 when no move is needed).
  [[nodiscard]] tick migration_time(request_handle h, const device_group& g) const {
    if (!needs_migration(h, g)) return 0;
    const auto& sg = request(h).state_group;
    const bool cross = !s_->topology.within_one_node(g) || s_->topology.node_of(sg[0]) != s_->topology.node_of(g[0]);
    return cross ? costs(h).migrate_inter_node : costs(h).migrate_intra_node;
  }
  /// Whether assigning h to g now would be accepted given `available` devices (typically a copy of
  /// free_devices() minus what this call already handed out). Only the destination must be free: a
  /// migration also occupies the source devices that are idle, but a busy source serves the few-MB
  /// copy from its copy engine without stopping its own step.
  [[nodiscard]] bool placeable(const device_group& g, const device_set& available) const noexcept {
    return !g.empty() && available.contains_all(g);
  }

 private:
  const scheduler_state* s_;
};

}  // namespace paraflex
