// Bindings of the WaveNet gated activation (csrc/wavenet.h), kernel family "causal_conv".
#include "../csrc/wavenet.h"

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;

// z (N, 2G, L): returns (N, G, L).
void check_z(const py::array& z, const char* fn, int64_t& N, int64_t& G, int64_t& L) {
  if (z.shape(1) % 2)
    throw py::value_error(gmcore::where(fn) + "z must have an even channel count 2G, got " +
                          std::to_string(z.shape(1)));
  N = z.shape(0);
  G = z.shape(1) / 2;
  L = z.shape(2);
}

template <typename T>
py::tuple forward_cpu_t(const py::array& z, const py::array& bias, const py::object& cond,
                        int64_t N, int64_t G, int64_t L) {
  py::array_t<T> a({N, G, L});
  py::array_t<T> ts({N, 2 * G, L});
  const T* zp = static_cast<const T*>(z.data());
  const T* bp = static_cast<const T*>(bias.data());
  const T* cp = cond.is_none() ? nullptr : static_cast<const T*>(cond.cast<py::array>().data());
  T* ap = a.mutable_data();
  T* tp = ts.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::wavenet_gate_forward_cpu<T>(zp, bp, cp, ap, tp, N, G, L);
  }
  return py::make_tuple(a, ts);
}

py::tuple wavenet_gate_forward_cpu(const py::array& z, const py::array& bias,
                                   const py::object& cond) {
  const char* fn = "wavenet_gate_forward_cpu";
  const char k = gmcore::check_float_array(z, fn, "z", 3);
  int64_t N, G, L;
  check_z(z, fn, N, G, L);
  gmcore::check_float_array(bias, fn, "bias", 1);
  gmcore::check_same_dtype(bias, k, fn, "bias");
  if (bias.shape(0) != 2 * G)
    throw py::value_error(gmcore::where(fn) + "bias must have 2G = " + std::to_string(2 * G) +
                          " entries, got " + std::to_string(bias.shape(0)));
  if (!cond.is_none()) {
    const py::array c = cond.cast<py::array>();
    gmcore::check_float_array(c, fn, "cond", 3);
    gmcore::check_same_dtype(c, k, fn, "cond");
    if (c.shape(0) != N || c.shape(1) != 2 * G || c.shape(2) != L)
      throw py::value_error(gmcore::where(fn) + "cond must have z's shape (N, 2G, L)");
  }
  return k == 'f' ? forward_cpu_t<float>(z, bias, cond, N, G, L)
                  : forward_cpu_t<double>(z, bias, cond, N, G, L);
}

template <typename T>
py::array backward_cpu_t(const py::array& ts, const py::array& ga, int64_t N, int64_t G,
                         int64_t L) {
  py::array_t<T> dz({N, 2 * G, L});
  const T* tp = static_cast<const T*>(ts.data());
  const T* gp = static_cast<const T*>(ga.data());
  T* dp = dz.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::wavenet_gate_backward_cpu<T>(tp, gp, dp, N, G, L);
  }
  return dz;
}

py::array wavenet_gate_backward_cpu(const py::array& ts, const py::array& ga) {
  const char* fn = "wavenet_gate_backward_cpu";
  const char k = gmcore::check_float_array(ts, fn, "ts", 3);
  int64_t N, G, L;
  check_z(ts, fn, N, G, L);
  gmcore::check_float_array(ga, fn, "ga", 3);
  gmcore::check_same_dtype(ga, k, fn, "ga");
  if (ga.shape(0) != N || ga.shape(1) != G || ga.shape(2) != L)
    throw py::value_error(gmcore::where(fn) + "ga must be (N, G, L) for ts of shape (N, 2G, L)");
  return k == 'f' ? backward_cpu_t<float>(ts, ga, N, G, L) : backward_cpu_t<double>(ts, ga, N, G, L);
}

#if defined(GMCORE_WITH_CUDA)
void check_sizes(int64_t N, int64_t G, int64_t L, const char* fn) {
  gmcore::check_nonnegative(N, fn, "N");
  gmcore::check_nonnegative(G, fn, "G");
  gmcore::check_nonnegative(L, fn, "L");
}

void wavenet_gate_forward_cuda(std::uintptr_t z, std::uintptr_t bias, std::uintptr_t cond,
                               std::uintptr_t a, std::uintptr_t ts, int64_t N, int64_t G, int64_t L,
                               const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "wavenet_gate_forward_cuda";
  const char k = gmcore::check_dtype_str(dtype, fn);
  check_sizes(N, G, L, fn);
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::wavenet_gate_forward_cuda<float>(
        reinterpret_cast<const float*>(z), reinterpret_cast<const float*>(bias),
        reinterpret_cast<const float*>(cond), reinterpret_cast<float*>(a),
        reinterpret_cast<float*>(ts), N, G, L, stream);
  else
    gmcore::wavenet_gate_forward_cuda<double>(
        reinterpret_cast<const double*>(z), reinterpret_cast<const double*>(bias),
        reinterpret_cast<const double*>(cond), reinterpret_cast<double*>(a),
        reinterpret_cast<double*>(ts), N, G, L, stream);
}

void wavenet_gate_backward_cuda(std::uintptr_t ts, std::uintptr_t ga, std::uintptr_t dz, int64_t N,
                                int64_t G, int64_t L, const std::string& dtype,
                                std::uintptr_t stream) {
  const char* fn = "wavenet_gate_backward_cuda";
  const char k = gmcore::check_dtype_str(dtype, fn);
  check_sizes(N, G, L, fn);
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::wavenet_gate_backward_cuda<float>(reinterpret_cast<const float*>(ts),
                                              reinterpret_cast<const float*>(ga),
                                              reinterpret_cast<float*>(dz), N, G, L, stream);
  else
    gmcore::wavenet_gate_backward_cuda<double>(reinterpret_cast<const double*>(ts),
                                               reinterpret_cast<const double*>(ga),
                                               reinterpret_cast<double*>(dz), N, G, L, stream);
}
#endif

void bind(py::module_& m) {
  m.def("wavenet_gate_forward_cpu", &wavenet_gate_forward_cpu, py::arg("z"), py::arg("bias"),
        py::arg("cond") = py::none(),
        "WaveNet gate: z (N, 2G, L), bias (2G,), cond (N, 2G, L) or None, C-contiguous "
        "float32/float64 -> (a (N, G, L), ts (N, 2G, L) = [tanh | sigmoid] of the two halves).");
  m.def("wavenet_gate_backward_cpu", &wavenet_gate_backward_cpu, py::arg("ts"), py::arg("ga"),
        "WaveNet gate backward: ts (N, 2G, L) saved by the forward, ga (N, G, L) = dL/da -> "
        "dz (N, 2G, L).");
#if defined(GMCORE_WITH_CUDA)
  m.def("wavenet_gate_forward_cuda", &wavenet_gate_forward_cuda, py::arg("z_ptr"),
        py::arg("bias_ptr"), py::arg("cond_ptr"), py::arg("a_ptr"), py::arg("ts_ptr"), py::arg("N"),
        py::arg("G"), py::arg("L"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers; cond_ptr = 0 for no conditioning. Raises RuntimeError naming the CUDA "
        "error on failure.");
  m.def("wavenet_gate_backward_cuda", &wavenet_gate_backward_cuda, py::arg("ts_ptr"),
        py::arg("ga_ptr"), py::arg("dz_ptr"), py::arg("N"), py::arg("G"), py::arg("L"),
        py::arg("dtype"), py::arg("stream") = 0, "Device pointers.");
#endif
}

gmcore::RegisterBindings reg("wavenet", &bind);

}  // namespace
