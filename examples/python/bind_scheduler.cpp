// examples/python/bind_scheduler.cpp - paraflex.Scheduler: the runtime embedded in a Python server.
//
// Over the thread-safe client of runtime/client.hpp: submit / cancel / status from any Python thread,
// completion callbacks, and three ways to drive it: run() (blocking; e.g. in a background thread),
// turn() / next_wakeup() / on_wakeup() from an event loop (real-time executors), turn_to(t) on the
// simulated executor. The executor is the simulated one, the CPU thread one, or a Python object
// (launch/poll/now/wait_until[/notify][/release]) adapted by python_executor, which models
// BlockingExecutor, NotifiableExecutor and ReleasingExecutor exactly like a C++ executor would, and
// BatchingExecutor when the object declares `runs_batches = True`: whether an executor runs batches
// is a compile-time property in C++, so there are two adapter types and the constructor picks one.
//
// The scheduler is a template over the executor; scheduler_base erases it. C++ work runs without the
// GIL; Python calls (policy, executor, callbacks) take it for their own duration. An exception from
// Python code inside a turn propagates to the caller of run()/turn()/turn_to() and stops the
// Scheduler for good (its state may be mid-update): later calls raise RuntimeError naming it.
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "decision_gap.hpp"
#include "paraflex/cost/shape_costs.hpp"
#include "paraflex/executor/simulated.hpp"
#include "paraflex/executor/thread_executor.hpp"
#include "paraflex/runtime/client.hpp"
#include "paraflex/runtime/scheduler.hpp"
#include "paraflex/sim/metrics.hpp"
#include "py_args.hpp"
#include "py_objects.hpp"
#include "py_policy.hpp"
#include "sim_report.hpp"
#include "sim_support.hpp"

namespace paraflex_python {

using namespace paraflex;

namespace {

// ---- Task: what a Python executor's launch() receives -----------------------------------------

/// One member of a batched launch (Task.batch): iterates as (request, kind, step).
struct py_batch_member {
  request_handle request = 0;
  std::string request_id;
  std::string kind;
  int step = -1;
  int steps = 0;
};

struct py_task {
  launch_id id = 0;
  request_handle request = 0;
  std::string request_id;
  std::string kind;
  int step = -1;
  std::vector<device_id> group, source;
  std::string model;
  int height = 0, width = 0, frames = 1;
  int steps = 0;  // denoising steps of the whole request (a sampler needs the total)
  tick expected_duration_us = 0;
  std::vector<py_batch_member> batch;  // a batched launch's members (>= 2), else empty
};

// ---- python_executor -------------------------------------------------------------------------

/// Whether a Python executor object runs batched steps: its `runs_batches` attribute (absent:
/// False). Anything but a bool is a TypeError.
bool python_runs_batches(py::handle obj) {
  py::object v = optional_attr(obj, "runs_batches");
  if (v.is_none()) return false;
  if (!PyBool_Check(v.ptr())) {
    throw py::type_error("executor: " + type_name(obj) + ".runs_batches must be True or False, got " + std::string(py::repr(v)));
  }
  return v.ptr() == Py_True;
}

template <bool Batches>
struct batch_capability {};
template <>
struct batch_capability<true> {
  static constexpr bool runs_batches = true;  // paraflex::BatchingExecutor
};

/// A Python object as a BlockingExecutor (+ Notifiable, Releasing, Signalling): launch(task),
/// poll() -> events, now() -> int us, wait_until(t_us), optional notify(), release(request) and
/// on_ready(callback). python_executor<true> is also a BatchingExecutor: the Scheduler picks it when
/// the object says `runs_batches = True`, so the runtime refuses batched decisions (PolicyError) for
/// an executor that has not said so, exactly as for a C++ executor. It checks the batch contract on
/// the events: one per member, all task_done or all task_failed.
template <bool Batches>
class python_executor : public batch_capability<Batches> {
 public:
  python_executor(py::handle obj, std::shared_ptr<call_slot> slot) : slot_(std::move(slot)) {
    const char* required[] = {"launch", "poll", "now", "wait_until"};
    PyObject** fns[] = {&launch_, &poll_, &now_, &wait_};
    for (int i = 0; i < 4; ++i) {
      *fns[i] = optional_method(obj, required[i], *refs_);
      if (!*fns[i]) throw py::type_error("executor: " + type_name(obj) + " has no " + required[i] + "() method");
    }
    notify_ = optional_method(obj, "notify", *refs_);
    release_ = optional_method(obj, "release", *refs_);
    on_ready_ = optional_method(obj, "on_ready", *refs_);
    name_ = type_name(obj);
    refs_->objects.push_back(py::reinterpret_borrow<py::object>(obj));
  }

  void launch(const task_launch& l) {
    py_task t;
    t.id = l.id;
    t.request = l.request;
    if (slot_->state && l.request < slot_->state->requests.size()) {
      t.request_id = slot_->state->requests[l.request].spec.id;
      t.steps = slot_->state->requests[l.request].spec.steps;
    }
    t.kind = to_string(l.task.kind);
    t.step = l.task.step;
    t.group.assign(l.group.begin(), l.group.end());
    if (l.task.kind == task_kind::migrate) t.source.assign(l.source.begin(), l.source.end());
    if (l.shape) {
      t.model = l.shape->model;
      t.height = l.shape->height;
      t.width = l.shape->width;
      t.frames = l.shape->frames;
    }
    t.expected_duration_us = l.expected_duration;
    if (!l.batch.empty()) {
      if constexpr (!Batches) {
        throw std::logic_error("executor " + name_ + ": a batched launch reached an executor that does not run batches");
      }
      auto& track = batches_[l.id];
      t.batch.reserve(l.batch.size());
      for (const auto& m : l.batch) {
        py_batch_member b;
        b.request = m.request;
        b.kind = to_string(m.task.kind);
        b.step = m.task.step;
        if (slot_->state && m.request < slot_->state->requests.size()) {
          b.request_id = slot_->state->requests[m.request].spec.id;
          b.steps = slot_->state->requests[m.request].spec.steps;
        }
        t.batch.push_back(std::move(b));
        track.members.push_back(m.request);
      }
    }
    if (launch_request_.size() < l.id) launch_request_.resize(l.id, no_launch);
    launch_request_[l.id - 1] = l.batch.empty() ? l.request : batched_launch;
    auto& devices = flying_[l.id];
    devices.assign(l.group.begin(), l.group.end());
    if (l.task.kind == task_kind::migrate) devices.insert(devices.end(), l.source.begin(), l.source.end());  // its senders too
    last_launch_ = std::max(last_launch_, l.id);
    gil_acquire gil;
    call_python(launch_, std::move(t));
  }

