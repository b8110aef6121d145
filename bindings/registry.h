// Each kernel family binds its functions from its own bindings/<family>.cpp:
//
//   static void bind(py::module_& m) { m.def("dlml_forward_cpu", ...); }
//   static gmcore::RegisterBindings reg("dlml", &bind);
//
// module.cpp calls every registered binder (in name order) when gmcore._C is imported, so adding
// a family never edits a shared file.  The registry is a function-local static: it exists before
// any other translation unit's static initialiser uses it.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

namespace gmcore {

using BindFn = void (*)(pybind11::module_&);

std::vector<std::pair<std::string, BindFn>>& binders();

struct RegisterBindings {
  RegisterBindings(const char* family, BindFn fn) { binders().emplace_back(family, fn); }
};

}  // namespace gmcore
