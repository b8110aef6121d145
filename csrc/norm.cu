// Normalisation on CUDA: one block per row (layer/group norm) or per channel (batch norm), the
// math from norm.h.  Sums in double (shifted for the statistics), reduced with warp shuffles and
// shared memory; the second pass over a row / channel re-reads global memory (L2 at model sizes).
// dweight/dbias of the row layout come from a second kernel, one block per channel.
#include <cuda_runtime.h>

#include <stdexcept>

#include "cuda_util.h"
#include "norm.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kMaxGrid = 65535u * 32u;

// Sum (a, b) over the block; every thread gets the totals.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kWarps], sb[kWarps];
  __shared__ double ta, tb;
  for (int off = 16; off > 0; off >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sa[warp] = a;
    sb[warp] = b;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double x = 0, y = 0;
    for (int w = 0; w < kWarps; ++w) {
      x += sa[w];
      y += sb[w];
    }
    ta = x;
    tb = y;
  }
  __syncthreads();
  a = ta;
  b = tb;
  __syncthreads();  // the shared slots are reused by the next call
}

template <typename T>
__global__ void row_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                   const T* __restrict__ b, T* __restrict__ y,
                                   double* __restrict__ mean, double* __restrict__ rstd,
                                   int64_t R, int64_t G, int64_t K, int64_t S, double eps) {
  const int64_t M = K * S;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const T* xr = x + r * M;
    T* yr = y + r * M;
    const double k0 = static_cast<double>(xr[0]);
    double s1 = 0, s2 = 0;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const double d = static_cast<double>(xr[j]) - k0;
      s1 += d;
      s2 += d * d;
    }
    block_sum2(s1, s2);
    const norm::Moments mo = norm::finish_moments(k0, s1, s2, M);
    const double rs = norm::rstd_of(mo.var, eps);
    if (threadIdx.x == 0) {
      mean[r] = mo.mean;
      rstd[r] = rs;
    }
    const int64_t c0 = (r % G) * K;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const int64_t c = c0 + j / S;
      const double scale = w ? rs * static_cast<double>(w[c]) : rs;
      const double shift = b ? static_cast<double>(b[c]) : 0.0;
      yr[j] = static_cast<T>(norm::normalize(static_cast<double>(xr[j]), mo.mean, scale, shift));
    }
  }
}

template <typename T>
__global__ void row_dx_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                              const T* __restrict__ w, const double* __restrict__ mean,
                              const double* __restrict__ rstd, T* __restrict__ dx, int64_t R,
                              int64_t G, int64_t K, int64_t S) {
  const int64_t M = K * S;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const T* xr = x + r * M;
    const T* gr = dy + r * M;
    const double mu = mean[r], rs = rstd[r];
    const int64_t c0 = (r % G) * K;
    double A = 0, B = 0;  // sum(w dy), sum(w dy xh)
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const double wdy = static_cast<double>(gr[j]) * (w ? static_cast<double>(w[c0 + j / S]) : 1.0);
      A += wdy;
      B += wdy * (static_cast<double>(xr[j]) - mu) * rs;
    }
    block_sum2(A, B);
    const double ma = A / M, mb = B / M;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const double wdy = static_cast<double>(gr[j]) * (w ? static_cast<double>(w[c0 + j / S]) : 1.0);
      const double xh = (static_cast<double>(xr[j]) - mu) * rs;
      dx[r * M + j] = static_cast<T>(norm::dx_batch(wdy, xh, rs, ma, mb));
    }
  }
}

// dweight[c], dbias[c] of the row layout: channel c = g * K + k covers rows n * G + g and the
// S positions of k in each.
template <typename T>
__global__ void row_params_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                  const double* __restrict__ mean,
                                  const double* __restrict__ rstd, T* __restrict__ dw,
                                  T* __restrict__ db, int64_t R, int64_t G, int64_t K, int64_t S) {
  const int64_t M = K * S, C = G * K, Nb = R / G;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const int64_t g = c / K, k = c % K;
    double sdy = 0, sdyxh = 0;
    for (int64_t i = threadIdx.x; i < Nb * S; i += blockDim.x) {
      const int64_t r = (i / S) * G + g;
      const int64_t j = r * M + k * S + i % S;
      const double gv = static_cast<double>(dy[j]);
      sdy += gv;
      sdyxh += gv * (static_cast<double>(x[j]) - mean[r]) * rstd[r];
    }
    block_sum2(sdy, sdyxh);
    if (threadIdx.x == 0) {
      if (dw) dw[c] = static_cast<T>(sdyxh);
      if (db) db[c] = static_cast<T>(sdy);
    }
  }
}

template <typename T>
__global__ void chan_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                    const T* __restrict__ b, T* __restrict__ y,
                                    double* __restrict__ mean, double* __restrict__ var,
                                    double* __restrict__ rstd, int64_t N, int64_t C, int64_t S,
                                    double eps, bool train) {
  const int64_t M = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double mu, rs;
    if (train) {
      const double k0 = static_cast<double>(x[c * S]);
      double s1 = 0, s2 = 0;
      for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const double d = static_cast<double>(x[((i / S) * C + c) * S + i % S]) - k0;
        s1 += d;
        s2 += d * d;
      }
      block_sum2(s1, s2);
      const norm::Moments mo = norm::finish_moments(k0, s1, s2, M);
      mu = mo.mean;
      rs = norm::rstd_of(mo.var, eps);
      if (threadIdx.x == 0) {
        mean[c] = mu;
        var[c] = mo.var;
        rstd[c] = rs;
      }
    } else {
      mu = mean[c];
      rs = rstd[c];
    }
    const double scale = w ? rs * static_cast<double>(w[c]) : rs;
    const double shift = b ? static_cast<double>(b[c]) : 0.0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const int64_t j = ((i / S) * C + c) * S + i % S;
      y[j] = static_cast<T>(norm::normalize(static_cast<double>(x[j]), mu, scale, shift));
    }
  }
}

