// gmcore._C: pybind11 bindings for the compiled kernels.
//
// CPU entry points take NumPy arrays and check dtype / layout (no silent casts or copies:
// a ValueError names the problem).  CUDA entry points take raw device pointers as integers,
// the shape, a dtype string and a cudaStream_t as an integer, so any array library (CuPy,
// torch, ...) can call them.  The GIL is released around compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../csrc/logsumexp.h"

namespace py = pybind11;

namespace {

// Validate a 2-D C-contiguous float32/float64 array; returns its dtype char ('f' or 'd').
char check_rows_array(const py::array& a, const char* fn) {
  const std::string where = std::string("gmcore._C.") + fn + ": ";
  if (a.ndim() != 2)
    throw py::value_error(where + "expected a 2-D (rows, cols) array, got ndim=" +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(where + "array must be C-contiguous (call numpy.ascontiguousarray)");
  const char k = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  if (k == 'f' && size == 4) return 'f';
  if (k == 'f' && size == 8) return 'd';
  throw py::value_error(where + "dtype must be float32 or float64, got " +
                        std::string(py::str(a.dtype())));
}

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
  return check_rows_array(x, "logsumexp_rows_cpu") == 'f' ? lse_cpu_t<float>(x)
                                                           : lse_cpu_t<double>(x);
}

py::array softmax_rows_cpu(const py::array& x) {
  return check_rows_array(x, "softmax_rows_cpu") == 'f' ? softmax_cpu_t<float>(x)
                                                         : softmax_cpu_t<double>(x);
}

#if defined(GMCORE_WITH_CUDA)
char check_dtype_str(const std::string& dtype, const char* fn) {
  if (dtype == "float32") return 'f';
  if (dtype == "float64") return 'd';
  throw py::value_error(std::string("gmcore._C.") + fn +
                        ": dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

void check_sizes(int64_t rows, int64_t cols, const char* fn) {
  if (rows < 0 || cols < 0)
    throw py::value_error(std::string("gmcore._C.") + fn + ": rows and cols must be >= 0");
}

void logsumexp_rows_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t cols,
                         const std::string& dtype, std::uintptr_t stream) {
  const char k = check_dtype_str(dtype, "logsumexp_rows_cuda");
  check_sizes(rows, cols, "logsumexp_rows_cuda");
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
  const char k = check_dtype_str(dtype, "softmax_rows_cuda");
  check_sizes(rows, cols, "softmax_rows_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::softmax_rows_cuda<float>(reinterpret_cast<const float*>(x),
                                     reinterpret_cast<float*>(out), rows, cols, stream);
  else
    gmcore::softmax_rows_cuda<double>(reinterpret_cast<const double*>(x),
                                      reinterpret_cast<double*>(out), rows, cols, stream);
}
#endif

}  // namespace

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
