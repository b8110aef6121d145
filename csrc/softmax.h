// softmax / log_softmax / cross_entropy along one dim: the per-element math, written once.
//
// Included by csrc/softmax_cpu.cpp (host build: GM_HOST_DEVICE is empty) and csrc/softmax.cu
// (nvcc: __host__ __device__), so the CPU tests exercise the arithmetic the GPU runs.
//
// Layout: every array is a C-contiguous (outer, C, inner) block, C the reduced (class) dim;
// "a position" is one (outer, inner) pair, so a softmax over any dim needs no transpose.
//
// Forward, per position, with m = max_c x_c and s = sum_c exp(x_c - m):
//   softmax     y_c = exp(x_c - m) / s
//   log_softmax y_c = x_c - (m + log s)
// The plain max shift (no finiteness guard) is torch's: an all -inf or a +inf position gives NaN.
// Backward (g the incoming gradient):
//   softmax     dx_c = y_c (g_c - sum_k g_k y_k)
//   log_softmax dx_c = g_c - exp(y_c) sum_k g_k
//
// cross_entropy of a position with target t, class weights w (all 1 without a weight), W = sum w,
// smoothing eps, lse = m + log s, logp_c = x_c - lse (torch's definition):
//   loss = (1 - eps) w_t (lse - x_t) + eps/C (W lse - sum_k w_k x_k)
// and an ignored position (t == ignore_index) gives 0 with weight 0. Its gradient, with gl the
// incoming gradient of the position's loss and p_c = exp(x_c - lse):
//   dx_c = gl [(1 - eps) w_t (p_c - [c == t]) + eps/C (W p_c - w_c)]
//        = a p_c - b w_c - [c == t] d,   a = gl ((1 - eps) w_t + eps W / C),
//                                        b = gl eps / C,  d = gl (1 - eps) w_t.
#pragma once

#include <math.h>

#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace smx {

// The loss of one position (see above). `sx` = sum_k w_k x_k is read only when eps != 0, so an
// unsmoothed loss never meets the inf * 0 that a -inf logit would make of it.
template <typename T>
GM_HOST_DEVICE inline T ce_loss(T lse, T xt, T wt, T sx, T W, T eps, int64_t C) {
  T l = (T(1) - eps) * wt * (lse - xt);
  if (eps != T(0)) l += eps / T(C) * (W * lse - sx);
  return l;
}

template <typename T>
struct CeGrad {
  T a, b, d;  // dx_c = a p_c - b w_c - [c == t] d
};

template <typename T>
GM_HOST_DEVICE inline CeGrad<T> ce_grad(T gl, T wt, T W, T eps, int64_t C) {
  const T d = gl * (T(1) - eps) * wt;
  const T b = gl * eps / T(C);
  return CeGrad<T>{d + b * W, b, d};
}

}  // namespace smx

// Launchers (host functions). CPU: csrc/softmax_cpu.cpp; CUDA: csrc/softmax.cu.
// x, y, g, dx: (outer, C, inner); target, loss, wt, lse, gl: (outer, inner); weight: (C) or null;
// W = sum(weight) (C without one). target is int64; ignore_index marks ignored positions.
template <typename T>
void softmax_forward_cpu(const T* x, T* y, int64_t outer, int64_t C, int64_t inner, bool log);
template <typename T>
void softmax_backward_cpu(const T* y, const T* g, T* dx, int64_t outer, int64_t C, int64_t inner,
                          bool log);
template <typename T>
void cross_entropy_forward_cpu(const T* x, const int64_t* target, const T* weight, T* loss, T* wt,
                               T* lse, int64_t outer, int64_t C, int64_t inner,
                               int64_t ignore_index, T eps, T W);
template <typename T>
void cross_entropy_backward_cpu(const T* x, const int64_t* target, const T* weight, const T* lse,
                                const T* gl, T* dx, int64_t outer, int64_t C, int64_t inner,
                                int64_t ignore_index, T eps, T W);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t passed as an integer. Throw std::runtime_error
// naming the CUDA error on failure.
template <typename T>
void softmax_forward_cuda(const T* x, T* y, int64_t outer, int64_t C, int64_t inner, bool log,
                          std::uintptr_t stream);
template <typename T>
void softmax_backward_cuda(const T* y, const T* g, T* dx, int64_t outer, int64_t C, int64_t inner,
                           bool log, std::uintptr_t stream);
template <typename T>
void cross_entropy_forward_cuda(const T* x, const int64_t* target, const T* weight, T* loss, T* wt,
                                T* lse, int64_t outer, int64_t C, int64_t inner,
                                int64_t ignore_index, T eps, T W, std::uintptr_t stream);
template <typename T>
void cross_entropy_backward_cuda(const T* x, const int64_t* target, const T* weight, const T* lse,
                                 const T* gl, T* dx, int64_t outer, int64_t C, int64_t inner,
                                 int64_t ignore_index, T eps, T W, std::uintptr_t stream);
#endif

}  // namespace gmcore