template <typename T>
__global__ void chan_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                     const T* __restrict__ w, const double* __restrict__ mean,
                                     const double* __restrict__ rstd, T* __restrict__ dx,
                                     T* __restrict__ dw, T* __restrict__ db, int64_t N, int64_t C,
                                     int64_t S, bool train) {
  const int64_t M = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double mu = mean[c], rs = rstd[c], wk = w ? static_cast<double>(w[c]) : 1.0;
    double sdy = 0, sdyxh = 0;
    if (train || dw || db) {  // uniform over the block: every thread reaches block_sum2
      for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const int64_t j = ((i / S) * C + c) * S + i % S;
        const double gv = static_cast<double>(dy[j]);
        sdy += gv;
        sdyxh += gv * (static_cast<double>(x[j]) - mu) * rs;
      }
      block_sum2(sdy, sdyxh);
      if (threadIdx.x == 0) {
        if (dw) dw[c] = static_cast<T>(sdyxh);
        if (db) db[c] = static_cast<T>(sdy);
      }
    }
    if (!dx) continue;
    const double ma = train ? wk * sdy / M : 0.0, mb = train ? wk * sdyxh / M : 0.0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const int64_t j = ((i / S) * C + c) * S + i % S;
      const double xh = (static_cast<double>(x[j]) - mu) * rs;
      dx[j] = static_cast<T>(norm::dx_batch(wk * static_cast<double>(dy[j]), xh, rs, ma, mb));
    }
  }
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(n < kMaxGrid ? n : kMaxGrid); }

}  // namespace

template <typename T>
void norm_row_forward_cuda(const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                           int64_t R, int64_t G, int64_t K, int64_t S, double eps,
                           std::uintptr_t stream) {
  if (R == 0 || K * S == 0) return;
  row_forward_kernel<T><<<grid_for(R), kThreads, 0, as_stream(stream)>>>(x, w, b, y, mean, rstd,
                                                                         R, G, K, S, eps);
  cuda_check_launch("norm_row_forward kernel launch");
}

template <typename T>
void norm_row_backward_cuda(const T* x, const T* dy, const T* w, const double* mean,
                            const double* rstd, T* dx, T* dw, T* db, int64_t R, int64_t G,
                            int64_t K, int64_t S, std::uintptr_t stream) {
  if (K * S == 0) return;
  auto s = as_stream(stream);
  if (R > 0 && dx) {
    row_dx_kernel<T><<<grid_for(R), kThreads, 0, s>>>(x, dy, w, mean, rstd, dx, R, G, K, S);
    cuda_check_launch("norm_row_dx kernel launch");
  }
  if (dw || db) {
    row_params_kernel<T><<<grid_for(G * K), kThreads, 0, s>>>(x, dy, mean, rstd, dw, db, R, G, K, S);
    cuda_check_launch("norm_row_params kernel launch");
  }
}

template <typename T>
void norm_chan_forward_cuda(const T* x, const T* w, const T* b, T* y, double* mean, double* var,
                            double* rstd, int64_t N, int64_t C, int64_t S, double eps, bool train,
                            std::uintptr_t stream) {
  if (C == 0 || N * S == 0) return;
  chan_forward_kernel<T><<<grid_for(C), kThreads, 0, as_stream(stream)>>>(
      x, w, b, y, mean, var, rstd, N, C, S, eps, train);
  cuda_check_launch("norm_chan_forward kernel launch");
}

template <typename T>
void norm_chan_backward_cuda(const T* x, const T* dy, const T* w, const double* mean,
                             const double* rstd, T* dx, T* dw, T* db, int64_t N, int64_t C,
                             int64_t S, bool train, std::uintptr_t stream) {
  if (C == 0 || N * S == 0) return;
  chan_backward_kernel<T><<<grid_for(C), kThreads, 0, as_stream(stream)>>>(
      x, dy, w, mean, rstd, dx, dw, db, N, C, S, train);
  cuda_check_launch("norm_chan_backward kernel launch");
}

#define GM_NORM_INSTANTIATE(T)                                                                    \
  template void norm_row_forward_cuda<T>(const T*, const T*, const T*, T*, double*, double*,    \
                                         int64_t, int64_t, int64_t, int64_t, double,            \
                                         std::uintptr_t);                                       \
  template void norm_row_backward_cuda<T>(const T*, const T*, const T*, const double*,          \
                                          const double*, T*, T*, T*, int64_t, int64_t, int64_t, \
                                          int64_t, std::uintptr_t);                             \
  template void norm_chan_forward_cuda<T>(const T*, const T*, const T*, T*, double*, double*,   \
                                          double*, int64_t, int64_t, int64_t, double, bool,     \
                                          std::uintptr_t);                                      \
  template void norm_chan_backward_cuda<T>(const T*, const T*, const T*, const double*,         \
                                           const double*, T*, T*, T*, int64_t, int64_t,         \
                                           int64_t, bool, std::uintptr_t);
GM_NORM_INSTANTIATE(float)
GM_NORM_INSTANTIATE(double)
#undef GM_NORM_INSTANTIATE

}  // namespace gmcore
