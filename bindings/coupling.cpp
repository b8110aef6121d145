// Bindings of the coupling family: fused affine coupling forward / backward (csrc/coupling.h).
#include "../csrc/coupling.h"

#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::where;

void check_fn(int fn, const char* name) {
  if (fn < 0 || fn > 2)
    throw py::value_error(where(name) + "fn must be 0 (exp), 1 (sigmoid) or 2 (tanh), got " +
                          std::to_string(fn));
}

// (rows, n) C-contiguous float array with the shape of `like`, same dtype.
void check_like(const py::array& a, const py::array& like, char k, const char* fn,
                const char* name) {
  gmcore::check_same_dtype(a, k, fn, name);
  if (a.ndim() != 2 || a.shape(0) != like.shape(0) || a.shape(1) != like.shape(1))
    throw py::value_error(where(fn) + name + " must have the shape of the first argument (" +
                          std::to_string(like.shape(0)) + ", " + std::to_string(like.shape(1)) +
                          ")");
}

template <typename T>
py::tuple forward_t(const py::array& x, const py::array& r, const py::array& b, int fn,
                    bool inverse) {
  const auto rows = static_cast<int64_t>(x.shape(0)), n = static_cast<int64_t>(x.shape(1));
  py::array_t<T> y({rows, n});
  py::array_t<T> ld(rows);
  const T* xp = static_cast<const T*>(x.data());
  const T* rp = static_cast<const T*>(r.data());
  const T* bp = static_cast<const T*>(b.data());
  T* yp = y.mutable_data();
  T* lp = ld.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::coupling_forward_cpu<T>(xp, rp, bp, yp, lp, rows, n, fn, inverse);
  }
  return py::make_tuple(y, ld);
}

template <typename T>
py::tuple backward_t(const py::array& a, const py::array& r, const py::array& g,
                     const py::array& gl, int fn, bool inverse) {
  const auto rows = static_cast<int64_t>(a.shape(0)), n = static_cast<int64_t>(a.shape(1));
  py::array_t<T> d_in({rows, n}), d_r({rows, n});
  py::array_t<T> d_b(inverse ? std::vector<int64_t>{rows, n} : std::vector<int64_t>{0, 0});
  const T* ap = static_cast<const T*>(a.data());
  const T* rp = static_cast<const T*>(r.data());
  const T* gp = static_cast<const T*>(g.data());
  const T* glp = static_cast<const T*>(gl.data());
  T* dip = d_in.mutable_data();
  T* drp = d_r.mutable_data();
  T* dbp = inverse ? d_b.mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    gmcore::coupling_backward_cpu<T>(ap, rp, gp, glp, dip, drp, dbp, rows, n, fn, inverse);
  }
  if (!inverse) return py::make_tuple(d_in, d_r, py::none());  // d_shift = g: the caller's
  return py::make_tuple(d_in, d_r, d_b);
}

py::tuple coupling_forward_cpu(const py::array& x, const py::array& r, const py::array& b, int fn,
                               bool inverse) {
  const char* name = "coupling_forward_cpu";
  const char k = check_float_array(x, name, "x", 2);
  check_like(r, x, k, name, "r");
  check_like(b, x, k, name, "b");
  check_fn(fn, name);
  return k == 'f' ? forward_t<float>(x, r, b, fn, inverse)
                  : forward_t<double>(x, r, b, fn, inverse);
}

py::tuple coupling_backward_cpu(const py::array& a, const py::array& r, const py::array& g,
                                const py::array& gl, int fn, bool inverse) {
  const char* name = "coupling_backward_cpu";
  const char k = check_float_array(a, name, "a", 2);
  check_like(r, a, k, name, "r");
  check_like(g, a, k, name, "g");
  gmcore::check_same_dtype(gl, k, name, "g_logdet");
  if (gl.ndim() != 1 || gl.shape(0) != a.shape(0))
    throw py::value_error(where(name) + "g_logdet must have shape (" + std::to_string(a.shape(0)) +
                          ",)");
  check_fn(fn, name);
  return k == 'f' ? backward_t<float>(a, r, g, gl, fn, inverse)
                  : backward_t<double>(a, r, g, gl, fn, inverse);
}

