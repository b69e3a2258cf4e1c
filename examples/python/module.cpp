// examples/python/module.cpp - the extension module `paraflex._core`; the package `paraflex`
// (paraflex/__init__.py) re-exports it. Each part of the API is bound in its own translation unit.
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "paraflex: GPU-parallelism scheduling for Diffusion Transformer serving (C++ core)";
  paraflex_python::main_thread_ident = pybind11::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  paraflex_python::bind_migration(m);
  paraflex_python::bind_policy(m);
  paraflex_python::bind_simulate(m);
  paraflex_python::bind_scheduler(m);
}
