// Tap convolution on CUDA (csrc/masked_conv.cu): launcher declarations.  The contract and the
// index arithmetic are in masked_conv.h; the Python side is kernels/_masked_conv_cuda.py.
//
// All pointers are device pointers to C-contiguous arrays of one dtype T (float or double):
//   x (N, C, H, W), w (O, C, KH, KW), gy (N, O, Ho, Wo), bias (O,) or nullptr,
//   taps int64 (T, 2) of (ky, kx).  Taps outside [0, KH) x [0, KW) contribute nothing (their
//   packed weights are zero and their gradient is dropped): a bad list cannot write out of bounds.
// Scratch buffers are allocated by the caller (the CuPy memory pool), sizes below.
#pragma once

#include <cstdint>
#include <string>

#include "masked_conv.h"

namespace gmcore {

struct TapConvDims {
  int64_t n, c, h, w;  // input
  int64_t o, kh, kw;   // weight
  int64_t ho, wo;      // output
  int64_t t;           // number of active taps
};

// Host-side validation shared by the bindings: "" when the sizes are usable, else the problem.
inline std::string tap_conv_dims_error(const TapConvDims& d, const tapconv::Geometry& g) {
  if (d.n < 0 || d.c < 0 || d.h < 0 || d.w < 0 || d.o < 0 || d.ho < 0 || d.wo < 0)
    return "sizes must be >= 0";
  if (d.kh < 1 || d.kw < 1) return "the kernel size must be >= 1";
  if (d.t < 1) return "at least one tap is required";
  if (d.t > 65535) return "more than 65535 taps";
  if (g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1) return "stride and dilation must be >= 1";
  if (g.pad_top < 0 || g.pad_left < 0) return "padding must be >= 0";
  return "";
}

// y = bias + tap conv of x by w.  wpack: scratch of T*C*O elements.
template <typename T>
void masked_conv_forward_cuda(const T* x, const T* w, const T* bias, const int64_t* taps, T* wpack, T* y,
                              const TapConvDims& d, const tapconv::Geometry& g, std::uintptr_t stream);

// gx = adjoint in x (gather form, no atomics).  wpack: scratch of T*O*C elements.
template <typename T>
void masked_conv_input_grad_cuda(const T* gy, const T* w, const int64_t* taps, T* wpack, T* gx,
                                 const TapConvDims& d, const tapconv::Geometry& g, std::uintptr_t stream);

// gw = adjoint in w, zero at inactive taps.  The N*Ho*Wo sum is cut into `splits` chunks; each
// writes a partial (scratch of splits*T*O*C elements) and a second kernel adds them in a fixed
// order (deterministic, no atomics).
template <typename T>
void masked_conv_weight_grad_cuda(const T* x, const T* gy, const int64_t* taps, T* partial, int64_t splits,
                                  T* gw, const TapConvDims& d, const tapconv::Geometry& g,
                                  std::uintptr_t stream);

}  // namespace gmcore
