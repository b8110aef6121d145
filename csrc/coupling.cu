// Affine coupling on CUDA, the element math from coupling.h.
//
// Forward: one block per (row, chunk of kChunk elements); the block sums its log s terms
// (warp shuffles, then shared memory) into partial[row, chunk]; a second small kernel adds a
// row's partials in order (deterministic, no atomics).  Backward is purely elementwise: a
// grid-stride loop over rows * n with the row's g_logdet.  int64 offsets throughout.
#include <cuda_runtime.h>

#include "coupling.h"
#include "cuda_util.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 8;  // elements per forward block

template <typename T>
__device__ T block_sum(T v) {
  __shared__ T warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  return total;  // valid in thread 0
}

template <typename T, int FN, bool INV>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ r,
                               const T* __restrict__ b, T* __restrict__ y, T* __restrict__ partial,
                               int64_t n, int64_t nch) {
  const int64_t task = blockIdx.x;
  const int64_t row = task / nch, c = task - row * nch;
  const int64_t lo = c * kChunk;
  const int64_t hi = lo + kChunk < n ? lo + kChunk : n;
  const int64_t off = row * n;
  T acc = T(0);
  for (int64_t j = lo + threadIdx.x; j < hi; j += kThreads) {
    const coupling::Scale<T> sc = coupling::scale_parts<T, FN>(r[off + j]);
    y[off + j] = coupling::forward_elem<T, INV>(x[off + j], b[off + j], sc);
    acc += sc.log_s;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[task] = acc;
}

template <typename T, bool INV>
__global__ void rows_sum_kernel(const T* __restrict__ partial, T* __restrict__ logdet, int64_t rows,
                                int64_t nch) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows) return;
  T s = T(0);
  for (int64_t c = 0; c < nch; ++c) s += partial[i * nch + c];
  logdet[i] = INV ? -s : s;
}

template <typename T, int FN, bool INV>
__global__ void backward_kernel(const T* __restrict__ a, const T* __restrict__ r,
                                const T* __restrict__ g, const T* __restrict__ gl,
                                T* __restrict__ d_in, T* __restrict__ d_r, T* __restrict__ d_b,
                                int64_t total, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < total;
       j += stride) {
    const coupling::Scale<T> sc = coupling::scale_parts<T, FN>(r[j]);
    T di, dr, db;
    coupling::backward_elem<T, INV>(a[j], g[j], gl[j / n], sc, &di, &dr, &db);
    d_in[j] = di;
    d_r[j] = dr;
    if (INV) d_b[j] = db;  // forward: d_shift = g, not written
  }
}

template <typename T, int FN, bool INV>
void forward_launch(const T* x, const T* r, const T* b, T* y, T* logdet, int64_t rows, int64_t n,
                    cudaStream_t s) {
  if (rows == 0) return;
  if (n == 0) {
    cuda_check(cudaMemsetAsync(logdet, 0, sizeof(T) * rows, s), "coupling logdet memset");
    return;
  }
  const int64_t nch = (n + kChunk - 1) / kChunk;
  if (rows * nch > 2147483647LL) throw std::invalid_argument("gmcore._C: coupling input too large");
  T* partial = nullptr;
  cuda_check(cudaMallocAsync(reinterpret_cast<void**>(&partial), sizeof(T) * rows * nch, s),
             "coupling partial allocation");
  forward_kernel<T, FN, INV><<<static_cast<unsigned>(rows * nch), kThreads, 0, s>>>(
      x, r, b, y, partial, n, nch);
  cuda_check_launch("coupling forward kernel launch");
  rows_sum_kernel<T, INV><<<blocks_for(rows, kThreads), kThreads, 0, s>>>(partial, logdet, rows,
                                                                         nch);
  cuda_check_launch("coupling rows_sum kernel launch");
  cuda_check(cudaFreeAsync(partial, s), "coupling partial free");
}

template <typename T, int FN, bool INV>
void backward_launch(const T* a, const T* r, const T* g, const T* gl, T* d_in, T* d_r, T* d_b,
                     int64_t rows, int64_t n, cudaStream_t s) {
  const int64_t total = rows * n;
  if (total == 0) return;
  backward_kernel<T, FN, INV><<<blocks_for(total, kThreads), kThreads, 0, s>>>(
      a, r, g, gl, d_in, d_r, d_b, total, n);
  cuda_check_launch("coupling backward kernel launch");
}

template <typename T, bool INV>
void forward_fn(const T* x, const T* r, const T* b, T* y, T* ld, int64_t rows, int64_t n, int fn,
                cudaStream_t s) {
  switch (fn) {
    case coupling::kExp: return forward_launch<T, coupling::kExp, INV>(x, r, b, y, ld, rows, n, s);
    case coupling::kSigmoid:
      return forward_launch<T, coupling::kSigmoid, INV>(x, r, b, y, ld, rows, n, s);
    default: return forward_launch<T, coupling::kTanh, INV>(x, r, b, y, ld, rows, n, s);
  }
}

template <typename T, bool INV>
void backward_fn(const T* a, const T* r, const T* g, const T* gl, T* d_in, T* d_r, T* d_b,
                 int64_t rows, int64_t n, int fn, cudaStream_t s) {
  switch (fn) {
    case coupling::kExp:
      return backward_launch<T, coupling::kExp, INV>(a, r, g, gl, d_in, d_r, d_b, rows, n, s);
    case coupling::kSigmoid:
      return backward_launch<T, coupling::kSigmoid, INV>(a, r, g, gl, d_in, d_r, d_b, rows, n, s);
    default:
      return backward_launch<T, coupling::kTanh, INV>(a, r, g, gl, d_in, d_r, d_b, rows, n, s);
  }
}

}  // namespace

template <typename T>
void coupling_forward_cuda(const T* x, const T* r, const T* b, T* y, T* logdet, int64_t rows,
                           int64_t n, int fn, bool inverse, std::uintptr_t stream) {
  if (inverse)
    forward_fn<T, true>(x, r, b, y, logdet, rows, n, fn, as_stream(stream));
  else
    forward_fn<T, false>(x, r, b, y, logdet, rows, n, fn, as_stream(stream));
}

template <typename T>
void coupling_backward_cuda(const T* a, const T* r, const T* g, const T* g_logdet, T* d_in,
                            T* d_r, T* d_b, int64_t rows, int64_t n, int fn, bool inverse,
                            std::uintptr_t stream) {
  if (inverse)
    backward_fn<T, true>(a, r, g, g_logdet, d_in, d_r, d_b, rows, n, fn, as_stream(stream));
  else
    backward_fn<T, false>(a, r, g, g_logdet, d_in, d_r, d_b, rows, n, fn, as_stream(stream));
}

template void coupling_forward_cuda<float>(const float*, const float*, const float*, float*,
                                           float*, int64_t, int64_t, int, bool, std::uintptr_t);
template void coupling_forward_cuda<double>(const double*, const double*, const double*, double*,
                                            double*, int64_t, int64_t, int, bool, std::uintptr_t);
template void coupling_backward_cuda<float>(const float*, const float*, const float*, const float*,
                                            float*, float*, float*, int64_t, int64_t, int, bool,
                                            std::uintptr_t);
template void coupling_backward_cuda<double>(const double*, const double*, const double*,
                                             const double*, double*, double*, double*, int64_t,
                                             int64_t, int, bool, std::uintptr_t);

}  // namespace gmcore
