// Tap convolution on CUDA: the three maps of the contract in masked_conv.h, as tiled implicit
// GEMMs.  Index arithmetic through gmcore::tapconv (shared with the CPU build and its tests).
//
// Every kernel is a 64 x 64 output tile per block of 256 threads (16 x 16), each thread holding a
// 4 x 4 register block of accumulators; the K dimension streams through shared memory in steps of
// 16.  Thread (tx, ty) owns rows tx + 16 i and columns ty + 16 j (or the transpose), so the
// shared-memory reads of a warp are conflict-free or broadcasts, and stores along the contiguous
// output axis coalesce.
//
//   forward     rows = output positions (N*Ho*Wo), cols = O, K = taps x C
//   input_grad  rows = input positions (N*H*W),   cols = C, K = taps x O   (gather, no atomics)
//   weight_grad rows = O, cols = C, K = a chunk of N*Ho*Wo, one tap per block: partials per
//               chunk, then a reduction in fixed order that also scatters into (O, C, KH, KW)
//
// The weight is first packed to the active taps only ((T, C, O) or (T, O, C), contiguous along
// the tile's column axis): inactive taps are never read.  Per tap, the block computes each row's
// source offset once (-1 where the tap reads padding or falls off the stride grid) into shared
// memory; the tile loads are then a lookup and an add.  Offsets are int64 throughout.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_util.h"
#include "masked_conv.h"
#include "masked_conv_cuda.h"

