// Vector quantization on CUDA: the math from vq.h.
//
// Nearest code: a small tiled GEMM fused with the argmin.  A block owns BM rows and streams the
// codebook in tiles of BK codes, staging BD feature dims of both in shared memory at a time; each
// of its 256 threads (16 x 16) accumulates a TM x TN block of scores in registers and keeps, per
// row, its running (best score, best index).  The 16 threads sharing rows merge their winners with
// shuffles at the end (vq::better breaks ties to the lower index).  No N x K matrix exists; the
// only scratch is the K code norms.  A row with a NaN / inf gets -1 and a code with one is never
// chosen (vq.h).
//
// EMA statistics: atomics (counts and sums zeroed first).  The summation order of atomics is not
// fixed, so float sums may differ from run to run in the last bits.
#include <cuda_runtime.h>

#include <limits>
#include <stdexcept>

#include "cuda_util.h"
#include "vq.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;
constexpr int BM = 64, BK = 64, BD = 16, TM = 4, TN = 4;  // 16 x 16 threads, 4 x 4 scores each

template <typename T>
__global__ void cnorm_kernel(const T* __restrict__ c, T* __restrict__ cn, int64_t k, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < k;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T* row = c + i * d;
    T s = 0;
    for (int64_t j = 0; j < d; ++j) s += row[j] * row[j];
    cn[i] = s;
  }
}

template <typename T>
__global__ void nearest_kernel(const T* __restrict__ z, const T* __restrict__ c, const T* __restrict__ cn,
                               int64_t* __restrict__ out, int64_t n, int64_t k, int64_t d) {
  __shared__ T zs[BD][BM];
  __shared__ T cs[BD][BK];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t row0 = int64_t(blockIdx.x) * BM;
  const T inf = static_cast<T>(INFINITY);
  T best[TM];
  long long best_k[TM];
  for (int i = 0; i < TM; ++i) {
    best[i] = inf;
    best_k[i] = -1;
  }
  for (int64_t k0 = 0; k0 < k; k0 += BK) {
    T acc[TM][TN];
    for (int j = 0; j < TN; ++j) {
      const int64_t code = k0 + tx * TN + j;
      const T init = code < k ? cn[code] : inf;
      for (int i = 0; i < TM; ++i) acc[i][j] = init;
    }
    for (int64_t d0 = 0; d0 < d; d0 += BD) {
      for (int e = threadIdx.x; e < BM * BD; e += kThreads) {
        const int r = e / BD, dd = e % BD;
        const int64_t gr = row0 + r, gd = d0 + dd;
        zs[dd][r] = (gr < n && gd < d) ? z[gr * d + gd] : T(0);
      }
      for (int e = threadIdx.x; e < BK * BD; e += kThreads) {
        const int r = e / BD, dd = e % BD;
        const int64_t gc = k0 + r, gd = d0 + dd;
        cs[dd][r] = (gc < k && gd < d) ? vq::packed_weight(c[gc * d + gd]) : T(0);
      }
      __syncthreads();
#pragma unroll
      for (int dd = 0; dd < BD; ++dd) {
        T a[TM], b[TN];
        for (int i = 0; i < TM; ++i) a[i] = zs[dd][ty * TM + i];
        for (int j = 0; j < TN; ++j) b[j] = cs[dd][tx * TN + j];
        for (int i = 0; i < TM; ++i)
          for (int j = 0; j < TN; ++j) acc[i][j] = vq::score_step(acc[i][j], a[i], b[j]);
      }
      __syncthreads();
    }
    // a thread sees its codes in increasing index: strict < keeps the lowest on ties
    for (int j = 0; j < TN; ++j) {
      const int64_t code = k0 + tx * TN + j;
      if (code >= k) break;
      for (int i = 0; i < TM; ++i)
        if (acc[i][j] < best[i]) {
          best[i] = acc[i][j];
          best_k[i] = code;
        }
    }
  }
  // merge the 16 threads that share these rows (lanes 0-15 or 16-31 of a warp)
  for (int i = 0; i < TM; ++i) {
    T b = best[i];
    long long bk = best_k[i];
    for (int off = 8; off > 0; off >>= 1) {
      const T ob = __shfl_xor_sync(0xffffffffu, b, off, 16);
      const long long ok = __shfl_xor_sync(0xffffffffu, bk, off, 16);
      if (ok >= 0 && (bk < 0 || vq::better(ob, int64_t(ok), b, int64_t(bk)))) {
        b = ob;
        bk = ok;
      }
    }
    const int64_t row = row0 + ty * TM + i;
    if (tx == 0 && row < n) out[row] = vq::finalize_index(bk, k, vq::row_is_finite(z + row * d, d));
  }
}

template <typename T>
__global__ void ema_stats_kernel(const T* __restrict__ z, const int64_t* __restrict__ idx, T* counts, T* sums,
                                 int64_t n, int64_t d) {
  const int64_t total = n * d;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, j = e - i * d;
    const int64_t code = idx[i];
    atomicAdd(sums + code * d + j, z[e]);
    if (j == 0) atomicAdd(counts + code, T(1));
  }
}

}  // namespace

template <typename T>
void vq_nearest_cuda(const T* z, const T* codebook, T* cnorm, int64_t* indices, int64_t n, int64_t k, int64_t d,
                     std::uintptr_t stream) {
  if (n == 0) return;
  if (k <= 0) throw std::invalid_argument("gmcore._C: vq_nearest_cuda: the codebook is empty");
  const int64_t blocks = (n + BM - 1) / BM;
  if (blocks > 2147483647LL) throw std::invalid_argument("gmcore._C: vq_nearest_cuda: too many rows");
  cudaStream_t s = as_stream(stream);
  cnorm_kernel<T><<<blocks_for(k, kThreads), kThreads, 0, s>>>(codebook, cnorm, k, d);
  cuda_check_launch("vq cnorm kernel launch");
  nearest_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(z, codebook, cnorm, indices, n, k, d);
  cuda_check_launch("vq nearest kernel launch");
}

template <typename T>
void vq_ema_stats_cuda(const T* z, const int64_t* indices, T* counts, T* sums, int64_t n, int64_t k, int64_t d,
                       std::uintptr_t stream) {
  cudaStream_t s = as_stream(stream);
  cuda_check(cudaMemsetAsync(counts, 0, sizeof(T) * k, s), "vq_ema_stats_cuda memset(counts)");
  cuda_check(cudaMemsetAsync(sums, 0, sizeof(T) * k * d, s), "vq_ema_stats_cuda memset(sums)");
  if (n == 0) return;
  // d == 0: no element carries a count; count the rows in a one-column pass instead
  if (d == 0) throw std::invalid_argument("gmcore._C: vq_ema_stats_cuda: D must be >= 1");
  ema_stats_kernel<T><<<blocks_for(n * d, kThreads), kThreads, 0, s>>>(z, indices, counts, sums, n, d);
  cuda_check_launch("vq ema_stats kernel launch");
}

template void vq_nearest_cuda<float>(const float*, const float*, float*, int64_t*, int64_t, int64_t, int64_t,
                                     std::uintptr_t);
template void vq_nearest_cuda<double>(const double*, const double*, double*, int64_t*, int64_t, int64_t,
                                      int64_t, std::uintptr_t);
template void vq_ema_stats_cuda<float>(const float*, const int64_t*, float*, float*, int64_t, int64_t, int64_t,
                                       std::uintptr_t);
template void vq_ema_stats_cuda<double>(const double*, const int64_t*, double*, double*, int64_t, int64_t,
                                        int64_t, std::uintptr_t);

}  // namespace gmcore
