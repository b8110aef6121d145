// gmcore._C: the pybind11 module of the compiled kernels.
//
// Each kernel family binds its own functions in bindings/<family>.cpp and registers the binder
// (registry.h); this file creates the module, sets the build facts and calls the binders.
// Conventions (common.h): CPU entry points take NumPy arrays and check dtype and layout; CUDA
// entry points take raw device pointers, sizes, a dtype string and a stream.  The GIL is
// released around compute.
#include <algorithm>

#include "registry.h"

#if defined(GMCORE_WITH_CUDA)
namespace gmcore {
int cuda_device_count();  // csrc/cuda_util.cu
}
#endif

namespace gmcore {
std::vector<std::pair<std::string, BindFn>>& binders() {
  static std::vector<std::pair<std::string, BindFn>> all;
  return all;
}
}  // namespace gmcore

PYBIND11_MODULE(_C, m) {
  m.doc() = "gmcore compiled kernels (CPU always; CUDA when built with nvcc)";
#if defined(GMCORE_WITH_CUDA)
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
#if defined(_OPENMP)
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif

  m.def("cuda_device_count",
#if defined(GMCORE_WITH_CUDA)
        []() { return gmcore::cuda_device_count(); },
#else
        []() { return 0; },
#endif
        "Number of visible CUDA devices; 0 when built without CUDA or no GPU/driver (never raises).");

  auto& all = gmcore::binders();
  std::sort(all.begin(), all.end());  // deterministic order, whatever the link order
  pybind11::list families;
  for (auto& [family, bind] : all) {
    bind(m);
    families.append(family);
  }
  m.attr("families") = families;
}
