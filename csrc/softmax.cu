// softmax / log_softmax / cross_entropy on CUDA, the math from softmax.h.
//
// inner == 1 (the reduced dim is the last): one block per row; threads stride over the row and
// meet through warp shuffles and shared memory (max, then sums). inner > 1: one thread per
// (outer, inner) position walking the C classes; neighbouring threads read neighbouring
// addresses, so every load is coalesced without a transpose.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_util.h"
#include "softmax.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ inline float dexp(float x) { return expf(x); }
__device__ inline double dexp(double x) { return exp(x); }
__device__ inline float dlog(float x) { return logf(x); }
__device__ inline double dlog(double x) { return log(x); }

template <typename T>
__device__ inline T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// Block-wide max or sum of one value per thread; every thread gets the result.
template <typename T, bool kMax>
__device__ T block_reduce(T v) {
  __shared__ T sm[kWarps];
  for (int off = 16; off > 0; off >>= 1) {
    const T o = __shfl_down_sync(0xffffffffu, v, off);
    v = kMax ? (o > v ? o : v) : v + o;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // sm may still be read by a previous call
  if (lane == 0) sm[warp] = v;
  __syncthreads();
  T acc = sm[0];
  for (int w = 1; w < kWarps; ++w) acc = kMax ? (sm[w] > acc ? sm[w] : acc) : acc + sm[w];
  return acc;
}

// ---- inner == 1: one block per row ---------------------------------------------------------

template <typename T>
__global__ void softmax_fwd_rows(const T* __restrict__ x, T* __restrict__ y, int64_t C, bool log) {
  const T* xr = x + blockIdx.x * C;
  T* yr = y + blockIdx.x * C;
  T m = neg_inf<T>();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = xr[c] > m ? xr[c] : m;
  m = block_reduce<T, true>(m);
  T s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += dexp(xr[c] - m);
  s = block_reduce<T, false>(s);
  const T l = m + dlog(s), inv = T(1) / s;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    yr[c] = log ? xr[c] - l : dexp(xr[c] - m) * inv;
}

template <typename T>
__global__ void softmax_bwd_rows(const T* __restrict__ y, const T* __restrict__ g,
                                 T* __restrict__ dx, int64_t C, bool log) {
  const int64_t off = blockIdx.x * C;
  T s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += log ? g[off + c] : g[off + c] * y[off + c];
  s = block_reduce<T, false>(s);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T yc = y[off + c], gc = g[off + c];
    dx[off + c] = log ? gc - dexp(yc) * s : yc * (gc - s);
  }
}

template <typename T>
__global__ void ce_fwd_rows(const T* __restrict__ x, const int64_t* __restrict__ target,
                            const T* __restrict__ weight, T* loss, T* wt, T* lse, int64_t C,
                            int64_t ignore, T eps, T W) {
  const int64_t p = blockIdx.x;
  const T* xr = x + p * C;
  T m = neg_inf<T>();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = xr[c] > m ? xr[c] : m;
  m = block_reduce<T, true>(m);
  T s = 0, sx = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    s += dexp(xr[c] - m);
    if (eps != T(0)) sx += (weight ? weight[c] : T(1)) * xr[c];
  }
  s = block_reduce<T, false>(s);
  if (eps != T(0)) sx = block_reduce<T, false>(sx);
  if (threadIdx.x != 0) return;
  const T l = m + dlog(s);
  lse[p] = l;
  const int64_t t = target[p];
  if (t == ignore) {
    loss[p] = T(0), wt[p] = T(0);
    return;
  }
  const T w = weight ? weight[t] : T(1);
  wt[p] = w;
  loss[p] = smx::ce_loss(l, xr[t], w, sx, W, eps, C);
}

template <typename T>
__global__ void ce_bwd_rows(const T* __restrict__ x, const int64_t* __restrict__ target,
                            const T* __restrict__ weight, const T* __restrict__ lse,
                            const T* __restrict__ gl, T* __restrict__ dx, int64_t C, int64_t ignore,
                            T eps, T W) {
  const int64_t p = blockIdx.x;
  const int64_t t = target[p];
  T* dr = dx + p * C;
  if (t == ignore) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dr[c] = T(0);
    return;
  }
  const smx::CeGrad<T> k = smx::ce_grad(gl[p], weight ? weight[t] : T(1), W, eps, C);
  const T l = lse[p];
  const T* xr = x + p * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dr[c] = k.a * dexp(xr[c] - l) - k.b * (weight ? weight[c] : T(1)) - (c == t ? k.d : T(0));
}

