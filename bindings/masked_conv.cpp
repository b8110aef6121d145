// Bindings of the tap-convolution CPU kernels (families masked_conv / causal_conv): the column
// packing (im2col over the active taps) and its adjoint (col2im), csrc/masked_conv_cpu.cpp.
// The GEMMs run in Python through NumPy's BLAS (kernels/_tap_conv_cpu.py).
#include "../csrc/masked_conv.h"

#include <optional>

#include <pybind11/stl.h>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::tapconv::Geometry;

Geometry make_geometry(int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left, int64_t dh,
                       int64_t dw, const char* fn) {
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1)
    throw py::value_error(gmcore::where(fn) + "stride and dilation must be >= 1");
  if (pad_top < 0 || pad_left < 0) throw py::value_error(gmcore::where(fn) + "padding must be >= 0");
  return Geometry{sh, sw, pad_top, pad_left, dh, dw};
}

// taps (T, 2) int64 with 0 <= ky, kx (upper bounds are the caller's kernel size)
int64_t check_taps(const py::array& taps, const char* fn) {
  gmcore::check_int64_array(taps, fn, "taps");
  if (taps.ndim() != 2 || taps.shape(1) != 2 || taps.shape(0) < 1)
    throw py::value_error(gmcore::where(fn) + "taps must be a non-empty (T, 2) array");
  const int64_t* p = static_cast<const int64_t*>(taps.data());
  for (int64_t i = 0; i < 2 * taps.shape(0); ++i)
    if (p[i] < 0) throw py::value_error(gmcore::where(fn) + "taps must be >= 0");
  return taps.shape(0);
}

// x (N, C, H, W) -> cols (T*C, N*Ho*Wo), written into `cols`.
void masked_conv_pack_cpu(const py::array& x, py::array& cols, const py::array& taps, int64_t Ho,
                          int64_t Wo, int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                          int64_t dh, int64_t dw) {
  const char* fn = "masked_conv_pack_cpu";
  const char k = gmcore::check_float_array(x, fn, "x", 4);
  gmcore::check_float_array(cols, fn, "cols", 2);
  gmcore::check_same_dtype(cols, k, fn, "cols");
  if (!cols.writeable()) throw py::value_error(gmcore::where(fn) + "cols must be writeable");
  const int64_t T = check_taps(taps, fn);
  const Geometry g = make_geometry(sh, sw, pad_top, pad_left, dh, dw, fn);
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  if (Ho < 1 || Wo < 1) throw py::value_error(gmcore::where(fn) + "output size must be >= 1");
  if (cols.shape(0) != T * C || cols.shape(1) != N * Ho * Wo)
    throw py::value_error(gmcore::where(fn) + "cols must be (T*C, N*Ho*Wo) = (" +
                          std::to_string(T * C) + ", " + std::to_string(N * Ho * Wo) + ")");
  const int64_t* tp = static_cast<const int64_t*>(taps.data());
  const void* xp = x.data();
  void* cp = cols.mutable_data();
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::tapconv::pack_cpu<float>(static_cast<const float*>(xp), static_cast<float*>(cp), tp,
                                     T, N, C, H, W, Ho, Wo, g);
  else
    gmcore::tapconv::pack_cpu<double>(static_cast<const double*>(xp), static_cast<double*>(cp),
                                      tp, T, N, C, H, W, Ho, Wo, g);
}

