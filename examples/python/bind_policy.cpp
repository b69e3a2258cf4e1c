// examples/python/bind_policy.cpp - what a policy sees and writes (View, Request, Decisions,
// DeviceSet, Cluster, ShapeCosts), the built-in policy parts, ComposedPolicy, the placement helpers,
// and make_policy(): a registry spec, a ComposedPolicy or a Python object, as an any_policy.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/stl.h>

#include "bindings.hpp"
#include "builtin_policies.hpp"
#include "paraflex/policy/batching.hpp"
#include "paraflex/policy/placement.hpp"
#include "py_objects.hpp"
#include "py_args.hpp"
#include "py_policy.hpp"
#include "sim_support.hpp"

namespace paraflex_python {

using namespace paraflex;

namespace {

PyObject* g_policy_error = nullptr;  // paraflex.PolicyError (never freed: exceptions may outlive the module)

// A tick from a Python int, not a bool (ValueError outside int64).
tick to_tick(py::handle t, const char* what) {
  if (!PyLong_Check(t.ptr()) || PyBool_Check(t.ptr())) throw py::type_error(std::string(what) + ": a time must be an int (microseconds), got " + type_name(t));
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(t.ptr(), &overflow);
  if (overflow != 0) throw py::value_error(std::string(what) + ": " + std::string(py::str(t)) + " does not fit in a tick");
  return static_cast<tick>(v);
}

const char* phase_name(request_phase p) {
  switch (p) {
    case request_phase::waiting: return "waiting";
    case request_phase::running: return "running";
    case request_phase::completed: return "completed";
    case request_phase::dropped: return "dropped";
  }
  return "?";
}

py::object admission_to_python(const admission& a) {
  switch (a.verdict) {
    case admission_verdict::admit: return py::str("admit");
    case admission_verdict::background: return py::str("background");
    case admission_verdict::defer: return py::str("defer");
    case admission_verdict::drop: return py::make_tuple("drop", std::string(a.reason));
  }
  return py::none();
}

// Whether the Python int d is one of s's devices: false beyond the set, as device_set::test.
bool holds(const device_set& s, py::handle d) {
  if (PyBool_Check(d.ptr())) return false;  // True is no device (try_arg would raise)
  const auto id = try_arg<device_id>(d, "DeviceSet", "device");
  return id && s.test(*id);
}

py::object maybe_group(const std::optional<device_group>& g) { return g ? py::object(group_list(*g)) : py::object(py::none()); }

// A list of ints from any range of request handles (std::span today; a range type later).
template <class R>
py::list handle_list(const R& range) {
  py::list out;
  for (request_handle h : range) out.append(h);
  return out;
}

}  // namespace

py::handle policy_error_type() { return g_policy_error; }

std::shared_ptr<run_context> run_context::make() {
  auto c = std::make_shared<run_context>();
  c->refs->objects.push_back(py::cast(py_view(c->slot)));
  c->refs->objects.push_back(py::cast(py_decisions(c->slot)));
  return c;
}

// ---- python_policy ---------------------------------------------------------------------------

python_policy::python_policy(py::handle obj, std::shared_ptr<run_context> ctx) : python_hooks(std::move(ctx)) {
  decide_ = optional_method(obj, "decide", *refs_);
  if (!decide_) throw py::type_error("policy: " + type_name(obj) + " has no decide(view, out) method");
  on_arrival_ = optional_method(obj, "on_arrival", *refs_);
  on_request_end_ = optional_method(obj, "on_request_end", *refs_);
  on_task_end_ = optional_method(obj, "on_task_end", *refs_);
  on_tick_ = optional_method(obj, "on_tick", *refs_);
  name_ = type_name(obj);
  if (py::object n = optional_attr(obj, "name"); !n.is_none()) {
    if (PyCallable_Check(n.ptr())) n = n();
    if (!n.is_none()) {
      if (!py::isinstance<py::str>(n)) throw py::type_error("policy: " + type_name(obj) + ".name must be a str");
      name_ = arg<std::string>(n, "policy", type_name(obj) + ".name");
    }
  }
  if (py::object p = optional_attr(obj, "tick_period"); !p.is_none()) {
    if (PyCallable_Check(p.ptr())) p = p();
    if (!p.is_none()) {
      const tick t = to_tick(p, "policy tick_period");
      if (t <= 0) throw py::value_error("policy: " + name_ + ".tick_period must be > 0 microseconds (got " + std::to_string(t) + ")");
      period_ = t;
    }
  }
  // The object itself stays alive as long as the run (its methods are bound to it).
  refs_->objects.push_back(py::reinterpret_borrow<py::object>(obj));
}

// ---- Python parts ----------------------------------------------------------------------------

python_part::python_part(py::handle obj, const char* method, const char* role, std::shared_ptr<run_context> ctx)
    : python_hooks(std::move(ctx)) {
  name_ = type_name(obj) + "." + method;
  main_ = optional_method(obj, method, *refs_);
  if (!main_) throw py::type_error(std::string(role) + ": " + type_name(obj) + " is not a built-in " + role + " part and has no " + method + "() method");
  begin_ = optional_method(obj, "begin", *refs_);
  on_arrival_ = optional_method(obj, "on_arrival", *refs_);
  on_request_end_ = optional_method(obj, "on_request_end", *refs_);
  on_task_end_ = optional_method(obj, "on_task_end", *refs_);
  refs_->objects.push_back(py::reinterpret_borrow<py::object>(obj));
}

admission python_admission::judge(const scheduler_view& v, request_handle h) {
  gil_acquire gil;
  call_scope scope(*ctx_->slot, v);
  py::object r = call_python(main_, ctx_->view_object(), h);
  auto bad = [&]() -> admission {
    throw py::value_error(describe() + "() returned " + std::string(py::repr(r)) +
                          "; expected 'admit', 'background', 'defer', 'drop' or ('drop', reason)");
  };
  std::string reason;
  std::string verdict;
  if (py::isinstance<py::str>(r)) {
    verdict = r.cast<std::string>();
  } else if (py::isinstance<py::tuple>(r) && py::len(r) == 2 && py::isinstance<py::str>(r[py::int_(0)]) &&
             py::isinstance<py::str>(r[py::int_(1)])) {
    verdict = r[py::int_(0)].cast<std::string>();
    reason = r[py::int_(1)].cast<std::string>();
    if (verdict != "drop") return bad();
  } else {
    return bad();
  }
  if (verdict == "admit") return admission::admit();
  if (verdict == "background") return admission::background();
  if (verdict == "defer") return admission::defer();
  if (verdict != "drop") return bad();
  check_reason(reason, describe() + "()");
  if (reason.empty()) return admission::drop("dropped_by_policy");
  for (const auto& s : *reasons_) {
    if (s == reason) return admission::drop(s);
  }
  reasons_->push_back(std::move(reason));
  return admission::drop(reasons_->back());
}

std::span<const request_handle> python_admission::pending_drops() {
  if (!pending_) return {};
  gil_acquire gil;
  py::object r = call_python(pending_);
  pending_list_->clear();
  if (r.is_none()) return {};
  // composed_policy reads each handle's record unchecked: one that does not exist must stop here.
  const std::string what = name_.substr(0, name_.rfind('.')) + ".pending_drops()";
  const std::size_t n = ctx_->slot->state ? ctx_->slot->state->requests.size() : 0;
  PyObject* items = PyUnicode_Check(r.ptr()) || PyBytes_Check(r.ptr()) ? nullptr : PyObject_GetIter(r.ptr());
  if (!items) {
    PyErr_Clear();
    throw py::type_error(what + " returned a " + type_name(r) + "; expected an iterable of request handles (or None)");
  }
  for (py::handle h : py::reinterpret_steal<py::iterator>(items)) {
    const request_handle d = to_handle(h, what.c_str());
    if (d >= n) {
      throw py::value_error(what + " returned request handle " + std::to_string(d) + ", which does not exist (" + std::to_string(n) +
                            " requests)");
    }
    pending_list_->push_back(d);
  }
  return *pending_list_;
}

dyn_key python_order::key(const scheduler_view& v, request_handle h) {
  gil_acquire gil;
  call_scope scope(*ctx_->slot, v);
  py::object r = call_python(main_, ctx_->view_object(), h);
  dyn_key k;
  auto number = [&](py::handle x) {
    if (!PyLong_Check(x.ptr()) && !PyFloat_Check(x.ptr())) {
      throw py::type_error(describe() + "() returned " + std::string(py::repr(r)) + "; expected a number or a tuple of up to 4 numbers");
    }
    const double d = PyFloat_AsDouble(x.ptr());
    if (d == -1.0 && PyErr_Occurred()) {  // an int beyond a double's range
      PyErr_Clear();
      throw py::value_error(describe() + "() returned " + std::string(py::repr(x)).substr(0, 40) + " for request " + std::to_string(h) +
                            ", too large to compare as a float");
    }
    if (std::isnan(d)) throw py::value_error(describe() + "() returned NaN for request " + std::to_string(h));
    return d;
  };
  if (py::isinstance<py::tuple>(r)) {
    const auto n = py::len(r);
    if (n == 0 || n > k.number.size()) {
      throw py::value_error(describe() + "() returned a tuple of " + std::to_string(n) + " items; expected 1 to 4 numbers");
    }
    for (std::size_t i = 0; i < n; ++i) k.number[i] = number(r[py::int_(i)]);
  } else {
    k.number[0] = number(r);
  }
  return k;
}

int python_sizing::degree(const scheduler_view& v, request_handle h, const device_set& available) {
  gil_acquire gil;
  call_scope scope(*ctx_->slot, v);
  py::object r = call_python(main_, ctx_->view_object(), h, available);
  if (!PyLong_Check(r.ptr())) throw py::type_error(describe() + "() returned " + std::string(py::repr(r)) + "; expected an int (0: wait)");
  const auto k = try_arg<long long>(r, describe(), "degree");  // nullopt: beyond 64 bits
  if (!k || *k < 0 || *k > static_cast<long long>(available.capacity())) {
    throw py::value_error(describe() + "() returned degree " + std::string(py::str(r)) + " for request " + std::to_string(h) + "; expected 0.." +
                          std::to_string(available.capacity()));
  }
  return static_cast<int>(*k);
}

std::optional<device_group> python_placement::place(const scheduler_view& v, request_handle h, int k, const device_set& available,
                                                    const device_set& preferred) {
  gil_acquire gil;
  call_scope scope(*ctx_->slot, v);
  py::object r = call_python(main_, ctx_->view_object(), h, k, available, preferred);
  if (r.is_none()) return std::nullopt;
  const std::string what = describe() + "() for request '" + v.request(h).spec.id + "'";
  auto g = to_group(r, what);
  // composed_policy passes over a group that breaks the contract as "no room": every request would
  // end as policy_stalled with nothing naming the part.
  if (g.size() != static_cast<std::size_t>(k)) {
    throw py::value_error(what + " returned " + std::to_string(g.size()) + " devices; expected k = " + std::to_string(k) + " (or None: no room)");
  }
  for (device_id d : g) {
    if (!available.test(d)) {
      throw py::value_error(what + " returned device " + std::to_string(d) + ", which is not in `available` " + std::string(py::repr(py::cast(available))));
    }
  }
  return g;
}

// ---- make_policy -----------------------------------------------------------------------------

namespace {

bool is_builtin_admission(py::handle o) {
  return py::isinstance<admit_all>(o) || py::isinstance<drop_unreachable>(o) || py::isinstance<slo_admission>(o);
}
bool is_builtin_order(py::handle o) {
  return py::isinstance<fcfs_order>(o) || py::isinstance<edf_order>(o) || py::isinstance<least_slack_order>(o) ||
         py::isinstance<priority_edf_order>(o);
}
bool is_builtin_sizing(py::handle o) {
  return py::isinstance<smallest_meeting_degree>(o) || py::isinstance<fastest_degree>(o) || py::isinstance<cheapest_degree>(o);
}
bool is_builtin_placement(py::handle o) { return py::isinstance<sticky_placement>(o) || py::isinstance<packed_placement>(o); }

dyn_admission make_admission(py::handle o, const std::shared_ptr<run_context>& ctx) {
  if (py::isinstance<admit_all>(o)) return dyn_admission(o.cast<admit_all>());
  if (py::isinstance<drop_unreachable>(o)) return dyn_admission(o.cast<drop_unreachable>());
  if (py::isinstance<slo_admission>(o)) return dyn_admission(o.cast<slo_admission>());
  return dyn_admission(python_admission(o, ctx));
}
template <class D>
D make_order(py::handle o, const std::shared_ptr<run_context>& ctx) {
  if (py::isinstance<fcfs_order>(o)) return D(o.cast<fcfs_order>());
  if (py::isinstance<edf_order>(o)) return D(o.cast<edf_order>());
  if (py::isinstance<least_slack_order>(o)) return D(o.cast<least_slack_order>());
  if (py::isinstance<priority_edf_order>(o)) return D(o.cast<priority_edf_order>());
  return D(python_order(o, ctx));
}
// A built-in order, or a Python one declaring key_depends_only_on_request = True.
bool keyed_order(py::handle o) {
  if (is_builtin_order(o)) return true;
  const py::object declared = optional_attr(o, "key_depends_only_on_request");
  if (declared.is_none()) return false;
  const int truth = PyObject_IsTrue(declared.ptr());
  if (truth < 0) throw py::error_already_set();
  return truth == 1;
}
dyn_sizing make_sizing(py::handle o, const std::shared_ptr<run_context>& ctx) {
  if (py::isinstance<smallest_meeting_degree>(o)) return dyn_sizing(o.cast<smallest_meeting_degree>());
  if (py::isinstance<fastest_degree>(o)) return dyn_sizing(o.cast<fastest_degree>());
  if (py::isinstance<cheapest_degree>(o)) return dyn_sizing(o.cast<cheapest_degree>());
  return dyn_sizing(python_sizing(o, ctx));
}
dyn_placement make_placement(py::handle o, const std::shared_ptr<run_context>& ctx) {
  if (py::isinstance<sticky_placement>(o)) return dyn_placement(o.cast<sticky_placement>());
  if (py::isinstance<packed_placement>(o)) return dyn_placement(o.cast<packed_placement>());
  return dyn_placement(python_placement(o, ctx));
}

}  // namespace

any_policy make_policy(py::handle policy, int gpus, const std::shared_ptr<run_context>& ctx, std::string& label) {
  if (py::isinstance<py::str>(policy)) {
    label = policy.cast<std::string>();
    // paraflex-sim takes a list; one call runs one policy.
    if (label.empty()) throw py::value_error("--policy: empty policy list (omit --policy to run every built-in policy; see --list-policies)");
    if (label.find(',') != std::string::npos) {
      throw py::value_error("policy '" + label + "': one policy per call (a comma separates policies in paraflex-sim's --policy list)");
    }
    return paraflex_bench::builtin_registry(gpus).make(label).value_or_throw();
  }
  if (py::isinstance<composed_recipe>(policy)) {
    const auto& r = policy.cast<const composed_recipe&>();
    label = r.options.name;
    if (keyed_order(r.order)) {
      return dyn_keyed_composed_policy(make_admission(r.admission, ctx), make_order<dyn_keyed_order>(r.order, ctx), make_sizing(r.sizing, ctx),
                                       make_placement(r.placement, ctx), r.options);
    }
    return dyn_composed_policy(make_admission(r.admission, ctx), make_order<dyn_order>(r.order, ctx), make_sizing(r.sizing, ctx),
                               make_placement(r.placement, ctx), r.options);
  }
  if (optional_attr(policy, "decide").is_none()) {
    throw py::type_error("policy must be a built-in policy spec (str, e.g. 'slo-aware'), a paraflex.ComposedPolicy, or an object with "
                         "decide(view, out); got " + type_name(policy));
  }
  python_policy p(policy, ctx);
  label = p.name();
  return p;
}

// ---- bindings --------------------------------------------------------------------------------

namespace {

void bind_values(py::module_& m) {
  m.attr("NEVER") = never;
  m.attr("ALL_TASKS") = decision_buffer::all_tasks;
  m.def("to_ticks", [](typed<double> s) {
    const double seconds = arg(s, "to_ticks", "seconds");
    auto t = to_ticks(seconds);
    if (!t) throw py::value_error("to_ticks: " + std::to_string(seconds) + " seconds does not fit in the microsecond clock");
    return *t;
  }, py::arg("seconds"), "Seconds to integer microseconds (rounded to nearest).");
  m.def("to_seconds", [](typed<tick> t) { return to_seconds(arg(t, "to_seconds", "ticks")); }, py::arg("ticks"), "Integer microseconds to seconds.");

  py::class_<cluster>(m, "Cluster", "A homogeneous cluster (paraflex::cluster): gpus devices, gpus_per_node per node.")
      .def(py::init([](typed<int> gpus, typed<std::optional<int>> per_node, typed<std::string> gpu_type) {
             // The rules of a run's cluster (simulate, Scheduler): a Cluster they would refuse is no cluster.
             const auto size = check_cluster(gpus.value, per_node.value, "Cluster", cluster_arg_names);
             return cluster{size.gpus, size.per_node, arg(gpu_type, "Cluster", "gpu_type")};
           }),
           py::arg("gpus") = 8, py::arg("gpus_per_node") = py::none(), py::arg("gpu_type") = "")
      .def_readonly("gpus", &cluster::gpus)
      .def_readonly("gpus_per_node", &cluster::gpus_per_node)
      .def_readonly("gpu_type", &cluster::gpu_type)
      .def("device_count", &cluster::device_count)
      .def("node_count", &cluster::node_count)
      .def("node_of", [](const cluster& c, typed<device_id> d) { return c.node_of(device_index(d.value, c.device_count(), "Cluster.node_of")); },
           py::arg("device"))
      .def("within_one_node", [](const cluster& c, py::handle g) { return c.within_one_node(to_valid_group(g, "Cluster.within_one_node", c.device_count())); },
           py::arg("group"))
      .def("__repr__", [](const cluster& c) {
        return "Cluster(gpus=" + std::to_string(c.gpus) + ", gpus_per_node=" + std::to_string(c.gpus_per_node) + ", gpu_type='" + c.gpu_type + "')";
      });

  py::class_<device_set>(m, "DeviceSet", "A set of devices (paraflex::device_set), e.g. the free devices. Iterates in increasing order.")
      .def(py::init([](typed<device_id> capacity, py::object devices) {
             const std::size_t n = arg(capacity, "DeviceSet", "capacity");  // device ids are 32-bit
             if (PyUnicode_Check(devices.ptr()) || PyBytes_Check(devices.ptr()) || !py::isinstance<py::iterable>(devices)) {
               throw py::type_error("DeviceSet: devices must be an iterable of ints, got " + type_name(devices));
             }
             device_set s(n, false);
             for (py::handle d : devices) s.set(device_index<py::value_error>(d, n, "DeviceSet"));
             return s;
           }),
           py::arg("capacity"), py::arg("devices") = py::tuple())
      .def("capacity", &device_set::capacity)
      .def("test", [](const device_set& s, typed<device_id> d) {
        if (!PyLong_Check(d.value.ptr())) throw py::type_error("DeviceSet.test: device ids must be ints, got " + type_name(d.value));
        return holds(s, d.value);
      }, py::arg("device"))
      // `in` asks a question: what is not one of the set's devices (another type included) is not in it.
      .def("__contains__", [](const device_set& s, py::object d) { return PyLong_Check(d.ptr()) && holds(s, d); })
      .def("set", [](device_set& s, typed<device_id> d) { s.set(device_index(d.value, s.capacity(), "DeviceSet.set")); }, py::arg("device"))
      .def("reset", [](device_set& s, typed<device_id> d) { s.reset(device_index(d.value, s.capacity(), "DeviceSet.reset")); }, py::arg("device"))
      .def("set_group", [](device_set& s, py::handle g) {
        const auto grp = to_group(g, "DeviceSet.set_group");
        for (device_id d : grp) if (d >= s.capacity()) throw py::index_error("DeviceSet.set_group: device " + std::to_string(d) + " out of range");
        s.set(grp);
      }, py::arg("group"))
      .def("reset_group", [](device_set& s, py::handle g) {
        const auto grp = to_group(g, "DeviceSet.reset_group");
        for (device_id d : grp) if (d >= s.capacity()) throw py::index_error("DeviceSet.reset_group: device " + std::to_string(d) + " out of range");
        s.reset(grp);
      }, py::arg("group"))
      .def("contains_all", [](const device_set& s, py::handle g) { return s.contains_all(to_group(g, "DeviceSet.contains_all")); }, py::arg("group"))
      .def("count", &device_set::count)
      .def("__len__", &device_set::count)
      .def("none", &device_set::none)
      .def("to_list", [](const device_set& s) {
        py::list out;
        s.for_each([&](device_id d) { out.append(d); });
        return out;
      })
      .def("__iter__", [](const device_set& s) {
        py::list out;
        s.for_each([&](device_id d) { out.append(d); });
        return py::iter(out);
      })
      .def("copy", [](const device_set& s) { return s; })
      .def("__copy__", [](const device_set& s) { return s; })
      .def("__eq__", [](const device_set& a, py::object b) { return eq_or_not_implemented(a, b); })
      .def("__repr__", [](const device_set& s) {
        std::string out = "DeviceSet(" + std::to_string(s.capacity()) + ", [";
        bool first = true;
        s.for_each([&](device_id d) { out += (first ? "" : ", ") + std::to_string(d); first = false; });
        return out + "])";
      });

  py::class_<shape_costs>(m, "ShapeCosts", "Costs of one shape on this cluster in microseconds (paraflex::shape_costs); index k = degree.")
      .def_property_readonly("model", [](const shape_costs& c) { return c.shape.model; })
      .def_property_readonly("height", [](const shape_costs& c) { return c.shape.height; })
      .def_property_readonly("width", [](const shape_costs& c) { return c.shape.width; })
      .def_property_readonly("frames", [](const shape_costs& c) { return c.shape.frames; })
      .def_readonly("step", &shape_costs::step)
      .def_readonly("encode", &shape_costs::encode)
      .def_readonly("decode", &shape_costs::decode)
      .def_readonly("migrate_intra_node", &shape_costs::migrate_intra_node)
      .def_readonly("migrate_inter_node", &shape_costs::migrate_inter_node)
      .def_readonly("allowed_degrees", &shape_costs::allowed_degrees)
      .def_readonly("fastest_degree", &shape_costs::fastest_degree)
      .def_readonly("efficient_degree", &shape_costs::efficient_degree)
      .def_readonly("max_batch", &shape_costs::max_batch, "the largest batched step of this shape the runtime accepts (1: none)")
      .def("allows", [](const shape_costs& c, typed<int> k) { return c.allows(arg(k, "ShapeCosts.allows", "k")); }, py::arg("k"))
      .def("step_time", [](const shape_costs& c, typed<int> k) { return c.step_time(arg(k, "ShapeCosts.step_time", "k")); }, py::arg("k"))
      .def("batch_step_time", [](const shape_costs& c, typed<int> k, typed<int> b) {
        return c.batch_step_time(arg(k, "ShapeCosts.batch_step_time", "k"), arg(b, "ShapeCosts.batch_step_time", "b"));
      }, py::arg("k"), py::arg("b"),
           "One step of b requests of this shape together on k devices (b = 1: step_time(k)); PolicyError beyond max_batch.");
}

void bind_view(py::module_& m) {
  py::class_<py_view>(m, "View", "The read-only view a policy decides from (paraflex::scheduler_view). Valid during one call.")
      .def("now", [](const py_view& v) { return v.get().now(); })
      .def("topology", [](const py_view& v) { return v.get().topology(); })
      .def("device_count", [](const py_view& v) { return v.get().device_count(); })
      .def("free_devices", [](const py_view& v) { return v.get().free_devices(); }, "A copy of the devices with nothing in flight.")
      .def("lost_devices", [](const py_view& v) { return v.get().lost_devices(); })
      .def("usable_device_count", [](const py_view& v) { return v.get().usable_device_count(); })
      .def("busy_until", [](const py_view& v, typed<device_id> d) {
        const auto& s = v.get();
        return s.busy_until(device_index(d.value, s.device_count(), "View.busy_until"));
      }, py::arg("device"))
      .def("waiting", [](const py_view& v) { return handle_list(v.get().waiting()); }, "Handles of the waiting requests, in arrival order.")
      .def("running", [](const py_view& v) { return handle_list(v.get().running()); }, "Handles of the running requests, in arrival order.")
      .def("state_holders", [](const py_view& v, typed<device_id> d) {
        const auto& s = v.get();
        return handle_list(s.state_holders(device_index(d.value, s.device_count(), "View.state_holders")));
      }, py::arg("device"), "Unended requests whose state lives (partly) on the device.")
      .def("state_holding_devices", [](const py_view& v) { return v.get().state_holding_devices(); },
           "A copy of the devices whose state_holders() is not empty.")
      .def("request", [](const py_view& v, py::handle h) { return py_request(v.slot(), v.handle(h)); }, py::arg("h"))
      .def("costs", [](const py_view& v, py::handle h) { return v.get().costs(v.handle(h)); }, py::arg("h"))
      .def("allows_degree", [](const py_view& v, py::handle h, typed<int> k) { return v.get().allows_degree(v.handle(h), arg(k, "View.allows_degree", "k")); },
           py::arg("h"), py::arg("k"))
      .def("allowed_degrees", [](const py_view& v, py::handle h) {
        const auto d = v.get().allowed_degrees(v.handle(h));
        return std::vector<int>(d.begin(), d.end());
      }, py::arg("h"))
      .def("step_time", [](const py_view& v, py::handle h, typed<int> k) { return v.get().step_time(v.handle(h), arg(k, "View.step_time", "k")); },
           py::arg("h"), py::arg("k"))
      .def("tasks_time", [](const py_view& v, py::handle h, typed<int> k, typed<std::uint32_t> n) {
        return v.get().tasks_time(v.handle(h), arg(k, "View.tasks_time", "k"), arg(n, "View.tasks_time", "n"));
      },
           py::arg("h"), py::arg("k"), py::arg("n"))
      .def("batch_step_time", [](const py_view& v, py::handle h, typed<int> k, typed<int> b) {
        return v.get().batch_step_time(v.handle(h), arg(k, "View.batch_step_time", "k"), arg(b, "View.batch_step_time", "b"));
      },
           py::arg("h"), py::arg("k"), py::arg("b"),
           "One step of a batch of b requests of h's shape on k devices (b = 1: step_time(h, k)); PolicyError when b > max_batch(h).")
      .def("max_batch", [](const py_view& v, py::handle h) { return v.get().max_batch(v.handle(h)); }, py::arg("h"),
           "The largest batch of h's shape the runtime accepts (1: the cost model cannot price batches, or batching is off).")
      .def("remaining_time", [](const py_view& v, py::handle h, typed<int> k) { return v.get().remaining_time(v.handle(h), arg(k, "View.remaining_time", "k")); },
           py::arg("h"), py::arg("k"))
      .def("remaining_work", [](const py_view& v, py::handle h, typed<std::optional<int>> k_arg) {
        const auto r = v.handle(h);
        const auto k = arg(k_arg, "View.remaining_work", "k");
        return k ? v.get().remaining_work(r, *k) : v.get().remaining_work(r);
      }, py::arg("h"), py::arg("k") = py::none(), "Device-microseconds h still needs on k devices (default: its most efficient degree).")
      .def("needs_migration", [](const py_view& v, py::handle h, py::handle g) { return v.get().needs_migration(v.handle(h), to_valid_group(g, "View.needs_migration", v.get().topology().device_count())); },
           py::arg("h"), py::arg("group"))
      .def("migration_time", [](const py_view& v, py::handle h, py::handle g) { return v.get().migration_time(v.handle(h), to_valid_group(g, "View.migration_time", v.get().topology().device_count())); },
           py::arg("h"), py::arg("group"))
      .def("placeable", [](const py_view& v, py::handle g, const device_set& available) { return v.get().placeable(to_valid_group(g, "View.placeable", v.get().topology().device_count()), available); },
           py::arg("group"), py::arg("available"));

  py::class_<py_request>(m, "Request", "One request as the runtime knows it (paraflex::request_record); read during a policy call.")
      .def_property_readonly("handle", &py_request::handle)
      .def_property_readonly("id", [](const py_request& r) { return r.rec().spec.id; })
      .def_property_readonly("arrival", [](const py_request& r) { return r.rec().spec.arrival; })
      .def_property_readonly("slo", [](const py_request& r) { return r.rec().spec.slo; }, "NEVER when the request has none")
      .def_property_readonly("deadline", [](const py_request& r) { return r.rec().deadline(); }, "arrival + slo; NEVER when none")
      .def_property_readonly("has_deadline", [](const py_request& r) { return r.rec().has_deadline(); })
      .def_property_readonly("priority", [](const py_request& r) { return r.rec().spec.priority; })
      .def_property_readonly("class_label", [](const py_request& r) { return r.rec().spec.class_label; })
      .def_property_readonly("model", [](const py_request& r) { return r.rec().spec.shape.model; })
      .def_property_readonly("height", [](const py_request& r) { return r.rec().spec.shape.height; })
      .def_property_readonly("width", [](const py_request& r) { return r.rec().spec.shape.width; })
      .def_property_readonly("frames", [](const py_request& r) { return r.rec().spec.shape.frames; })
      .def_property_readonly("steps", [](const py_request& r) { return r.rec().spec.steps; })
      .def_property_readonly("position", [](const py_request& r) { return r.rec().position; }, "tasks completed so far")
      .def_property_readonly("phase", [](const py_request& r) { return phase_name(r.rec().phase); })
      .def_property_readonly("state_group", [](const py_request& r) { return group_list(r.rec().state_group); })
      .def_property_readonly("run_group", [](const py_request& r) { return group_list(r.rec().run_group); })
      .def_property_readonly("chunk_left", [](const py_request& r) { return r.rec().chunk_left; })
      .def_property_readonly("launch_batch", [](const py_request& r) { return r.rec().launch_batch; },
                             "members of the batched step it is running (0: it runs alone, or nothing)")
      .def_property_readonly("running_until", [](const py_request& r) { return r.rec().running_until; })
      .def_property_readonly("first_start", [](const py_request& r) { return r.rec().first_start; })
      .def_property_readonly("finish", [](const py_request& r) { return r.rec().finish; })
      .def_property_readonly("last_degree", [](const py_request& r) { return r.rec().last_degree; })
      .def_property_readonly("migrations", [](const py_request& r) { return r.rec().migrations; })
      .def_property_readonly("failures", [](const py_request& r) { return r.rec().failures; })
      .def_property_readonly("gpu_busy_s", [](const py_request& r) { return r.rec().gpu_busy_s; })
      .def_property_readonly("drop_reason", [](const py_request& r) { return r.rec().drop_reason; })
      .def_property_readonly("ended", [](const py_request& r) { return r.rec().ended(); })
      .def_property_readonly("tasks_total", [](const py_request& r) { return r.rec().tasks_total(); })
      .def_property_readonly("tasks_remaining", [](const py_request& r) { return r.rec().tasks_remaining(); })
      .def_property_readonly("steps_remaining", [](const py_request& r) { return r.rec().steps_remaining(); })
      .def_property_readonly("next_task", [](const py_request& r) -> py::object {
        const auto& rec = r.rec();
        if (rec.position >= rec.tasks_total()) return py::none();
        const auto& t = rec.next_task();
        return py::make_tuple(to_string(t.kind), t.step);
      }, "(kind, step) of the next task, or None when every task is done")
      .def("__repr__", [](const py_request& r) {
        // A kept Request still prints (a log line, a traceback's locals): its handle is all it has then.
        if (!r.live()) return "Request(handle=" + std::to_string(r.handle()) + ", stale: readable only during the call it was given to)";
        const auto& rec = r.rec();
        return "Request(handle=" + std::to_string(r.handle()) + ", id='" + rec.spec.id + "', phase=" + phase_name(rec.phase) + ")";
      });

  py::class_<py_decisions>(m, "Decisions", "What the policy asks of the runtime in one decide() call (paraflex::decision_buffer).")
      .def_property_readonly_static("ALL_TASKS", [](py::handle) { return decision_buffer::all_tasks; })
      .def("assign", [](const py_decisions& d, py::handle h, py::handle group, typed<long long> tasks_arg) {
        const auto r = to_handle(h, "Decisions.assign");
        const auto tasks = arg(tasks_arg, "Decisions.assign", "tasks");
        if (tasks < 0) throw py::value_error("Decisions.assign: request " + std::to_string(r) + ": tasks must be >= 1 (got " + std::to_string(tasks) + ")");
        const auto n = static_cast<std::uint32_t>(std::min<long long>(tasks, decision_buffer::all_tasks));
        d.get().assign(r, to_group(group, "Decisions.assign: request " + std::to_string(r)), n);
      }, py::arg("h"), py::arg("group"), py::arg("tasks") = 1, "Run the next `tasks` tasks of h back to back on group (a list of device ids).")
      .def("assign_to_completion", [](const py_decisions& d, py::handle h, py::handle group) {
        const auto r = to_handle(h, "Decisions.assign_to_completion");
        d.get().assign_to_completion(r, to_group(group, "Decisions.assign_to_completion: request " + std::to_string(r)));
      }, py::arg("h"), py::arg("group"))
      .def("assign_batch", [](const py_decisions& d, py::handle members, py::handle group) {
        if (PyUnicode_Check(members.ptr()) || PyBytes_Check(members.ptr()) || !PySequence_Check(members.ptr())) {
          throw py::type_error("Decisions.assign_batch: members must be a sequence of request handles");
        }
        boost::container::small_vector<request_handle, 8> hs;
        for (py::handle h : members) hs.push_back(to_handle(h, "Decisions.assign_batch"));
        if (hs.empty()) throw py::value_error("Decisions.assign_batch: no members");
        std::string who = "Decisions.assign_batch: batch {";
        for (std::size_t i = 0; i < hs.size(); ++i) who += (i ? "," : "") + std::to_string(hs[i]);
        d.get().assign_batch(std::span<const request_handle>(hs.data(), hs.size()), to_group(group, who + "}"));
      }, py::arg("members"), py::arg("group"),
         "Run the next task of every member together as one batched launch on group (TetriServe's batching): the members share\n"
         "one shape, are waiting, their next task is a step for all (step indices may differ) or the encode for all, and their state\n"
         "lives on exactly group's devices or nowhere yet. One member is a plain assign(h, group, 1). The runtime refuses a batch\n"
         "(PolicyError) when the executor cannot run batches, the cost model cannot price them, or it has more than max_batch members.")
      .def("drop", [](const py_decisions& d, py::handle h, typed<std::string> reason_arg) {
        const auto r = to_handle(h, "Decisions.drop");
        const auto reason = arg(reason_arg, "Decisions.drop", "reason");
        check_reason(reason, "Decisions.drop");
        d.get().drop(r, reason);
      },
           py::arg("h"), py::arg("reason") = "", "End h now (a running one: after its task in flight), reported under `reason`.")
      .def("wake_at", [](const py_decisions& d, py::handle t) { d.get().wake_at(to_tick(t, "Decisions.wake_at")); }, py::arg("t"))
      .def("assigns", [](const py_decisions& d) {
        py::list out;
        for (const auto& a : d.get().assigns()) out.append(py::make_tuple(a.request, group_list(a.group), a.tasks));
        return out;
      }, "[(h, group, tasks)] so far")
      .def("batches", [](const py_decisions& d) {
        py::list out;
        for (const auto& b : d.get().batches()) out.append(py::make_tuple(handle_list(b.members), group_list(b.group)));
        return out;
      }, "[(members, group)] so far (batches of two or more)")
      .def("drops", [](const py_decisions& d) {
        py::list out;
        for (const auto& a : d.get().drops()) out.append(py::make_tuple(a.request, a.reason));
        return out;
      })
      .def("wake_time", [](const py_decisions& d) { return d.get().wake_time(); })
      .def("empty", [](const py_decisions& d) { return d.get().empty(); });
}

// The cluster size a policy list is for, with a run's rules (simulate, Scheduler and Cluster refuse
// gpus < 1). `prefix` is "fn: " and must outlive the call.
int registry_gpus(typed<int> gpus, std::string_view prefix) {
  const std::string_view fn = prefix.substr(0, prefix.find(':'));
  return check_cluster(gpus.value, py::none(), fn, cluster_names{prefix, "gpus", "gpus_per_node"}).gpus;
}

// The placement helpers index the sets by device and return ids from them: a set of another size
// than the cluster would yield devices that do not exist (or read past a smaller one).
void require_cluster_size(const py_view& v, const device_set& s, const char* what) {
  const auto n = static_cast<std::size_t>(v.get().device_count());
  if (s.capacity() != n) {
    throw py::value_error(std::string(what) + ": the DeviceSet has capacity " + std::to_string(s.capacity()) + "; the cluster has " + std::to_string(n) +
                          " devices");
  }
}

// Built-in parts: configurable from Python, usable inside ComposedPolicy, and callable from a Python
// part that wants to delegate (their methods take the View of the current call).
void bind_parts(py::module_& m) {
  py::class_<admit_all>(m, "AdmitAll", "Admission: every request (GF-DiT, static parallelism).")
      .def(py::init<>())
      .def("judge", [](const admit_all& a, const py_view& v, py::handle h) { return admission_to_python(a.judge(v.get(), v.handle(h))); });
  py::class_<drop_unreachable>(m, "DropUnreachable", "Admission: drops ('deadline_unreachable') what cannot meet its deadline even alone.")
      .def(py::init<>())
      .def("judge", [](const drop_unreachable& a, const py_view& v, py::handle h) { return admission_to_python(a.judge(v.get(), v.handle(h))); });
  py::class_<slo_admission>(m, "SloAdmission", "Admission of slo-aware: deadline-window capacity, reserve, best effort (slo_aware.hpp).")
      .def(py::init([](typed<std::string> mode_arg, typed<double> capacity_arg, typed<double> reserve_arg, typed<double> age_arg) {
             const char* fn = "SloAdmission";
             const auto mode = arg(mode_arg, fn, "mode");
             const auto capacity = arg(capacity_arg, fn, "capacity");
             const auto reserve = arg(reserve_arg, fn, "reserve");
             const auto best_effort_age = arg(age_arg, fn, "best_effort_age");
             slo_admission a;
             if (mode == "relaxed") a.mode = admission_mode::relaxed;
             else if (mode == "strict") a.mode = admission_mode::strict;
             else if (mode == "off") a.mode = admission_mode::off;
             else throw py::value_error("SloAdmission: mode '" + mode + "' is not one of: relaxed, strict, off");
             if (!(capacity >= 0.05 && capacity <= 4.0)) throw py::value_error("SloAdmission: capacity must be in [0.05, 4]");
             if (!(reserve >= 0 && reserve < capacity)) throw py::value_error("SloAdmission: reserve must be in [0, capacity)");
             if (!(best_effort_age >= 0)) throw py::value_error("SloAdmission: best_effort_age must be >= 0");
             a.capacity = capacity;
             a.reserve = reserve;
             a.best_effort_age = best_effort_age;
             return a;
           }),
           py::arg("mode") = "relaxed", py::arg("capacity") = 0.9, py::arg("reserve") = 0.1, py::arg("best_effort_age") = 10.0)
      .def_property_readonly("mode", [](const slo_admission& a) {
        return a.mode == admission_mode::strict ? "strict" : a.mode == admission_mode::off ? "off" : "relaxed";
      })
      .def_readonly("capacity", &slo_admission::capacity)
      .def_readonly("reserve", &slo_admission::reserve)
      .def_readonly("best_effort_age", &slo_admission::best_effort_age);

  py::class_<fcfs_order>(m, "FcfsOrder", "Order: first come, first served (key = arrival).")
      .def(py::init<>())
      .def("key", [](const fcfs_order& o, const py_view& v, py::handle h) { return o.key(v.get(), v.handle(h)); });
  py::class_<edf_order>(m, "EdfOrder", "Order: earliest deadline first (key = deadline, NEVER without one).")
      .def(py::init<>())
      .def("key", [](const edf_order& o, const py_view& v, py::handle h) { return o.key(v.get(), v.handle(h)); });
  py::class_<least_slack_order>(m, "LeastSlackOrder", "Order: least slack first (deadline - now - time left at the fastest degree).")
      .def(py::init<>())
      .def("key", [](const least_slack_order& o, const py_view& v, py::handle h) { return o.key(v.get(), v.handle(h)); });
  py::class_<priority_edf_order>(m, "PriorityEdfOrder",
                                 "Order: higher priority first, then the (virtual) deadline; priority_first=False: the deadline alone.")
      .def(py::init([](typed<double> age, typed<bool> first) {
             return priority_edf_order{arg(age, "PriorityEdfOrder", "best_effort_age"), arg(first, "PriorityEdfOrder", "priority_first")};
           }),
           py::arg("best_effort_age") = 0.0, py::arg("priority_first") = true)
      .def_readonly("best_effort_age", &priority_edf_order::best_effort_age)
      .def_readonly("priority_first", &priority_edf_order::priority_first)
      .def("key", [](const priority_edf_order& o, const py_view& v, py::handle h) {
        const auto k = o.key(v.get(), v.handle(h));
        return py::make_tuple(k.neg_priority, k.deadline);
      });

  py::class_<smallest_meeting_degree>(m, "SmallestMeetingDegree", "Sizing: the smallest degree that meets the deadline (with a margin).")
      .def(py::init([](typed<double> margin_arg) {
             const auto margin = arg(margin_arg, "SmallestMeetingDegree", "margin");
             if (!(margin >= 0 && margin < 1)) throw py::value_error("SmallestMeetingDegree: margin must be in [0, 1)");
             return smallest_meeting_degree{margin};
           }),
           py::arg("margin") = 0.0)
      .def_readonly("margin", &smallest_meeting_degree::margin)
      .def("degree", [](const smallest_meeting_degree& s, const py_view& v, py::handle h, const device_set& a) {
        require_cluster_size(v, a, "SmallestMeetingDegree.degree: available");
        return s.degree(v.get(), v.handle(h), a);
      });
  py::class_<fastest_degree>(m, "FastestDegree", "Sizing: the fastest degree that fits.")
      .def(py::init<>())
      .def("degree", [](const fastest_degree& s, const py_view& v, py::handle h, const device_set& a) {
        require_cluster_size(v, a, "FastestDegree.degree: available");
        return s.degree(v.get(), v.handle(h), a);
      });
  py::class_<cheapest_degree>(m, "CheapestDegree", "Sizing: the fewest GPU-seconds that meets the deadline, else the fastest.")
      .def(py::init<>())
      .def("degree", [](const cheapest_degree& s, const py_view& v, py::handle h, const device_set& a) {
        require_cluster_size(v, a, "CheapestDegree.degree: available");
        return s.degree(v.get(), v.handle(h), a);
      });

  py::class_<sticky_placement>(m, "StickyPlacement", "Placement: own devices, then preferred, then any (node-aware best fit).")
      .def(py::init<>())
      .def("place", [](const sticky_placement& p, const py_view& v, py::handle h, typed<int> k, const device_set& a, const device_set& pref) {
        require_cluster_size(v, a, "StickyPlacement.place: available");
        require_cluster_size(v, pref, "StickyPlacement.place: preferred");
        return maybe_group(p.place(v.get(), v.handle(h), arg(k, "StickyPlacement.place", "k"), a, pref));
      });
  py::class_<packed_placement>(m, "PackedPlacement", "Placement: paraflex.place() as is.")
      .def(py::init<>())
      .def("place", [](const packed_placement& p, const py_view& v, py::handle h, typed<int> k, const device_set& a, const device_set& pref) {
        require_cluster_size(v, a, "PackedPlacement.place: available");
        require_cluster_size(v, pref, "PackedPlacement.place: preferred");
        return maybe_group(p.place(v.get(), v.handle(h), arg(k, "PackedPlacement.place", "k"), a, pref));
      });

  py::class_<composed_recipe>(m, "ComposedPolicy",
                              "A policy from four parts (paraflex::composed_policy): each a built-in part object or a Python object with\n"
                              "judge(view, h) / key(view, h) / degree(view, h, available) / place(view, h, k, available, preferred).")
      .def(py::init([](py::object admission, py::object order, py::object sizing, py::object placement, typed<std::string> name_arg,
                       typed<std::uint32_t> chunk_arg, typed<bool> widen_arg, typed<bool> hold_arg, typed<int> max_batch_arg,
                       typed<double> batch_margin_arg, typed<double> batch_saving_arg, typed<int> backfill_max_gpus_arg) {
             const char* fn = "ComposedPolicy";
             auto name = arg(name_arg, fn, "name");
             const auto chunk = arg(chunk_arg, fn, "chunk");
             const auto widen = arg(widen_arg, fn, "widen");
             const auto hold = arg(hold_arg, fn, "hold");
             const auto max_batch = arg(max_batch_arg, fn, "max_batch");
             const auto batch_margin = arg(batch_margin_arg, fn, "batch_margin");
             const auto batch_saving = arg(batch_saving_arg, fn, "batch_saving");
             const auto backfill_max_gpus = arg(backfill_max_gpus_arg, fn, "backfill_max_gpus");
             if (admission.is_none()) admission = py::cast(admit_all{});
             if (order.is_none()) order = py::cast(edf_order{});
             if (sizing.is_none()) sizing = py::cast(smallest_meeting_degree{});
             if (placement.is_none()) placement = py::cast(sticky_placement{});
             // Fail now, not at the first run, when a part is neither built in nor has its method.
             const std::pair<py::handle, const char*> checks[] = {{admission, "judge"}, {order, "key"}, {sizing, "degree"}, {placement, "place"}};
             const bool builtin[] = {is_builtin_admission(admission), is_builtin_order(order), is_builtin_sizing(sizing), is_builtin_placement(placement)};
             const char* roles[] = {"admission", "order", "sizing", "placement"};
             for (int i = 0; i < 4; ++i) {
               if (!builtin[i] && optional_attr(checks[i].first, checks[i].second).is_none()) {
                 throw py::type_error(std::string("ComposedPolicy: ") + roles[i] + " " + type_name(checks[i].first) + " has no " + checks[i].second + "() method");
               }
             }
             if (chunk == 0) throw py::value_error("ComposedPolicy: chunk must be >= 1");
             // The registry's ranges for slo-aware's batching parameters (slo_aware.hpp).
             if (max_batch < 1 || max_batch > 64) throw py::value_error("ComposedPolicy: max_batch must be in [1, 64], got " + std::to_string(max_batch));
             if (!(batch_margin >= 0 && batch_margin <= 0.9)) throw py::value_error("ComposedPolicy: batch_margin must be in [0, 0.9], got " + std::to_string(batch_margin));
             if (!(batch_saving >= 0 && batch_saving <= 0.95)) throw py::value_error("ComposedPolicy: batch_saving must be in [0, 0.95], got " + std::to_string(batch_saving));
             if (backfill_max_gpus < 0) throw py::value_error("ComposedPolicy: backfill_max_gpus must be >= 0, got " + std::to_string(backfill_max_gpus));
             return composed_recipe{admission, order, sizing, placement,
                                    compose_options{std::move(name), chunk, widen, hold, max_batch, batch_margin, batch_saving, backfill_max_gpus}};
           }),
           py::arg("admission") = py::none(), py::arg("order") = py::none(), py::arg("sizing") = py::none(), py::arg("placement") = py::none(),
           py::kw_only(), py::arg("name") = "composed", py::arg("chunk") = 1, py::arg("widen") = true, py::arg("hold") = false,
           py::arg("max_batch") = 1, py::arg("batch_margin") = 0.1, py::arg("batch_saving") = 0.0,
           py::arg("backfill_max_gpus") = std::numeric_limits<int>::max())
      .def_readonly("admission", &composed_recipe::admission)
      .def_readonly("order", &composed_recipe::order)
      .def_readonly("sizing", &composed_recipe::sizing)
      .def_readonly("placement", &composed_recipe::placement)
      .def_property_readonly("name", [](const composed_recipe& r) { return r.options.name; })
      .def_property_readonly("chunk", [](const composed_recipe& r) { return r.options.chunk; })
      .def_property_readonly("widen", [](const composed_recipe& r) { return r.options.widen; })
      .def_property_readonly("hold", [](const composed_recipe& r) { return r.options.hold; })
      .def_property_readonly("max_batch", [](const composed_recipe& r) { return r.options.max_batch; })
      .def_property_readonly("batch_margin", [](const composed_recipe& r) { return r.options.batch_margin; })
      .def_property_readonly("batch_saving", [](const composed_recipe& r) { return r.options.batch_saving; })
      .def_property_readonly("backfill_max_gpus", [](const composed_recipe& r) { return r.options.backfill_max_devices; });
}

void bind_helpers(py::module_& m) {
  m.def("find_free_group", [](const device_set& available, typed<int> k, const cluster& topology) {
    // Ids come from the set: a larger one would yield devices the cluster does not have.
    if (available.capacity() != topology.device_count()) {
      throw py::value_error("find_free_group: the DeviceSet has capacity " + std::to_string(available.capacity()) + "; the cluster has " +
                            std::to_string(topology.device_count()) + " devices");
    }
    return maybe_group(find_free_group(available, arg(k, "find_free_group", "k"), topology));
  }, py::arg("available"), py::arg("k"), py::arg("topology"),
        "k devices from `available`: an aligned block in one node, else the best-fit node, else the lowest ids; None when fewer are free.");
  m.def("place", [](const py_view& v, py::handle h, typed<int> k, const device_set& available) {
    require_cluster_size(v, available, "place");
    return maybe_group(place(v.get(), v.handle(h), arg(k, "place", "k"), available));
  }, py::arg("view"), py::arg("h"), py::arg("k"), py::arg("available"), "h's own devices when it keeps degree k and they are available, else find_free_group.");
  m.def("expected_migration", [](const py_view& v, py::handle h, typed<int> k, const device_set& a) {
    require_cluster_size(v, a, "expected_migration");
    return expected_migration(v.get(), v.handle(h), arg(k, "expected_migration", "k"), a);
  },
        py::arg("view"), py::arg("h"), py::arg("k"), py::arg("available"));
  m.def("estimated_finish", [](const py_view& v, py::handle h, typed<int> k, const device_set& a) {
    require_cluster_size(v, a, "estimated_finish");
    return estimated_finish(v.get(), v.handle(h), arg(k, "estimated_finish", "k"), a);
  },
        py::arg("view"), py::arg("h"), py::arg("k"), py::arg("available"),
        "now + migration + remaining_time(h, k): when h would end if it ran all it has left on k devices from now on.");
  m.def("fastest_remaining_time", [](const py_view& v, py::handle h) { return fastest_remaining_time(v.get(), v.handle(h)); }, py::arg("view"), py::arg("h"));
  m.def("deadline_unreachable", [](const py_view& v, py::handle h) { return deadline_unreachable(v.get(), v.handle(h)); }, py::arg("view"), py::arg("h"),
        "True when h cannot meet its deadline even alone at its fastest degree.");
  // Batching building blocks (policy/batching.hpp). `taken`: None, a container of handles (`in`), or
  // a callable h -> bool: the requests the policy has handed out in this call already.
  auto taken_fn = [](py::handle taken) {
    return [taken](request_handle h) -> bool {
      if (taken.is_none()) return false;
      if (PyCallable_Check(taken.ptr())) return py::bool_(taken(h));
      return taken.contains(h);
    };
  };
  m.def("batch_companions", [taken_fn](const py_view& v, py::handle h, py::handle group, typed<int> max_batch_arg, typed<double> margin_arg,
                                       py::handle taken) {
    const auto max_batch = arg(max_batch_arg, "batch_companions", "max_batch");
    const auto margin = arg(margin_arg, "batch_companions", "margin");
    if (!(margin >= 0 && margin < 1)) throw py::value_error("batch_companions: margin must be in [0, 1)");
    const auto leader = v.handle(h);
    std::vector<request_handle> members;
    batch_companions(v.get(), leader, to_group(group, "batch_companions"), max_batch, margin, taken_fn(taken), members);
    return handle_list(members);
  }, py::arg("view"), py::arg("h"), py::arg("group"), py::arg("max_batch") = 8, py::arg("margin") = 0.1, py::arg("taken") = py::none(),
        "[h] + the waiting requests that may share h's next step on group (same shape, state on exactly group, next task a step,\n"
        "not `taken`), earliest deadline first, while every member still meets its deadline within (1 - margin) of its time left;\n"
        "at most min(max_batch, view.max_batch(h)) in all. Pass the list to Decisions.assign_batch (one member: assign).");
  m.def("batch_recruits", [taken_fn](const py_view& v, py::handle h, py::handle group, py::handle members, typed<int> max_batch_arg,
                                     typed<double> margin_arg, py::handle taken) {
    const auto max_batch = arg(max_batch_arg, "batch_recruits", "max_batch");
    const auto margin = arg(margin_arg, "batch_recruits", "margin");
    if (!(margin >= 0 && margin < 1)) throw py::value_error("batch_recruits: margin must be in [0, 1)");
    const auto leader = v.handle(h);
    std::vector<request_handle> ms, recruits;
    for (py::handle x : members) ms.push_back(v.handle(x));
    batch_recruits(v.get(), leader, to_group(group, "batch_recruits"), max_batch, margin, taken_fn(taken), ms, recruits);
    return handle_list(recruits);
  }, py::arg("view"), py::arg("h"), py::arg("group"), py::arg("members"), py::arg("max_batch") = 8, py::arg("margin") = 0.1,
        py::arg("taken") = py::none(),
        "Waiting requests of h's shape that have not started and could join h's next batched step on group once their (free) text\n"
        "encode has run there, without any member missing its deadline: assign_batch(recruits, group) runs their encodes now.");
  m.def("policies", [](typed<int> gpus) {
    const auto r = paraflex_bench::builtin_registry(registry_gpus(gpus, "policies: "));
    py::dict out;
    for (const auto& n : r.names()) out[py::str(n)] = r.summary(n);
    return out;
  }, py::arg("gpus") = 8, "The built-in policies by name, with a one-line summary (paraflex-sim --list-policies).");
  m.def("policy_parameters", [](typed<std::string> name_arg, typed<int> gpus) {
    const auto name = arg(name_arg, "policy_parameters", "name");
    const auto r = paraflex_bench::builtin_registry(registry_gpus(gpus, "policy_parameters: "));
    if (!r.contains(name)) throw py::value_error(fmt::format("policy_parameters: unknown policy '{}' (known: {})", name, fmt::join(r.names(), ", ")));
    py::dict out;  // in the order the factory reads them (Python dicts keep it)
    for (const auto& k : r.parameters(name)) out[py::str(k.key)] = py::make_tuple(k.default_value, k.accepted);
    return out;
  }, py::arg("name"), py::arg("gpus") = 8,
        "A built-in policy's parameters: key -> (default, accepted values), as paraflex-sim --list-policies prints them.");
  m.def("default_policies", [](typed<int> gpus) { return paraflex_bench::default_policy_list(registry_gpus(gpus, "default_policies: ")); },
        py::arg("gpus") = 8,
        "The policy specs paraflex-sim runs by default.");
}

}  // namespace

void bind_policy(py::module_& m) {
  g_policy_error = PyErr_NewExceptionWithDoc("paraflex.PolicyError",
                                             "A policy asked for something the runtime cannot do (a busy device, a disallowed degree, ...).\n"
                                             "The message names the policy, the time, the request and the rule.",
                                             PyExc_RuntimeError, nullptr);
  if (!g_policy_error) throw py::error_already_set();
  m.attr("PolicyError") = py::reinterpret_borrow<py::object>(g_policy_error);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const paraflex::policy_error& e) {
      PyErr_SetString(g_policy_error, e.what());
    } catch (const paraflex::input_exception& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  bind_values(m);
  bind_view(m);
  bind_parts(m);
  bind_helpers(m);
}

}  // namespace paraflex_python