// ---- inner > 1: one thread per position ----------------------------------------------------

template <typename T>
__global__ void softmax_fwd_cols(const T* __restrict__ x, T* __restrict__ y, int64_t outer,
                                 int64_t C, int64_t inner, bool log) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= outer * inner) return;
  const int64_t off = (p / inner) * C * inner + p % inner;
  T m = neg_inf<T>();
  for (int64_t c = 0; c < C; ++c) m = x[off + c * inner] > m ? x[off + c * inner] : m;
  T s = 0;
  for (int64_t c = 0; c < C; ++c) s += dexp(x[off + c * inner] - m);
  const T l = m + dlog(s), inv = T(1) / s;
  for (int64_t c = 0; c < C; ++c) {
    const T v = x[off + c * inner];
    y[off + c * inner] = log ? v - l : dexp(v - m) * inv;
  }
}

template <typename T>
__global__ void softmax_bwd_cols(const T* __restrict__ y, const T* __restrict__ g,
                                 T* __restrict__ dx, int64_t outer, int64_t C, int64_t inner,
                                 bool log) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= outer * inner) return;
  const int64_t off = (p / inner) * C * inner + p % inner;
  T s = 0;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t i = off + c * inner;
    s += log ? g[i] : g[i] * y[i];
  }
  for (int64_t c = 0; c < C; ++c) {
    const int64_t i = off + c * inner;
    dx[i] = log ? g[i] - dexp(y[i]) * s : y[i] * (g[i] - s);
  }
}

template <typename T>
__global__ void ce_fwd_cols(const T* __restrict__ x, const int64_t* __restrict__ target,
                            const T* __restrict__ weight, T* loss, T* wt, T* lse, int64_t outer,
                            int64_t C, int64_t inner, int64_t ignore, T eps, T W) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= outer * inner) return;
  const int64_t off = (p / inner) * C * inner + p % inner;
  T m = neg_inf<T>();
  for (int64_t c = 0; c < C; ++c) m = x[off + c * inner] > m ? x[off + c * inner] : m;
  T s = 0, sx = 0;
  for (int64_t c = 0; c < C; ++c) {
    const T v = x[off + c * inner];
    s += dexp(v - m);
    if (eps != T(0)) sx += (weight ? weight[c] : T(1)) * v;
  }
  const T l = m + dlog(s);
  lse[p] = l;
  const int64_t t = target[p];
  if (t == ignore) {
    loss[p] = T(0), wt[p] = T(0);
    return;
  }
  const T w = weight ? weight[t] : T(1);
  wt[p] = w;
  loss[p] = smx::ce_loss(l, x[off + t * inner], w, sx, W, eps, C);
}

template <typename T>
__global__ void ce_bwd_cols(const T* __restrict__ x, const int64_t* __restrict__ target,
                            const T* __restrict__ weight, const T* __restrict__ lse,
                            const T* __restrict__ gl, T* __restrict__ dx, int64_t outer, int64_t C,
                            int64_t inner, int64_t ignore, T eps, T W) {
  const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (p >= outer * inner) return;
  const int64_t off = (p / inner) * C * inner + p % inner;
  const int64_t t = target[p];
  if (t == ignore) {
    for (int64_t c = 0; c < C; ++c) dx[off + c * inner] = T(0);
    return;
  }
  const smx::CeGrad<T> k = smx::ce_grad(gl[p], weight ? weight[t] : T(1), W, eps, C);
  const T l = lse[p];
  for (int64_t c = 0; c < C; ++c) {
    const int64_t i = off + c * inner;
    dx[i] = k.a * dexp(x[i] - l) - k.b * (weight ? weight[c] : T(1)) - (c == t ? k.d : T(0));
  }
}

struct Grid {
  bool rows;
  unsigned blocks;
};