  void poll(std::vector<executor_event>& out) {
    gil_acquire gil;
    py::object r = call_python(poll_);
    // None (a forgotten return) or a dict would read as "no events": the tasks would never end.
    if (PyUnicode_Check(r.ptr()) || PyBytes_Check(r.ptr()) || PyByteArray_Check(r.ptr()) || !PySequence_Check(r.ptr())) {
      throw py::type_error("executor " + name_ + ".poll() returned " + (r.is_none() ? std::string("None") : "a " + type_name(r)) +
                           "; expected a list of events (an empty list when there are none)");
    }
    const tick t = now_locked();
    for (py::handle ev : r) {
      if (!py::isinstance<py::tuple>(ev) || py::len(ev) < 2 || !py::isinstance<py::str>(ev[py::int_(0)])) bad_event(ev);
      const auto tup = py::reinterpret_borrow<py::tuple>(ev);
      const std::string kind = tup[0].cast<std::string>();
      std::array<long long, 3> ids{};
      for (std::size_t i = 1; i < tup.size() && i < ids.size(); ++i) {
        if (!PyLong_Check(tup[i].ptr())) bad_event(ev, "ids must be ints");
        int overflow = 0;
        ids[i] = PyLong_AsLongLongAndOverflow(tup[i].ptr(), &overflow);
        if (overflow != 0) bad_event(ev, "an id is out of range");
      }
      executor_event e;
      e.time = t;
      if (kind == "device_lost" && tup.size() == 2) {
        e.kind = executor_event_kind::device_lost;
        const auto d = ids[1];
        if (d < 0 || !slot_->state || static_cast<std::size_t>(d) >= slot_->state->topology.device_count()) bad_event(ev, "no such device");
        e.device = static_cast<device_id>(d);
        // The runtime frees nothing of a launch on a lost device until the launch is reported
        // failed (the Executor contract: those reports come first): it would wait for it forever.
        for (const auto& [id, devices] : flying_) {
          if (std::find(devices.begin(), devices.end(), e.device) == devices.end()) continue;
          bad_event(ev, ("launch " + std::to_string(id) + " on device " + std::to_string(d) +
                         " has not been reported; report each launch on a lost device as task_failed before the loss").c_str());
        }
      } else if ((kind == "task_done" || kind == "task_failed") && tup.size() == 3) {
        e.kind = kind == "task_done" ? executor_event_kind::task_done : executor_event_kind::task_failed;
        const auto id = ids[1];
        const auto h = ids[2];
        // The runtime drops an event that does not match the request's launch as stale (right for a
        // late report after a device loss), so an executor bug would leave the request running
        // forever: an id never launched, or a launch reported with another request, is an error.
        if (id <= 0 || static_cast<launch_id>(id) > last_launch_ || launch_request_[static_cast<std::size_t>(id) - 1] == no_launch) {
          bad_event(ev, "no such launch id (never launched)");
        }
        if (h < 0 || !slot_->state || static_cast<std::size_t>(h) >= slot_->state->requests.size()) bad_event(ev, "no such request");
        e.id = static_cast<launch_id>(id);
        e.request = static_cast<request_handle>(h);
        const request_handle ran = launch_request_[e.id - 1];
        if (ran != batched_launch && ran != e.request) {  // checked again for a repeated report too
          bad_event(ev, ("launch " + std::to_string(e.id) + " ran request " + std::to_string(ran) + ", not " + std::to_string(e.request)).c_str());
        }
        if constexpr (Batches) check_member(ev, e);
        if (ran != batched_launch || !batches_.contains(e.id)) flying_.erase(e.id);
      } else {
        bad_event(ev);
      }
      out.push_back(e);
    }
  }

  /// The runtime's reading of the clock (on the thread driving the scheduler).
  [[nodiscard]] tick now() const {
    gil_acquire gil;
    return now_locked();
  }
  /// Scheduler.now(), from any thread: not compared with the runtime's readings, which a thread
  /// switch between another thread's reading and its return could make look later.
  [[nodiscard]] tick clock() const {
    gil_acquire gil;
    return read_clock();
  }

  void wait_until(tick t) {
    gil_acquire gil;
    if (!notify_) {
      // Without notify() a submit from another thread could not wake the wait: poll the inbox as
      // the runtime does for executors that are not Notifiable.
      t = std::min(t, add_sat(now_locked(), scheduler<any_policy, python_executor, profile_cost_model>::inbox_poll_interval));
    }
    call_python(wait_, t);
  }
  /// Called by submit/cancel/open/close after the request or cancel was queued: raising would make a
  /// done operation look failed (a retry would submit twice). Reported as unraisable instead.
  void notify() {
    if (!notify_) return;
    gil_acquire gil;
    try {
      call_python(notify_);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable(("paraflex.Scheduler: executor " + name_ + ".notify()").c_str());
    }
  }
  void release(request_handle h) {
    if (!release_) return;
    gil_acquire gil;
    call_python(release_, h);
  }
  /// Optional on_ready(callback): the executor calls callback() (any thread) when an event is ready
  /// to poll, so that Scheduler.on_wakeup fires on completions too (SignallingExecutor). The Python
  /// on_ready() is called once, with a callback that forwards to the current C++ one: a later
  /// on_ready (~scheduler installing a no-op) swaps it here, without calling Python from a destructor,
  /// and returns once no call of the previous one is running (as thread_executor does; the caller
  /// must not hold the GIL then, since a running callback may be waiting for it).
  void on_ready(std::function<void()> f) {
    if (!on_ready_) return;
    auto box = ready_;
    auto next = std::make_shared<const std::function<void()>>(std::move(f));
    if (!ready_registered_) {
      {
        std::lock_guard lk(box->mu);
        box->f = std::move(next);
      }
      gil_acquire gil;
      call_python(on_ready_, py::cpp_function([box] { box->call(); }));
      ready_registered_ = true;
      return;
    }
    std::unique_lock lk(box->mu);
    box->f = std::move(next);
    // A callback that replaces the callback (it would wait for itself) returns at once.
    if (ready_box::depth == 0) box->idle.wait(lk, [&] { return box->calls == 0; });
  }

  python_executor(python_executor&&) noexcept = default;
  python_executor& operator=(python_executor&&) = delete;
  python_executor(const python_executor&) = delete;
  ~python_executor() {
    if (!ready_) return;  // moved from
    std::lock_guard lk(ready_->mu);
    ready_->f.reset();  // the Python object may keep the callback: it becomes a no-op
  }

