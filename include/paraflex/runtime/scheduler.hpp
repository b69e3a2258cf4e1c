// paraflex/runtime/scheduler.hpp - the event-driven runtime: requests -> tasks -> policy -> executor.
//
// Single-threaded. Executor calls return at once; completions, failures, lost devices, arrivals and
// timer wake-ups come back as events that are processed in time order. The loop (hooks marked *):
//
//   loop:
//     t = earliest(next arrival, policy wake-up, periodic tick, executor event, held-back call)
//     advance executor to t; now = t
//     for each executor event at t (in order):
//       task done     -> request advances; next task of its assignment launches on the same group,
//                        or the request ends (*on_task_end, *on_request_end) or waits (*on_task_end)
//       task failed   -> request waits at the same position (retried); too many failures: dropped
//       device lost   -> device never used again; requests whose state it held restart from scratch
//     for each arrival at t: intern its shape (costs computed once; batched steps on first use),
//                            *on_arrival
//     periodic tick due: *on_tick
//     if anything changed (and min_decision_gap has passed since the last call, else at its end):
//       buffer.clear(); *decide(view, buffer); validate; apply:
//       drops; claims of every assignment's devices; migrations (source + destination busy);
//       launches
//   until every submitted request has ended
//
// Invariants it enforces: a device runs one thing at a time; a request's tasks run in order, one at
// a time; a request ends exactly once (completed, or dropped with a reason); time never goes back.
//
// Three ways drive it: run() on a VirtualTimeExecutor advances the clock to the next event; run() on
// a BlockingExecutor (threads, GPUs) waits in real time with executor.wait_until(t) and takes
// executor.now() as the time; an embedding with its own event loop calls turn() (or turn_to(t) on
// virtual time) whenever next_wakeup() passes or on_wakeup() fires. Everything runs on one thread,
// the scheduler's, except client() (runtime/client.hpp): submit, cancel and status by id from any
// thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "paraflex/core/duration_histogram.hpp"
#include "paraflex/cost/concepts.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/executor/concepts.hpp"
#include "paraflex/policy/concepts.hpp"
#include "paraflex/runtime/client.hpp"
#include "paraflex/runtime/view.hpp"
#include "paraflex/trajectory/trajectory.hpp"

namespace paraflex {

/// One finished (or failed) task, for observers: traces, invariant checks, dashboards.
struct task_record {
  request_handle request = 0;
  task_desc task;
  device_group devices;  ///< every device the task occupied (for a migration: destination + idle sources)
  tick start = 0;
  tick end = 0;
  bool ok = true;
  launch_id launch = 0;      ///< the executor launch: the members of a batched step share it (and its devices)
  std::uint32_t batch = 1;   ///< requests in that launch
};

struct scheduler_options {
  /// true: an invalid decision throws policy_error (a bug to fix). false: it is skipped and counted.
  bool strict = true;
  /// Failed attempts of one request after which it is dropped with reason "task_failed".
  std::uint32_t max_failures = 8;
  /// Policy calls in a row that change nothing while nothing runs and nothing is due, after which
  /// the waiting requests are dropped with reason "policy_stalled" (no run can hang).
  std::uint32_t stall_limit = 64;
  /// The largest batched step (decision_buffer::assign_batch) the runtime prices and accepts.
  int max_batch = 8;
  /// The policy is called at most once per this many microseconds: what happens in between (task
  /// ends, arrivals, wake-ups) is decided together at the first time allowed. 0 (the default): at
  /// every event time, as GF-DiT reschedules at every step boundary. On hundreds of GPUs task ends
  /// come microseconds apart and each call costs about the same, so a gap of a few milliseconds cuts
  /// the calls several-fold while devices wait at most that long (docs/performance.md, "Decision gap").
  tick min_decision_gap = 0;
};

/// Host-time statistics of the policy calls (not part of the deterministic output).
struct decision_stats {
  std::uint64_t decisions = 0;
  std::uint64_t rejected = 0;    ///< invalid decisions skipped (strict = false)
  duration_histogram host_us;    ///< one entry per call, microseconds (constant memory); see timed_calls
  /// Every call up to this many is timed; after that one in sample_period, drawn by a fixed-seed
  /// generator (no aliasing with periodic patterns), weighted sample_period. Two clock reads cost
  /// about as much as a cheap policy call, so a long run's timing would otherwise be a large part
  /// of its host time; its mean and p99 stay estimates from thousands of samples.
  static constexpr std::uint64_t timed_calls = 1024;
  static constexpr std::uint64_t sample_period = 8;
};

// Checked with static_asserts rather than constraints: a constrained class template deduced from its
// constructor only says "no viable constructor" (clang) instead of naming the member that is wrong.
template <class P, class E, class C>
class scheduler {
  // Each part of the Policy, Executor and CostModel concepts (their headers), with what to write.
  static_assert(policy_requirements::decides<P>,
                "scheduler: the policy (P) needs a member decide(const scheduler_view&, decision_buffer&) callable on a non-const P");
  static_assert(!policy_requirements::decides<P> || policy_requirements::decides_into_buffer<P>,
                "scheduler: the policy's decide(view, out) must return void: decisions go into the decision_buffer");
  static_assert(executor_requirements::launches<E>, "scheduler: the executor (E) needs a member launch(const task_launch&)");
  static_assert(executor_requirements::polls<E>, "scheduler: the executor (E) needs a member poll(std::vector<executor_event>&)");
  static_assert(executor_requirements::tells_time<E>, "scheduler: the executor (E) needs a member now() callable on a const E, returning a tick");
  static_assert(cost_model_requirements::prices_steps<C>,
                "scheduler: the cost model (C) needs a const member step_seconds(const request_shape&, int degree) returning double");
  static_assert(cost_model_requirements::allows_degrees<C>,
                "scheduler: the cost model (C) needs a const member allows_degree(const request_shape&, int degree) returning bool");
  static_assert(cost_model_requirements::prices_migrations<C>,
                "scheduler: the cost model (C) needs a const member migration_seconds(const request_shape&, int from, int to, bool cross_node) returning double");
  // The parts above are the whole of each concept: silent while a part fails (its message says why).
  static_assert(!(policy_requirements::decides<P> && policy_requirements::decides_into_buffer<P>) || Policy<P>);
  static_assert(!(executor_requirements::launches<E> && executor_requirements::polls<E> && executor_requirements::tells_time<E>) || Executor<E>);
  static_assert(!(cost_model_requirements::prices_steps<C> && cost_model_requirements::allows_degrees<C> &&
                  cost_model_requirements::prices_migrations<C>) || CostModel<C>);

