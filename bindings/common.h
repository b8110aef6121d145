// Argument checks shared by the bindings.  CPU entry points take NumPy arrays and never cast or
// copy silently: a ValueError names the function and the problem.  CUDA entry points take raw
// device pointers (integers), sizes, a dtype string and a cudaStream_t as an integer, so any
// array library (CuPy, torch, ...) can call them.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace gmcore {
namespace py = pybind11;

inline std::string where(const char* fn) { return std::string("gmcore._C.") + fn + ": "; }

// A C-contiguous float32/float64 array of the given rank (-1: any); returns 'f' or 'd'.
inline char check_float_array(const py::array& a, const char* fn, const char* name, int ndim = -1) {
  if (ndim >= 0 && a.ndim() != ndim)
    throw py::value_error(where(fn) + name + " must be " + std::to_string(ndim) + "-D, got ndim=" +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(where(fn) + name + " must be C-contiguous (call numpy.ascontiguousarray)");
  const char k = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  if (k == 'f' && size == 4) return 'f';
  if (k == 'f' && size == 8) return 'd';
  throw py::value_error(where(fn) + name + " dtype must be float32 or float64, got " +
                        std::string(py::str(a.dtype())));
}

// Same dtype as a reference array (kernels never mix precisions).
inline void check_same_dtype(const py::array& a, char k, const char* fn, const char* name) {
  const char ka = check_float_array(a, fn, name);
  if (ka != k)
    throw py::value_error(where(fn) + name + " dtype differs from the first argument's");
}

// A C-contiguous int64 array (indices, timesteps).
inline void check_int64_array(const py::array& a, const char* fn, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(where(fn) + name + " must be C-contiguous");
  if (a.dtype().kind() != 'i' || a.dtype().itemsize() != 8)
    throw py::value_error(where(fn) + name + " dtype must be int64, got " +
                          std::string(py::str(a.dtype())));
}

// dtype string of a CUDA entry point: 'f' for "float32", 'd' for "float64".
inline char check_dtype_str(const std::string& dtype, const char* fn) {
  if (dtype == "float32") return 'f';
  if (dtype == "float64") return 'd';
  throw py::value_error(where(fn) + "dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

inline void check_nonnegative(int64_t v, const char* fn, const char* name) {
  if (v < 0) throw py::value_error(where(fn) + name + " must be >= 0");
}

}  // namespace gmcore
