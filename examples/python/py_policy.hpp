// examples/python/py_policy.hpp - policies and policy parts written in Python, as C++ types.
//
// python_policy models Policy (every hook; the ones the Python object lacks cost nothing: no GIL is
// taken). The dyn_* parts model Admission, Order, Sizing and Placement over either a built-in part
// or a Python object, so that one instantiation of composed_policy mixes them freely:
//   composed_policy<dyn_admission, dyn_order, dyn_sizing, dyn_placement>
// Every call into Python takes the GIL for that call only and points the run's View at the
// scheduler_view it was given (call_scope).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "paraflex/policy/compose.hpp"
#include "paraflex/policy/slo_aware.hpp"
#include "py_objects.hpp"

namespace paraflex_python {

/// obj.name, or None when obj has no such attribute. Unlike hasattr, an exception a property raises
/// (other than AttributeError) propagates instead of reading as "absent".
inline py::object optional_attr(py::handle obj, const char* name) {
  PyObject* r = PyObject_GetAttrString(obj.ptr(), name);
  if (r) return py::reinterpret_steal<py::object>(r);
  if (!PyErr_ExceptionMatches(PyExc_AttributeError)) throw py::error_already_set();
  PyErr_Clear();
  return py::none();
}

/// obj.name if present and callable (None otherwise), as a new reference kept in `refs`.
inline PyObject* optional_method(py::handle obj, const char* name, py_refs& refs) {
  py::object m = optional_attr(obj, name);
  if (m.is_none()) return nullptr;
  if (!PyCallable_Check(m.ptr())) {
    throw py::type_error(std::string(py::str(py::type::of(obj).attr("__name__"))) + "." + name + " must be callable");
  }
  refs.objects.push_back(m);
  return m.ptr();
}


/// The request hooks of a whole Python policy and of a Python part (on_arrival, on_request_end,
/// on_task_end). The derived constructor takes the methods from the object (in its own order, so that
/// its first error stays the one reported).
class python_hooks {
 public:
  void on_arrival(const paraflex::scheduler_view& v, paraflex::request_handle h) { call_hook(on_arrival_, v, h); }
  void on_request_end(const paraflex::scheduler_view& v, paraflex::request_handle h) { call_hook(on_request_end_, v, h); }
  void on_task_end(const paraflex::scheduler_view& v, paraflex::request_handle h, bool ok) { call_hook(on_task_end_, v, h, ok); }

 protected:
  explicit python_hooks(std::shared_ptr<run_context> ctx) : ctx_(std::move(ctx)) {}

  /// f(view, args...) with the GIL held for the call and the view pointing at v; a hook the object
  /// lacks (f null) costs nothing.
  template <class... A>
  void call_hook(PyObject* f, const paraflex::scheduler_view& v, const A&... args) {
    if (!f) return;
    gil_acquire gil;
    call_scope scope(*ctx_->slot, v);
    call_python(f, ctx_->view_object(), args...);
  }

  std::shared_ptr<run_context> ctx_;
  std::shared_ptr<py_refs> refs_ = std::make_shared<py_refs>();
  PyObject* on_arrival_ = nullptr;
  PyObject* on_request_end_ = nullptr;
  PyObject* on_task_end_ = nullptr;
};

// ============================================================================================
// A whole policy in Python
// ============================================================================================

class python_policy : public python_hooks {
 public:
  /// GIL held.
  python_policy(py::handle obj, std::shared_ptr<run_context> ctx);

  void decide(const paraflex::scheduler_view& v, paraflex::decision_buffer& out) {
    gil_acquire gil;
    call_scope scope(*ctx_->slot, v, &out);
    call_python(decide_, ctx_->view_object(), ctx_->out_object());
  }
  void on_tick(const paraflex::scheduler_view& v) { call_hook(on_tick_, v); }
  [[nodiscard]] paraflex::tick tick_period() const noexcept { return period_; }
  [[nodiscard]] std::string name() const { return name_; }

 private:
  PyObject* decide_ = nullptr;
  PyObject* on_tick_ = nullptr;
  paraflex::tick period_ = paraflex::never;
  std::string name_;
};

// ============================================================================================
// Parts in Python
// ============================================================================================

/// The optional part hooks of composed_policy (begin, on_arrival, on_request_end, on_task_end).
class python_part : public python_hooks {
 public:
  /// `method`: the one the part must have (judge, key, degree, place); `role` names it in errors.
  python_part(py::handle obj, const char* method, const char* role, std::shared_ptr<run_context> ctx);

  void begin(const paraflex::scheduler_view& v) { call_hook(begin_, v); }

 protected:
  [[nodiscard]] std::string describe() const { return name_; }