Grid grid(int64_t outer, int64_t inner) {
  const int64_t n = inner == 1 ? outer : (outer * inner + kThreads - 1) / kThreads;
  if (n > 2147483647LL) throw std::invalid_argument("gmcore._C: too many rows for one grid");
  return Grid{inner == 1, static_cast<unsigned>(n)};
}

}  // namespace

template <typename T>
void softmax_forward_cuda(const T* x, T* y, int64_t outer, int64_t C, int64_t inner, bool log,
                          std::uintptr_t stream) {
  const Grid gr = grid(outer, inner);
  if (gr.blocks == 0 || C == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (gr.rows)
    softmax_fwd_rows<T><<<gr.blocks, kThreads, 0, s>>>(x, y, C, log);
  else
    softmax_fwd_cols<T><<<gr.blocks, kThreads, 0, s>>>(x, y, outer, C, inner, log);
  cuda_check_launch("softmax_forward kernel launch");
}

template <typename T>
void softmax_backward_cuda(const T* y, const T* g, T* dx, int64_t outer, int64_t C, int64_t inner,
                           bool log, std::uintptr_t stream) {
  const Grid gr = grid(outer, inner);
  if (gr.blocks == 0 || C == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (gr.rows)
    softmax_bwd_rows<T><<<gr.blocks, kThreads, 0, s>>>(y, g, dx, C, log);
  else
    softmax_bwd_cols<T><<<gr.blocks, kThreads, 0, s>>>(y, g, dx, outer, C, inner, log);
  cuda_check_launch("softmax_backward kernel launch");
}

template <typename T>
void cross_entropy_forward_cuda(const T* x, const int64_t* target, const T* weight, T* loss, T* wt,
                                T* lse, int64_t outer, int64_t C, int64_t inner,
                                int64_t ignore_index, T eps, T W, std::uintptr_t stream) {
  const Grid gr = grid(outer, inner);
  if (gr.blocks == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (gr.rows)
    ce_fwd_rows<T><<<gr.blocks, kThreads, 0, s>>>(x, target, weight, loss, wt, lse, C,
                                                  ignore_index, eps, W);
  else
    ce_fwd_cols<T><<<gr.blocks, kThreads, 0, s>>>(x, target, weight, loss, wt, lse, outer, C,
                                                  inner, ignore_index, eps, W);
  cuda_check_launch("cross_entropy_forward kernel launch");
}

template <typename T>
void cross_entropy_backward_cuda(const T* x, const int64_t* target, const T* weight, const T* lse,
                                 const T* gl, T* dx, int64_t outer, int64_t C, int64_t inner,
                                 int64_t ignore_index, T eps, T W, std::uintptr_t stream) {
  const Grid gr = grid(outer, inner);
  if (gr.blocks == 0 || C == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (gr.rows)
    ce_bwd_rows<T><<<gr.blocks, kThreads, 0, s>>>(x, target, weight, lse, gl, dx, C, ignore_index,
                                                  eps, W);
  else
    ce_bwd_cols<T><<<gr.blocks, kThreads, 0, s>>>(x, target, weight, lse, gl, dx, outer, C, inner,
                                                  ignore_index, eps, W);
  cuda_check_launch("cross_entropy_backward kernel launch");
}

#define GM_SMX_INSTANTIATE_CUDA(T)                                                               \
  template void softmax_forward_cuda<T>(const T*, T*, int64_t, int64_t, int64_t, bool,           \
                                        std::uintptr_t);                                         \
  template void softmax_backward_cuda<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool, \
                                         std::uintptr_t);                                        \
  template void cross_entropy_forward_cuda<T>(const T*, const int64_t*, const T*, T*, T*, T*,    \
                                              int64_t, int64_t, int64_t, int64_t, T, T,          \
                                              std::uintptr_t);                                   \
  template void cross_entropy_backward_cuda<T>(const T*, const int64_t*, const T*, const T*,     \
                                               const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                               T, T, std::uintptr_t);
GM_SMX_INSTANTIATE_CUDA(float)
GM_SMX_INSTANTIATE_CUDA(double)

}  // namespace gmcore