 public:
  scheduler(cluster topology, P& policy, E& executor, const C& cost, scheduler_options options = {})
      : policy_(policy), executor_(executor), cost_(cost), options_(options), view_(state_) {
    if (!topology.valid()) throw std::invalid_argument(fmt::format("scheduler: invalid cluster ({} GPUs, {} per node)", topology.gpus, topology.gpus_per_node));
    if (options_.min_decision_gap < 0 || options_.min_decision_gap > clock_limit) {
      throw std::invalid_argument(fmt::format("scheduler: min_decision_gap {} us is outside [0, {}]", options_.min_decision_gap, clock_limit));
    }
    state_.topology = std::move(topology);
    const auto n = state_.topology.device_count();
    state_.free = device_set(n, true);
    state_.lost = device_set(n, false);
    state_.busy_until.assign(n, 0);
    state_.holders.assign(n, {});
    state_.holding = device_set(n, false);
    state_.now = executor_.now();
    period_ = hooks::tick_period(policy_);
    next_tick_ = period_ == never || period_ <= 0 ? never : state_.now + period_;
    shared_->counters.devices = static_cast<std::size_t>(n);
    // A submit or cancel from another thread wakes a run() waiting in the executor, and an own loop.
    shared_->wake = [this] {
      if constexpr (notifiable) executor_.notify();
      if (auto* f = wakeup_.load(std::memory_order_acquire)) (*f)();
    };
    if constexpr (SignallingExecutor<E>) {
      executor_.on_ready([this] {
        if (auto* f = wakeup_.load(std::memory_order_acquire)) (*f)();
      });
    }
  }
  // An executor declared before the scheduler outlives it, and its threads may still signal until the
  // executor's own destructor joins them: they must no longer call into this object.
  ~scheduler() {
    if constexpr (SignallingExecutor<E>) executor_.on_ready([] {});
  }
  // The executor and the client's wake-up refer to this object: it stays where it was built.
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  /// Submits a request on the scheduler's thread; it arrives at spec.arrival (not before now).
  /// Returns its handle. The raw path (the simulator's): no id check, no status by id - a server
  /// uses client() instead. Throws std::invalid_argument for a spec the runtime cannot run, and what
  /// the cost model throws for its shape (a client submission is dropped instead: "cost_model_error").
  request_handle submit(request_spec spec) {
    if (auto why = check_request_spec(spec); !why.empty()) throw std::invalid_argument(fmt::format("scheduler::submit: request '{}': {}", spec.id, why));
    const std::uint32_t shape = intern_shape(spec.shape);
    return add_request(std::move(spec), shape);
  }

 private:
  request_handle add_request(request_spec spec, std::uint32_t shape) {
    spec.arrival = std::max(spec.arrival, state_.now);
    const auto h = static_cast<request_handle>(state_.requests.size());
    auto trajectory = trajectories_.for_steps(spec.steps);
    // Built in place: a record is ~600 bytes, and a large workload submits many.
    request_record& r = state_.requests.emplace_back();
    r.handle = h;
    r.shape = shape;
    r.costs = &state_.shapes[shape];
    r.trajectory = std::move(trajectory);
    r.spec = std::move(spec);
    r.phase = request_phase::waiting;
    const tick at = r.spec.arrival;
    arrivals_.push({at, h});
    ++unended_;
    return h;
  }

 public:
  /// Makes room for `requests` submissions in all (a simulator knows its workload's size): the
  /// request table then never moves while they are submitted.
  void reserve(std::size_t requests) {
    state_.requests.reserve(requests);
    arrivals_.reserve(requests);
  }

  /// The thread-safe client: submit, cancel and status by id from any thread (runtime/client.hpp).
  /// Valid as long as the scheduler.
  [[nodiscard]] request_client& client() noexcept { return client_; }

  /// Shorthands for client().submit(spec), client().open() and client().close().
  std::string submit_async(request_spec spec) { return client_.submit(std::move(spec)); }
  void open_inbox() { client_.open(); }
  void close_inbox() { client_.close(); }
  /// Longest real-time wait of run() on a blocking executor without notify(), so that a submission
  /// from another thread is noticed (microseconds).
  static constexpr tick inbox_poll_interval = 1000;

  /// Ends a request on behalf of its client (scheduler's thread; other threads use client().cancel).
  /// Waiting: dropped now. Running: dropped when its task in flight ends - a migration included -
  /// and nothing is launched for it afterwards (a task is never interrupted). Ended: no effect.
  void cancel(request_handle h, std::string reason = "cancelled") {
    auto& r = state_.requests.at(h);
    if (r.ended()) return;
    cancel_reason_.try_emplace(h, reason.empty() ? std::string("cancelled") : std::move(reason));
    dirty_ = true;
  }

  /// Called once for each request as it ends (completed or dropped).
  void on_request_end(std::function<void(const request_record&)> f) { request_end_ = std::move(f); }
  /// Called for every task and migration as it ends (ok or failed).
  void on_task_record(std::function<void(const task_record&)> f) { task_end_ = std::move(f); }

  /// Runs on a virtual clock until every submitted request has ended (client submissions already
  /// queued included; an open client does not keep a virtual clock running: nothing could arrive).
  void run() requires VirtualTimeExecutor<E> {
    while (unended_ > 0 || shared_->pending.load(std::memory_order_acquire)) {
      const tick t = next_wakeup();
      if (t == never) {
        stall_all("policy_stalled");
        rethrow_callback_error();
        break;
      }
      advance_to(t);  // turn_to's checks hold: t is next_wakeup(), never before now
    }
  }

  /// Serves in real time until every submitted request has ended (and, while the client is open,
  /// beyond): t = next_wakeup(); executor.wait_until(t) returns early when a task ends or a client
  /// call notifies; turn(). Arrival times are read in the executor's clock.
  void run() requires(BlockingExecutor<E> && !VirtualTimeExecutor<E>) {
    for (;;) {
      tick t = turn();
      if (unended_ == 0 && !client_busy()) break;
      if constexpr (!notifiable) t = std::min(t, add_sat(state_.now, inbox_poll_interval));
      executor_.wait_until(t);
    }
  }