  PyObject* main_ = nullptr;
  PyObject* begin_ = nullptr;
  std::string name_;  ///< "Type.method" for errors
};

/// judge(view, h) -> "admit" | "background" | "defer" | "drop" | ("drop", reason)
/// Optional pending_drops() -> list of handles: requests to drop now wherever they stand in the
/// order (composed_policy asks judge() about each; see compose.hpp). Called after begin(view).
class python_admission : public python_part {
 public:
  python_admission(py::handle obj, std::shared_ptr<run_context> ctx)
      : python_part(obj, "judge", "admission", std::move(ctx)), pending_(optional_method(obj, "pending_drops", *refs_)) {}
  [[nodiscard]] paraflex::admission judge(const paraflex::scheduler_view& v, paraflex::request_handle h);
  [[nodiscard]] std::span<const paraflex::request_handle> pending_drops();

 private:
  // Drop reasons must outlive the call (admission::reason is a view): interned here, by value.
  std::shared_ptr<std::deque<std::string>> reasons_ = std::make_shared<std::deque<std::string>>();
  PyObject* pending_ = nullptr;
  std::shared_ptr<std::vector<paraflex::request_handle>> pending_list_ = std::make_shared<std::vector<paraflex::request_handle>>();
};

/// A composed order key: built-in orders fill `exact` (ticks, compared exactly), Python orders
/// fill `number` (a number or a tuple of up to 4 numbers, compared as doubles).
struct dyn_key {
  std::array<std::int64_t, 2> exact{};
  std::array<double, 4> number{};
  friend auto operator<=>(const dyn_key&, const dyn_key&) = default;
  friend bool operator==(const dyn_key&, const dyn_key&) = default;
};

/// key(view, h) -> number or tuple of numbers (smaller first)
class python_order : public python_part {
 public:
  python_order(py::handle obj, std::shared_ptr<run_context> ctx) : python_part(obj, "key", "order", std::move(ctx)) {}
  [[nodiscard]] dyn_key key(const paraflex::scheduler_view& v, paraflex::request_handle h);
};

/// degree(view, h, available: DeviceSet) -> int (0: wait)
class python_sizing : public python_part {
 public:
  python_sizing(py::handle obj, std::shared_ptr<run_context> ctx) : python_part(obj, "degree", "sizing", std::move(ctx)) {}
  [[nodiscard]] int degree(const paraflex::scheduler_view& v, paraflex::request_handle h, const paraflex::device_set& available);
};

/// place(view, h, k, available: DeviceSet, preferred: DeviceSet) -> list[int] | None
class python_placement : public python_part {
 public:
  python_placement(py::handle obj, std::shared_ptr<run_context> ctx) : python_part(obj, "place", "placement", std::move(ctx)) {}
  [[nodiscard]] std::optional<paraflex::device_group> place(const paraflex::scheduler_view& v, paraflex::request_handle h, int k,
                                                            const paraflex::device_set& available, const paraflex::device_set& preferred);
};

// ============================================================================================
// Parts that are either built in or Python
// ============================================================================================

/// Forwards begin and the hooks to whichever alternative has them.
template <class... Parts>
class dyn_part {
 public:
  using variant_type = std::variant<Parts...>;
  explicit dyn_part(variant_type p) : impl_(std::move(p)) {}

  void begin(const paraflex::scheduler_view& v) {
    forward_optional(impl_, [&]<class P>(P& p) requires paraflex::detail::has_begin<P> { p.begin(v); });
  }
  void on_arrival(const paraflex::scheduler_view& v, paraflex::request_handle h) {
    forward_optional(impl_, [&]<class P>(P& p) requires paraflex::detail::has_on_arrival<P> { p.on_arrival(v, h); });
  }
  void on_request_end(const paraflex::scheduler_view& v, paraflex::request_handle h) {
    forward_optional(impl_, [&]<class P>(P& p) requires paraflex::detail::has_on_request_end<P> { p.on_request_end(v, h); });
  }
  void on_task_end(const paraflex::scheduler_view& v, paraflex::request_handle h, bool ok) {
    forward_optional(impl_, [&]<class P>(P& p) requires paraflex::detail::has_on_task_end<P> { p.on_task_end(v, h, ok); });
  }

 protected:
  struct no_result {
    void operator()() const noexcept {}
  };
  /// call(part) on the alternative in use when `call` accepts it, else absent(). Each call names the
  /// optional member in its requires-clause with compose.hpp's own test (detail::has_*), so a part
  /// that lacks the member is passed over exactly as composed_policy passes it over.
  template <class Variant, class Call, class Absent = no_result>
  static auto forward_optional(Variant& parts, Call&& call, Absent&& absent = {}) -> std::invoke_result_t<Absent&> {
    return std::visit([&](auto& p) -> std::invoke_result_t<Absent&> {
      if constexpr (std::is_invocable_v<Call&, decltype(p)>) {
        return call(p);
      } else {
        return absent();
      }
    }, parts);
  }