// gcols (T*C, N*Ho*Wo) -> gx (N, C, H, W), overwritten.
void masked_conv_unpack_cpu(const py::array& gcols, py::array& gx, const py::array& taps,
                            int64_t Ho, int64_t Wo, int64_t sh, int64_t sw, int64_t pad_top,
                            int64_t pad_left, int64_t dh, int64_t dw) {
  const char* fn = "masked_conv_unpack_cpu";
  const char k = gmcore::check_float_array(gcols, fn, "gcols", 2);
  gmcore::check_float_array(gx, fn, "gx", 4);
  gmcore::check_same_dtype(gx, k, fn, "gx");
  if (!gx.writeable()) throw py::value_error(gmcore::where(fn) + "gx must be writeable");
  const int64_t T = check_taps(taps, fn);
  const Geometry g = make_geometry(sh, sw, pad_top, pad_left, dh, dw, fn);
  const int64_t N = gx.shape(0), C = gx.shape(1), H = gx.shape(2), W = gx.shape(3);
  if (Ho < 1 || Wo < 1) throw py::value_error(gmcore::where(fn) + "output size must be >= 1");
  if (gcols.shape(0) != T * C || gcols.shape(1) != N * Ho * Wo)
    throw py::value_error(gmcore::where(fn) + "gcols must be (T*C, N*Ho*Wo) = (" +
                          std::to_string(T * C) + ", " + std::to_string(N * Ho * Wo) + ")");
  const int64_t* tp = static_cast<const int64_t*>(taps.data());
  const void* gp = gcols.data();
  void* xp = gx.mutable_data();
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::tapconv::unpack_cpu<float>(static_cast<const float*>(gp), static_cast<float*>(xp), tp,
                                       T, N, C, H, W, Ho, Wo, g);
  else
    gmcore::tapconv::unpack_cpu<double>(static_cast<const double*>(gp), static_cast<double*>(xp),
                                        tp, T, N, C, H, W, Ho, Wo, g);
}

// shifts (T, 2) int64: (sy, sx) per tap, any sign.
int64_t check_shifts(const py::array& shifts, const char* fn) {
  gmcore::check_int64_array(shifts, fn, "shifts");
  if (shifts.ndim() != 2 || shifts.shape(1) != 2 || shifts.shape(0) < 1)
    throw py::value_error(gmcore::where(fn) + "shifts must be a non-empty (T, 2) array");
  return shifts.shape(0);
}

void check_float32(const py::array& a, const char* fn, const char* name, int ndim) {
  if (gmcore::check_float_array(a, fn, name, ndim) != 'f')
    throw py::value_error(gmcore::where(fn) + name + " dtype must be float32");
}

void check_direct(const char* fn) {
  if (!gmcore::tapconv::direct_supported())
    throw py::value_error(gmcore::where(fn) + "needs an x86-64 CPU with AVX-512 "
                          "(check masked_conv_direct_supported() first)");
}

// out[n, m] = bias[m] + sum_t a[m, t] @ in[n, :, shifted by shifts[t]], out overwritten.
void masked_conv_shift_forward_cpu(const py::array& in, const py::array& a, const py::array& shifts,
                                   py::array& out, const std::optional<py::array>& bias) {
  const char* fn = "masked_conv_shift_forward_cpu";
  check_direct(fn);
  check_float32(in, fn, "in", 4);
  check_float32(a, fn, "a", 3);
  check_float32(out, fn, "out", 4);
  if (!out.writeable()) throw py::value_error(gmcore::where(fn) + "out must be writeable");
  const int64_t T = check_shifts(shifts, fn);
  const int64_t N = in.shape(0), C = in.shape(1), M = a.shape(0);
  if (a.shape(1) != T || a.shape(2) != C)
    throw py::value_error(gmcore::where(fn) + "a must be (M, T, C) = (M, " + std::to_string(T) +
                          ", " + std::to_string(C) + ")");
  if (out.shape(0) != N || out.shape(1) != M || out.shape(2) < 1 || out.shape(3) < 1)
    throw py::value_error(gmcore::where(fn) + "out must be (N, M, Ho, Wo) = (" +
                          std::to_string(N) + ", " + std::to_string(M) + ", Ho >= 1, Wo >= 1)");
  const float* bp = nullptr;
  if (bias) {
    check_float32(*bias, fn, "bias", 1);
    if (bias->shape(0) != M) throw py::value_error(gmcore::where(fn) + "bias must be (M,)");
    bp = static_cast<const float*>(bias->data());
  }
  const float* ip = static_cast<const float*>(in.data());
  const float* ap = static_cast<const float*>(a.data());
  const int64_t* sp = static_cast<const int64_t*>(shifts.data());
  float* op = static_cast<float*>(out.mutable_data());
  const int64_t Hi = in.shape(2), Wi = in.shape(3), Ho = out.shape(2), Wo = out.shape(3);
  py::gil_scoped_release release;
  gmcore::tapconv::shift_conv_forward(ip, N, C, Hi, Wi, ap, M, sp, T, op, Ho, Wo, bp);
}