  // ---- Driving the scheduler from an event loop of your own (scheduler's thread only) ----------
  //
  //   sched.on_wakeup([&] { loop.post([&] { again(); }); });    // any thread: "turn soon"
  //   again(): t = sched.turn(); if (t != never) timer.expires_at(t) -> again()
  //
  // turn() never blocks. Executor completions reach the loop through on_wakeup when the executor
  // has on_ready() (SignallingExecutor; thread_executor does); otherwise poll turn() periodically.

  /// Real-time executors: now = executor.now() (never backwards); processes everything due
  /// (completions, arrivals, client submissions and cancels, wake-ups) and calls the policy if
  /// anything changed. Returns next_wakeup(). Drops the waiting requests ("policy_stalled") when
  /// nothing runs and nothing can ever happen, so a loop cannot wait forever.
  tick turn() requires(!VirtualTimeExecutor<E>) {
    const auto t_exec = static_cast<tick>(executor_.now());
    if (t_exec > state_.now) state_.now = t_exec;
    process_due();
    if (unended_ > 0 && state_.running.empty() && !client_busy() && next_wakeup() == never) {
      stall_all("policy_stalled");  // nothing runs and nothing can happen: waiting would hang
      rethrow_callback_error();
    }
    return next_wakeup();
  }
  /// Virtual-time executors: advances the executor and the clock to t (which must not pass
  /// next_wakeup(), nor go back), then as turn(). Returns next_wakeup().
  tick turn_to(tick t) requires VirtualTimeExecutor<E> {
    if (t < state_.now) throw std::logic_error(fmt::format("scheduler::turn_to: time went backwards ({} < {})", t, state_.now));
    if (t > next_wakeup()) throw std::logic_error(fmt::format("scheduler::turn_to: {} skips the event due at {}", t, next_wakeup()));
    advance_to(t);
    return next_wakeup();
  }
  /// When the scheduler next needs a turn: now when client calls wait to be applied; else the earliest
  /// arrival, policy wake-up or periodic tick (and, on virtual time, executor event); never when only
  /// a completion or a future client call can wake it.
  [[nodiscard]] tick next_wakeup() const {
    if (shared_->pending.load(std::memory_order_acquire)) return state_.now;  // client calls to apply
    tick t = std::min({next_arrival(), wake_, next_tick_, deferred_call_});
    if constexpr (VirtualTimeExecutor<E>) t = std::min(t, static_cast<tick>(executor_.next_event_time()));
    if (t != never && t < state_.now) t = state_.now;
    return t;
  }
  /// Nothing left: every request ended, the client has nothing queued and is closed.
  [[nodiscard]] bool finished() const noexcept { return unended_ == 0 && !client_busy(); }
  /// f is called, from any thread, when the scheduler should take a turn soon: a client submitted
  /// or cancelled, or (SignallingExecutor) the executor has an event ready. Set it before other
  /// threads use the client; f must not call into the scheduler itself (post to your loop instead).
  void on_wakeup(std::function<void()> f) {
    // Earlier callbacks stay alive: another thread may be calling one right now.
    wakeup_fns_.push_back(std::make_unique<std::function<void()>>(std::move(f)));
    wakeup_.store(wakeup_fns_.back().get(), std::memory_order_release);
  }

  [[nodiscard]] const scheduler_state& state() const noexcept { return state_; }
  [[nodiscard]] scheduler_view view() const noexcept { return view_; }
  [[nodiscard]] const request_record& request(request_handle h) const { return state_.requests.at(h); }
  [[nodiscard]] const decision_stats& stats() const noexcept { return stats_; }
  [[nodiscard]] double gpu_busy_seconds() const noexcept { return to_seconds(gpu_busy_ticks_); }
  [[nodiscard]] std::size_t unended() const noexcept { return unended_; }
  /// Messages of invalid decisions that were skipped (strict = false), at most 100 kept.
  [[nodiscard]] const std::vector<std::string>& rejections() const noexcept { return rejections_; }

  /// Processes everything due at the current time and calls the policy if something changed.
  /// run() calls this; an embedding with a real-time executor calls it from its own loop.
  void process_due() {
    if (shared_->pending.load(std::memory_order_acquire)) drain_client();
    events_.clear();
    executor_.poll(events_);
    for (const auto& ev : events_) handle_event(ev);
    while (!arrivals_.empty() && arrivals_.top().first <= state_.now) {
      const request_handle h = arrivals_.top().second;
      arrivals_.pop();
      arrive(h);
    }
    if (wake_ <= state_.now) {
      wake_ = never;
      dirty_ = true;
    }
    if (next_tick_ <= state_.now) {
      // Ticks only while there is something to schedule, so an idle periodic policy cannot spin.
      next_tick_ = unended_ > 0 ? state_.now + period_ : never;
      guarded([&] { hooks::on_tick(policy_, view_); });
      dirty_ = true;
    }
    if (!cancel_reason_.empty()) apply_cancellations();
    rethrow_callback_error();  // before the policy is called: it would decide on a part that failed
    if (dirty_) {
      // Within min_decision_gap of the last decision, the call waits (dirty_ stays set) until the gap ends.
      if (last_decision_ != never && state_.now - last_decision_ < options_.min_decision_gap) {
        deferred_call_ = last_decision_ + options_.min_decision_gap;
      } else {
        deferred_call_ = never;
        call_policy();
      }
    }
    if (client_used_) publish_counters();
    rethrow_callback_error();
  }

 private:
  using arrival = std::pair<tick, request_handle>;

  [[nodiscard]] tick next_arrival() const noexcept { return arrivals_.empty() ? never : arrivals_.top().first; }

  static constexpr bool notifiable = NotifiableExecutor<E>;
  static constexpr std::uint32_t no_slot = 0xFFFFFFFFu;

  // Client submissions or cancels not yet applied, or an open client: run() must not return.
  [[nodiscard]] bool client_busy() const noexcept {
    return shared_->pending.load(std::memory_order_acquire) || shared_->open.load(std::memory_order_acquire);
  }