  variant_type impl_;
};

/// Forwards every optional member of the Admission parts (pending_drops) so that a
/// composition of built-in parts made in Python behaves exactly like the C++ one. When compose.hpp
/// gains another optional part member, forward it here too (test_policy.py compares the two).
class dyn_admission : public dyn_part<paraflex::admit_all, paraflex::drop_unreachable, paraflex::slo_admission, python_admission> {
 public:
  using dyn_part::dyn_part;
  [[nodiscard]] paraflex::admission judge(const paraflex::scheduler_view& v, paraflex::request_handle h) {
    return std::visit([&](auto& p) { return p.judge(v, h); }, impl_);
  }
  [[nodiscard]] std::span<const paraflex::request_handle> pending_drops() {
    using drops = std::span<const paraflex::request_handle>;
    return forward_optional(
        impl_,
        []<class P>(P& p) -> drops requires paraflex::detail::has_pending_drops<P> {
          const auto& r = p.pending_drops();
          return {std::data(r), std::size(r)};
        },
        [] { return drops{}; });
  }
};

/// Keyed = true: the key depends only on the request (every built-in order; a Python order that
/// says so with key_depends_only_on_request = True), so composed_policy keeps the requests in key
/// order between calls instead of sorting at every call (RequestKeyedOrder).
template <bool Keyed>
class dyn_order_t : public dyn_part<paraflex::fcfs_order, paraflex::edf_order, paraflex::least_slack_order, paraflex::priority_edf_order,
                                    python_order> {
 public:
  static constexpr bool key_depends_only_on_request = Keyed;
  using dyn_order_t::dyn_part::dyn_part;  // NOLINT
  [[nodiscard]] dyn_key key(const paraflex::scheduler_view& v, paraflex::request_handle h) {
    return std::visit([&](auto& p) -> dyn_key {
      using T = std::remove_reference_t<decltype(p)>;
      if constexpr (std::is_same_v<T, python_order>) {
        return p.key(v, h);
      } else if constexpr (std::is_same_v<T, paraflex::priority_edf_order>) {
        const auto k = p.key(v, h);
        return dyn_key{{k.neg_priority, k.deadline}, {}};
      } else {
        return dyn_key{{p.key(v, h), 0}, {}};
      }
    }, this->impl_);
  }
};
using dyn_order = dyn_order_t<false>;
using dyn_keyed_order = dyn_order_t<true>;

class dyn_sizing : public dyn_part<paraflex::smallest_meeting_degree, paraflex::fastest_degree, paraflex::cheapest_degree, python_sizing> {
 public:
  using dyn_part::dyn_part;
  [[nodiscard]] int degree(const paraflex::scheduler_view& v, paraflex::request_handle h, const paraflex::device_set& available) {
    return std::visit([&](auto& p) { return static_cast<int>(p.degree(v, h, available)); }, impl_);
  }
  // Forwarded from a built-in part that has it (smallest_meeting_degree), so that a composition made
  // in Python keeps settled running requests out of the walk as the C++ one does; a Python part
  // answers "not settled" (the walk asks it as before).
  [[nodiscard]] paraflex::tick settled_until(const paraflex::scheduler_view& v, paraflex::request_handle h) const {
    return forward_optional(
        impl_, [&]<class P>(const P& p) -> paraflex::tick requires paraflex::detail::has_settled_until<P> { return p.settled_until(v, h); },
        [] { return std::numeric_limits<paraflex::tick>::min(); });
  }
};

class dyn_placement : public dyn_part<paraflex::sticky_placement, paraflex::packed_placement, python_placement> {
 public:
  using dyn_part::dyn_part;
  [[nodiscard]] std::optional<paraflex::device_group> place(const paraflex::scheduler_view& v, paraflex::request_handle h, int k,
                                                            const paraflex::device_set& available, const paraflex::device_set& preferred) {
    return std::visit([&](auto& p) { return p.place(v, h, k, available, preferred); }, impl_);
  }
};

using dyn_composed_policy = paraflex::composed_policy<dyn_admission, dyn_order, dyn_sizing, dyn_placement>;
using dyn_keyed_composed_policy = paraflex::composed_policy<dyn_admission, dyn_keyed_order, dyn_sizing, dyn_placement>;
static_assert(paraflex::Policy<dyn_composed_policy> && paraflex::ArrivalAwarePolicy<dyn_composed_policy>);
static_assert(paraflex::RequestKeyedOrder<dyn_keyed_order> && !paraflex::RequestKeyedOrder<dyn_order>);

/// paraflex.ComposedPolicy: four parts (built-in objects or Python objects) and the options. A
/// recipe: every run builds a fresh composed_policy from it (built-in parts copied, so their state
/// starts empty; Python parts shared, their state is their own).
struct composed_recipe {
  py::object admission, order, sizing, placement;
  paraflex::compose_options options;
};

}  // namespace paraflex_python