namespace gmcore {

namespace {

using tapconv::Geometry;
using tapconv::input_coord;
using tapconv::inside;
using tapconv::output_coord;

constexpr int kThreads = 256;  // 16 x 16
constexpr int BM = 64, BN = 64, BK = 16;
constexpr int TM = BM / 16, TN = BN / 16;

// wp[t][a][b] = w[o][c][ky_t][kx_t] with (a, b) = (c, o) if C_MAJOR else (o, c); zero for a tap
// outside the kernel (never a read out of bounds).
template <typename T, bool C_MAJOR>
__global__ void pack_kernel(const T* __restrict__ w, const int64_t* __restrict__ taps, T* __restrict__ wp,
                            TapConvDims d) {
  const int64_t oc = d.o * d.c;
  const int64_t total = d.t * oc;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / oc, r = e - t * oc;
    int64_t o, c;
    if (C_MAJOR) {
      c = r / d.o;
      o = r - c * d.o;
    } else {
      o = r / d.c;
      c = r - o * d.c;
    }
    const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
    wp[e] = (inside(ky, d.kh) && inside(kx, d.kw)) ? w[((o * d.c + c) * d.kh + ky) * d.kw + kx] : T(0);
  }
}

// One K step of the register-blocked product: acc[i][j] += A[k][row_i] * B[k][col_j].
template <typename T>
__device__ __forceinline__ void mma_tile(const T (&as)[BK][BM], const T (&bs)[BK][BN], T (&acc)[TM][TN],
                                         int tr, int tc) {
#pragma unroll
  for (int k = 0; k < BK; ++k) {
    T a[TM], b[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = as[k][tr + 16 * i];
#pragma unroll
    for (int j = 0; j < TN; ++j) b[j] = bs[k][tc + 16 * j];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, const T* __restrict__ wp, const T* __restrict__ bias,
                   const int64_t* __restrict__ taps, T* __restrict__ y, TapConvDims d, Geometry g) {
  __shared__ T as[BK][BM];
  __shared__ T bs[BK][BN];
  __shared__ int64_t row_img[BM];  // n*C*H*W, -1 past the last position
  __shared__ int64_t row_oy[BM], row_ox[BM];
  __shared__ int64_t row_src[BM];  // this tap: offset of channel 0 in x, -1 for padding
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t ohw = d.ho * d.wo, hw = d.h * d.w, total = d.n * ohw;
  const int64_t m0 = int64_t(blockIdx.x) * BM, o0 = int64_t(blockIdx.y) * BN;
  for (int r = threadIdx.x; r < BM; r += kThreads) {
    const int64_t m = m0 + r;
    const int64_t n = m / ohw, p = m - n * ohw;
    row_img[r] = m < total ? n * d.c * hw : -1;
    row_oy[r] = p / d.wo;
    row_ox[r] = p - (p / d.wo) * d.wo;
  }
  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  __syncthreads();
  for (int64_t t = 0; t < d.t; ++t) {
    const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
    for (int r = threadIdx.x; r < BM; r += kThreads) {
      const int64_t iy = input_coord(row_oy[r], ky, g.sh, g.pad_top, g.dh);
      const int64_t ix = input_coord(row_ox[r], kx, g.sw, g.pad_left, g.dw);
      row_src[r] = (row_img[r] >= 0 && inside(iy, d.h) && inside(ix, d.w)) ? row_img[r] + iy * d.w + ix : -1;
    }
    __syncthreads();
    const T* wt = wp + t * d.c * d.o;
    for (int64_t c0 = 0; c0 < d.c; c0 += BK) {
      for (int e = threadIdx.x; e < BK * BM; e += kThreads) {
        const int r = e % BM, k = e / BM;  // consecutive threads: consecutive positions
        const int64_t c = c0 + k, src = row_src[r];
        as[k][r] = (src >= 0 && c < d.c) ? x[src + c * hw] : T(0);
      }
      for (int e = threadIdx.x; e < BK * BN; e += kThreads) {
        const int j = e % BN, k = e / BN;
        const int64_t c = c0 + k, o = o0 + j;
        bs[k][j] = (c < d.c && o < d.o) ? wt[c * d.o + o] : T(0);
      }
      __syncthreads();
      mma_tile<T>(as, bs, acc, tx, ty);
      __syncthreads();  // before the next loads overwrite the tiles (and row_src)
    }
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t m = m0 + tx + 16 * i;
    if (m >= total) continue;
    const int64_t n = m / ohw, p = m - n * ohw;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t o = o0 + ty + 16 * j;
      if (o < d.o) y[(n * d.o + o) * ohw + p] = bias != nullptr ? acc[i][j] + bias[o] : acc[i][j];
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    input_grad_kernel(const T* __restrict__ gy, const T* __restrict__ wq, const int64_t* __restrict__ taps,
                      T* __restrict__ gx, TapConvDims d, Geometry g) {
  __shared__ T as[BK][BM];
  __shared__ T bs[BK][BN];
  __shared__ int64_t row_img[BM];  // n*O*Ho*Wo, -1 past the last position
  __shared__ int64_t row_iy[BM], row_ix[BM];
  __shared__ int64_t row_src[BM];  // this tap: offset of channel 0 in gy, -1 when no output reads it
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t ohw = d.ho * d.wo, hw = d.h * d.w, total = d.n * hw;
  const int64_t m0 = int64_t(blockIdx.x) * BM, c0 = int64_t(blockIdx.y) * BN;
  for (int r = threadIdx.x; r < BM; r += kThreads) {
    const int64_t m = m0 + r;
    const int64_t n = m / hw, q = m - n * hw;
    row_img[r] = m < total ? n * d.o * ohw : -1;
    row_iy[r] = q / d.w;
    row_ix[r] = q - (q / d.w) * d.w;
  }
  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  __syncthreads();
  for (int64_t t = 0; t < d.t; ++t) {
    const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
    for (int r = threadIdx.x; r < BM; r += kThreads) {
      const int64_t oy = output_coord(row_iy[r], ky, g.sh, g.pad_top, g.dh, d.ho);
      const int64_t ox = output_coord(row_ix[r], kx, g.sw, g.pad_left, g.dw, d.wo);
      row_src[r] = (row_img[r] >= 0 && oy >= 0 && ox >= 0) ? row_img[r] + oy * d.wo + ox : -1;
    }
    __syncthreads();
    const T* wt = wq + t * d.o * d.c;
    for (int64_t o0 = 0; o0 < d.o; o0 += BK) {
      for (int e = threadIdx.x; e < BK * BM; e += kThreads) {
        const int r = e % BM, k = e / BM;
        const int64_t o = o0 + k, src = row_src[r];
        as[k][r] = (src >= 0 && o < d.o) ? gy[src + o * ohw] : T(0);
      }
      for (int e = threadIdx.x; e < BK * BN; e += kThreads) {
        const int j = e % BN, k = e / BN;
        const int64_t o = o0 + k, c = c0 + j;
        bs[k][j] = (o < d.o && c < d.c) ? wt[o * d.c + c] : T(0);
      }
      __syncthreads();
      mma_tile<T>(as, bs, acc, tx, ty);
      __syncthreads();
    }
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t m = m0 + tx + 16 * i;
    if (m >= total) continue;
    const int64_t n = m / hw, q = m - n * hw;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t c = c0 + ty + 16 * j;
      if (c < d.c) gx[(n * d.c + c) * hw + q] = acc[i][j];
    }
  }
}

// grid: (O-blocks * C-blocks, T, chunks).  partial[s][t][o][c] = sum over chunk s of
// gy[n, o, p] * x[n, c, iy(p, t), ix(p, t)].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    weight_grad_kernel(const T* __restrict__ x, const T* __restrict__ gy, const int64_t* __restrict__ taps,
                       T* __restrict__ partial, int64_t chunk, TapConvDims d, Geometry g) {
  __shared__ T as[BK][BM];  // gy tile: [position][o]
  __shared__ T bs[BK][BN];  // x tile:  [position][c]
  __shared__ int64_t pos_gy[BK], pos_x[BK];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t c_blocks = (d.c + BN - 1) / BN;
  const int64_t o0 = int64_t(blockIdx.x / c_blocks) * BM, c0 = int64_t(blockIdx.x % c_blocks) * BN;
  const int64_t t = blockIdx.y, s = blockIdx.z;
  const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
  const int64_t ohw = d.ho * d.wo, hw = d.h * d.w, total = d.n * ohw;
  const int64_t begin = s * chunk;
  const int64_t end = begin + chunk < total ? begin + chunk : total;
  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  for (int64_t p0 = begin; p0 < end; p0 += BK) {
    if (threadIdx.x < BK) {
      const int64_t m = p0 + threadIdx.x;
      const int64_t n = m / ohw, p = m - n * ohw;
      const int64_t oy = p / d.wo, ox = p - (p / d.wo) * d.wo;
      const int64_t iy = input_coord(oy, ky, g.sh, g.pad_top, g.dh);
      const int64_t ix = input_coord(ox, kx, g.sw, g.pad_left, g.dw);
      const bool live = m < end;
      pos_gy[threadIdx.x] = live ? n * d.o * ohw + p : -1;
      pos_x[threadIdx.x] = (live && inside(iy, d.h) && inside(ix, d.w)) ? n * d.c * hw + iy * d.w + ix : -1;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < BK * BM; e += kThreads) {
      const int k = e % BK, r = e / BK;  // consecutive threads: consecutive positions
      const int64_t o = o0 + r, src = pos_gy[k];
      as[k][r] = (src >= 0 && o < d.o) ? gy[src + o * ohw] : T(0);
    }
    for (int e = threadIdx.x; e < BK * BN; e += kThreads) {
      const int k = e % BK, j = e / BK;
      const int64_t c = c0 + j, src = pos_x[k];
      bs[k][j] = (src >= 0 && c < d.c) ? x[src + c * hw] : T(0);
    }
    __syncthreads();
    mma_tile<T>(as, bs, acc, ty, tx);  // rows (o) by ty, columns (c) by tx: stores run along c
    __syncthreads();
  }
  T* out = partial + (s * d.t + t) * d.o * d.c;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t o = o0 + ty + 16 * i;
    if (o >= d.o) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t c = c0 + tx + 16 * j;
      if (c < d.c) out[o * d.c + c] = acc[i][j];
    }
  }
}

// gw[o, c, ky_t, kx_t] = sum_s partial[s][t][o][c], s in order (gw zeroed beforehand).
template <typename T>
__global__ void weight_grad_reduce_kernel(const T* __restrict__ partial, const int64_t* __restrict__ taps,
                                          T* __restrict__ gw, int64_t chunks, TapConvDims d) {
  const int64_t oc = d.o * d.c, per = d.t * oc;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per;
       e += int64_t(gridDim.x) * blockDim.x) {
    T sum = T(0);
    for (int64_t s = 0; s < chunks; ++s) sum += partial[s * per + e];
    const int64_t t = e / oc, r = e - t * oc;
    const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
    if (inside(ky, d.kh) && inside(kx, d.kw)) gw[(r * d.kh + ky) * d.kw + kx] = sum;  // r = o*C + c
  }
}