  // Applies what other threads queued: submissions first, so a cancel queued right after its
  // submit finds the request.
  void drain_client() {
    drained_submits_.clear();
    drained_cancels_.clear();
    {
      std::lock_guard lk(shared_->mu);
      drained_submits_.swap(shared_->submits);
      drained_cancels_.swap(shared_->cancels);
      shared_->pending.store(false, std::memory_order_release);
    }
    client_used_ = true;
    for (auto& p : drained_submits_) {
      // The client checked the spec; the cost model may still refuse its shape (throw). That must
      // neither escape run() on the serving thread nor lose the submissions queued behind it: the
      // request ends, dropped with reason "cost_model_error" (the raw submit() throws instead).
      std::uint32_t shape = 0;
      bool priced = true;
      try {
        shape = intern_shape(p.spec.shape);
      } catch (const std::exception&) {
        priced = false;
        shape = static_cast<std::uint32_t>(state_.shapes.size());
        state_.shapes.emplace_back().shape = p.spec.shape;  // allows no degree; never in shape_index_
      }
      const request_handle h = add_request(std::move(p.spec), shape);
      if (slot_of_handle_.size() <= h) slot_of_handle_.resize(static_cast<std::size_t>(h) + 1, no_slot);
      slot_of_handle_[h] = p.slot;
      if (handle_of_slot_.size() <= p.slot) handle_of_slot_.resize(static_cast<std::size_t>(p.slot) + 1, no_slot);
      handle_of_slot_[p.slot] = h;
      if (priced) publish(h);  // its arrival in the scheduler's clock
      else end_request(h, request_phase::dropped, "cost_model_error");
    }
    for (auto& c : drained_cancels_) {
      if (c.slot < handle_of_slot_.size() && handle_of_slot_[c.slot] != no_slot) cancel(handle_of_slot_[c.slot], std::move(c.reason));
    }
  }

  // Copies a client-submitted request's state into the client's table (no-op for other requests).
  void publish(request_handle h) {
    if (h < slot_of_handle_.size()) [[unlikely]] publish_slot(h);  // only client submissions have a slot
  }
  void publish_slot(request_handle h) {
    if (slot_of_handle_[h] == no_slot) return;
    const auto& r = state_.requests[h];
    std::lock_guard lk(shared_->mu);
    auto& st = shared_->slots[slot_of_handle_[h]];
    switch (r.phase) {
      case request_phase::waiting: st.state = request_state::waiting; break;
      case request_phase::running: st.state = request_state::running; break;
      case request_phase::completed: st.state = request_state::completed; ++shared_->counters.completed; break;
      case request_phase::dropped:
        st.state = request_state::dropped;
        ++shared_->counters.dropped;
        ++shared_->counters.dropped_by_reason[r.drop_reason];
        break;
    }
    st.arrival = r.spec.arrival;
    st.first_start = r.first_start;
    st.finish = r.finish;
    st.degree = r.phase == request_phase::running && !r.run_group.empty() ? static_cast<int>(r.run_group.size()) : r.last_degree;
    st.migrations = r.migrations;
    st.steps_done = r.spec.steps - r.steps_remaining();
    if (r.ended()) {
      st.reason = r.drop_reason;
      st.cancel_requested = false;
    }
  }

  void publish_counters() {
    std::lock_guard lk(shared_->mu);
    auto& c = shared_->counters;
    c.waiting = state_.waiting.size();
    c.running = state_.running.size();
    c.busy_devices = static_cast<std::size_t>(view_.usable_device_count()) - state_.free.count();
  }

  std::uint32_t intern_shape(const request_shape& s) {
    auto it = shape_index_.find(s);
    if (it != shape_index_.end()) return it->second;
    // Batched steps are priced on first use: a run that never batches never asks for them.
    shape_costs c = make_shape_costs(cost_, s, state_.topology.gpus, options_.max_batch, batch_pricing::on_first_use);
    const auto idx = static_cast<std::uint32_t>(state_.shapes.size());
    state_.shapes.push_back(std::move(c));
    shape_index_.emplace(s, idx);
    return idx;
  }

  void arrive(request_handle h) {
    auto& r = state_.requests[h];
    if (r.ended()) return;  // cancelled before it arrived
    const auto& c = *r.costs;
    if (c.allowed_degrees.empty()) {
      end_request(h, request_phase::dropped, "no_allowed_degree");
      return;
    }
    state_.waiting.insert(h);
    came_to_wait(h);
    if (next_tick_ == never && period_ != never && period_ > 0) next_tick_ = state_.now + period_;
    guarded([&] { hooks::on_arrival(policy_, view_, h); });
    dirty_ = true;
  }

  void handle_event(const executor_event& ev) {
    if (ev.kind == executor_event_kind::device_lost) {
      lose_device(ev.device);
      return;
    }
    auto& r = state_.requests.at(ev.request);
    if (r.phase != request_phase::running || r.launch != ev.id) return;  // stale (already handled)
    const tick start = r.launch_start;
    const bool ok = ev.kind == executor_event_kind::task_done;
    if (r.launch_batch >= 2) {
      // A member of a batched step: the devices are the batch's, freed with its last member.
      auto f = std::find_if(batches_in_flight_.begin(), batches_in_flight_.end(), [&](const batch_flight& b) { return b.id == ev.id; });
      const tick spent = (state_.now - start) * static_cast<tick>(r.run_group.size());
      r.gpu_busy_s += to_seconds(spent) / static_cast<double>(r.launch_batch);
      if (task_end_) guarded([&] { task_end_(task_record{ev.request, r.launch_task, r.run_group, start, state_.now, ok, ev.id, r.launch_batch}); });
      if (f != batches_in_flight_.end() && --f->remaining == 0) {
        release(f->group);
        gpu_busy_ticks_ += spent;
        batches_in_flight_.erase(f);
      }
      r.launch_batch = 0;
    } else {
      // What the launch held: its group, or for a migration the group plus idle sources (occupied).
      const device_group& held = r.occupied.empty() ? r.run_group : r.occupied;
      release(held);
      const tick spent = (state_.now - start) * static_cast<tick>(held.size());
      gpu_busy_ticks_ += spent;
      r.gpu_busy_s += to_seconds(spent);
      if (task_end_) guarded([&] { task_end_(task_record{ev.request, r.launch_task, held, start, state_.now, ok, ev.id, 1}); });
    }
    r.occupied.clear();
    const task_desc done = r.launch_task;

    if (ev.kind == executor_event_kind::task_failed) {
      ++r.failures;
      r.chunk_left = 0;
      guarded([&] { hooks::on_task_end(policy_, view_, ev.request, false); });
      if (r.failures >= options_.max_failures) {
        end_request(ev.request, request_phase::dropped, "task_failed");
      } else {
        to_waiting(ev.request);
      }
      return;
    }
    if (done.kind == task_kind::migrate) {
      set_state_group(ev.request, r.run_group);
      ++r.migrations;
      ++migrations_;
      if (cancel_reason_.contains(ev.request)) to_waiting(ev.request);  // cancelled meanwhile: no step after it
      else launch_next(ev.request);
      return;
    }
    ++r.position;
    --r.chunk_left;
    r.last_degree = static_cast<int>(r.run_group.size());
    set_state_group(ev.request, r.run_group);
    guarded([&] { hooks::on_task_end(policy_, view_, ev.request, true); });
    if (r.position == r.tasks_total()) {
      end_request(ev.request, request_phase::completed, {});
    } else if (r.chunk_left > 0 && !cancel_reason_.contains(ev.request)) {
      launch_next(ev.request);
    } else {
      to_waiting(ev.request);
    }
  }

