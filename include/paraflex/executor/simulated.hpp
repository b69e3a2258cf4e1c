// paraflex/executor/simulated.hpp - a discrete-event executor on a virtual clock.
//
// A task takes exactly its expected duration unless jitter, a straggler or an injected fault says
// otherwise; every random draw comes from one seeded generator, so a run is reproducible bit for bit.
// A batched step is one launch: one duration, one fault draw, one event per member.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <queue>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "paraflex/executor/concepts.hpp"

namespace paraflex {

/// Faults and noise to inject. All off by default.
struct simulation_faults {
  double jitter = 0.0;     ///< task durations scaled by a factor uniform in [1 - jitter, 1 + jitter]
  double fail_rate = 0.0;  ///< probability that a launched task fails (at a uniform point of its run)
  struct device_failure { device_id device = 0; tick at = 0; };
  struct straggler { device_id device = 0; tick from = 0; double factor = 1.0; };
  std::vector<device_failure> device_failures;  ///< device lost for good at a time
  std::vector<straggler> stragglers;            ///< from `from` on, the device runs `factor` times slower; a task runs at
                                                ///< its slowest device's pace (the largest factor among its devices)
};

class simulated_executor {
 public:
  explicit simulated_executor(std::uint64_t seed = 0, simulation_faults faults = {})
      : rng_(seed), faults_(std::move(faults)) {
    for (const auto& f : faults_.device_failures) queue_.push(entry{f.at, seq_++, 0, lost_slot, f.device});
  }

  [[nodiscard]] tick now() const noexcept { return now_; }
  /// Batched steps (task_launch::batch): one duration and one fault draw for the whole batch, one
  /// event per member.
  static constexpr bool runs_batches = true;

  void launch(const task_launch& l) {
    if (l.expected_duration > clock_limit - now_) past_clock_limit(l, static_cast<double>(l.expected_duration));
    tick end = now_ + std::max<tick>(0, l.expected_duration);
    if (faults_.jitter > 0 || !faults_.stragglers.empty()) {  // else the duration is exact: no rounding
      double duration = static_cast<double>(l.expected_duration);
      if (faults_.jitter > 0) duration *= 1.0 + faults_.jitter * (2.0 * uniform() - 1.0);
      duration *= slowdown(l);
      // A factor of at most 1000 keeps any real duration far inside the clock; the cap only keeps a
      // degenerate one from wrapping around (a wrapped sum reads as a 0-second task).
      end = now_ + static_cast<tick>(std::llround(std::clamp(duration, 0.0, 0x1p60)));
      if (end > clock_limit) past_clock_limit(l, duration);
    }
    auto kind = executor_event_kind::task_done;
    if (faults_.fail_rate > 0 && l.task.kind != task_kind::migrate && uniform() < faults_.fail_rate) {
      kind = executor_event_kind::task_failed;
      end = now_ + static_cast<tick>(std::llround(uniform() * static_cast<double>(end - now_)));
    }
    const std::uint32_t slot = track(l, kind);
    const auto members = static_cast<std::uint32_t>(flights_[slot].members.size());
    for (std::uint32_t i = 0; i < members; ++i) queue_.push(entry{end, seq_++, l.id, slot, i});
  }

  /// How many times longer a task on l's devices runs now: a sequence-parallel task moves at the
  /// pace of its slowest device, so the largest factor among them (1 for a device with no straggler
  /// in force). On one device, the straggler that began last is in force (it replaces the earlier).
  [[nodiscard]] double slowdown(const task_launch& l) const noexcept {
    if (faults_.stragglers.empty()) return 1.0;
    double slowest = 0.0;
    for (device_id d : l.group) slowest = std::max(slowest, factor_of(d));
    for (device_id d : l.source) slowest = std::max(slowest, factor_of(d));
    return slowest > 0.0 ? slowest : 1.0;
  }

  /// The slow-down of device d now: the straggler on it that began last (the later-listed one on a
  /// tie), 1 when none is in force.
  [[nodiscard]] double factor_of(device_id d) const noexcept {
    double factor = 1.0;
    tick began = -1;
    for (const auto& s : faults_.stragglers) {
      if (s.device == d && s.from <= now_ && s.from >= began) factor = s.factor, began = s.from;
    }
    return factor;
  }