void check_dims(const char* fn, const TapConvDims& d, const Geometry& g) {
  const std::string err = tap_conv_dims_error(d, g);
  if (!err.empty()) throw std::invalid_argument(std::string("gmcore._C: ") + fn + ": " + err);
}

unsigned int tiles(int64_t n, int64_t per, int64_t limit, const char* fn) {
  const int64_t b = (n + per - 1) / per;
  if (b > limit) throw std::invalid_argument(std::string("gmcore._C: ") + fn + ": the problem is too large for one launch");
  return static_cast<unsigned int>(b);
}

}  // namespace

template <typename T>
void masked_conv_forward_cuda(const T* x, const T* w, const T* bias, const int64_t* taps, T* wpack, T* y,
                              const TapConvDims& d, const Geometry& g, std::uintptr_t stream) {
  check_dims("masked_conv_forward_cuda", d, g);
  const int64_t total = d.n * d.ho * d.wo;
  if (total == 0 || d.o == 0) return;
  cudaStream_t st = as_stream(stream);
  if (d.c > 0) {
    pack_kernel<T, true><<<blocks_for(d.t * d.c * d.o, kThreads), kThreads, 0, st>>>(w, taps, wpack, d);
    cuda_check_launch("masked_conv pack kernel launch");
  }
  const dim3 grid(tiles(total, BM, 2147483647LL, "masked_conv_forward_cuda"),
                  tiles(d.o, BN, 65535, "masked_conv_forward_cuda"));
  forward_kernel<T><<<grid, kThreads, 0, st>>>(x, wpack, bias, taps, y, d, g);
  cuda_check_launch("masked_conv forward kernel launch");
}