 private:
  // A batched launch reports one event per member, all of the same kind (the batch contract).
  void check_member(py::handle ev, const executor_event& e) {
    auto it = batches_.find(e.id);
    if (it == batches_.end()) return;
    auto& b = it->second;
    auto m = std::find(b.members.begin(), b.members.end(), e.request);
    if (m == b.members.end()) bad_event(ev, "the request is not a member of that batched launch, or was reported twice");
    if (b.reported == 0) b.kind = e.kind;
    if (e.kind != b.kind) {
      throw py::value_error("executor " + name_ + ".poll() returned the event " + std::string(py::repr(ev)) + " after a " +
                            (b.kind == executor_event_kind::task_done ? "task_done" : "task_failed") +
                            " of another member of batched launch " + std::to_string(e.id) +
                            ": the members of a batch all succeed or all fail");
    }
    b.members.erase(m);
    ++b.reported;
    if (b.members.empty()) batches_.erase(it);
  }

  // The runtime's clock reads: a clock that goes backwards would leave it waiting for a time the
  // clock has already passed (the Executor concept asks for monotonic microseconds).
  tick now_locked() const {
    const tick t = read_clock();
    if (t < last_now_) {
      throw py::value_error("executor " + name_ + ".now() returned " + std::to_string(t) + " after " + std::to_string(last_now_) +
                            "; expected a monotonic clock (microseconds that never go backwards)");
    }
    last_now_ = t;
    return t;
  }
  tick read_clock() const {
    py::object r = call_python(now_);
    if (!PyLong_Check(r.ptr()) || PyBool_Check(r.ptr())) {
      throw py::type_error("executor " + name_ + ".now() returned " + std::string(py::repr(r)) + "; expected an int (microseconds)");
    }
    int overflow = 0;
    const long long t = PyLong_AsLongLongAndOverflow(r.ptr(), &overflow);
    // The runtime's times start at 0: a negative clock never reaches them (run() would spin).
    if (overflow != 0 || t < 0) {
      throw py::value_error("executor " + name_ + ".now() returned " + std::string(py::repr(r)) +
                            "; expected an int of microseconds in [0, 9223372036854775807]");
    }
    return static_cast<tick>(t);
  }
  [[noreturn]] void bad_event(py::handle ev, const char* why = nullptr) const {
    throw py::value_error("executor " + name_ + ".poll() returned the event " + std::string(py::repr(ev)) +
                          (why ? std::string(": ") + why : std::string()) +
                          "; expected ('task_done', launch_id, request), ('task_failed', launch_id, request) or ('device_lost', device)");
  }

  std::shared_ptr<call_slot> slot_;
  std::shared_ptr<py_refs> refs_ = std::make_shared<py_refs>();
  PyObject* launch_ = nullptr;
  PyObject* poll_ = nullptr;
  PyObject* now_ = nullptr;
  PyObject* wait_ = nullptr;
  PyObject* notify_ = nullptr;
  PyObject* release_ = nullptr;
  PyObject* on_ready_ = nullptr;
  std::string name_;
  mutable tick last_now_ = 0;  // the runtime's latest now_locked() (GIL held)
  /// The C++ side of the callback given to the Python on_ready(): the current function, and how many
  /// calls of it are running (on_ready waits for none).
  struct ready_box {
    std::mutex mu;
    std::condition_variable idle;
    std::shared_ptr<const std::function<void()>> f;
    std::size_t calls = 0;
    static inline thread_local int depth = 0;  // callbacks running on this thread
    void call() {
      std::shared_ptr<const std::function<void()>> g;
      {
        std::lock_guard lk(mu);
        if (!f || !*f) return;
        g = f;
        ++calls;
      }
      struct done {
        ready_box& b;
        ~done() {
          --depth;
          std::lock_guard lk(b.mu);
          if (--b.calls == 0) b.idle.notify_all();
        }
      } d{*this};
      ++depth;
      (*g)();
    }
  };
  std::shared_ptr<ready_box> ready_ = std::make_shared<ready_box>();
  bool ready_registered_ = false;
  struct batch_track {
    std::vector<request_handle> members;  // not reported yet
    std::size_t reported = 0;
    executor_event_kind kind = executor_event_kind::task_done;
  };
  std::map<launch_id, batch_track> batches_;  // batched launches in flight (scheduler thread only)
  // By launch id - 1: the request a launch ran (batched_launch for a batch; no_launch: an id never
  // issued). Kept for the whole run, so that a report repeated with another request is caught too.
  static constexpr request_handle no_launch = std::numeric_limits<request_handle>::max();
  static constexpr request_handle batched_launch = no_launch - 1;
  std::vector<request_handle> launch_request_;
  // The devices of each launch not reported yet (every member, for a batch); scheduler thread only.
  std::map<launch_id, std::vector<device_id>> flying_;
  launch_id last_launch_ = 0;  // the runtime numbers launches 1, 2, ...: above this, never issued
};
static_assert(BlockingExecutor<python_executor<false>> && NotifiableExecutor<python_executor<false>> &&
              ReleasingExecutor<python_executor<false>> && SignallingExecutor<python_executor<false>> &&
              !VirtualTimeExecutor<python_executor<false>> && !BatchingExecutor<python_executor<false>>);
static_assert(BlockingExecutor<python_executor<true>> && BatchingExecutor<python_executor<true>>);

// ---- Executor recipes ------------------------------------------------------------------------

struct simulated_recipe {
  std::uint64_t seed = 0;
  simulation_faults faults;
};
struct thread_recipe {
  cpu_dit_body body;
};

// ---- The type-erased scheduler ---------------------------------------------------------------

request_status status_of(const request_record& r) {
  request_status st;
  st.id = r.spec.id;
  switch (r.phase) {
    case request_phase::waiting: st.state = request_state::waiting; break;
    case request_phase::running: st.state = request_state::running; break;
    case request_phase::completed: st.state = request_state::completed; break;
    case request_phase::dropped: st.state = request_state::dropped; break;
  }
  st.reason = r.phase == request_phase::dropped ? r.drop_reason : std::string();
  st.arrival = r.spec.arrival;
  st.first_start = r.first_start;
  st.finish = r.finish;
  st.degree = r.phase == request_phase::running && !r.run_group.empty() ? static_cast<int>(r.run_group.size()) : r.last_degree;
  st.migrations = r.migrations;
  st.steps_done = r.spec.steps - r.steps_remaining();
  st.steps_total = r.spec.steps;
  return st;
}

class scheduler_base {
 public:
  virtual ~scheduler_base() = default;
  [[nodiscard]] virtual request_client& client() = 0;
  virtual void run() = 0;
  virtual tick turn() = 0;
  virtual tick turn_to(tick t) = 0;
  [[nodiscard]] virtual tick next_wakeup() const = 0;
  [[nodiscard]] virtual bool finished() const = 0;
  [[nodiscard]] virtual tick executor_now() const = 0;
  [[nodiscard]] virtual tick current_time() const = 0;  ///< the scheduler's now (the last turn's time)
  [[nodiscard]] virtual bool virtual_time() const noexcept = 0;
  [[nodiscard]] virtual bool runs_batches() const noexcept = 0;
  virtual void on_wakeup(std::function<void()> f) = 0;
  virtual void on_request_end(std::function<void(const request_record&)> f) = 0;
  [[nodiscard]] virtual const scheduler_state& state() const noexcept = 0;
  [[nodiscard]] virtual run_metrics metrics(const std::string& label) const = 0;
};

template <class E>
class scheduler_impl final : public scheduler_base {
 public:
  template <class... A>
  scheduler_impl(cluster topology, any_policy policy, profile_cost_model cost, scheduler_options options, A&&... executor_args)
      : cost_(std::move(cost)), policy_(std::move(policy)), executor_(std::forward<A>(executor_args)...),
        sched_(std::move(topology), policy_, executor_, cost_, options) {}

