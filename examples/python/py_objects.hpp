// examples/python/py_objects.hpp - the C++ side of the objects a Python policy receives: View
// (scheduler_view), Request (request_record), Decisions (decision_buffer), and the conversions
// between device groups and Python lists. Shared by bind_policy.cpp and bind_scheduler.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "py_args.hpp"
#include "paraflex/resource/group.hpp"
#include "paraflex/runtime/view.hpp"

namespace paraflex_python {

/// A View, Request or Decisions used outside the call that received it.
[[noreturn]] inline void throw_stale(const char* what) {
  throw std::runtime_error(std::string("paraflex.") + what +
                        " is valid only during the policy call that received it (keep request handles, not views)");
}

/// A Python int as a request handle (>= 0 and below 2^32), else ValueError naming `what`.
[[nodiscard]] inline paraflex::request_handle to_handle(py::handle h, const char* what) {
  if (!PyLong_Check(h.ptr())) throw py::type_error(std::string(what) + ": a request handle must be an int, got " + type_name(h));
  const auto r = try_arg<paraflex::request_handle>(h, what, "h");
  if (!r) throw py::value_error(std::string(what) + ": " + std::string(py::str(h)) + " is not a request handle");
  return *r;
}

/// `d` as a device of a set or cluster of n devices: TypeError naming `what` for a non-int, Error
/// (IndexError; ValueError for an argument that is not an index) for an int outside [0, n).
template <class Error = py::index_error>
[[nodiscard]] paraflex::device_id device_index(py::handle d, std::size_t n, const char* what) {
  if (!PyLong_Check(d.ptr())) throw py::type_error(std::string(what) + ": device ids must be ints, got " + type_name(d));
  const auto id = try_arg<paraflex::device_id>(d, what, "device");
  if (!id || *id >= n) throw Error(fmt::format("{}: device {} out of range [0, {})", what, std::string(py::str(d)), n));
  return *id;
}

/// A Python sequence of ints as a device group; ValueError naming `what` for anything else.
[[nodiscard]] inline paraflex::device_group to_group(py::handle seq, const std::string& what) {
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr())) throw py::type_error(what + ": a device group must be a sequence of ints");
  PyObject* fast = PySequence_Fast(seq.ptr(), "");
  if (!fast) {
    PyErr_Clear();
    throw py::type_error(what + ": a device group must be a sequence of ints, got " + type_name(seq));
  }
  py::object keep = py::reinterpret_steal<py::object>(fast);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  boost::container::small_vector<paraflex::device_id, 16> ids;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!PyLong_Check(items[i])) throw py::type_error(what + ": device ids must be ints, got " + type_name(items[i]));
    const auto d = try_arg<paraflex::device_id>(items[i], what, "device");
    if (!d) throw py::value_error(what + ": " + std::string(py::str(items[i])) + " is not a device id");
    ids.push_back(*d);
  }
  return paraflex::device_group(std::span<const paraflex::device_id>(ids.data(), ids.size()));
}

/// A group to ask the runtime about: at least one device, each below `devices`, none twice.
[[nodiscard]] inline paraflex::device_group to_valid_group(py::handle seq, const std::string& what, std::size_t devices) {
  paraflex::device_group g = to_group(seq, what);
  if (g.empty()) throw py::value_error(what + ": the device group is empty");
  boost::container::small_vector<paraflex::device_id, 16> sorted(g.begin(), g.end());
  std::sort(sorted.begin(), sorted.end());
  if (sorted.back() >= devices) {
    throw py::index_error(what + ": device " + std::to_string(sorted.back()) + " out of range (" + std::to_string(devices) + " devices)");
  }
  if (auto d = std::adjacent_find(sorted.begin(), sorted.end()); d != sorted.end()) {
    throw py::value_error(what + ": device " + std::to_string(*d) + " appears twice in the group");
  }
  return g;
}

[[nodiscard]] inline py::list group_list(const paraflex::device_group& g) {
  py::list out(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), PyLong_FromUnsignedLong(g[i]));
  return out;
}

/// paraflex.View: scheduler_view for Python.
class py_view {
 public:
  explicit py_view(std::shared_ptr<call_slot> s) noexcept : slot_(std::move(s)) {}
  [[nodiscard]] const paraflex::scheduler_view& get() const {
    if (!slot_->view) throw_stale("View");
    return *slot_->view;
  }
  /// h checked against the requests the runtime holds.
  [[nodiscard]] paraflex::request_handle handle(py::handle h) const {
    const auto r = to_handle(h, "View");
    (void)get();
    if (r >= slot_->state->requests.size()) {
      throw py::index_error("View: request handle " + std::to_string(r) + " does not exist (" + std::to_string(slot_->state->requests.size()) +
                            " requests)");
    }
    return r;
  }
  [[nodiscard]] const std::shared_ptr<call_slot>& slot() const noexcept { return slot_; }

 private:
  std::shared_ptr<call_slot> slot_;
};

/// paraflex.Request: one request_record, read through the view of the current call.
class py_request {
 public:
  py_request(std::shared_ptr<call_slot> s, paraflex::request_handle h) noexcept : slot_(std::move(s)), h_(h) {}
  [[nodiscard]] const paraflex::request_record& rec() const {
    if (!slot_->view) throw_stale("Request");
    return slot_->state->requests[h_];
  }
  [[nodiscard]] paraflex::request_handle handle() const noexcept { return h_; }
  /// False once the call it was handed to has returned (rec() raises then).
  [[nodiscard]] bool live() const noexcept { return slot_->view != nullptr; }

 private:
  std::shared_ptr<call_slot> slot_;
  paraflex::request_handle h_;
};

/// paraflex.Decisions: the decision_buffer of the current decide() call.
class py_decisions {
 public:
  explicit py_decisions(std::shared_ptr<call_slot> s) noexcept : slot_(std::move(s)) {}
  [[nodiscard]] paraflex::decision_buffer& get() const {
    if (!slot_->out) throw_stale("Decisions");
    return *slot_->out;
  }

 private:
  std::shared_ptr<call_slot> slot_;
};

}  // namespace paraflex_python
