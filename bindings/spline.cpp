// Bindings of the spline family: the rational-quadratic spline of neural spline flows
// (csrc/spline.h), forward/inverse map with its log-derivative, and the backward.
#include <cmath>

#include "../csrc/spline.h"

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_same_dtype;
using gmcore::where;

template <typename T>
gmcore::spline::Options<T> options(int64_t bins, bool inverse, double bound, double min_w,
                                   double min_h, double min_d, const char* fn) {
  if (bins < 1 || bins > gmcore::spline::kMaxBins)
    throw py::value_error(where(fn) + "the number of bins must lie in [1, " +
                          std::to_string(gmcore::spline::kMaxBins) + "], got " +
                          std::to_string(bins));
  if (!(bound > 0)) throw py::value_error(where(fn) + "tail_bound must be > 0");
  if (!(min_d > 0 && min_d < 1)) throw py::value_error(where(fn) + "min_derivative must lie in (0, 1)");
  if (!(min_w >= 0 && min_w * bins < 1) || !(min_h >= 0 && min_h * bins < 1))
    throw py::value_error(where(fn) + "min_bin_width/height * bins must lie in [0, 1)");
  return gmcore::spline::Options<T>{static_cast<int>(bins), inverse, static_cast<T>(bound),
                                    static_cast<T>(min_w), static_cast<T>(min_h),
                                    static_cast<T>(min_d),
                                    static_cast<T>(std::log(std::expm1(1.0 - min_d)))};
}

// (n,) x, (n, K) W and H, (n, K-1) D of one dtype; returns (n, K).
int64_t check_shapes(const py::array& x, const py::array& W, const py::array& H,
                     const py::array& D, const char* fn) {
  const char k = check_float_array(x, fn, "x", 1);
  check_float_array(W, fn, "widths", 2);
  check_float_array(H, fn, "heights", 2);
  check_float_array(D, fn, "derivatives", 2);
  check_same_dtype(W, k, fn, "widths");
  check_same_dtype(H, k, fn, "heights");
  check_same_dtype(D, k, fn, "derivatives");
  const int64_t n = x.shape(0), K = W.shape(1);
  if (W.shape(0) != n || H.shape(0) != n || D.shape(0) != n || H.shape(1) != K ||
      D.shape(1) != K - 1)
    throw py::value_error(where(fn) + "for x of shape (n,), widths and heights must be (n, K) "
                          "and derivatives (n, K - 1)");
  return K;
}

template <typename T>
py::tuple forward_t(const py::array& x, const py::array& W, const py::array& H,
                    const py::array& D, int64_t K, const gmcore::spline::Options<T>& o) {
  const int64_t n = x.shape(0);
  py::array_t<T> y(n), ld(n);
  const T *xp = static_cast<const T*>(x.data()), *wp = static_cast<const T*>(W.data()),
          *hp = static_cast<const T*>(H.data()), *dp = static_cast<const T*>(D.data());
  T *yp = y.mutable_data(), *lp = ld.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::spline_forward_cpu<T>(xp, wp, hp, dp, yp, lp, n, o);
  }
  (void)K;
  return py::make_tuple(y, ld);
}

template <typename T>
py::tuple backward_t(const py::array& x, const py::array& W, const py::array& H,
                     const py::array& D, const py::array& gy, const py::array& gl, int64_t K,
                     const gmcore::spline::Options<T>& o) {
  const int64_t n = x.shape(0);
  py::array_t<T> gx(n), gW({n, K}), gH({n, K}), gD({n, K - 1});
  const T *xp = static_cast<const T*>(x.data()), *wp = static_cast<const T*>(W.data()),
          *hp = static_cast<const T*>(H.data()), *dp = static_cast<const T*>(D.data()),
          *gyp = static_cast<const T*>(gy.data()), *glp = static_cast<const T*>(gl.data());
  T *gxp = gx.mutable_data(), *gwp = gW.mutable_data(), *ghp = gH.mutable_data(),
    *gdp = gD.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::spline_backward_cpu<T>(xp, wp, hp, dp, gyp, glp, gxp, gwp, ghp, gdp, n, o);
  }
  return py::make_tuple(gx, gW, gH, gD);
}