  request_client& client() override { return sched_.client(); }
  void run() override { sched_.run(); }
  tick turn() override {
    if constexpr (VirtualTimeExecutor<E>) throw std::logic_error("Scheduler.turn(): the simulated executor runs on virtual time; use turn_to(t) or run()");
    else return sched_.turn();
  }
  tick turn_to(tick t) override {
    if constexpr (VirtualTimeExecutor<E>) return sched_.turn_to(t);
    else {
      (void)t;
      throw std::logic_error("Scheduler.turn_to(): only the simulated executor runs on virtual time; use turn()");
    }
  }
  tick next_wakeup() const override { return sched_.next_wakeup(); }
  bool finished() const override { return sched_.finished(); }
  tick executor_now() const override {
    if constexpr (requires { executor_.clock(); }) return executor_.clock();  // a Python executor, from any thread
    else return static_cast<tick>(executor_.now());
  }
  tick current_time() const override { return sched_.state().now; }
  bool virtual_time() const noexcept override { return VirtualTimeExecutor<E>; }
  bool runs_batches() const noexcept override { return BatchingExecutor<E>; }
  void on_wakeup(std::function<void()> f) override { sched_.on_wakeup(std::move(f)); }
  void on_request_end(std::function<void(const request_record&)> f) override { sched_.on_request_end(std::move(f)); }
  const scheduler_state& state() const noexcept override { return sched_.state(); }
  run_metrics metrics(const std::string& label) const override {
    run_metrics m = compute_metrics(label, sched_.state().requests, sched_.state().topology.gpus, sched_.gpu_busy_seconds());
    set_decision_timings(m, sched_.stats().host_us, 0.0);
    return m;
  }

 private:
  profile_cost_model cost_;
  any_policy policy_;
  E executor_;
  scheduler<any_policy, E, profile_cost_model> sched_;  // last: refers to the members above
};

// ---- paraflex.Scheduler ----------------------------------------------------------------------

class py_scheduler {
 public:
  py_scheduler(py::handle policy, py::handle executor, typed<int> gpus_arg, typed<std::optional<int>> gpus_per_node, typed<std::optional<std::string>> gpu,
               py::handle profile, typed<bool> strict_arg, typed<std::uint32_t> max_failures_arg, typed<int> max_batch_arg,
               typed<std::optional<int>> max_degree_arg, typed<double> decision_gap_arg) {
    const char* fn = "Scheduler";
    const bool strict = arg(strict_arg, fn, "strict");
    const auto max_failures = arg(max_failures_arg, fn, "max_failures");
    const int max_batch = arg(max_batch_arg, fn, "max_batch");
    if (max_batch < 1 || max_batch > 64) throw py::value_error(fmt::format("Scheduler: max_batch must be in [1, 64] (got {})", max_batch));
    const auto size = check_cluster(gpus_arg.value, gpus_per_node.value, fn);
    const int gpus = size.gpus;
    const std::optional<int> max_degree = arg(max_degree_arg, fn, "max_degree");  // None: no cap
    if (max_degree && (*max_degree < 1 || *max_degree > max_cluster_gpus)) {
      throw py::value_error(fmt::format("Scheduler: max_degree must be in [1, {}] (got {})", max_cluster_gpus, *max_degree));
    }
    const auto gpu_given = arg(gpu, fn, "gpu");
    if (gpu_given && gpu_given->empty()) throw py::value_error("--gpu: empty value");  // None asks for the default
    auto inputs = load_cost(profile, gpu_given.value_or(""));
    inputs.cost.set_max_degree(max_degree.value_or(0));  // before the scheduler prices its first shape
    gpu_ = inputs.gpu;
    models_ = inputs.table.models_on(gpu_);
    check_cost_ = std::make_unique<profile_cost_model>(inputs.cost);
    ctx_ = run_context::make();
    any_policy p = make_policy(policy, gpus, ctx_, label_);
    cluster topology{gpus, size.per_node, gpu_};
    scheduler_options options;
    options.strict = strict;
    options.max_failures = max_failures == 0 ? 1 : max_failures;
    options.max_batch = max_batch;
    options.min_decision_gap = paraflex_bench::decision_gap_ticks(arg(decision_gap_arg, fn, "decision_gap_ms"));
    if (executor.is_none() || (py::isinstance<py::str>(executor) && executor.cast<std::string>() == "simulated")) {
      impl_ = std::make_unique<scheduler_impl<simulated_executor>>(topology, std::move(p), std::move(inputs.cost), options, 0, simulation_faults{});
    } else if (py::isinstance<py::str>(executor) && executor.cast<std::string>() == "threads") {
      impl_ = std::make_unique<scheduler_impl<thread_executor>>(topology, std::move(p), std::move(inputs.cost), options,
                                                                static_cast<std::size_t>(gpus), task_body{});
    } else if (py::isinstance<simulated_recipe>(executor)) {
      const auto& r = executor.cast<const simulated_recipe&>();
      for (const auto& f : r.faults.device_failures) {
        if (static_cast<int>(f.device) >= gpus) throw py::value_error(fmt::format("SimulatedExecutor: device {} of a failure is not in [0, {}]", f.device, gpus - 1));
      }
      impl_ = std::make_unique<scheduler_impl<simulated_executor>>(topology, std::move(p), std::move(inputs.cost), options, r.seed, r.faults);
    } else if (py::isinstance<thread_recipe>(executor)) {
      const auto& r = executor.cast<const thread_recipe&>();
      impl_ = std::make_unique<scheduler_impl<thread_executor>>(topology, std::move(p), std::move(inputs.cost), options,
                                                                static_cast<std::size_t>(gpus), task_body(r.body));
    } else if (py::isinstance<py::str>(executor)) {
      throw py::value_error("executor '" + executor.cast<std::string>() + "' is not one of: simulated, threads (or pass an executor object)");
    } else {
      if (python_runs_batches(executor)) {
        python_executor<true> e(executor, ctx_->slot);
        impl_ = std::make_unique<scheduler_impl<python_executor<true>>>(topology, std::move(p), std::move(inputs.cost), options, std::move(e));
      } else {
        python_executor<false> e(executor, ctx_->slot);
        impl_ = std::make_unique<scheduler_impl<python_executor<false>>>(topology, std::move(p), std::move(inputs.cost), options, std::move(e));
      }
    }
    ctx_->slot->state = &impl_->state();
    gpus_ = gpus;
  }

