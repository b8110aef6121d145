// Normalisation (layer_norm, group_norm, batch_norm): the per-element math, written once.
//
// Included by csrc/norm_cpu.cpp (host build: GM_HOST_DEVICE is empty) and csrc/norm.cu (nvcc:
// __host__ __device__): both use the statistics below; per element the CPU works in the data
// type (split mean, below) and the GPU in double.
//
// Two layouts cover the three ops (M = number of elements one statistic covers):
//   rows     (R, K, S): one mean/rstd per row r over its K*S elements; the affine parameter of
//            element (r, k, s) is channel c = (r % G) * K + k.
//              layer_norm: R = rows, G = 1, K = normalized size, S = 1
//              group_norm: R = N * G, K = C / G, S = spatial size
//   channels (N, C, S): one mean/rstd per channel c over its N*S elements (batch_norm).
//
// Statistics: shifted sums in double, s1 = sum(x - k), s2 = sum((x - k)^2) with k = the first
// element of the set, then mean = k + s1/M, var = s2/M - (s1/M)^2 (biased, clamped at 0).  The
// shift removes a common offset (1e4 + small noise keeps every digit of the noise): one read
// pass, no E[x^2] - E[x]^2 cancellation.
//
// Elements are normalised in the data type with the mean split in two, mean = hi + lo (hi the
// mean rounded to T): ((x - hi) - lo) * scale + shift.  x - hi is exact when x is within a factor
// 2 of the mean (Sterbenz), so an offset costs no digits and the result is good to a few ulp of
// itself; float32 then runs 8 AVX2 lanes instead of 4 doubles.  The CPU's dx is formed the same
// way, with rstd applied last: rstd * (wdy - (mean(wdy) + (x - mean) * rstd * mean(wdy xh))).
// (The GPU kernels work in double per element.)
//
// Backward, with xh = (x - mean) * rstd, wdy = dy * w[c], and the means taken over the M
// elements of a statistic (derivation: y = w xh + b, d xh/dx = rstd (I - 1/M - xh xh^T / M)):
//   dx = rstd * (wdy - mean(wdy) - xh * mean(wdy * xh))        batch statistics
//   dx = rstd * wdy                                            given statistics (batch_norm eval)
//   dweight[c] = sum dy * xh,  dbias[c] = sum dy               over every element of channel c
#pragma once

#include <math.h>

#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace norm {

struct Moments {
  double mean;
  double var;  // biased (divides by M)
};

// mean and biased variance from shifted sums over m > 0 elements.
GM_HOST_DEVICE inline Moments finish_moments(double shift, double s1, double s2, int64_t m) {
  const double inv = 1.0 / static_cast<double>(m);
  const double d = s1 * inv;
  double var = s2 * inv - d * d;
  var = var > 0.0 ? var : 0.0;  // rounding can leave a tiny negative value for constant data
  return Moments{shift + d, var};
}

GM_HOST_DEVICE inline double rstd_of(double var, double eps) { return 1.0 / sqrt(var + eps); }

// The mean split for normalising in T: hi = T(mean), lo = T(mean - hi).
template <typename T>
struct SplitMean {
  T hi, lo;
};

template <typename T>
GM_HOST_DEVICE inline SplitMean<T> split_mean(double mean) {
  const T hi = static_cast<T>(mean);
  return SplitMean<T>{hi, static_cast<T>(mean - static_cast<double>(hi))};
}

// x - mean in T (see above).
template <typename T>
GM_HOST_DEVICE inline T centered(T x, SplitMean<T> m) {
  return (x - m.hi) - m.lo;
}

// y = (x - mean) * scale + shift, scale = rstd * w, shift = b (in double).
GM_HOST_DEVICE inline double normalize(double x, double mean, double scale, double shift) {
  return (x - mean) * scale + shift;
}

// dx of one element from the row/channel sums (mean_wdy = mean(wdy), mean_wdyxh = mean(wdy xh)).
GM_HOST_DEVICE inline double dx_batch(double wdy, double xh, double rstd, double mean_wdy,
                                      double mean_wdyxh) {
  return rstd * (wdy - mean_wdy - xh * mean_wdyxh);
}

}  // namespace norm

// Launchers (host functions).  CPU: csrc/norm_cpu.cpp.  CUDA: csrc/norm.cu.
// Arrays are C-contiguous; w and b may be null (no affine); mean and rstd are double.
//   row_forward:   x (R, K*S) -> y, mean (R,), rstd (R,)
//   row_backward:  x, dy, w, mean, rstd -> dx; dw, db (G*K,) when not null
//   chan_forward:  x (N, C, S) -> y; train: writes mean, var (biased) and rstd (C,) and uses
//                  them; eval: reads mean and rstd (var unused)
//   chan_backward: x, dy, w, mean, rstd -> dx (when not null), dw, db (C,) (when not null);
//                  train selects the batch-statistics form of dx
template <typename T>
void norm_row_forward_cpu(const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                          int64_t R, int64_t G, int64_t K, int64_t S, double eps);
template <typename T>
void norm_row_backward_cpu(const T* x, const T* dy, const T* w, const double* mean,
                           const double* rstd, T* dx, T* dw, T* db, int64_t R, int64_t G,
                           int64_t K, int64_t S);
template <typename T>
void norm_chan_forward_cpu(const T* x, const T* w, const T* b, T* y, double* mean, double* var,
                           double* rstd, int64_t N, int64_t C, int64_t S, double eps,
                           bool train);
template <typename T>
void norm_chan_backward_cpu(const T* x, const T* dy, const T* w, const double* mean,
                            const double* rstd, T* dx, T* dw, T* db, int64_t N, int64_t C,
                            int64_t S, bool train);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t passed as an integer.  Throw std::runtime_error
// naming the CUDA error on failure.
template <typename T>
void norm_row_forward_cuda(const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                           int64_t R, int64_t G, int64_t K, int64_t S, double eps,
                           std::uintptr_t stream);
template <typename T>
void norm_row_backward_cuda(const T* x, const T* dy, const T* w, const double* mean,
                            const double* rstd, T* dx, T* dw, T* db, int64_t R, int64_t G,
                            int64_t K, int64_t S, std::uintptr_t stream);
template <typename T>
void norm_chan_forward_cuda(const T* x, const T* w, const T* b, T* y, double* mean, double* var,
                            double* rstd, int64_t N, int64_t C, int64_t S, double eps,
                            bool train, std::uintptr_t stream);
template <typename T>
void norm_chan_backward_cuda(const T* x, const T* dy, const T* w, const double* mean,
                             const double* rstd, T* dx, T* dw, T* db, int64_t N, int64_t C,
                             int64_t S, bool train, std::uintptr_t stream);
#endif

}  // namespace gmcore
