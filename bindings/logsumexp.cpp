// Bindings of the logsumexp family: row-wise logsumexp / softmax (csrc/logsumexp.h).
#include "../csrc/logsumexp.h"

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;

template <typename T>
py::array lse_cpu_t(const py::array& x) {
  const auto rows = static_cast<int64_t>(x.shape(0)), cols = static_cast<int64_t>(x.shape(1));
  py::array_t<T> out(rows);
  const T* xp = static_cast<const T*>(x.data());
  T* op = out.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::logsumexp_rows_cpu<T>(xp, op, rows, cols);
  }
  return out;
}

template <typename T>
py::array softmax_cpu_t(const py::array& x) {
  const auto rows = static_cast<int64_t>(x.shape(0)), cols = static_cast<int64_t>(x.shape(1));
  py::array_t<T> out({rows, cols});
  const T* xp = static_cast<const T*>(x.data());
  T* op = out.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::softmax_rows_cpu<T>(xp, op, rows, cols);
  }
  return out;
}

py::array logsumexp_rows_cpu(const py::array& x) {
  return check_float_array(x, "logsumexp_rows_cpu", "x", 2) == 'f' ? lse_cpu_t<float>(x)
                                                                   : lse_cpu_t<double>(x);
}

py::array softmax_rows_cpu(const py::array& x) {
  return check_float_array(x, "softmax_rows_cpu", "x", 2) == 'f' ? softmax_cpu_t<float>(x)
                                                                 : softmax_cpu_t<double>(x);
}

#if defined(GMCORE_WITH_CUDA)
void logsumexp_rows_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t cols,
                         const std::string& dtype, std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "logsumexp_rows_cuda");
  gmcore::check_nonnegative(rows, "logsumexp_rows_cuda", "rows");
  gmcore::check_nonnegative(cols, "logsumexp_rows_cuda", "cols");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::logsumexp_rows_cuda<float>(reinterpret_cast<const float*>(x),
                                       reinterpret_cast<float*>(out), rows, cols, stream);
  else
    gmcore::logsumexp_rows_cuda<double>(reinterpret_cast<const double*>(x),
                                        reinterpret_cast<double*>(out), rows, cols, stream);
}

void softmax_rows_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t cols,
                       const std::string& dtype, std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "softmax_rows_cuda");
  gmcore::check_nonnegative(rows, "softmax_rows_cuda", "rows");
  gmcore::check_nonnegative(cols, "softmax_rows_cuda", "cols");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::softmax_rows_cuda<float>(reinterpret_cast<const float*>(x),
                                     reinterpret_cast<float*>(out), rows, cols, stream);
  else
    gmcore::softmax_rows_cuda<double>(reinterpret_cast<const double*>(x),
                                      reinterpret_cast<double*>(out), rows, cols, stream);
}
#endif

void bind(py::module_& m) {
  m.def("logsumexp_rows_cpu", &logsumexp_rows_cpu, py::arg("x"),
        "logsumexp over the last axis of a C-contiguous float32/float64 (rows, cols) array -> (rows,)");
  m.def("softmax_rows_cpu", &softmax_rows_cpu, py::arg("x"),
        "softmax over the last axis of a C-contiguous float32/float64 (rows, cols) array");
#if defined(GMCORE_WITH_CUDA)
  m.def("logsumexp_rows_cuda", &logsumexp_rows_cuda, py::arg("x_ptr"), py::arg("out_ptr"),
        py::arg("rows"), py::arg("cols"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers: out[rows] = logsumexp(x[rows, cols], axis=1). Raises RuntimeError "
        "naming the CUDA error on failure.");
  m.def("softmax_rows_cuda", &softmax_rows_cuda, py::arg("x_ptr"), py::arg("out_ptr"),
        py::arg("rows"), py::arg("cols"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers: out[rows, cols] = softmax(x[rows, cols], axis=1).");
#endif
}

gmcore::RegisterBindings reg("logsumexp", &bind);

}  // namespace
