// examples/python/bind_migration.cpp - shard_range and plan_migration (collectives/migration_plan.hpp):
// what a Python executor needs to move a request's latent between device groups.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/stl.h>

#include "bindings.hpp"
#include "py_args.hpp"
#include "py_objects.hpp"
#include "paraflex/collectives/migration_plan.hpp"

namespace paraflex_python {

namespace {

std::vector<paraflex::device_id> to_list(const paraflex::device_group& g) { return {g.begin(), g.end()}; }

std::size_t non_negative(typed<std::int64_t> v, const char* what, const char* fn) {
  const auto n = arg(v, fn, what);
  if (n < 0) throw py::value_error(std::string(fn) + ": " + what + " must be >= 0 (got " + std::to_string(n) + ")");
  return static_cast<std::size_t>(n);
}

}  // namespace

void bind_migration(py::module_& m) {
  using namespace paraflex;
  py::class_<migration_edge>(m, "MigrationEdge", "One point-to-point copy of a migration (paraflex::migration_edge).")
      .def_readonly("src_rank", &migration_edge::src_rank, "index in the source group of the device that sends")
      .def_readonly("dst_rank", &migration_edge::dst_rank, "index in the destination group of the device that receives")
      .def_readonly("offset", &migration_edge::offset, "first element, in the whole state's numbering")
      .def_readonly("count", &migration_edge::count, "elements (> 0)")
      .def_readonly("local", &migration_edge::local, "same device on both sides: a copy in place")
      .def("__eq__", [](const migration_edge& a, py::object b) { return eq_or_not_implemented(a, b); })
      .def("__repr__", [](const migration_edge& e) {
        return "MigrationEdge(src_rank=" + std::to_string(e.src_rank) + ", dst_rank=" + std::to_string(e.dst_rank) +
               ", offset=" + std::to_string(e.offset) + ", count=" + std::to_string(e.count) + ", local=" + (e.local ? "True" : "False") + ")";
      });

  py::class_<migration_plan>(m, "MigrationPlan", "Which ranks send which slice when a request changes groups (paraflex::migration_plan).")
      .def_property_readonly("layout", [](const migration_plan& p) { return to_list(p.layout); },
                             "layout[j]: the device that holds shard_range(j, len(layout), total) afterwards")
      .def_readonly("edges", &migration_plan::edges, "edges ordered by destination slice, then source rank")
      .def_readonly("local_elements", &migration_plan::local_elements)
      .def_readonly("remote_elements", &migration_plan::remote_elements)
      .def("__repr__", [](const migration_plan& p) {
        return "MigrationPlan(layout=" + p.layout.to_string() + ", edges=" + std::to_string(p.edges.size()) +
               ", local_elements=" + std::to_string(p.local_elements) + ", remote_elements=" + std::to_string(p.remote_elements) + ")";
      });

  m.def(
      "plan_migration",
      [](typed<std::vector<std::int64_t>> source, typed<std::vector<std::int64_t>> dest, typed<std::int64_t> total) {
        // Device ids as ints below 2^32, checked by the same conversion as every other device group.
        const auto from = to_group(source.value, "plan_migration: source");
        const auto to = to_group(dest.value, "plan_migration: dest");
        const auto n = non_negative(total, "total", "plan_migration");
        try {
          return plan_migration(from, to, n);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("source"), py::arg("dest"), py::arg("total"),
      "The plan that moves `total` elements sharded over `source` (source[i] holds slice i) onto the devices of `dest`.\n"
      "Raises ValueError for an empty group or a repeated device.");

  m.def(
      "shard_range",
      [](typed<std::int64_t> rank, typed<std::int64_t> ranks, typed<std::int64_t> total) {
        try {
          const auto r = shard_range(non_negative(rank, "rank", "shard_range"), non_negative(ranks, "ranks", "shard_range"),
                                     non_negative(total, "total", "shard_range"));
          return std::make_pair(r.begin, r.count);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("rank"), py::arg("ranks"), py::arg("total"),
      "(begin, count) of the slice rank `rank` of `ranks` holds of `total` elements. Raises ValueError when rank >= ranks.");
}

}  // namespace paraflex_python