  void lose_device(device_id d) {
    if (d >= state_.topology.device_count() || state_.lost.test(d)) return;
    state_.lost.set(d);
    state_.free.reset(d);
    // Requests whose latent it held start over from the text encoder.
    drop_list_.assign(state_.holders[d].begin(), state_.holders[d].end());
    for (request_handle h : drop_list_) {
      set_state_group(h, device_group{});
      state_.requests[h].position = 0;
    }
    dirty_ = true;
  }

  // Where h's state lives, with the per-device holder lists kept in step.
  void set_state_group(request_handle h, const device_group& g) {
    auto& r = state_.requests[h];
    if (r.state_group == g) return;
    for (device_id d : r.state_group) {
      auto& list = state_.holders[d];
      list.erase(std::find(list.begin(), list.end(), h));
      if (list.empty()) state_.holding.reset(d);
    }
    r.state_group = g;
    for (device_id d : g) state_.holders[d].push_back(h), state_.holding.set(d);
  }

  void to_waiting(request_handle h) {
    auto& r = state_.requests[h];
    r.phase = request_phase::waiting;
    r.run_group.clear();
    r.running_until = never;
    state_.running.erase(h);
    state_.waiting.insert(h);
    came_to_wait(h);
    dirty_ = true;
    publish(h);
  }

  void end_request(request_handle h, request_phase how, std::string reason) {
    auto& r = state_.requests[h];
    if (r.ended()) throw std::logic_error("scheduler: request ended twice");
    if (r.phase == request_phase::running) state_.running.erase(h);
    else state_.waiting.erase(h);
    set_state_group(h, device_group{});  // its state is no longer needed anywhere
    r.phase = how;
    r.finish = state_.now;
    r.drop_reason = std::move(reason);
    r.run_group.clear();
    r.running_until = never;
    cancel_reason_.erase(h);
    --unended_;
    dirty_ = true;
    if constexpr (ReleasingExecutor<E>) {
      if (how == request_phase::dropped) executor_.release(h);  // its state on the devices is not needed
    }
    publish(h);
    guarded([&] { hooks::on_request_end(policy_, view_, h); });
    if (request_end_) guarded([&] { request_end_(r); });
  }

  void apply_cancellations() {
    for (auto it = cancel_reason_.begin(); it != cancel_reason_.end();) {
      const request_handle h = it->first;
      auto& r = state_.requests[h];
      if (r.phase == request_phase::waiting) {
        std::string reason = std::move(it->second);
        it = cancel_reason_.erase(it);
        end_request(h, request_phase::dropped, std::move(reason));
      } else {
        ++it;  // running: dropped when its task ends (handle_event sends it to waiting first)
      }
    }
  }

  void stall_all(const char* reason) {
    drop_list_.assign(state_.waiting.begin(), state_.waiting.end());
    for (request_handle h : drop_list_) end_request(h, request_phase::dropped, reason);
    while (!arrivals_.empty()) {  // cannot happen with a finite next_arrival, kept for safety
      const auto h = arrivals_.top().second;
      arrivals_.pop();
      if (!state_.requests[h].ended()) end_request(h, request_phase::dropped, reason);
    }
  }

  void release(const device_group& g) {
    for (device_id d : g) {
      if (!state_.lost.test(d)) state_.free.set(d);
      state_.busy_until[d] = state_.now;
    }
  }

  // Requests that can never run again on what is left of the cluster are dropped. Every waiting
  // request is checked once per device loss; after that only those that came to wait since the last
  // check (a full pass at every call made long runs with a lost device quadratic in the queue).
  void drop_unplaceable() {
    const int usable = view_.usable_device_count();
    if (usable == state_.topology.gpus) return;
    if (usable != unplaceable_checked_at_) {
      unplaceable_checked_at_ = usable;
      drop_list_.assign(state_.waiting.begin(), state_.waiting.end());
    } else {
      drop_list_.swap(came_to_wait_);
      std::sort(drop_list_.begin(), drop_list_.end());  // handle order, as the full pass
    }
    came_to_wait_.clear();
    for (request_handle h : drop_list_) {
      const auto& r = state_.requests[h];
      if (r.phase == request_phase::waiting && r.costs->allowed_degrees.front() > usable) {
        end_request(h, request_phase::dropped, "device_lost_no_capacity");
      }
    }
  }
  // h entered the waiting set: drop_unplaceable checks it at the next call (only once a device is lost).
  void came_to_wait(request_handle h) {
    if (!state_.lost.none()) came_to_wait_.push_back(h);
  }