py::tuple spline_forward_cpu(const py::array& x, const py::array& W, const py::array& H,
                             const py::array& D, bool inverse, double bound, double min_w,
                             double min_h, double min_d) {
  const char* fn = "spline_forward_cpu";
  const int64_t K = check_shapes(x, W, H, D, fn);
  if (check_float_array(x, fn, "x") == 'f')
    return forward_t<float>(x, W, H, D, K, options<float>(K, inverse, bound, min_w, min_h, min_d, fn));
  return forward_t<double>(x, W, H, D, K, options<double>(K, inverse, bound, min_w, min_h, min_d, fn));
}

py::tuple spline_backward_cpu(const py::array& x, const py::array& W, const py::array& H,
                              const py::array& D, const py::array& gy, const py::array& gl,
                              bool inverse, double bound, double min_w, double min_h,
                              double min_d) {
  const char* fn = "spline_backward_cpu";
  const int64_t K = check_shapes(x, W, H, D, fn);
  const char k = check_float_array(x, fn, "x");
  for (const auto* g : {&gy, &gl}) {
    check_same_dtype(*g, k, fn, g == &gy ? "grad_y" : "grad_logdet");
    if (g->ndim() != 1 || g->shape(0) != x.shape(0))
      throw py::value_error(where(fn) + "the upstream gradients must have x's shape (n,)");
  }
  if (k == 'f')
    return backward_t<float>(x, W, H, D, gy, gl, K,
                             options<float>(K, inverse, bound, min_w, min_h, min_d, fn));
  return backward_t<double>(x, W, H, D, gy, gl, K,
                            options<double>(K, inverse, bound, min_w, min_h, min_d, fn));
}

#if defined(GMCORE_WITH_CUDA)
void spline_forward_cuda(std::uintptr_t x, std::uintptr_t W, std::uintptr_t H, std::uintptr_t D,
                         std::uintptr_t y, std::uintptr_t ld, int64_t n, int64_t bins,
                         bool inverse, double bound, double min_w, double min_h, double min_d,
                         const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "spline_forward_cuda";
  const char k = gmcore::check_dtype_str(dtype, fn);
  gmcore::check_nonnegative(n, fn, "n");
  if (k == 'f') {
    auto o = options<float>(bins, inverse, bound, min_w, min_h, min_d, fn);
    py::gil_scoped_release release;
    gmcore::spline_forward_cuda<float>(
        reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(W),
        reinterpret_cast<const float*>(H), reinterpret_cast<const float*>(D),
        reinterpret_cast<float*>(y), reinterpret_cast<float*>(ld), n, o, stream);
  } else {
    auto o = options<double>(bins, inverse, bound, min_w, min_h, min_d, fn);
    py::gil_scoped_release release;
    gmcore::spline_forward_cuda<double>(
        reinterpret_cast<const double*>(x), reinterpret_cast<const double*>(W),
        reinterpret_cast<const double*>(H), reinterpret_cast<const double*>(D),
        reinterpret_cast<double*>(y), reinterpret_cast<double*>(ld), n, o, stream);
  }
}

