// Bindings of the softmax family: softmax / log_softmax / cross_entropy over the middle axis
// of a (outer, C, inner) array, forward and backward (csrc/softmax.h).
#include "../csrc/softmax.h"

#include <string>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_int64_array;
using gmcore::check_same_dtype;
using gmcore::where;

struct Dims {
  int64_t outer, C, inner;
};

Dims dims3(const py::array& x) {
  return Dims{static_cast<int64_t>(x.shape(0)), static_cast<int64_t>(x.shape(1)),
              static_cast<int64_t>(x.shape(2))};
}

void check_same_shape(const py::array& a, const py::array& ref, const char* fn, const char* name) {
  bool same = a.ndim() == ref.ndim();
  for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == ref.shape(d);
  if (!same) throw py::value_error(where(fn) + name + " must have the shape of x");
}

// target: int64 of outer * inner entries, each in [0, C) or == ignore_index (an out-of-range
// index would read outside the row).
const int64_t* check_target(const py::array& t, const Dims& d, int64_t ignore, const char* fn) {
  check_int64_array(t, fn, "target");
  if (t.size() != d.outer * d.inner)
    throw py::value_error(where(fn) + "target must have outer * inner = " +
                          std::to_string(d.outer * d.inner) + " entries");
  const int64_t* tp = static_cast<const int64_t*>(t.data());
  for (int64_t i = 0; i < d.outer * d.inner; ++i)
    if (tp[i] != ignore && (tp[i] < 0 || tp[i] >= d.C))
      throw py::index_error(where(fn) + "target " + std::to_string(tp[i]) + " is out of bounds");
  return tp;
}

template <typename T>
const T* weight_ptr(const py::object& w, char k, const Dims& d, const char* fn) {
  if (w.is_none()) return nullptr;
  auto a = w.cast<py::array>();
  check_same_dtype(a, k, fn, "weight");
  if (a.ndim() != 1 || a.shape(0) != d.C)
    throw py::value_error(where(fn) + "weight must be 1-D with C entries");
  return static_cast<const T*>(a.data());
}

template <typename T>
py::array softmax_fwd_t(const py::array& x, bool log) {
  const Dims d = dims3(x);
  py::array_t<T> y({d.outer, d.C, d.inner});
  const T* xp = static_cast<const T*>(x.data());
  T* yp = y.mutable_data();
  py::gil_scoped_release release;
  gmcore::softmax_forward_cpu<T>(xp, yp, d.outer, d.C, d.inner, log);
  return y;
}

py::array softmax_forward_cpu(const py::array& x, bool log) {
  return check_float_array(x, "softmax_forward_cpu", "x", 3) == 'f' ? softmax_fwd_t<float>(x, log)
                                                                    : softmax_fwd_t<double>(x, log);
}

template <typename T>
py::array softmax_bwd_t(const py::array& y, const py::array& g, bool log) {
  const Dims d = dims3(y);
  py::array_t<T> dx({d.outer, d.C, d.inner});
  const T* yp = static_cast<const T*>(y.data());
  const T* gp = static_cast<const T*>(g.data());
  T* dp = dx.mutable_data();
  py::gil_scoped_release release;
  gmcore::softmax_backward_cpu<T>(yp, gp, dp, d.outer, d.C, d.inner, log);
  return dx;
}

py::array softmax_backward_cpu(const py::array& y, const py::array& g, bool log) {
  const char* fn = "softmax_backward_cpu";
  const char k = check_float_array(y, fn, "y", 3);
  check_same_dtype(g, k, fn, "grad");
  check_same_shape(g, y, fn, "grad");
  return k == 'f' ? softmax_bwd_t<float>(y, g, log) : softmax_bwd_t<double>(y, g, log);
}

template <typename T>
py::tuple ce_fwd_t(const py::array& x, const py::array& target, const py::object& weight,
                   int64_t ignore, double eps, double W, char k) {
  const char* fn = "cross_entropy_forward_cpu";
  const Dims d = dims3(x);
  const int64_t* tp = check_target(target, d, ignore, fn);
  const T* wp = weight_ptr<T>(weight, k, d, fn);
  py::array_t<T> loss({d.outer, d.inner}), wt({d.outer, d.inner}), lse({d.outer, d.inner});
  const T* xp = static_cast<const T*>(x.data());
  T *lp = loss.mutable_data(), *wtp = wt.mutable_data(), *sp = lse.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::cross_entropy_forward_cpu<T>(xp, tp, wp, lp, wtp, sp, d.outer, d.C, d.inner, ignore,
                                         T(eps), T(W));
  }
  return py::make_tuple(loss, wt, lse);
}

