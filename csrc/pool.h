// 2-D max / average pooling on the CPU (family `pool`): declarations and the window geometry.
//
// Layout: the input is P = N*C contiguous (H, W) planes, the output P (Ho, Wo) planes. A window
// of output (oy, ox) starts at (oy*sh - ph, ox*sw - pw) in the unpadded input and has taps
// every (dh, dw). Semantics are PyTorch's (aten/src/ATen/native/cpu/MaxPoolKernel.cpp,
// AvgPoolKernel.cpp), with one documented difference: among several NaNs in a window the FIRST
// is the argmax (torch keeps the last), as gmcore's reference does.
#pragma once

#include <cstdint>

namespace gmcore {
namespace pool {

struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// y[p, oy, ox] = max over the window (padding is -inf), idx = flat iy*W + ix of the first
// maximum (a NaN beats any number). A window without a real element (only possible with
// dilation) gives -inf and the index of its clamped first tap.
template <typename T>
void max_pool2d_forward_cpu(const T* x, T* y, int64_t* idx, int64_t P, int64_t H, int64_t W,
                            int64_t Ho, int64_t Wo, const Geometry& g);

// gx[p] = 0, then gx[p, idx[p, o]] += gy[p, o] for every output o (the adjoint of the gather).
template <typename T>
void max_pool2d_backward_cpu(const T* gy, const int64_t* idx, T* gx, int64_t P, int64_t H,
                             int64_t W, int64_t Ho, int64_t Wo);

// y = window sum / divisor; divisor = divisor_override if > 0, else the window clipped to the
// padded input (count_include_pad) or to the real input. Dilation is 1 (as PyTorch).
template <typename T>
void avg_pool2d_forward_cpu(const T* x, T* y, int64_t P, int64_t H, int64_t W, int64_t Ho,
                            int64_t Wo, const Geometry& g, bool count_include_pad,
                            int64_t divisor_override);

// The adjoint: gx[p, iy, ix] = sum over the windows holding (iy, ix) of gy / divisor.
template <typename T>
void avg_pool2d_backward_cpu(const T* gy, T* gx, int64_t P, int64_t H, int64_t W, int64_t Ho,
                             int64_t Wo, const Geometry& g, bool count_include_pad,
                             int64_t divisor_override);

}  // namespace pool
}  // namespace gmcore