  void call_policy() {
    dirty_ = false;
    drop_unplaceable();
    // Nothing waits: no decision is possible (running tasks cannot be reassigned), so the call is
    // skipped, also at a requested wake-up; the policy runs again at the next event.
    if (state_.waiting.empty() && period_ == never) return;
    last_decision_ = state_.now;
    buffer_.clear();
    try {
      if (timed_call()) {
        const auto t0 = std::chrono::steady_clock::now();
        policy_.decide(view_, buffer_);
        const auto t1 = std::chrono::steady_clock::now();
        stats_.host_us.add(std::chrono::duration<double, std::micro>(t1 - t0).count(),
                           stats_.decisions < decision_stats::timed_calls ? 1 : decision_stats::sample_period);
      } else {
        policy_.decide(view_, buffer_);
        stats_.host_us.skip();
      }
    } catch (...) {
      // Nothing was decided: the call is owed, and the next run() or turn() makes it (instead of
      // finding nothing due and dropping every waiting request as stalled).
      owe_call();
      throw;
    }
    ++stats_.decisions;
    const bool changed = apply(buffer_);
    if (buffer_.wake_time() > state_.now && buffer_.wake_time() < wake_) wake_ = buffer_.wake_time();
    // Stall guard: nothing runs, nothing arrives, and the policy keeps changing nothing.
    const bool quiescent = state_.running.empty() && arrivals_.empty() && !state_.waiting.empty();
    if (changed || !quiescent) {
      idle_calls_ = 0;
    } else if (++idle_calls_ >= options_.stall_limit || (wake_ == never && next_tick_ == never)) {
      idle_calls_ = 0;
      stall_all("policy_stalled");
    }
  }

  // Virtual time moves to t (no earlier than now, no later than next_wakeup()) and what is due runs.
  void advance_to(tick t) requires VirtualTimeExecutor<E> {
    executor_.advance_to(t);
    state_.now = t;
    process_due();
  }

  // Whether this policy call is timed (decision_stats::timed_calls, sample_period).
  bool timed_call() noexcept {
    if (stats_.decisions < decision_stats::timed_calls) return true;
    sample_rng_ ^= sample_rng_ << 13;  // xorshift64
    sample_rng_ ^= sample_rng_ >> 7;
    sample_rng_ ^= sample_rng_ << 17;
    return sample_rng_ % decision_stats::sample_period == 0;
  }

  // Hooks and callbacks run inside a state change (a task end, an arrival, a request's end): one
  // that throws must not leave it half done - a request marked running with nothing in flight
  // never ends, and the events polled after it would be lost. The first exception is kept and
  // thrown once the turn's changes are made (rethrow_callback_error), before the policy is called.
  template <class F>
  void guarded(F&& f) noexcept {
    try {
      std::forward<F>(f)();
    } catch (...) {
      if (!callback_error_) callback_error_ = std::current_exception();
    }
  }
  void rethrow_callback_error() {
    if (!callback_error_) return;
    if (dirty_) owe_call();
    std::rethrow_exception(std::exchange(callback_error_, nullptr));
  }
  // The policy call this turn did not make is due at once: next_wakeup() says so.
  void owe_call() noexcept {
    dirty_ = true;
    deferred_call_ = state_.now;
  }

  // A handle is dense and in submission order, so a policy can name a request submitted for later
  // that the view does not show yet: it is waiting in phase, but not in the waiting set until it arrives.
  [[nodiscard]] bool arrived(request_handle h) const noexcept {
    return state_.requests[h].phase != request_phase::waiting || state_.waiting.contains(h);
  }

  bool reject(const std::string& why) {
    if (options_.strict) throw policy_error(fmt::format("{}: invalid decision at t={}us: {}", policy_name(policy_), state_.now, why));
    ++stats_.rejected;
    if (rejections_.size() < 100) rejections_.push_back(why);
    return false;
  }

  bool apply(const decision_buffer& b) {
    bool changed = false;
    for (const auto& d : b.drops()) {
      if (d.request >= state_.requests.size()) { reject(fmt::format("drop of unknown request {}", d.request)); continue; }
      auto& r = state_.requests[d.request];
      if (r.ended()) {
        reject(fmt::format("drop of request '{}' which has already ended", r.spec.id));
        continue;
      }
      if (!arrived(d.request)) {
        reject(fmt::format("drop of request '{}' which has not arrived yet (it arrives at t={}us)", r.spec.id, r.spec.arrival));
        continue;
      }
      if (const std::string problem = drop_reason_problem(d.reason); !problem.empty()) {
        reject(fmt::format("drop of request '{}': {}", r.spec.id, problem));
        continue;
      }
      std::string reason = d.reason.empty() ? std::string("dropped_by_policy") : d.reason;
      if (r.phase == request_phase::running) {  // like a cancel: ends when its task in flight ends
        cancel_reason_.try_emplace(d.request, std::move(reason));
        continue;
      }
      end_request(d.request, request_phase::dropped, std::move(reason));
      changed = true;
    }
    if (b.assigns().empty() && b.batches().empty()) return changed;  // many calls only wait or drop
    // Phase 1: validate every assignment and claim its destination devices.
    accepted_.clear();
    claimed_ = state_.free;
    for (std::size_t i = 0; i < b.assigns().size(); ++i) {
      const auto& a = b.assigns()[i];
      if (a.request >= state_.requests.size()) { reject(fmt::format("assignment of unknown request {}", a.request)); continue; }
      const auto& r = state_.requests[a.request];
      if (r.phase != request_phase::waiting) {
        reject(fmt::format("request '{}' is not waiting ({})", r.spec.id, r.ended() ? "ended" : "running or assigned twice"));
        continue;
      }
      if (!arrived(a.request)) {
        reject(fmt::format("request '{}' has not arrived yet (it arrives at t={}us)", r.spec.id, r.spec.arrival));
        continue;
      }
      if (a.group.empty() || a.tasks == 0) { reject(fmt::format("request '{}': empty group or zero tasks", r.spec.id)); continue; }
      const int k = static_cast<int>(a.group.size());
      if (!r.costs->allows(k)) {
        reject(fmt::format("request '{}': degree {} is not allowed for {}", r.spec.id, k, r.spec.shape.model));
        continue;
      }
      std::size_t claimed_here = 0;
      for (device_id d : a.group) {
        if (d >= state_.topology.device_count() || !claimed_.test(d)) break;
        claimed_.reset(d);
        ++claimed_here;
      }
      if (claimed_here != a.group.size()) {
        for (std::size_t j = 0; j < claimed_here; ++j) claimed_.set(a.group[j]);  // undo the partial claim
        const device_id d = a.group[claimed_here];
        reject(fmt::format("request '{}': device {} in {} is {}", r.spec.id, d, a.group.to_string(),
                           d >= state_.topology.device_count() ? "out of range"
                           : state_.lost.test(d)              ? "lost"
                                                               : "busy or used twice"));
        continue;
      }
      state_.requests[a.request].phase = request_phase::running;  // marks "assigned" against duplicates
      accepted_.push_back(i);
    }
    // Batched steps: validated and claimed like assignments.
    accepted_batches_.clear();
    for (std::size_t i = 0; i < b.batches().size(); ++i) {
      if (validate_batch(b.batches()[i])) accepted_batches_.push_back(i);
    }
    // Phase 2: start migrations (sources that stay idle are occupied too) and launches.
    for (std::size_t i : accepted_) {
      const auto& a = b.assigns()[i];
      auto& r = state_.requests[a.request];
      state_.waiting.erase(a.request);
      state_.running.insert(a.request);
      r.run_group = a.group;
      r.chunk_left = std::min(a.tasks, r.tasks_remaining());
      if (r.first_start == never) r.first_start = state_.now;
      if (view_.needs_migration(a.request, a.group)) {
        device_group::builder occupied;
        for (device_id d : a.group) occupied.push_back(d);
        for (device_id d : r.state_group) {
          if (claimed_.test(d) && !a.group.contains(d)) {
            claimed_.reset(d);
            occupied.push_back(d);
          }
        }
        const device_group held = std::move(occupied).build();
        start(a.request, task_desc{task_kind::migrate, -1}, &held, view_.migration_time(a.request, a.group));
      } else {
        launch_next(a.request);
      }
      changed = true;
    }
    for (std::size_t i : accepted_batches_) {
      launch_batch(b.batches()[i]);
      changed = true;
    }
    return changed;
  }