void spline_backward_cuda(std::uintptr_t x, std::uintptr_t W, std::uintptr_t H,
                          std::uintptr_t D, std::uintptr_t gy, std::uintptr_t gl,
                          std::uintptr_t gx, std::uintptr_t gW, std::uintptr_t gH,
                          std::uintptr_t gD, int64_t n, int64_t bins, bool inverse, double bound,
                          double min_w, double min_h, double min_d, const std::string& dtype,
                          std::uintptr_t stream) {
  const char* fn = "spline_backward_cuda";
  const char k = gmcore::check_dtype_str(dtype, fn);
  gmcore::check_nonnegative(n, fn, "n");
  if (k == 'f') {
    auto o = options<float>(bins, inverse, bound, min_w, min_h, min_d, fn);
    py::gil_scoped_release release;
    gmcore::spline_backward_cuda<float>(
        reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(W),
        reinterpret_cast<const float*>(H), reinterpret_cast<const float*>(D),
        reinterpret_cast<const float*>(gy), reinterpret_cast<const float*>(gl),
        reinterpret_cast<float*>(gx), reinterpret_cast<float*>(gW), reinterpret_cast<float*>(gH),
        reinterpret_cast<float*>(gD), n, o, stream);
  } else {
    auto o = options<double>(bins, inverse, bound, min_w, min_h, min_d, fn);
    py::gil_scoped_release release;
    gmcore::spline_backward_cuda<double>(
        reinterpret_cast<const double*>(x), reinterpret_cast<const double*>(W),
        reinterpret_cast<const double*>(H), reinterpret_cast<const double*>(D),
        reinterpret_cast<const double*>(gy), reinterpret_cast<const double*>(gl),
        reinterpret_cast<double*>(gx), reinterpret_cast<double*>(gW),
        reinterpret_cast<double*>(gH), reinterpret_cast<double*>(gD), n, o, stream);
  }
}
#endif

void bind(py::module_& m) {
  m.def("spline_forward_cpu", &spline_forward_cpu, py::arg("x"), py::arg("widths"),
        py::arg("heights"), py::arg("derivatives"), py::arg("inverse"), py::arg("tail_bound"),
        py::arg("min_bin_width"), py::arg("min_bin_height"), py::arg("min_derivative"),
        "Rational-quadratic spline of x (n,) with unconstrained widths, heights (n, K) and "
        "interior derivatives (n, K-1): returns (y, logdet), each (n,).");
  m.def("spline_backward_cpu", &spline_backward_cpu, py::arg("x"), py::arg("widths"),
        py::arg("heights"), py::arg("derivatives"), py::arg("grad_y"), py::arg("grad_logdet"),
        py::arg("inverse"), py::arg("tail_bound"), py::arg("min_bin_width"),
        py::arg("min_bin_height"), py::arg("min_derivative"),
        "Gradients (x, widths, heights, derivatives) of sum(grad_y * y + grad_logdet * logdet).");
#if defined(GMCORE_WITH_CUDA)
  m.def("spline_forward_cuda", &spline_forward_cuda, py::arg("x_ptr"), py::arg("w_ptr"),
        py::arg("h_ptr"), py::arg("d_ptr"), py::arg("y_ptr"), py::arg("ld_ptr"), py::arg("n"),
        py::arg("bins"), py::arg("inverse"), py::arg("tail_bound"), py::arg("min_bin_width"),
        py::arg("min_bin_height"), py::arg("min_derivative"), py::arg("dtype"),
        py::arg("stream") = 0, "Device pointers: the spline forward (see spline_forward_cpu).");
  m.def("spline_backward_cuda", &spline_backward_cuda, py::arg("x_ptr"), py::arg("w_ptr"),
        py::arg("h_ptr"), py::arg("d_ptr"), py::arg("gy_ptr"), py::arg("gl_ptr"),
        py::arg("gx_ptr"), py::arg("gw_ptr"), py::arg("gh_ptr"), py::arg("gd_ptr"), py::arg("n"),
        py::arg("bins"), py::arg("inverse"), py::arg("tail_bound"), py::arg("min_bin_width"),
        py::arg("min_bin_height"), py::arg("min_derivative"), py::arg("dtype"),
        py::arg("stream") = 0, "Device pointers: the spline backward (see spline_backward_cpu).");
#endif
}

gmcore::RegisterBindings reg("spline", &bind);

}  // namespace
