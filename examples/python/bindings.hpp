// examples/python/bindings.hpp - what the translation units of the `paraflex._core` module share.
//
// GIL rule: C++ code of a run (scheduler, built-in policies, executors) runs with the GIL released;
// every call into Python (a policy or part written in Python, a Python executor) takes it for that
// call only (py::gil_scoped_acquire), and holds no Python reference after it returns except in
// objects that are destroyed while the GIL is held.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

#include "paraflex/policy/any_policy.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex_python {

namespace py = pybind11;

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
    if (objects.empty() || !Py_IsInitialized()) {
      for (auto& o : objects) o.release();  // interpreter gone: leak rather than crash
      return;
    }
    py::gil_scoped_acquire gil;
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