template <typename T>
void masked_conv_input_grad_cuda(const T* gy, const T* w, const int64_t* taps, T* wpack, T* gx,
                                 const TapConvDims& d, const Geometry& g, std::uintptr_t stream) {
  check_dims("masked_conv_input_grad_cuda", d, g);
  const int64_t total = d.n * d.h * d.w;
  if (total == 0 || d.c == 0) return;
  cudaStream_t st = as_stream(stream);
  if (d.o > 0) {
    pack_kernel<T, false><<<blocks_for(d.t * d.o * d.c, kThreads), kThreads, 0, st>>>(w, taps, wpack, d);
    cuda_check_launch("masked_conv pack kernel launch");
  }
  const dim3 grid(tiles(total, BM, 2147483647LL, "masked_conv_input_grad_cuda"),
                  tiles(d.c, BN, 65535, "masked_conv_input_grad_cuda"));
  input_grad_kernel<T><<<grid, kThreads, 0, st>>>(gy, wpack, taps, gx, d, g);
  cuda_check_launch("masked_conv input_grad kernel launch");
}

template <typename T>
void masked_conv_weight_grad_cuda(const T* x, const T* gy, const int64_t* taps, T* partial, int64_t splits,
                                  T* gw, const TapConvDims& d, const Geometry& g, std::uintptr_t stream) {
  check_dims("masked_conv_weight_grad_cuda", d, g);
  if (splits < 1 || splits > 65535)
    throw std::invalid_argument("gmcore._C: masked_conv_weight_grad_cuda: splits must be in [1, 65535]");
  cudaStream_t st = as_stream(stream);
  cuda_check(cudaMemsetAsync(gw, 0, sizeof(T) * d.o * d.c * d.kh * d.kw, st),
             "masked_conv_weight_grad_cuda memset(gw)");
  const int64_t total = d.n * d.ho * d.wo;
  if (total == 0 || d.o == 0 || d.c == 0) return;
  // whole BK steps per chunk; the chunk count may come out below `splits`
  int64_t chunk = (total + splits - 1) / splits;
  chunk = (chunk + BK - 1) / BK * BK;
  const int64_t chunks = (total + chunk - 1) / chunk;
  const int64_t blocks = ((d.o + BM - 1) / BM) * ((d.c + BN - 1) / BN);
  const dim3 grid(tiles(blocks, 1, 2147483647LL, "masked_conv_weight_grad_cuda"), static_cast<unsigned>(d.t),
                  static_cast<unsigned>(chunks));
  weight_grad_kernel<T><<<grid, kThreads, 0, st>>>(x, gy, taps, partial, chunk, d, g);
  cuda_check_launch("masked_conv weight_grad kernel launch");
  weight_grad_reduce_kernel<T><<<blocks_for(d.t * d.o * d.c, kThreads), kThreads, 0, st>>>(partial, taps, gw,
                                                                                          chunks, d);
  cuda_check_launch("masked_conv weight_grad reduce kernel launch");
}

#define GM_INSTANTIATE(T)                                                                                    \
  template void masked_conv_forward_cuda<T>(const T*, const T*, const T*, const int64_t*, T*, T*,            \
                                            const TapConvDims&, const Geometry&, std::uintptr_t);            \
  template void masked_conv_input_grad_cuda<T>(const T*, const T*, const int64_t*, T*, T*, const TapConvDims&, \
                                               const Geometry&, std::uintptr_t);                             \
  template void masked_conv_weight_grad_cuda<T>(const T*, const T*, const int64_t*, T*, int64_t, T*,         \
                                                const TapConvDims&, const Geometry&, std::uintptr_t);
GM_INSTANTIATE(float)
GM_INSTANTIATE(double)
#undef GM_INSTANTIATE

}  // namespace gmcore