  // Checks one batched step (batch_decision's rules) and claims its devices; false when rejected.
  bool validate_batch(const batch_decision& bd) {
    const auto n = bd.members.size();
    const auto who = [&] {
      std::string ids;
      for (request_handle h : bd.members) ids += (ids.empty() ? "" : ",") + (h < state_.requests.size() ? "'" + state_.requests[h].spec.id + "'" : std::to_string(h));
      return "batch {" + ids + "}";
    };
    if constexpr (!BatchingExecutor<E>) {
      return reject(fmt::format("{}: this executor cannot run batched steps (BatchingExecutor)", who()));
    }
    if (n < 2 || bd.group.empty()) return reject(fmt::format("{}: a batch needs two members or more and a group", who()));
    if (static_cast<int>(n) > options_.max_batch) return reject(fmt::format("{}: {} members, at most scheduler_options::max_batch = {}", who(), n, options_.max_batch));
    const int k = static_cast<int>(bd.group.size());
    std::uint32_t shape = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const request_handle h = bd.members[i];
      if (h >= state_.requests.size()) return reject(fmt::format("{}: unknown request {}", who(), h));
      if (std::find(bd.members.begin(), bd.members.begin() + static_cast<std::ptrdiff_t>(i), h) != bd.members.begin() + static_cast<std::ptrdiff_t>(i)) {
        return reject(fmt::format("{}: request '{}' is listed twice", who(), state_.requests[h].spec.id));
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      const request_handle h = bd.members[i];
      const auto& r = state_.requests[h];
      if (r.phase != request_phase::waiting) return reject(fmt::format("{}: request '{}' is not waiting (or is assigned twice)", who(), r.spec.id));
      if (!arrived(h)) return reject(fmt::format("{}: request '{}' has not arrived yet (it arrives at t={}us)", who(), r.spec.id, r.spec.arrival));
      if (i == 0) shape = r.shape;
      if (r.shape != shape) return reject(fmt::format("{}: request '{}' has another shape", who(), r.spec.id));
      const task_kind kind = r.next_task().kind;
      if (kind != task_kind::step && kind != task_kind::encode) {
        return reject(fmt::format("{}: the next task of '{}' is a {}, neither a denoising step nor a text encode", who(), r.spec.id, to_string(kind)));
      }
      if (kind != state_.requests[bd.members.front()].next_task().kind) {
        return reject(fmt::format("{}: the members' next tasks differ (steps and encodes batch separately)", who()));
      }
    }
    for (request_handle h : bd.members) {
      const auto& r = state_.requests[h];
      if (!r.state_group.empty() && !r.state_group.same_devices(bd.group)) {
        return reject(fmt::format("{}: the state of '{}' lives on {}, not on {} (move it with a plain assignment first)", who(), r.spec.id,
                                  r.state_group.to_string(), bd.group.to_string()));
      }
    }
    const auto& c = state_.shapes[shape];
    if (!c.allows(k)) return reject(fmt::format("{}: degree {} is not allowed for {}", who(), k, c.shape.model));
    if (static_cast<int>(n) > c.max_batch) {
      return reject(fmt::format("{}: the cost model prices batches of {} up to {}", who(), c.shape.model, c.max_batch));
    }
    std::size_t claimed_here = 0;
    for (device_id d : bd.group) {
      if (d >= state_.topology.device_count() || !claimed_.test(d)) break;
      claimed_.reset(d);
      ++claimed_here;
    }
    if (claimed_here != bd.group.size()) {
      for (std::size_t j = 0; j < claimed_here; ++j) claimed_.set(bd.group[j]);
      return reject(fmt::format("{}: device {} in {} is not free", who(), bd.group[claimed_here], bd.group.to_string()));
    }
    for (request_handle h : bd.members) state_.requests[h].phase = request_phase::running;  // "assigned" against duplicates
    return true;
  }

  // Launches one batched step: one executor launch, every member running on the batch's group.
  void launch_batch(const batch_decision& bd) {
    const auto n = static_cast<std::uint32_t>(bd.members.size());
    const auto& first = state_.requests[bd.members.front()];
    const auto& costs = *first.costs;
    const int k = static_cast<int>(bd.group.size());
    // A batched step costs the cost model's batched figure; encodes are not modelled as sharing
    // anything: a batch of them costs each one's encode.
    const tick duration = first.next_task().kind == task_kind::step ? costs.batch_step_time(k, static_cast<int>(n))
                                                                     : static_cast<tick>(n) * costs.encode[static_cast<std::size_t>(k)];
    members_.clear();
    for (request_handle h : bd.members) members_.push_back(batch_member{h, state_.requests[h].next_task()});
    task_launch l;
    l.id = ++next_launch_;
    l.request = members_.front().request;
    l.task = members_.front().task;
    l.group = bd.group;
    l.shape = &first.costs->shape;
    l.expected_duration = duration;
    l.batch = members_;
    for (device_id d : bd.group) {
      state_.free.reset(d);
      state_.busy_until[d] = state_.now + duration;
    }
    for (const auto& m : members_) {
      auto& r = state_.requests[m.request];
      state_.waiting.erase(m.request);
      state_.running.insert(m.request);
      r.phase = request_phase::running;
      r.run_group = bd.group;
      r.chunk_left = 1;
      if (r.first_start == never) r.first_start = state_.now;
      r.running_until = state_.now + duration;
      r.launch = l.id;
      r.launch_start = state_.now;
      r.launch_task = m.task;
      r.launch_batch = n;
      r.occupied.clear();
    }
    batches_in_flight_.push_back(batch_flight{l.id, bd.group, n});
    executor_.launch(l);
    for (const auto& m : members_) publish(m.request);
  }

