// Bindings of the CUDA tap convolution (csrc/masked_conv.cu): device pointers in, results written
// into caller-allocated device buffers, on the given stream.  The CuPy-side wrapper that allocates
// and checks is kernels/_masked_conv_cuda.py.
#include "../csrc/masked_conv_cuda.h"

#include <cstdint>
#include <string>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;

#if defined(GMCORE_WITH_CUDA)
using gmcore::where;

struct Args {
  gmcore::TapConvDims d;
  gmcore::tapconv::Geometry g;
};

Args make_args(const char* fn, int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh, int64_t kw,
               int64_t ho, int64_t wo, int64_t t, int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
               int64_t dh, int64_t dw) {
  Args a{{n, c, h, w, o, kh, kw, ho, wo, t}, {sh, sw, pad_top, pad_left, dh, dw}};
  const std::string err = gmcore::tap_conv_dims_error(a.d, a.g);
  if (!err.empty()) throw py::value_error(where(fn) + err);
  return a;
}

template <typename T>
const T* cptr(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* mptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void masked_conv_forward_cuda(std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t taps,
                              std::uintptr_t wpack, std::uintptr_t y, int64_t n, int64_t c, int64_t h, int64_t wd,
                              int64_t o, int64_t kh, int64_t kw, int64_t ho, int64_t wo, int64_t t, int64_t sh,
                              int64_t sw, int64_t pad_top, int64_t pad_left, int64_t dh, int64_t dw,
                              const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "masked_conv_forward_cuda";
  const char kd = gmcore::check_dtype_str(dtype, fn);
  const Args a = make_args(fn, n, c, h, wd, o, kh, kw, ho, wo, t, sh, sw, pad_top, pad_left, dh, dw);
  const auto* tp = reinterpret_cast<const int64_t*>(taps);
  py::gil_scoped_release release;
  if (kd == 'f')
    gmcore::masked_conv_forward_cuda<float>(cptr<float>(x), cptr<float>(w), cptr<float>(bias), tp,
                                            mptr<float>(wpack), mptr<float>(y), a.d, a.g, stream);
  else
    gmcore::masked_conv_forward_cuda<double>(cptr<double>(x), cptr<double>(w), cptr<double>(bias), tp,
                                             mptr<double>(wpack), mptr<double>(y), a.d, a.g, stream);
}

void masked_conv_input_grad_cuda(std::uintptr_t gy, std::uintptr_t w, std::uintptr_t taps, std::uintptr_t wpack,
                                 std::uintptr_t gx, int64_t n, int64_t c, int64_t h, int64_t wd, int64_t o,
                                 int64_t kh, int64_t kw, int64_t ho, int64_t wo, int64_t t, int64_t sh, int64_t sw,
                                 int64_t pad_top, int64_t pad_left, int64_t dh, int64_t dw,
                                 const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "masked_conv_input_grad_cuda";
  const char kd = gmcore::check_dtype_str(dtype, fn);
  const Args a = make_args(fn, n, c, h, wd, o, kh, kw, ho, wo, t, sh, sw, pad_top, pad_left, dh, dw);
  const auto* tp = reinterpret_cast<const int64_t*>(taps);
  py::gil_scoped_release release;
  if (kd == 'f')
    gmcore::masked_conv_input_grad_cuda<float>(cptr<float>(gy), cptr<float>(w), tp, mptr<float>(wpack),
                                               mptr<float>(gx), a.d, a.g, stream);
  else
    gmcore::masked_conv_input_grad_cuda<double>(cptr<double>(gy), cptr<double>(w), tp, mptr<double>(wpack),
                                                mptr<double>(gx), a.d, a.g, stream);
}

void masked_conv_weight_grad_cuda(std::uintptr_t x, std::uintptr_t gy, std::uintptr_t taps, std::uintptr_t partial,
                                  int64_t splits, std::uintptr_t gw, int64_t n, int64_t c, int64_t h, int64_t wd,
                                  int64_t o, int64_t kh, int64_t kw, int64_t ho, int64_t wo, int64_t t, int64_t sh,
                                  int64_t sw, int64_t pad_top, int64_t pad_left, int64_t dh, int64_t dw,
                                  const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "masked_conv_weight_grad_cuda";
  const char kd = gmcore::check_dtype_str(dtype, fn);
  const Args a = make_args(fn, n, c, h, wd, o, kh, kw, ho, wo, t, sh, sw, pad_top, pad_left, dh, dw);
  if (splits < 1 || splits > 65535) throw py::value_error(where(fn) + "splits must be in [1, 65535]");
  const auto* tp = reinterpret_cast<const int64_t*>(taps);
  py::gil_scoped_release release;
  if (kd == 'f')
    gmcore::masked_conv_weight_grad_cuda<float>(cptr<float>(x), cptr<float>(gy), tp, mptr<float>(partial), splits,
                                                mptr<float>(gw), a.d, a.g, stream);
  else
    gmcore::masked_conv_weight_grad_cuda<double>(cptr<double>(x), cptr<double>(gy), tp, mptr<double>(partial),
                                                 splits, mptr<double>(gw), a.d, a.g, stream);
}

#define GM_DIMS_ARGS                                                                                        \
  py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"), py::arg("o"), py::arg("kh"), py::arg("kw"),       \
      py::arg("ho"), py::arg("wo"), py::arg("t"), py::arg("sh"), py::arg("sw"), py::arg("pad_top"),          \
      py::arg("pad_left"), py::arg("dh"), py::arg("dw"), py::arg("dtype"), py::arg("stream") = 0
#endif

void bind(py::module_& m) {
#if defined(GMCORE_WITH_CUDA)
  m.def("masked_conv_forward_cuda", &masked_conv_forward_cuda, py::arg("x_ptr"), py::arg("w_ptr"),
        py::arg("bias_ptr"), py::arg("taps_ptr"), py::arg("wpack_ptr"), py::arg("y_ptr"), GM_DIMS_ARGS,
        "Device pointers: y (N, O, Ho, Wo) = bias + tap convolution of x (N, C, H, W) by w (O, C, KH, KW) "
        "over the int64 taps (T, 2); bias_ptr 0 for none; wpack_ptr: scratch of T*C*O elements.");
  m.def("masked_conv_input_grad_cuda", &masked_conv_input_grad_cuda, py::arg("gy_ptr"), py::arg("w_ptr"),
        py::arg("taps_ptr"), py::arg("wpack_ptr"), py::arg("gx_ptr"), GM_DIMS_ARGS,
        "Device pointers: gx (N, C, H, W) = adjoint in x of the tap convolution applied to gy (N, O, Ho, Wo); "
        "wpack_ptr: scratch of T*O*C elements.");
  m.def("masked_conv_weight_grad_cuda", &masked_conv_weight_grad_cuda, py::arg("x_ptr"), py::arg("gy_ptr"),
        py::arg("taps_ptr"), py::arg("partial_ptr"), py::arg("splits"), py::arg("gw_ptr"), GM_DIMS_ARGS,
        "Device pointers: gw (O, C, KH, KW) = adjoint in w (zero at inactive taps); the N*Ho*Wo sum runs in "
        "`splits` chunks whose partials (scratch of splits*T*O*C elements) are added in a fixed order.");
#undef GM_DIMS_ARGS
#else
  (void)m;
#endif
}

gmcore::RegisterBindings reg("masked_conv_cuda", &bind);

}  // namespace
