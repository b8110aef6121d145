// Tap convolution geometry: the index arithmetic of the masked/causal convolution family,
// written once for the host (csrc/masked_conv_cpu.cpp) and the device (csrc/masked_conv.cu).
//
// A "tap convolution" is a 2-D cross-correlation (PyTorch's conv2d, groups=1) that visits only
// a list of active kernel taps (ky, kx): the taps a PixelCNN mask keeps, the K taps of a causal
// 1-D convolution (H = 1), or every tap of a plain convolution.  Weights at inactive taps are
// never read, and their gradient is zero.
//
//   y[n, o, oy, ox] = sum_{(ky,kx) active} sum_c  w[o, c, ky, kx] * x[n, c, iy, ix]
//   iy = oy * sh - pad_top  + ky * dh,      ix = ox * sw - pad_left + kx * dw
//
// Input positions outside [0, H) x [0, W) read zero (the padding).  Bottom/right padding is
// implied by the output size the caller passes.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace tapconv {

struct Geometry {
  int64_t sh, sw;            // stride
  int64_t pad_top, pad_left;  // leading padding (trailing padding follows from the output size)
  int64_t dh, dw;            // dilation
};

// Input coordinate read by output coordinate `o` through kernel offset `k` along one axis.
GM_HOST_DEVICE inline int64_t input_coord(int64_t o, int64_t k, int64_t stride, int64_t pad,
                                          int64_t dil) {
  return o * stride - pad + k * dil;
}

// The inverse, for the input gradient: the output coordinate that reads input coordinate `i`
// through offset `k`, or -1 when none does (not on the stride grid, or outside [0, out_size)).
GM_HOST_DEVICE inline int64_t output_coord(int64_t i, int64_t k, int64_t stride, int64_t pad,
                                           int64_t dil, int64_t out_size) {
  const int64_t t = i + pad - k * dil;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t o = t / stride;
  return o < out_size ? o : -1;
}

GM_HOST_DEVICE inline bool inside(int64_t i, int64_t size) { return i >= 0 && i < size; }

// CPU data movement around the BLAS GEMMs (csrc/masked_conv_cpu.cpp; serial). For a chunk of N
// images, cols is (T*C, N*Ho*Wo): row t*C + c holds tap t of channel c for every output
// position of every image. pack: x (N, C, H, W) -> cols (inactive positions = 0);
// unpack: column gradients -> gx (N, C, H, W), overwritten (the adjoint of pack).
template <typename T>
void pack_cpu(const T* x, T* cols, const int64_t* taps, int64_t ntaps, int64_t N, int64_t C,
              int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g);
template <typename T>
void unpack_cpu(const T* gcols, T* gx, const int64_t* taps, int64_t ntaps, int64_t N, int64_t C,
                int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g);

// Direct float32 kernels for stride 1 (csrc/masked_conv_direct_cpu.cpp; AVX-512, OpenMP).
// shift_conv_forward: out[n, m, oy, ox] = bias[m] + sum_t sum_c a[m, t, c] *
// in[n, c, oy + shifts[t, 0], ox + shifts[t, 1]] (zero outside in), out (N, M, Ho, Wo)
// overwritten. shift_conv_weight_grad: gw[t, c, m] = sum_{n, oy, ox} gy[n, m, oy, ox] *
// x[n, c, oy + shifts[t, 0], ox + shifts[t, 1]], gw (T, C, M) overwritten.
// direct_supported(): whether this CPU (and build) can run them.
bool direct_supported();
void shift_conv_forward(const float* in, int64_t N, int64_t C, int64_t Hi, int64_t Wi,
                        const float* a, int64_t M, const int64_t* shifts, int64_t T, float* out,
                        int64_t Ho, int64_t Wo, const float* bias);
void shift_conv_weight_grad(const float* x, int64_t N, int64_t C, int64_t Hi, int64_t Wi,
                            const float* gy, int64_t M, int64_t Ho, int64_t Wo,
                            const int64_t* shifts, int64_t T, float* gw);

}  // namespace tapconv
}  // namespace gmcore