// gw[t, c, m] = sum over n and pixels of gy[n, m] * x[n, c, shifted by shifts[t]], overwritten.
void masked_conv_shift_weight_grad_cpu(const py::array& x, const py::array& gy,
                                       const py::array& shifts, py::array& gw) {
  const char* fn = "masked_conv_shift_weight_grad_cpu";
  check_direct(fn);
  check_float32(x, fn, "x", 4);
  check_float32(gy, fn, "gy", 4);
  check_float32(gw, fn, "gw", 3);
  if (!gw.writeable()) throw py::value_error(gmcore::where(fn) + "gw must be writeable");
  const int64_t T = check_shifts(shifts, fn);
  const int64_t N = x.shape(0), C = x.shape(1), M = gy.shape(1);
  if (gy.shape(0) != N || gy.shape(2) < 1 || gy.shape(3) < 1)
    throw py::value_error(gmcore::where(fn) + "gy must be (N, M, Ho, Wo) with x's N");
  if (gw.shape(0) != T || gw.shape(1) != C || gw.shape(2) != M)
    throw py::value_error(gmcore::where(fn) + "gw must be (T, C, M) = (" + std::to_string(T) +
                          ", " + std::to_string(C) + ", " + std::to_string(M) + ")");
  const float* xp = static_cast<const float*>(x.data());
  const float* gp = static_cast<const float*>(gy.data());
  const int64_t* sp = static_cast<const int64_t*>(shifts.data());
  float* wp = static_cast<float*>(gw.mutable_data());
  const int64_t Hi = x.shape(2), Wi = x.shape(3), Ho = gy.shape(2), Wo = gy.shape(3);
  py::gil_scoped_release release;
  gmcore::tapconv::shift_conv_weight_grad(xp, N, C, Hi, Wi, gp, M, Ho, Wo, sp, T, wp);
}

void bind(py::module_& m) {
  m.def("masked_conv_pack_cpu", &masked_conv_pack_cpu, py::arg("x"), py::arg("cols"),
        py::arg("taps"), py::arg("Ho"), py::arg("Wo"), py::arg("sh"), py::arg("sw"),
        py::arg("pad_top"), py::arg("pad_left"), py::arg("dh"), py::arg("dw"),
        "Tap im2col: x (N, C, H, W) C-contiguous float32/float64 -> cols (T*C, N*Ho*Wo) "
        "(written in place; row t*C + c = tap t of channel c; outside the input = 0).");
  m.def("masked_conv_unpack_cpu", &masked_conv_unpack_cpu, py::arg("gcols"), py::arg("gx"),
        py::arg("taps"), py::arg("Ho"), py::arg("Wo"), py::arg("sh"), py::arg("sw"),
        py::arg("pad_top"), py::arg("pad_left"), py::arg("dh"), py::arg("dw"),
        "Tap col2im (adjoint of masked_conv_pack_cpu): gcols (T*C, N*Ho*Wo) -> gx (N, C, H, W) "
        "(overwritten in place).");
  m.def("masked_conv_direct_supported", &gmcore::tapconv::direct_supported,
        "Whether the direct float32 stride-1 kernels run here (x86-64 with AVX-512).");
  m.def("masked_conv_shift_forward_cpu", &masked_conv_shift_forward_cpu, py::arg("in"),
        py::arg("a"), py::arg("shifts"), py::arg("out"), py::arg("bias") = py::none(),
        "Shift convolution, float32: out (N, M, Ho, Wo) = bias + sum over taps t of a[:, t] "
        "(M, C) applied to in (N, C, Hi, Wi) shifted by shifts[t] = (sy, sx) (zero outside in); "
        "out overwritten.");
  m.def("masked_conv_shift_weight_grad_cpu", &masked_conv_shift_weight_grad_cpu, py::arg("x"),
        py::arg("gy"), py::arg("shifts"), py::arg("gw"),
        "Weight gradient of the shift convolution, float32: gw (T, C, M)[t] = sum over images "
        "and pixels of gy (N, M, Ho, Wo) times x (N, C, Hi, Wi) shifted by shifts[t]; gw "
        "overwritten.");
}

gmcore::RegisterBindings reg("masked_conv", &bind);

}  // namespace
