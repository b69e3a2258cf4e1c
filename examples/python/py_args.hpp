// examples/python/py_args.hpp - Python arguments as C++ values, with errors that name the function
// and the argument. A parameter of type `int` or `std::string` in a binding lets pybind11 refuse a
// wrong type or an int too large with "incompatible function arguments" and the whole signature, and
// a `.cast<T>()` with "Unable to cast Python instance to C++ type": neither says which argument. The
// bindings take such arguments as typed<T> (or py::handle) and convert them with arg(); what is
// accepted is what pybind11 accepts for T, except True/False where an int is expected.
#pragma once

#include <algorithm>
#include <concepts>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "paraflex/core/csv.hpp"
#include "paraflex/trajectory/request.hpp"

namespace paraflex_python {

namespace py = pybind11;

[[nodiscard]] inline std::string type_name(py::handle o) { return py::str(py::type::of(o).attr("__name__")); }

/// `v` as pybind11 converts an argument of type T (bool, an integer or floating point type, or
/// std::string); nullopt when `v` is a number out of T's range (the caller words that error).
/// TypeError "fn: name must be ..., got <type>" when `v` is no such value at all.
template <class T>
[[nodiscard]] std::optional<T> try_arg(py::handle v, std::string_view fn, std::string_view name) {
  static_assert(std::is_arithmetic_v<T> || std::is_same_v<T, std::string>, "a class argument keeps pybind11's conversion");
  if constexpr (std::integral<T> && !std::is_same_v<T, bool>) {
    // pybind11 takes True as 1 (bool is an int subclass): a flag passed where a count belongs.
    if (PyBool_Check(v.ptr())) throw py::type_error(fmt::format("{}: {} must be an int, got bool", fn, name));
  }
  py::detail::make_caster<T> c;
  // A flag is True or False (numpy's bool too): converting would take None, 0 or 2.5 as a flag, and
  // strict=None would quietly turn strict mode off.
  if (c.load(v, !std::is_same_v<T, bool>)) return py::detail::cast_op<T>(std::move(c));
  const char* wanted = "a str";
  if constexpr (std::is_same_v<T, std::string>) {
    // The only str UTF-8 cannot encode: one holding a lone surrogate (e.g. from a bad decode).
    if (PyUnicode_Check(v.ptr())) throw py::value_error(fmt::format("{}: {} is not valid Unicode text (it holds a lone surrogate)", fn, name));
  } else if constexpr (std::is_same_v<T, bool>) {
    wanted = "True or False";
  } else if constexpr (std::integral<T>) {
    if (PyLong_Check(v.ptr()) || (!PyFloat_Check(v.ptr()) && PyIndex_Check(v.ptr()))) return std::nullopt;
    wanted = "an int";
  } else if constexpr (std::floating_point<T>) {
    if (PyLong_Check(v.ptr())) return std::nullopt;  // an int beyond the float range
    wanted = "a number";
  }
  throw py::type_error(fmt::format("{}: {} must be {}, got {}", fn, name, wanted, type_name(v)));
}

/// try_arg, with a ValueError naming the function and argument for a number out of T's range.
template <class T>
[[nodiscard]] T arg(py::handle v, std::string_view fn, std::string_view name) {
  if (auto x = try_arg<T>(v, fn, name)) return *std::move(x);
  const std::string text = py::str(v);
  if constexpr (std::integral<T>) {
    throw py::value_error(fmt::format("{}: {} {} is out of range [{}, {}]", fn, name, text, std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
  } else {
    throw py::value_error(fmt::format("{}: {} {} is too large for a float", fn, name, text));
  }
}

/// None as nullopt, anything else as arg<T>.
template <class T>
[[nodiscard]] std::optional<T> optional_arg(py::handle v, std::string_view fn, std::string_view name) {
  if (v.is_none()) return std::nullopt;
  return arg<T>(v, fn, name);
}

/// A list (any iterable but a str, bytes or dict) of str, as paraflex-sim's repeated flags take them.
[[nodiscard]] inline std::vector<std::string> str_list_arg(py::handle v, std::string_view fn, std::string_view name) {
  // A dict iterates over its keys: {"0@1:2": 1} would pass for a list, its values unread.
  if (PyUnicode_Check(v.ptr()) || PyBytes_Check(v.ptr()) || PyDict_Check(v.ptr()) || !py::isinstance<py::iterable>(v)) {
    throw py::type_error(fmt::format("{}: {} must be a list of str, got {}", fn, name, type_name(v)));
  }
  std::vector<std::string> out;
  for (py::handle item : v) out.push_back(arg<std::string>(item, fn, fmt::format("{}[{}]", name, out.size())));
  return out;
}

/// A drop or cancel reason becomes a key of dropped_by_reason: paraflex::is_drop_reason's rule (empty
/// = the caller's default). ValueError naming `fn` otherwise, before the library would reject it.
inline void check_reason(std::string_view reason, std::string_view fn) {
  if (const std::string problem = paraflex::drop_reason_problem(reason); !problem.empty()) {
    throw py::value_error(fmt::format("{}: {}", fn, problem));
  }
}

/// __eq__ of a bound class T: a == b for another T; NotImplemented for any other object, so that
/// Python answers False (or asks that object) instead of raising pybind11's TypeError.
template <class T>
[[nodiscard]] py::object eq_or_not_implemented(const T& a, py::handle b) {
  if (!py::isinstance<T>(b)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  return py::bool_(a == b.cast<const T&>());
}

/// A parameter that takes any object, converted in the body by arg(); help() shows T's Python type
/// as for a parameter of type T. The object is borrowed from the call's arguments.
template <class T>
struct typed {
  py::handle value;
};

template <class T>
inline constexpr bool is_optional_v = false;
template <class T>
inline constexpr bool is_optional_v<std::optional<T>> = true;

/// A typed<T> parameter as T: arg<T>, optional_arg (T = std::optional) or str_list_arg (T = std::vector<std::string>).
template <class T>
[[nodiscard]] T arg(typed<T> v, std::string_view fn, std::string_view name) {
  if constexpr (is_optional_v<T>) {
    return optional_arg<typename T::value_type>(v.value, fn, name);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    return str_list_arg(v.value, fn, name);
  } else {
    return arg<T>(v.value, fn, name);
  }
}

}  // namespace paraflex_python

namespace pybind11::detail {

template <class T>
struct type_caster<paraflex_python::typed<T>> {
  PYBIND11_TYPE_CASTER(paraflex_python::typed<T>, make_caster<T>::name);
  bool load(handle src, bool) {
    value.value = src;
    return true;
  }
};

}  // namespace pybind11::detail