  ~py_scheduler() {
    // GIL held (Python deallocation). run() on another thread keeps this object alive through its
    // bound method, so nothing drives the scheduler now. Executor threads may be inside on_wakeup
    // waiting for the GIL, and ~scheduler waits for them: wait without it. Python references the
    // parts hold are in py_refs, which takes the GIL back to drop them.
    alive_->store(false);
    if (wakeup_running_for == alive_.get()) {
      // Dropped inside its own on_wakeup, on one of its executor's threads: ~scheduler would wait
      // for this very callback to return and join this thread. Another thread finishes the job
      // once the callback has returned.
      std::thread([impl = std::move(impl_)]() mutable { impl.reset(); }).detach();
      return;
    }
    gil_release nogil;
    impl_.reset();
  }

  std::string submit(typed<std::string> model, typed<int> height, typed<int> width, typed<int> steps_arg, typed<int> frames,
                     typed<std::optional<double>> slo_s, typed<int> priority, typed<std::string> class_label, typed<std::string> request_id,
                     typed<double> arrival_arg) {
    check_usable();
    const char* fn = "Scheduler.submit";
    request_spec spec;
    spec.id = arg(request_id, fn, "request_id");
    no_nul(spec.id, "request_id");
    spec.shape = request_shape{arg(model, fn, "model"), arg(height, fn, "height"), arg(width, fn, "width"), arg(frames, fn, "frames")};
    const int steps = arg(steps_arg, fn, "steps");
    spec.steps = steps;
    spec.priority = arg(priority, fn, "priority");
    spec.class_label = arg(class_label, fn, "class_label");
    no_nul(spec.class_label, "class_label");
    const double arrival_s = arg(arrival_arg, fn, "arrival_s");
    const auto at = to_ticks(arrival_s);
    if (!at || *at < 0) throw py::value_error(fmt::format("Scheduler.submit: arrival_s must be a finite number >= 0 (got {})", arrival_s));
    spec.arrival = *at;
    if (const auto slo = arg(slo_s, fn, "slo_s")) {
      const double s = *slo;
      const auto t = to_ticks(s);
      if (!(s > 0) || !t || *t < 1) throw py::value_error(fmt::format("Scheduler.submit: slo_s must be > 0 and at least 1 microsecond (got {})", s));
      spec.slo = *t;
    }
    if (steps > max_steps) throw py::value_error(fmt::format("Scheduler.submit: {} steps is more than the {} a trajectory may have", steps, max_steps));
    if (auto why = check_request_spec(spec); why.empty()) check_priceable(spec.shape);
    return impl_->client().submit(std::move(spec));  // submit_error (ValueError) for a duplicate id or a bad spec
  }

  std::string cancel(typed<std::string> id_arg, typed<std::string> reason_arg) {
    check_usable();
    const auto id = arg(id_arg, "Scheduler.cancel", "id");
    auto reason = arg(reason_arg, "Scheduler.cancel", "reason");
    check_reason(reason, "Scheduler.cancel");
    switch (impl_->client().cancel(id, std::move(reason))) {
      case cancel_outcome::accepted: return "accepted";
      case cancel_outcome::already_ended: return "already_ended";
      case cancel_outcome::unknown_id: return "unknown_id";
    }
    return "?";
  }
  std::optional<request_status> status(const std::string& id) const { return impl_->client().status(id); }
  py::dict counters() const {
    const auto c = impl_->client().counters();
    py::dict d;
    d["submitted"] = c.submitted;
    d["completed"] = c.completed;
    d["dropped"] = c.dropped;
    d["waiting"] = c.waiting;
    d["running"] = c.running;
    d["busy_devices"] = c.busy_devices;
    d["devices"] = c.devices;
    return d;
  }
  void open() { impl_->client().open(); }
  void close() { impl_->client().close(); }
  bool is_open() const { return impl_->client().is_open(); }

  void run() {
    drive("Scheduler.run", [&] { impl_->run(); });
  }
  tick turn() {
    tick t = never;
    drive("Scheduler.turn", [&] { t = impl_->turn(); }, [&] {
      if (impl_->virtual_time()) throw std::logic_error("Scheduler.turn(): the simulated executor runs on virtual time; use turn_to(t) or run()");
    });
    return t;
  }
  tick turn_to(typed<tick> to_arg) {
    const tick to = arg(to_arg, "Scheduler.turn_to", "t");
    tick t = never;
    drive("Scheduler.turn_to", [&] { t = impl_->turn_to(to); }, [&] {
      if (!impl_->virtual_time()) throw std::logic_error("Scheduler.turn_to(): only the simulated executor runs on virtual time; use turn()");
      // The runtime's own checks would throw inside the turn, which stops the scheduler for good.
      if (to < impl_->current_time()) {
        throw py::value_error(fmt::format("Scheduler.turn_to: t {} is before now() = {} (time cannot go backwards)", to, impl_->current_time()));
      }
      if (const tick next = impl_->next_wakeup(); to > next) {
        throw py::value_error(fmt::format("Scheduler.turn_to: t {} skips the event due at next_wakeup() = {}", to, next));
      }
    });
    return t;
  }
  tick next_wakeup() const {
    check_idle("next_wakeup");
    return impl_->next_wakeup();
  }
  bool finished() const {
    check_idle("finished");
    return impl_->finished();
  }
  tick now() const {
    if (impl_->virtual_time()) {
      check_idle("now");
      return impl_->executor_now();
    }
    gil_release nogil;  // a Python executor takes it back for its now()
    return impl_->executor_now();
  }