py::tuple cross_entropy_forward_cpu(const py::array& x, const py::array& target,
                                    const py::object& weight, int64_t ignore_index, double eps,
                                    double W) {
  const char k = check_float_array(x, "cross_entropy_forward_cpu", "x", 3);
  return k == 'f' ? ce_fwd_t<float>(x, target, weight, ignore_index, eps, W, k)
                  : ce_fwd_t<double>(x, target, weight, ignore_index, eps, W, k);
}

template <typename T>
py::array ce_bwd_t(const py::array& x, const py::array& target, const py::object& weight,
                   const py::array& lse, const py::array& gl, int64_t ignore, double eps, double W,
                   char k) {
  const char* fn = "cross_entropy_backward_cpu";
  const Dims d = dims3(x);
  const int64_t* tp = check_target(target, d, ignore, fn);
  const T* wp = weight_ptr<T>(weight, k, d, fn);
  check_same_dtype(lse, k, fn, "lse");
  check_same_dtype(gl, k, fn, "grad");
  if (lse.size() != d.outer * d.inner || gl.size() != d.outer * d.inner)
    throw py::value_error(where(fn) + "lse and grad must have outer * inner entries");
  py::array_t<T> dx({d.outer, d.C, d.inner});
  const T* xp = static_cast<const T*>(x.data());
  const T* sp = static_cast<const T*>(lse.data());
  const T* gp = static_cast<const T*>(gl.data());
  T* dp = dx.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::cross_entropy_backward_cpu<T>(xp, tp, wp, sp, gp, dp, d.outer, d.C, d.inner, ignore,
                                          T(eps), T(W));
  }
  return dx;
}

py::array cross_entropy_backward_cpu(const py::array& x, const py::array& target,
                                     const py::object& weight, const py::array& lse,
                                     const py::array& gl, int64_t ignore_index, double eps,
                                     double W) {
  const char k = check_float_array(x, "cross_entropy_backward_cpu", "x", 3);
  return k == 'f' ? ce_bwd_t<float>(x, target, weight, lse, gl, ignore_index, eps, W, k)
                  : ce_bwd_t<double>(x, target, weight, lse, gl, ignore_index, eps, W, k);
}

#if defined(GMCORE_WITH_CUDA)
// CUDA entry points: device pointers (0 for "no weight"), sizes, dtype string, stream.
void softmax_forward_cuda(std::uintptr_t x, std::uintptr_t y, int64_t outer, int64_t C,
                          int64_t inner, bool log, const std::string& dtype, std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "softmax_forward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::softmax_forward_cuda<float>(reinterpret_cast<const float*>(x),
                                        reinterpret_cast<float*>(y), outer, C, inner, log, stream);
  else
    gmcore::softmax_forward_cuda<double>(reinterpret_cast<const double*>(x),
                                         reinterpret_cast<double*>(y), outer, C, inner, log, stream);
}

void softmax_backward_cuda(std::uintptr_t y, std::uintptr_t g, std::uintptr_t dx, int64_t outer,
                           int64_t C, int64_t inner, bool log, const std::string& dtype,
                           std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "softmax_backward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::softmax_backward_cuda<float>(reinterpret_cast<const float*>(y),
                                         reinterpret_cast<const float*>(g),
                                         reinterpret_cast<float*>(dx), outer, C, inner, log, stream);
  else
    gmcore::softmax_backward_cuda<double>(reinterpret_cast<const double*>(y),
                                          reinterpret_cast<const double*>(g),
                                          reinterpret_cast<double*>(dx), outer, C, inner, log,
                                          stream);
}

template <typename T>
void ce_fwd_cuda_t(std::uintptr_t x, std::uintptr_t target, std::uintptr_t weight,
                   std::uintptr_t loss, std::uintptr_t wt, std::uintptr_t lse, int64_t outer,
                   int64_t C, int64_t inner, int64_t ignore, double eps, double W,
                   std::uintptr_t stream) {
  gmcore::cross_entropy_forward_cuda<T>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const int64_t*>(target),
      reinterpret_cast<const T*>(weight), reinterpret_cast<T*>(loss), reinterpret_cast<T*>(wt),
      reinterpret_cast<T*>(lse), outer, C, inner, ignore, T(eps), T(W), stream);
}

