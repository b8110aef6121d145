// Bindings of the OpenMP thread count used by gmcore._C's CPU kernels (gmcore.set_num_threads).
#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdexcept>

#include "registry.h"

namespace {
namespace py = pybind11;

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1");
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
}

int get_num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void bind(py::module_& m) {
  m.def("omp_set_num_threads", &set_num_threads, py::arg("n"),
        "Set the OpenMP thread count of gmcore._C's CPU kernels (no-op without OpenMP).");
  m.def("omp_get_num_threads", &get_num_threads,
        "OpenMP threads gmcore._C's CPU kernels use (1 without OpenMP).");
}

gmcore::RegisterBindings reg("threads", &bind);
}  // namespace