  void on_request_end(py::object f) {
    check_idle("on_request_end");
    if (f.is_none()) {
      impl_->on_request_end({});
      return;
    }
    if (!PyCallable_Check(f.ptr())) throw py::type_error("Scheduler.on_request_end: the callback must be callable");
    auto refs = std::make_shared<py_refs>();
    refs->objects.push_back(f);
    impl_->on_request_end([refs](const request_record& r) {
      request_status st = status_of(r);
      gil_acquire gil;
      call_python(refs->objects[0].ptr(), std::move(st));
    });
  }

  void on_wakeup(py::object f) {
    if (!PyCallable_Check(f.ptr())) throw py::type_error("Scheduler.on_wakeup: the callback must be callable");
    check_idle("on_wakeup");
    auto refs = std::make_shared<py_refs>();
    refs->objects.push_back(f);
    // Called from any thread (a submit, a cancel); it cannot raise into anyone: report and go on.
    // Once the Scheduler is being destroyed, or the interpreter is finalizing (a thread taking the
    // GIL then is ended by Python), it no longer calls Python.
    impl_->on_wakeup([refs, alive = alive_] {
      if (!alive->load() || interpreter_finalizing()) return;
      gil_acquire gil;
      const void* outer = std::exchange(wakeup_running_for, alive.get());  // for ~py_scheduler
      try {
        call_python(refs->objects[0].ptr());
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("paraflex.Scheduler on_wakeup callback");
      }
      wakeup_running_for = outer;
    });
  }

  py::dict metrics(typed<std::optional<std::string>> label) const {
    check_idle("metrics");
    paraflex_bench::report report;
    report.topology = impl_->state().topology;
    report.requests = impl_->state().requests.size();
    report.results.push_back({impl_->metrics(arg(label, "Scheduler.metrics", "label").value_or(label_)), std::nullopt});
    py::object doc = py::module_::import("json").attr("loads")(paraflex_bench::to_json(report));
    py::object entry = doc["results"][py::int_(0)];
    return entry.cast<py::dict>();
  }

  [[nodiscard]] const std::string& policy_name() const noexcept { return label_; }
  [[nodiscard]] const std::string& gpu() const noexcept { return gpu_; }
  [[nodiscard]] int gpus() const noexcept { return gpus_; }
  [[nodiscard]] bool virtual_time() const noexcept { return impl_->virtual_time(); }
  [[nodiscard]] bool runs_batches() const noexcept { return impl_->runs_batches(); }
  [[nodiscard]] std::optional<std::string> error() const {
    std::lock_guard lk(mu_);
    return failure_;
  }

 private:
  // One driver at a time, the GIL released, and any exception marks the scheduler as stopped.
  // `check` runs first, as the driver with the GIL held: what it throws (a bad argument) leaves the
  // scheduler usable.
  struct no_check {
    void operator()() const noexcept {}
  };
  template <class F, class Check = no_check>
  void drive(const char* what, F&& f, Check check = {}) {
    check_usable();
    const nested_run nest(what);
    if (driving_.exchange(true)) throw std::runtime_error("paraflex.Scheduler: run()/turn() is already in progress (a callback may not drive the scheduler)");
    struct reset {
      std::atomic<bool>& flag;
      ~reset() { flag.store(false); }
    } r{driving_};
    check();
    try {
      gil_release nogil;
      f();
    } catch (py::error_already_set& e) {
      fail(e.what());
      throw;
    } catch (const std::exception& e) {
      fail(e.what());
      throw;
    }
  }
  void fail(const std::string& what) {
    std::lock_guard lk(mu_);
    if (!failure_) failure_ = what;
  }
  void check_usable() const {
    std::lock_guard lk(mu_);
    if (failure_) throw std::runtime_error("paraflex.Scheduler stopped after an exception in a turn: " + *failure_);
  }
  void check_idle(const char* what) const {
    if (driving_.load()) throw std::runtime_error(std::string("paraflex.Scheduler.") + what + ": run()/turn() is in progress");
  }
  // NUL is refused as in a workload file or row: C string APIs (and the CSV reader) end text there.
  static void no_nul(const std::string& s, const char* name) {
    if (s.find('\0') != std::string::npos) throw py::value_error(fmt::format("Scheduler.submit: {} must not contain NUL characters", name));
  }
  // A shape the cost model cannot price is refused at submit, not when the scheduler thread meets it.
  void check_priceable(const request_shape& s) {
    std::lock_guard lk(mu_);
    if (priced_.contains(s)) return;
    if (std::find(models_.begin(), models_.end(), s.model) == models_.end()) {
      throw py::value_error(fmt::format("Scheduler.submit: unknown model '{}' (known on {}: {})", s.model, gpu_, fmt::join(models_, ", ")));
    }
    try {
      (void)make_shape_costs(*check_cost_, s, gpus_);
    } catch (const std::exception& e) {
      throw py::value_error(fmt::format("Scheduler.submit: {} {}x{}x{} on {}: {}", s.model, s.height, s.width, s.frames, gpu_, e.what()));
    }
    priced_.insert(s);
  }

  std::shared_ptr<run_context> ctx_;
  std::unique_ptr<profile_cost_model> check_cost_;
  std::unique_ptr<scheduler_base> impl_;
  std::string label_, gpu_;
  std::vector<std::string> models_;  // the profile's models on gpu_
  int gpus_ = 0;
  std::atomic<bool> driving_{false};
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);  // false once destruction began
  // The Scheduler (its alive_) whose on_wakeup callback runs on this thread now, if any.
  static inline thread_local const void* wakeup_running_for = nullptr;
  mutable std::mutex mu_;
  std::optional<std::string> failure_;
  std::set<request_shape> priced_;
};

}  // namespace