  void poll(std::vector<executor_event>& out) {
    while (!queue_.empty() && queue_.top().time <= now_) {
      const entry e = queue_.top();
      queue_.pop();
      if (e.slot == lost_slot) {
        lose_device(e.member, out);
        out.push_back(executor_event{e.time, executor_event_kind::device_lost, 0, 0, e.member});
        continue;
      }
      flight& f = flights_[e.slot];
      if (!f.active || f.id != e.id) continue;  // already reported failed by a device loss
      out.push_back(executor_event{e.time, f.kind, e.id, f.members[e.member], 0});
      if (--f.pending == 0) untrack(e.slot);
    }
  }

  [[nodiscard]] tick next_event_time() const noexcept { return queue_.empty() ? never : queue_.top().time; }
  void advance_to(tick t) {
    if (t < now_) throw std::logic_error("simulated_executor: time cannot go backwards");
    now_ = t;
  }

 private:
  [[noreturn]] void past_clock_limit(const task_launch& l, double duration) const {
    throw clock_overflow("a task of " + std::to_string(duration / 1e6) + " s launched at " + std::to_string(to_seconds(now_)) +
                             " s would end past the simulated clock's limit of 4.0e12 s: each request fits it alone, "
                             "but waiting behind others, a straggler or jitter made this task end too late",
                         l.request);
  }
  // Launches in flight live in reusable slots (no allocation per task once warm). Only a device loss
  // needs to look at them all, and only then are their devices recorded.
  struct flight {
    bool active = false;
    executor_event_kind kind = executor_event_kind::task_done;  // how every member's event reports it
    launch_id id = 0;
    std::uint32_t pending = 0;  // member events not polled yet
    boost::container::small_vector<request_handle, 8> members;
    device_group group, source;
  };
  // One queued event, 32 bytes (the heap's sift moves them): the rest of a task's event is in its
  // flight slot, read when it is polled.
  struct entry {
    tick time;
    std::uint64_t seq;
    launch_id id;          // the launch (stale when its slot has moved on)
    std::uint32_t slot;    // flights_ index; lost_slot: a device loss
    std::uint32_t member;  // index into the flight's members; the device for a device loss
    bool operator>(const entry& o) const noexcept { return time != o.time ? time > o.time : seq > o.seq; }
  };
  static constexpr std::uint32_t lost_slot = 0xFFFFFFFFu;

  std::uint32_t track(const task_launch& l, executor_event_kind kind) {
    std::uint32_t slot;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      slot = static_cast<std::uint32_t>(flights_.size());
      flights_.emplace_back();
    }
    flight& f = flights_[slot];
    f.active = true;
    f.kind = kind;
    f.id = l.id;
    f.members.clear();
    // Sized first: GCC 12 otherwise reports a false -Wstringop-overflow in small_vector's growth
    // path once track() is inlined into launch().
    f.members.reserve(l.batch.empty() ? 1 : l.batch.size());
    if (l.batch.empty()) f.members.push_back(l.request);
    for (const auto& m : l.batch) f.members.push_back(m.request);
    f.pending = static_cast<std::uint32_t>(f.members.size());
    if (!faults_.device_failures.empty()) {  // only a device loss looks at the devices
      f.group = l.group;
      f.source = l.source;
    }
    return slot;
  }
  void untrack(std::uint32_t slot) {
    flights_[slot].active = false;
    free_slots_.push_back(slot);
  }

  // Launches touching a lost device fail now, in launch order, before the loss itself is reported.
  void lose_device(device_id d, std::vector<executor_event>& out) {
    std::vector<std::pair<launch_id, std::uint32_t>> hit;
    for (std::uint32_t slot = 0; slot < flights_.size(); ++slot) {
      const flight& f = flights_[slot];
      if (f.active && (f.group.contains(d) || f.source.contains(d))) hit.emplace_back(f.id, slot);
    }
    std::sort(hit.begin(), hit.end());
    for (const auto& [id, slot] : hit) {
      for (request_handle r : flights_[slot].members) out.push_back(executor_event{now_, executor_event_kind::task_failed, id, r, 0});
      untrack(slot);
    }
  }
  double uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }  // same on every platform

  tick now_ = 0;
  std::uint64_t seq_ = 0;
  std::mt19937_64 rng_;
  simulation_faults faults_;
  std::priority_queue<entry, std::vector<entry>, std::greater<>> queue_;
  std::vector<flight> flights_;
  std::vector<std::uint32_t> free_slots_;
};

static_assert(VirtualTimeExecutor<simulated_executor> && BatchingExecutor<simulated_executor>);

}  // namespace paraflex