#if defined(GMCORE_WITH_CUDA)
void coupling_forward_cuda(std::uintptr_t x, std::uintptr_t r, std::uintptr_t b, std::uintptr_t y,
                           std::uintptr_t ld, int64_t rows, int64_t n, int fn, bool inverse,
                           const std::string& dtype, std::uintptr_t stream) {
  const char* name = "coupling_forward_cuda";
  const char k = gmcore::check_dtype_str(dtype, name);
  gmcore::check_nonnegative(rows, name, "rows");
  gmcore::check_nonnegative(n, name, "n");
  check_fn(fn, name);
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::coupling_forward_cuda<float>(
        reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(r),
        reinterpret_cast<const float*>(b), reinterpret_cast<float*>(y),
        reinterpret_cast<float*>(ld), rows, n, fn, inverse, stream);
  else
    gmcore::coupling_forward_cuda<double>(
        reinterpret_cast<const double*>(x), reinterpret_cast<const double*>(r),
        reinterpret_cast<const double*>(b), reinterpret_cast<double*>(y),
        reinterpret_cast<double*>(ld), rows, n, fn, inverse, stream);
}

void coupling_backward_cuda(std::uintptr_t a, std::uintptr_t r, std::uintptr_t g,
                            std::uintptr_t gl, std::uintptr_t d_in, std::uintptr_t d_r,
                            std::uintptr_t d_b, int64_t rows, int64_t n, int fn, bool inverse,
                            const std::string& dtype, std::uintptr_t stream) {
  const char* name = "coupling_backward_cuda";
  const char k = gmcore::check_dtype_str(dtype, name);
  gmcore::check_nonnegative(rows, name, "rows");
  gmcore::check_nonnegative(n, name, "n");
  check_fn(fn, name);
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::coupling_backward_cuda<float>(
        reinterpret_cast<const float*>(a), reinterpret_cast<const float*>(r),
        reinterpret_cast<const float*>(g), reinterpret_cast<const float*>(gl),
        reinterpret_cast<float*>(d_in), reinterpret_cast<float*>(d_r),
        reinterpret_cast<float*>(d_b), rows, n, fn, inverse, stream);
  else
    gmcore::coupling_backward_cuda<double>(
        reinterpret_cast<const double*>(a), reinterpret_cast<const double*>(r),
        reinterpret_cast<const double*>(g), reinterpret_cast<const double*>(gl),
        reinterpret_cast<double*>(d_in), reinterpret_cast<double*>(d_r),
        reinterpret_cast<double*>(d_b), rows, n, fn, inverse, stream);
}
#endif

void bind(py::module_& m) {
  m.def("coupling_forward_cpu", &coupling_forward_cpu, py::arg("x"), py::arg("r"), py::arg("b"),
        py::arg("fn"), py::arg("inverse"),
        "Affine coupling on (B, N) C-contiguous float32/float64 arrays -> (y, logdet[B]); fn: 0 "
        "exp, 1 sigmoid(r + 2), 2 exp(tanh r); inverse maps y back to x.");
  m.def("coupling_backward_cpu", &coupling_backward_cpu, py::arg("a"), py::arg("r"), py::arg("g"),
        py::arg("g_logdet"), py::arg("fn"), py::arg("inverse"),
        "Fused gradients -> (d_in, d_r, d_shift); a is the op's input x (forward) or output x "
        "(inverse); d_shift is None in the forward direction (it equals g).");
#if defined(GMCORE_WITH_CUDA)
  m.def("coupling_forward_cuda", &coupling_forward_cuda, py::arg("x_ptr"), py::arg("r_ptr"),
        py::arg("b_ptr"), py::arg("y_ptr"), py::arg("logdet_ptr"), py::arg("rows"), py::arg("n"),
        py::arg("fn"), py::arg("inverse"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers: affine coupling forward/inverse of (rows, n) arrays.");
  m.def("coupling_backward_cuda", &coupling_backward_cuda, py::arg("a_ptr"), py::arg("r_ptr"),
        py::arg("g_ptr"), py::arg("g_logdet_ptr"), py::arg("d_in_ptr"), py::arg("d_r_ptr"),
        py::arg("d_b_ptr"), py::arg("rows"), py::arg("n"), py::arg("fn"), py::arg("inverse"),
        py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers: fused affine coupling gradients (d_b written only when inverse).");
#endif
}

gmcore::RegisterBindings reg("coupling", &bind);

}  // namespace
