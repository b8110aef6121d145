// Bindings of the dlml family: discretized logistic mixture NLL + fused gradient (csrc/dlml.h).
#include "../csrc/dlml.h"

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;

// Shapes shared by both entry points: x (B, C, N), params (B, K*(1+2C+C(C-1)/2), N).
void check_shapes(int64_t B, int64_t C, int64_t P, int64_t N, int64_t num_bins, const char* fn,
                  const py::array* x = nullptr, const py::array* p = nullptr) {
  const std::string w = gmcore::where(fn);
  if (C != 1 && C != 3) throw py::value_error(w + "x must have 1 or 3 channels, got " + std::to_string(C));
  const int64_t per = gmcore::dlml::params_per_component(int(C));
  if (P <= 0 || P % per)
    throw py::value_error(w + "params channels (" + std::to_string(P) + ") must be K*" +
                          std::to_string(per) + " for C=" + std::to_string(C));
  if (num_bins < 2) throw py::value_error(w + "num_bins must be >= 2");
  if (P / per > 2147483647LL) throw py::value_error(w + "too many mixture components");
  if (x && p && (x->shape(0) != p->shape(0) || x->shape(2) != p->shape(2)))
    throw py::value_error(w + "x (B, C, N) and params (B, P, N) disagree on B or N");
  (void)B;
  (void)N;
}

template <typename T>
py::tuple forward_cpu_t(const py::array& x, const py::array& p, int64_t num_bins, bool want_grad) {
  const int64_t B = x.shape(0), C = x.shape(1), N = x.shape(2), P = p.shape(1);
  const int K = int(P / gmcore::dlml::params_per_component(int(C)));
  py::array_t<T> nll({B, N});
  py::object grad = py::none();
  T* gp = nullptr;
  if (want_grad) {
    py::array_t<T> g({B, P, N});
    gp = g.mutable_data();
    grad = g;
  }
  const T* xp = static_cast<const T*>(x.data());
  const T* pp = static_cast<const T*>(p.data());
  T* np_ = nll.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::dlml_forward_cpu<T>(xp, pp, np_, gp, B, int(C), K, N, num_bins);
  }
  return py::make_tuple(nll, grad);
}

py::tuple dlml_forward_cpu(const py::array& x, const py::array& params, int64_t num_bins,
                           bool want_grad) {
  const char* fn = "dlml_forward_cpu";
  const char k = gmcore::check_float_array(x, fn, "x", 3);
  gmcore::check_float_array(params, fn, "params", 3);
  gmcore::check_same_dtype(params, k, fn, "params");
  check_shapes(x.shape(0), x.shape(1), params.shape(1), x.shape(2), num_bins, fn, &x, &params);
  return k == 'f' ? forward_cpu_t<float>(x, params, num_bins, want_grad)
                  : forward_cpu_t<double>(x, params, num_bins, want_grad);
}

#if defined(GMCORE_WITH_CUDA)
void dlml_forward_cuda(std::uintptr_t x, std::uintptr_t params, std::uintptr_t nll,
                       std::uintptr_t grad, int64_t B, int64_t C, int64_t K, int64_t N,
                       int64_t num_bins, const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "dlml_forward_cuda";
  const char k = gmcore::check_dtype_str(dtype, fn);
  gmcore::check_nonnegative(B, fn, "B");
  gmcore::check_nonnegative(N, fn, "N");
  if (K <= 0) throw py::value_error(gmcore::where(fn) + "K must be >= 1");
  check_shapes(B, C, K * gmcore::dlml::params_per_component(int(C == 3 ? 3 : 1)), N, num_bins, fn);
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::dlml_forward_cuda<float>(reinterpret_cast<const float*>(x),
                                     reinterpret_cast<const float*>(params),
                                     reinterpret_cast<float*>(nll), reinterpret_cast<float*>(grad),
                                     B, int(C), int(K), N, num_bins, stream);
  else
    gmcore::dlml_forward_cuda<double>(reinterpret_cast<const double*>(x),
                                      reinterpret_cast<const double*>(params),
                                      reinterpret_cast<double*>(nll),
                                      reinterpret_cast<double*>(grad), B, int(C), int(K), N,
                                      num_bins, stream);
}
#endif

void bind(py::module_& m) {
  m.def("dlml_forward_cpu", &dlml_forward_cpu, py::arg("x"), py::arg("params"),
        py::arg("num_bins"), py::arg("want_grad") = false,
        "Discretized logistic mixture: x (B, C, N), params (B, P, N) C-contiguous float32/float64 "
        "-> (nll (B, N), grad (B, P, N) = d sum(nll)/d params, or None).");
#if defined(GMCORE_WITH_CUDA)
  m.def("dlml_forward_cuda", &dlml_forward_cuda, py::arg("x_ptr"), py::arg("params_ptr"),
        py::arg("nll_ptr"), py::arg("grad_ptr"), py::arg("B"), py::arg("C"), py::arg("K"),
        py::arg("N"), py::arg("num_bins"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers; grad_ptr = 0 for the forward only. Raises RuntimeError naming the CUDA "
        "error on failure.");
#endif
}

gmcore::RegisterBindings reg("dlml", &bind);

}  // namespace