void cross_entropy_forward_cuda(std::uintptr_t x, std::uintptr_t target, std::uintptr_t weight,
                                std::uintptr_t loss, std::uintptr_t wt, std::uintptr_t lse,
                                int64_t outer, int64_t C, int64_t inner, int64_t ignore_index,
                                double eps, double W, const std::string& dtype,
                                std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "cross_entropy_forward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    ce_fwd_cuda_t<float>(x, target, weight, loss, wt, lse, outer, C, inner, ignore_index, eps, W,
                         stream);
  else
    ce_fwd_cuda_t<double>(x, target, weight, loss, wt, lse, outer, C, inner, ignore_index, eps, W,
                          stream);
}

template <typename T>
void ce_bwd_cuda_t(std::uintptr_t x, std::uintptr_t target, std::uintptr_t weight,
                   std::uintptr_t lse, std::uintptr_t gl, std::uintptr_t dx, int64_t outer,
                   int64_t C, int64_t inner, int64_t ignore, double eps, double W,
                   std::uintptr_t stream) {
  gmcore::cross_entropy_backward_cuda<T>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const int64_t*>(target),
      reinterpret_cast<const T*>(weight), reinterpret_cast<const T*>(lse),
      reinterpret_cast<const T*>(gl), reinterpret_cast<T*>(dx), outer, C, inner, ignore, T(eps),
      T(W), stream);
}

void cross_entropy_backward_cuda(std::uintptr_t x, std::uintptr_t target, std::uintptr_t weight,
                                 std::uintptr_t lse, std::uintptr_t gl, std::uintptr_t dx,
                                 int64_t outer, int64_t C, int64_t inner, int64_t ignore_index,
                                 double eps, double W, const std::string& dtype,
                                 std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "cross_entropy_backward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    ce_bwd_cuda_t<float>(x, target, weight, lse, gl, dx, outer, C, inner, ignore_index, eps, W,
                         stream);
  else
    ce_bwd_cuda_t<double>(x, target, weight, lse, gl, dx, outer, C, inner, ignore_index, eps, W,
                          stream);
}
#endif

void bind(py::module_& m) {
  m.def("softmax_forward_cpu", &softmax_forward_cpu, py::arg("x"), py::arg("log"),
        "softmax (log=False) or log_softmax over axis 1 of a C-contiguous float (outer, C, inner) "
        "array");
  m.def("softmax_backward_cpu", &softmax_backward_cpu, py::arg("y"), py::arg("grad"),
        py::arg("log"), "gradient of softmax / log_softmax over axis 1 from its output y");
  m.def("cross_entropy_forward_cpu", &cross_entropy_forward_cpu, py::arg("x"), py::arg("target"),
        py::arg("weight"), py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("wsum"),
        "per-position cross entropy of (outer, C, inner) logits -> (loss, target weight, lse), "
        "each (outer, inner)");
  m.def("cross_entropy_backward_cpu", &cross_entropy_backward_cpu, py::arg("x"), py::arg("target"),
        py::arg("weight"), py::arg("lse"), py::arg("grad"), py::arg("ignore_index"),
        py::arg("label_smoothing"), py::arg("wsum"),
        "gradient of the per-position cross entropy w.r.t. the logits, given d loss (outer, inner)");
#if defined(GMCORE_WITH_CUDA)
  m.def("softmax_forward_cuda", &softmax_forward_cuda, py::arg("x_ptr"), py::arg("y_ptr"),
        py::arg("outer"), py::arg("C"), py::arg("inner"), py::arg("log"), py::arg("dtype"),
        py::arg("stream") = 0);
  m.def("softmax_backward_cuda", &softmax_backward_cuda, py::arg("y_ptr"), py::arg("g_ptr"),
        py::arg("dx_ptr"), py::arg("outer"), py::arg("C"), py::arg("inner"), py::arg("log"),
        py::arg("dtype"), py::arg("stream") = 0);
  m.def("cross_entropy_forward_cuda", &cross_entropy_forward_cuda, py::arg("x_ptr"),
        py::arg("target_ptr"), py::arg("weight_ptr"), py::arg("loss_ptr"), py::arg("wt_ptr"),
        py::arg("lse_ptr"), py::arg("outer"), py::arg("C"), py::arg("inner"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("wsum"), py::arg("dtype"),
        py::arg("stream") = 0);
  m.def("cross_entropy_backward_cuda", &cross_entropy_backward_cuda, py::arg("x_ptr"),
        py::arg("target_ptr"), py::arg("weight_ptr"), py::arg("lse_ptr"), py::arg("g_ptr"),
        py::arg("dx_ptr"), py::arg("outer"), py::arg("C"), py::arg("inner"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("wsum"), py::arg("dtype"),
        py::arg("stream") = 0);
#endif
}

gmcore::RegisterBindings reg("softmax", &bind);

}  // namespace