  void launch_next(request_handle h) {
    auto& r = state_.requests[h];
    const task_desc t = r.next_task();
    // The group's degree was checked when it was assigned.
    start(h, t, nullptr, r.costs->task_time(t.kind, r.run_group.size()));
  }

  // Launches task t of h on its run_group. `occupied` lists what a migration holds beyond that
  // (destination + idle sources); null for a task, which holds exactly run_group.
  void start(request_handle h, task_desc t, const device_group* occupied, tick duration) {
    auto& r = state_.requests[h];
    task_launch& l = launch_;  // reused: no construction of its two groups per task
    l.id = ++next_launch_;
    l.request = h;
    l.task = t;
    l.shape = &r.costs->shape;
    l.expected_duration = duration;
    l.group = r.run_group;
    if (t.kind == task_kind::migrate) l.source = r.state_group;
    else l.source.clear();
    for (device_id d : occupied ? *occupied : r.run_group) {
      state_.free.reset(d);
      state_.busy_until[d] = state_.now + duration;
    }
    r.phase = request_phase::running;
    r.running_until = state_.now + (t.kind == task_kind::migrate ? duration + view_.tasks_time(h, static_cast<int>(r.run_group.size()), r.chunk_left)
                                                                 : view_.tasks_time(h, static_cast<int>(r.run_group.size()), r.chunk_left));
    r.launch = l.id;
    r.launch_start = state_.now;
    r.launch_task = t;
    if (occupied) r.occupied = *occupied;
    else r.occupied.clear();
    executor_.launch(l);
    publish(h);
  }

  P& policy_;
  E& executor_;
  const C& cost_;
  scheduler_options options_;
  scheduler_state state_;
  scheduler_view view_;
  trajectory_library trajectories_;
  std::map<request_shape, std::uint32_t> shape_index_;
  // Future arrivals, earliest (time, handle) first. Submissions mostly come in time order (a
  // workload file is sorted): those queue in a plain FIFO, O(1) and cache-friendly; only one that is
  // earlier than the FIFO's last goes to a heap. The two fronts are merged on (time, handle), so the
  // order is exactly that of one heap.
  class arrival_queue {
   public:
    void push(arrival a) {
      if (head_ == fifo_.size() || fifo_.back() <= a) {
        if (head_ == fifo_.size()) fifo_.clear(), head_ = 0;
        fifo_.push_back(a);
      } else {
        heap_.push(a);
      }
    }
    void reserve(std::size_t n) { fifo_.reserve(n); }
    [[nodiscard]] bool empty() const noexcept { return head_ == fifo_.size() && heap_.empty(); }
    [[nodiscard]] const arrival& top() const {
      if (heap_.empty()) return fifo_[head_];
      if (head_ == fifo_.size()) return heap_.top();
      return heap_.top() < fifo_[head_] ? heap_.top() : fifo_[head_];
    }
    void pop() {
      if (!heap_.empty() && (head_ == fifo_.size() || heap_.top() < fifo_[head_])) heap_.pop();
      else ++head_;
    }

   private:
    std::vector<arrival> fifo_;
    std::size_t head_ = 0;
    std::priority_queue<arrival, std::vector<arrival>, std::greater<>> heap_;
  };
  arrival_queue arrivals_;
  std::map<request_handle, std::string> cancel_reason_;
  std::vector<executor_event> events_;
  std::vector<request_handle> drop_list_;  // scratch: a copy of a set that is changed while walked
  std::vector<request_handle> came_to_wait_;  // since the last drop_unplaceable (only once a device is lost)
  int unplaceable_checked_at_ = -1;           // the usable device count at drop_unplaceable's last full pass
  decision_buffer buffer_;
  std::vector<std::size_t> accepted_, accepted_batches_;
  struct batch_flight {
    launch_id id;
    device_group group;
    std::uint32_t remaining;  // members whose event has not come yet
  };
  std::vector<batch_flight> batches_in_flight_;
  std::vector<batch_member> members_;  // scratch: the batch being launched
  task_launch launch_;                 // scratch: start()'s launch (batch stays empty)
  device_set claimed_;
  decision_stats stats_;
  std::vector<std::string> rejections_;
  std::function<void(const request_record&)> request_end_;
  std::function<void(const task_record&)> task_end_;
  std::size_t unended_ = 0;
  std::uint64_t next_launch_ = 0;
  std::uint64_t migrations_ = 0;
  tick gpu_busy_ticks_ = 0;
  tick wake_ = never;
  tick period_ = never;
  tick next_tick_ = never;
  tick last_decision_ = never;  // when the policy was last called (min_decision_gap)
  tick deferred_call_ = never;  // a call held back by min_decision_gap (or owed after a throw) is due then
  std::exception_ptr callback_error_;  // the first hook or callback that threw in this turn (guarded)
  std::uint32_t idle_calls_ = 0;
  std::uint64_t sample_rng_ = 0x9E3779B97F4A7C15ULL;  // timed_call's draws (host timing only)
  bool dirty_ = false;
  // The client: shared with other threads behind a pointer; the rest is the scheduler thread's.
  std::unique_ptr<detail::client_shared> shared_ = std::make_unique<detail::client_shared>();
  request_client client_{*shared_};
  std::vector<std::uint32_t> slot_of_handle_, handle_of_slot_;
  std::vector<detail::client_shared::pending_submit> drained_submits_;
  std::vector<detail::client_shared::pending_cancel> drained_cancels_;
  bool client_used_ = false;
  std::vector<std::unique_ptr<std::function<void()>>> wakeup_fns_;
  std::atomic<std::function<void()>*> wakeup_{nullptr};
};

}  // namespace paraflex