void bind_scheduler(py::module_& m) {
  py::class_<py_batch_member>(m, "BatchMember", "One member of a batched launch (paraflex::batch_member); unpacks as (request, kind, step).")
      .def_readonly("request", &py_batch_member::request, "request handle: report one event per member with it")
      .def_readonly("request_id", &py_batch_member::request_id)
      .def_readonly("kind", &py_batch_member::kind, "'step' or 'encode' (the same for every member)")
      .def_readonly("step", &py_batch_member::step, "this member's own step index ('step'), else -1")
      .def_readonly("steps", &py_batch_member::steps, "denoising steps of the member's whole request")
      .def("__len__", [](const py_batch_member&) { return 3; })
      .def("__getitem__", [](const py_batch_member& b, typed<long long> index) -> py::object {
        auto i = try_arg<long long>(index.value, "BatchMember.__getitem__", "index").value_or(3);  // beyond 64 bits: out of range
        if (i < 0) i += 3;
        switch (i) {
          case 0: return py::int_(b.request);
          case 1: return py::str(b.kind);
          case 2: return py::int_(b.step);
          default: throw py::index_error("BatchMember index out of range (it unpacks as (request, kind, step))");
        }
      })
      .def("__iter__", [](const py_batch_member& b) { return py::iter(py::make_tuple(b.request, b.kind, b.step)); })
      .def("__eq__", [](const py_batch_member& b, py::handle o) -> bool {
        if (py::isinstance<py_batch_member>(o)) {
          const auto& c = o.cast<const py_batch_member&>();
          return b.request == c.request && b.kind == c.kind && b.step == c.step && b.request_id == c.request_id && b.steps == c.steps;
        }
        return py::make_tuple(b.request, b.kind, b.step).equal(o);
      })
      .def("__repr__", [](const py_batch_member& b) {
        return fmt::format("BatchMember(request={}, request_id='{}', kind='{}', step={}, steps={})", b.request, b.request_id, b.kind, b.step, b.steps);
      });

  py::class_<py_task>(m, "Task", "One launch for an executor (paraflex::task_launch).")
      .def_readonly("id", &py_task::id, "launch id: report it back from poll()")
      .def_readonly("request", &py_task::request, "request handle: report it back from poll()")
      .def_readonly("request_id", &py_task::request_id)
      .def_readonly("kind", &py_task::kind, "'encode', 'step', 'decode' or 'migrate'")
      .def_readonly("step", &py_task::step, "step index for 'step', else -1")
      .def_readonly("group", &py_task::group, "devices that run the task (rank i = group[i]); for 'migrate' the destination")
      .def_readonly("source", &py_task::source,
                    "'migrate' only: the devices holding the state, as the request's previous group (the order of the slices is "
                    "the layout the executor recorded, which a migration plan may have reordered)")
      .def_readonly("steps", &py_task::steps, "denoising steps of the whole request")
      .def_readonly("model", &py_task::model)
      .def_readonly("height", &py_task::height)
      .def_readonly("width", &py_task::width)
      .def_readonly("frames", &py_task::frames)
      .def_readonly("expected_duration_us", &py_task::expected_duration_us, "the cost model's figure (a batched step: the whole batch's)")
      .def_readonly("batch", &py_task::batch,
                    "a batched launch (executors with runs_batches = True): every member, as BatchMember objects that unpack as\n"
                    "(request, kind, step); request/request_id/kind/step/steps above are then the first member's. Empty otherwise.")
      .def("__repr__", [](const py_task& t) {
        std::string members;
        for (const auto& b : t.batch) members += fmt::format("{}({}, '{}', {})", members.empty() ? "" : ", ", b.request, b.kind, b.step);
        return fmt::format("Task(id={}, request={}, request_id='{}', kind='{}', step={}, group={}, source={}, expected_duration_us={}{})", t.id,
                           t.request, t.request_id, t.kind, t.step, fmt::join(t.group, ","), fmt::join(t.source, ","), t.expected_duration_us,
                           t.batch.empty() ? std::string() : ", batch=[" + members + "]");
      });

  py::class_<request_status>(m, "RequestStatus", "A snapshot of one request (paraflex::request_status).")
      .def_readonly("id", &request_status::id)
      .def_property_readonly("state", [](const request_status& s) { return to_string(s.state); }, "'waiting', 'running', 'completed' or 'dropped'")
      .def_readonly("reason", &request_status::reason, "dropped: why; else empty")
      .def_readonly("arrival", &request_status::arrival)
      .def_readonly("first_start", &request_status::first_start)
      .def_readonly("finish", &request_status::finish)
      .def_readonly("degree", &request_status::degree)
      .def_readonly("migrations", &request_status::migrations)
      .def_readonly("steps_done", &request_status::steps_done)
      .def_readonly("steps_total", &request_status::steps_total)
      .def_readonly("cancel_requested", &request_status::cancel_requested)
      .def_property_readonly("ended", &request_status::ended)
      .def_property_readonly("latency_s", &request_status::latency_s)
      .def("__repr__", [](const request_status& s) {
        return fmt::format("RequestStatus(id='{}', state='{}'{}{})", s.id, to_string(s.state), s.reason.empty() ? "" : ", reason='" + s.reason + "'",
                           s.latency_s() ? fmt::format(", latency_s={:.6f}", *s.latency_s()) : "");
      });

  py::class_<simulated_recipe>(m, "SimulatedExecutor", "The discrete-event executor on a virtual clock, with optional faults.")
      .def(py::init([](typed<std::uint64_t> seed, typed<double> jitter, typed<double> fail_rate, typed<std::vector<std::string>> fail_devices,
                       typed<std::vector<std::string>> stragglers, typed<int> gpus) {
             const char* fn = "SimulatedExecutor";
             return simulated_recipe{seed_arg(seed.value, fn), make_faults(arg(jitter, fn, "jitter"), arg(fail_rate, fn, "fail_rate"),
                                                                           arg(fail_devices, fn, "fail_devices"), arg(stragglers, fn, "stragglers"),
                                                                           arg(gpus, fn, "gpus"))};
           }),
           py::arg("seed") = 0, py::arg("jitter") = 0.0, py::arg("fail_rate") = 0.0, py::arg("fail_devices") = std::vector<std::string>{},
           py::arg("stragglers") = std::vector<std::string>{}, py::arg("gpus") = 1 << 16);
  py::class_<thread_recipe>(m, "ThreadExecutor", "One CPU worker thread per device running a DiT stand-in (paraflex::thread_executor).")
      .def(py::init([](typed<double> time_scale_arg, typed<std::size_t> channels_arg, typed<int> work_arg, typed<bool> verify_arg) {
             const char* fn = "ThreadExecutor";
             const double time_scale = arg(time_scale_arg, fn, "time_scale");
             const auto channels = arg(channels_arg, fn, "channels");
             const int work = arg(work_arg, fn, "work");
             const bool verify = arg(verify_arg, fn, "verify");
             if (!(time_scale >= 0 && time_scale <= cpu_dit_body::max_time_scale)) {
               throw py::value_error(fmt::format("ThreadExecutor: time_scale must be in [0, {}] (got {})", cpu_dit_body::max_time_scale, time_scale));
             }
             if (channels < 1 || channels > cpu_dit_body::max_channels) {
               throw py::value_error(fmt::format("ThreadExecutor: channels must be in [1, {}] (got {})", cpu_dit_body::max_channels, channels));
             }
             if (work < 0) throw py::value_error("ThreadExecutor: work must be >= 0");
             const cpu_dit_body body{time_scale, channels, work, verify};
             body.check();  // the class's own rules (std::invalid_argument: ValueError)
             return thread_recipe{body};
           }),
           py::arg("time_scale") = 1.0, py::arg("channels") = 64, py::arg("work") = 4, py::arg("verify") = true);

  py::class_<py_scheduler>(m, "Scheduler", R"doc(The paraflex runtime embedded in a Python program (paraflex::scheduler + request_client).

policy    a built-in spec, a ComposedPolicy, or an object with decide(view, out)
executor  "simulated" (virtual time), "threads" (CPU workers, real time), a SimulatedExecutor /
          ThreadExecutor, or a Python object with launch(task), poll(), now(), wait_until(t)
          [, notify()] [, release(request)] [, on_ready(callback)] [, runs_batches = True: it runs
          batched steps, Task.batch, reporting one event per member]
max_batch the largest batched step the runtime accepts (scheduler_options::max_batch)
max_degree no request on more devices than this (profile_cost_model::set_max_degree; None: no cap)
decision_gap_ms the policy is called at most once per this many milliseconds; what happens in between is
          decided together (scheduler_options::min_decision_gap; 0, the default: at every event)
Drive it with run() (blocks until every request ended and the client is closed; call it from a
background thread to serve), with turn() / next_wakeup() / on_wakeup() from an event loop (real
time), or with turn_to(t) (simulated). submit/cancel/status/counters work from any thread.)doc")
      .def(py::init<py::handle, py::handle, typed<int>, typed<std::optional<int>>, typed<std::optional<std::string>>, py::handle, typed<bool>,
                    typed<std::uint32_t>, typed<int>, typed<std::optional<int>>, typed<double>>(), py::arg("policy") = "slo-aware",
           py::arg("executor") = "simulated", py::kw_only(), py::arg("gpus") = 8, py::arg("gpus_per_node") = py::none(), py::arg("gpu") = py::none(),
           py::arg("profile") = py::none(), py::arg("strict") = true, py::arg("max_failures") = 8, py::arg("max_batch") = 8,
           py::arg("max_degree") = py::none(), py::arg("decision_gap_ms") = 0.0)
      .def("submit", &py_scheduler::submit, py::arg("model"), py::arg("height"), py::arg("width"), py::arg("steps"), py::kw_only(),
           py::arg("frames") = 1, py::arg("slo_s") = py::none(), py::arg("priority") = 0, py::arg("class_label") = "", py::arg("request_id") = "",
           py::arg("arrival_s") = 0.0,
           "Queues a request (any thread); returns its id (generated when request_id is empty). arrival_s is in the scheduler's clock\n"
           "(0: as soon as it is picked up). ValueError for a duplicate id, a bad spec, or a shape the profile cannot price.")
      .def("cancel", &py_scheduler::cancel, py::arg("id"), py::arg("reason") = "cancelled",
           "'accepted' (waiting: ends at the next turn; running: after its task), 'already_ended' or 'unknown_id'. Any thread.")
      .def("status", [](const py_scheduler& s, typed<std::string> id) { return s.status(arg(id, "Scheduler.status", "id")); }, py::arg("id"),
           "RequestStatus, or None for an unknown id. Any thread.")
      .def("state", [](const py_scheduler& s, typed<std::string> id) -> std::optional<std::string> {
        const auto st = s.status(arg(id, "Scheduler.state", "id"));
        if (!st) return std::nullopt;
        return std::string(to_string(st->state));
      }, py::arg("id"), "status(id).state: 'waiting', 'running', 'completed' or 'dropped'; None for an unknown id. Any thread.")
      .def("counters", &py_scheduler::counters, "submitted, completed, dropped, waiting, running, busy_devices, devices. Any thread.")
      .def("open", &py_scheduler::open, "While open, run() keeps serving when everything has ended (real-time executors: on virtual time nothing could arrive, so run() returns).")
      .def("close", &py_scheduler::close, "run() returns once everything submitted so far has ended.")
      .def("is_open", &py_scheduler::is_open)
      .def("run", &py_scheduler::run, "Serves until every request has ended and the client is closed (the GIL is released); on the simulated executor, until every request has ended.")
      .def("turn", &py_scheduler::turn, "Real-time executors: processes everything due now; returns next_wakeup() (NEVER: none).")
      .def("turn_to", &py_scheduler::turn_to, py::arg("t"), "Simulated executor: advances to t (<= next_wakeup()) and processes it.")
      .def("next_wakeup", &py_scheduler::next_wakeup)
      .def("finished", &py_scheduler::finished, "Every request ended, nothing queued, client closed.")
      .def("now", &py_scheduler::now, "The executor's clock in microseconds.")
      .def("on_request_end", &py_scheduler::on_request_end, py::arg("callback"),
           "callback(RequestStatus) once per request as it ends, on the thread that drives the scheduler.")
      .def("on_wakeup", &py_scheduler::on_wakeup, py::arg("callback"),
           "callback() from any thread when the loop should call turn() soon (a submit or cancel); must not call into the scheduler.")
      .def("metrics", &py_scheduler::metrics, py::arg("label") = py::none(), "The run's figures so far, as simulate() returns them.")
      .def_property_readonly("policy_name", &py_scheduler::policy_name)
      .def_property_readonly("gpu", &py_scheduler::gpu)
      .def_property_readonly("gpus", &py_scheduler::gpus)
      .def_property_readonly("virtual_time", &py_scheduler::virtual_time)
      .def_property_readonly("runs_batches", &py_scheduler::runs_batches,
                             "Whether the executor runs batched steps (the simulated one; a Python object with runs_batches = True).")
      .def_property_readonly("error", &py_scheduler::error, "The exception that stopped the scheduler, or None.");
}

}  // namespace paraflex_python
