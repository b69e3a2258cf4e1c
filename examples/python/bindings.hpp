// examples/python/bindings.hpp - what the translation units of the `paraflex._core` module share.
//
// GIL rule: C++ code of a run (scheduler, built-in policies, executors) runs with the GIL released;
// every call into Python (a policy or part written in Python, a Python executor) takes it for that
// call only (gil_acquire below), and holds no Python reference after it returns except in
// objects that are destroyed while the GIL is held.
#pragma once

#include <unistd.h>  // pause()

#include <cxxabi.h>  // abi::__forced_unwind

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

#include "paraflex/policy/any_policy.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex_python {

namespace py = pybind11;

/// True once the interpreter has begun to shut down (after atexit handlers ran).
[[nodiscard]] inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

/// The ident of Python's main thread (threading.main_thread()), set when the module is imported:
/// the thread that finalizes the interpreter.
inline unsigned long main_thread_ident = 0;

/// While the interpreter finalizes, Python ends any other thread that takes the GIL (pthread_exit,
/// a forced unwind). Through a C++ frame that unwinding would abort the process (a destructor is
/// noexcept) or drop Python references without the GIL: a daemon thread still in a run when the
/// program exits. Such a thread parks instead, for the process exit to end it, as it ends a daemon
/// thread running Python code. Parking is checked before taking the GIL and caught where Python
/// may end the thread (the GIL guards below, call_python).
[[noreturn]] inline void park_forever() noexcept {
  for (;;) pause();
}
inline void park_if_finalizing() noexcept {
  if (interpreter_finalizing() && PyThread_get_thread_ident() != main_thread_ident) park_forever();
}

/// py::gil_scoped_acquire, parking at shutdown (park_forever). Every call into Python from a run
/// takes the GIL through this.
class gil_acquire {
 public:
  gil_acquire() {
    park_if_finalizing();
    try {
      gil_.emplace();
    } catch (abi::__forced_unwind&) {
      park_forever();  // never rethrown: the thread goes no further
    }
  }
  gil_acquire(const gil_acquire&) = delete;
  gil_acquire& operator=(const gil_acquire&) = delete;

 private:
  std::optional<py::gil_scoped_acquire> gil_;
};

/// py::gil_scoped_release, parking at shutdown when it takes the GIL back (park_forever).
class gil_release {
 public:
  gil_release() { nogil_.emplace(); }
  ~gil_release() {
    park_if_finalizing();
    try {
      nogil_.reset();
    } catch (abi::__forced_unwind&) {
      park_forever();
    }
  }
  gil_release(const gil_release&) = delete;
  gil_release& operator=(const gil_release&) = delete;

 private:
  std::optional<py::gil_scoped_release> nogil_;
};

/// Calls f(args...) with the GIL held; a Python exception propagates as py::error_already_set. A
/// thread Python ends inside the call parks there (park_forever), before any C++ frame unwinds.
template <class... A>
py::object call_python(PyObject* f, A&&... args) {
  py::tuple call_args = py::make_tuple(std::forward<A>(args)...);
  PyObject* r = nullptr;
  try {
    r = PyObject_Call(f, call_args.ptr(), nullptr);
  } catch (abi::__forced_unwind&) {
    park_forever();
  }
  if (!r) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(r);
}

/// What the Python objects handed to a policy (View, Request, Decisions) point at: `state` while the
/// scheduler lives, `view` and `out` only during a call into Python, so that an object kept past its
/// call raises instead of reading freed or changing memory. Holds no Python reference.
struct call_slot {
  const paraflex::scheduler_state* state = nullptr;
  const paraflex::scheduler_view* view = nullptr;
  paraflex::decision_buffer* out = nullptr;
};

/// Python references owned by C++ objects that may be destroyed on a thread without the GIL: the
/// destructor takes it. Shared (copying the pointer needs no GIL).
struct py_refs {
  std::vector<py::object> objects;
  py_refs() = default;
  py_refs(const py_refs&) = delete;
  py_refs& operator=(const py_refs&) = delete;
  ~py_refs() {
    if (objects.empty() || !Py_IsInitialized() || (interpreter_finalizing() && PyThread_get_thread_ident() != main_thread_ident)) {
      for (auto& o : objects) o.release();  // interpreter gone or going: leak rather than crash
      return;
    }
    gil_acquire gil;
    objects.clear();
  }
};

/// One per run: the slot and the one View and Decisions objects every Python callback receives.
struct run_context {
  std::shared_ptr<call_slot> slot = std::make_shared<call_slot>();
  std::shared_ptr<py_refs> refs = std::make_shared<py_refs>();  ///< [0] View, [1] Decisions
  [[nodiscard]] py::handle view_object() const { return refs->objects[0]; }
  [[nodiscard]] py::handle out_object() const { return refs->objects[1]; }

  /// Creates the context and its View / Decisions objects. GIL held.
  static std::shared_ptr<run_context> make();
};

/// Points the slot at `v` (and `out`) for one call; restores the previous values after, so that
/// nested calls (a Python policy calling a built-in part that calls Python) stay consistent.
/// Construct it after taking the GIL: other Python threads then never see a half-set slot.
class call_scope {
 public:
  call_scope(call_slot& c, const paraflex::scheduler_view& v, paraflex::decision_buffer* out = nullptr) noexcept
      : c_(c), view_(c.view), out_(c.out) {
    c.view = &v;
    if (out) c.out = out;
  }
  ~call_scope() {
    c_.view = view_;
    c_.out = out_;
  }
  call_scope(const call_scope&) = delete;
  call_scope& operator=(const call_scope&) = delete;

 private:
  call_slot& c_;
  const paraflex::scheduler_view* view_;
  paraflex::decision_buffer* out_;
};

/// Counts the runs (simulate(), Scheduler.run/turn/turn_to) in progress on this thread. A policy or
/// callback that starts a run inside a run nests a whole scheduler on the C stack (about 15 KB a
/// level, unseen by Python's recursion limit): past max_depth the new run raises RecursionError
/// instead of overflowing the stack. Constructed with the GIL held.
class nested_run {
 public:
  static constexpr int max_depth = 8;
  explicit nested_run(const char* what) {
    if (depth_ >= max_depth) {
      PyErr_Format(PyExc_RecursionError, "%s: %d runs are already nested on this thread (a policy or callback started a run inside a run)",
                   what, max_depth);
      throw py::error_already_set();
    }
    ++depth_;
  }
  ~nested_run() { --depth_; }
  nested_run(const nested_run&) = delete;
  nested_run& operator=(const nested_run&) = delete;

 private:
  static inline thread_local int depth_ = 0;
};

/// A policy from Python: a registry spec ("slo-aware:margin=0.1"), a ComposedPolicy, or any object
/// with decide(view, out). `label` receives the name results are reported under. GIL held.
/// Throws paraflex::input_exception (bad spec), py::type_error (not a policy).
[[nodiscard]] paraflex::any_policy make_policy(py::handle policy, int gpus, const std::shared_ptr<run_context>& ctx, std::string& label);

/// The Python exception class for invalid decisions (paraflex.PolicyError).
[[nodiscard]] py::handle policy_error_type();

void bind_migration(py::module_& m);
void bind_policy(py::module_& m);
void bind_simulate(py::module_& m);
void bind_scheduler(py::module_& m);

}  // namespace paraflex_python
