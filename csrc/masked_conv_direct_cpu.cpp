// Tap convolution on the CPU, float32, stride 1: direct AVX-512 kernels (no im2col, no BLAS).
//
// Why not im2col + OpenBLAS: the OpenBLAS that NumPy wheels ship picks AVX2 kernels on Zen 4/5,
// half the machine's 512-bit FMA rate, and its threads keep spinning after each call, so the
// packing between two GEMMs cannot run in parallel. These kernels do the whole convolution
// with 512-bit FMAs from their own OpenMP region (benchmarks/bench_masked_conv.py has figures).
//
// "Shift" form. With stride 1 every tap t reads the input shifted by (sy_t, sx_t):
//
//   out[m, oy, ox] = sum_t sum_c  A_t[m, c] * in[c, oy + sy_t, ox + sx_t]   (zero outside `in`)
//
// The forward pass is this with in = x, A_t = w[:, :, ky, kx], (sy, sx) = (ky*dh - pad_top,
// kx*dw - pad_left); the input gradient is this too, with in = gy, A_t = w[:, :, ky, kx]^T and
// the opposite shifts. Copy `in` into a zero-bordered plane of row length Wp (padding on every
// side the shifts need), and number output pixels on that plane's grid: q = oy*Wp + ox. Tap t
// then reads in_padded[q + d_t] with ONE constant offset d_t = (sy_t + top)*Wp + (sx_t + left),
// so the convolution is a GEMM whose operand rows are contiguous runs of the padded planes:
// nothing is packed per tap. The Wp - Wo grid columns past each output row are computed and
// dropped (6/38 of the work for 7x7 on 32x32); the stores write valid pixels only.
//
// Forward / input grad: a tile is MR output channels x 64 grid pixels (4 zmm), 24 accumulators;
// per (tap, channel): 4 vector loads of the padded input, MR broadcasts of packed weights.
// Weight grad: gW_t[c, o] = sum_q in_padded[c, q + d_t] * gy[o, q]; a tile is RC input channels
// x 64 output channels (gy transposed per pixel block so that o is contiguous), the sum over
// pixels stays in registers, and only valid pixels are visited (no garbage columns here: a
// garbage column times an inf input would give NaN). Each thread sums its own pixel blocks
// (a static split) into its own copy of gW, and the copies are added in thread order: the
// result repeats bit for bit for a given thread count.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "masked_conv.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GM_DIRECT_X86 1
#include <immintrin.h>
#endif

namespace gmcore {
namespace tapconv {

#ifdef GM_DIRECT_X86

namespace {

#define GM_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))

constexpr int kMR = 6;        // forward tile: output channels
constexpr int kNV = 4;        // forward tile: zmm vectors of grid pixels
constexpr int kNR = 16 * kNV;  // forward tile: grid pixels
constexpr int kRC = 6;        // weight-grad tile: input channels
constexpr int kOV = 4;        // weight-grad tile: zmm vectors of output channels

// 64-byte aligned scratch, zero-initialised.
struct Buffer {
  std::unique_ptr<float, void (*)(void*)> p{nullptr, std::free};
  explicit Buffer(int64_t n) {
    const size_t bytes = static_cast<size_t>((std::max<int64_t>(n, 16) * 4 + 63) / 64 * 64);
    p.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!p) throw std::bad_alloc();
    std::memset(p.get(), 0, bytes);
  }
  float* get() const { return p.get(); }
};

// The zero-bordered planes of one image and the grid they define.
struct Plan {
  int64_t top = 0, left = 0, Wp = 0, plane = 0, grid = 0;
  std::vector<int64_t> d;  // per tap: flat offset into a padded plane
};

Plan make_plan(const int64_t* shifts, int64_t T, int64_t Hi, int64_t Wi, int64_t Ho, int64_t Wo) {
  int64_t min_y = shifts[0], max_y = shifts[0], min_x = shifts[1], max_x = shifts[1];
  for (int64_t t = 1; t < T; ++t) {
    min_y = std::min(min_y, shifts[2 * t]);
    max_y = std::max(max_y, shifts[2 * t]);
    min_x = std::min(min_x, shifts[2 * t + 1]);
    max_x = std::max(max_x, shifts[2 * t + 1]);
  }
  Plan p;
  p.top = std::max<int64_t>(0, -min_y);
  p.left = std::max<int64_t>(0, -min_x);
  // every valid output's reads stay inside its own padded row and inside the plane
  p.Wp = std::max(Wi + p.left, Wo + std::max<int64_t>(0, max_x) + p.left);
  const int64_t Hp = std::max(Hi + p.top, Ho + std::max<int64_t>(0, max_y) + p.top);
  p.grid = (Ho - 1) * p.Wp + Wo;
  p.d.resize(T);
  int64_t max_d = 0;
  for (int64_t t = 0; t < T; ++t) {
    p.d[t] = (shifts[2 * t] + p.top) * p.Wp + shifts[2 * t + 1] + p.left;
    max_d = std::max(max_d, p.d[t]);
  }
  // whole tiles past the last pixel still read inside the plane (their lanes are dropped)
  const int64_t tiles_end = (p.grid + kNR - 1) / kNR * kNR;
  p.plane = (std::max(Hp * p.Wp, tiles_end + max_d) + 15) / 16 * 16;
  return p;
}

// The planes of `count` images x C channels (image-major, like `in`) into zero-bordered planes.
// Every chunk writes the same interior positions, so the borders stay zero from the buffer's
// allocation and are never cleared again.
void pad_images(const float* in, int64_t count, int64_t Hi, int64_t Wi, const Plan& p,
                float* dst) {
#pragma omp for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    float* plane = dst + i * p.plane;
    const float* src = in + i * Hi * Wi;
    for (int64_t iy = 0; iy < Hi; ++iy)
      std::memcpy(plane + (iy + p.top) * p.Wp + p.left, src + iy * Wi, sizeof(float) * Wi);
  }
}

// Images per chunk: a chunk's padded planes take about kChunkBytes (within L2, so the tiles
// read what the padding just wrote from cache; 16 MB chunks made the 7x7 forward 20% slower).
constexpr int64_t kChunkBytes = 2 << 20;
int64_t images_per_chunk(int64_t N, int64_t C, const Plan& p) {
  return std::max<int64_t>(1, std::min<int64_t>(N, kChunkBytes / (4 * C * p.plane)));
}

// Below this many multiply-adds a call runs on one thread: waking the team costs more.
constexpr int64_t kParallelMacs = 1 << 22;

#ifdef _OPENMP
int max_threads() { return omp_get_max_threads(); }
int thread_id() { return omp_get_thread_num(); }
#else
int max_threads() { return 1; }
int thread_id() { return 0; }
#endif

// Store one zmm of grid pixels [q, q + 16) of output channel row `out` (Ho x Wo), plus bias:
// the lanes past Wo in each grid row, and past the grid's end, are not written.
GM_AVX512 inline void store_grid(float* out, __m512 v, int64_t q, int64_t Wp, int64_t Wo,
                                 int64_t grid) {
  const int64_t end = std::min<int64_t>(q + 16, grid);
  for (int64_t row = q / Wp; row * Wp < end; ++row) {
    const int64_t lo = std::max(q, row * Wp), hi = std::min(end, row * Wp + Wo);
    if (lo >= hi) continue;
    const __mmask16 m = static_cast<__mmask16>(((1u << (hi - lo)) - 1u) << (lo - q));
    // lane i lands on ox = q + i - row*Wp; masked-off lanes never touch memory
    _mm512_mask_storeu_ps(out + row * Wo + (q - row * Wp), m, v);
  }
}

// R (<= kMR) output channels x kNR grid pixels starting at `in` (already offset by q0), over
// every (tap, channel). `ap` holds the packed weights [k][kMR], k = t*C + c.
template <int R>
GM_AVX512 void forward_tile(const float* ap, const float* in, const int64_t* d, int64_t T,
                            int64_t C, int64_t plane, float* out, int64_t out_plane,
                            const float* bias, int64_t q0, int64_t Wp, int64_t Wo,
                            int64_t grid) {
  __m512 acc[R][kNV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t t = 0; t < T; ++t) {
    const float* b = in + d[t];
    for (int64_t c = 0; c < C; ++c, b += plane, ap += kMR) {
      __m512 bv[kNV];
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 a = _mm512_set1_ps(ap[r]);
#pragma GCC unroll 4
        for (int v = 0; v < kNV; ++v) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m512 bb = _mm512_set1_ps(bias ? bias[r] : 0.0f);
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v)
      store_grid(out + r * out_plane, _mm512_add_ps(acc[r][v], bb), q0 + 16 * v, Wp, Wo, grid);
  }
}

using ForwardTile = void (*)(const float*, const float*, const int64_t*, int64_t, int64_t,
                             int64_t, float*, int64_t, const float*, int64_t, int64_t, int64_t,
                             int64_t);
constexpr ForwardTile kForwardTiles[kMR + 1] = {nullptr,          forward_tile<1>,
                                                forward_tile<2>, forward_tile<3>,
                                                forward_tile<4>, forward_tile<5>,
                                                forward_tile<6>};

// gW tile: R (<= kRC) input channels x V (<= kOV) zmm of output channels, summed over a block
// of `imgs` images x `rows` x `width` pixels: x rows at `xin` (plane stride, grid row stride
// Wp, image stride ximg, block origin and tap offset applied), gy transposed at `gyt`
// ([image][pixel][Opad], pixels row-major).
template <int R, int V>
GM_AVX512 void weight_tile(const float* xin, int64_t plane, int64_t Wp, int64_t ximg,
                           const float* gyt, int64_t Opad, int64_t imgs, int64_t rows,
                           int64_t width, float* acc_out) {
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_loadu_ps(acc_out + r * Opad + 16 * v);
  const float* g = gyt;
  for (int64_t img = 0; img < imgs; ++img)
    for (int64_t row = 0; row < rows; ++row) {
      const float* xr = xin + img * ximg + row * Wp;
      for (int64_t ox = 0; ox < width; ++ox, g += Opad) {
        __m512 gv[V];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) gv[v] = _mm512_load_ps(g + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512 a = _mm512_set1_ps(xr[r * plane + ox]);
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(a, gv[v], acc[r][v]);
        }
      }
    }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(acc_out + r * Opad + 16 * v, acc[r][v]);
}

using WeightTile = void (*)(const float*, int64_t, int64_t, int64_t, const float*, int64_t,
                            int64_t, int64_t, int64_t, float*);
template <int R>
constexpr WeightTile weight_tile_for(int v) {
  return v == 1 ? weight_tile<R, 1> : v == 2 ? weight_tile<R, 2> : v == 3 ? weight_tile<R, 3>
                                                                          : weight_tile<R, 4>;
}
WeightTile weight_tile_for(int r, int v) {
  switch (r) {
    case 1: return weight_tile_for<1>(v);
    case 2: return weight_tile_for<2>(v);
    case 3: return weight_tile_for<3>(v);
    case 4: return weight_tile_for<4>(v);
    case 5: return weight_tile_for<5>(v);
    default: return weight_tile_for<6>(v);
  }
}

}  // namespace

bool direct_supported() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  return yes;
}

void shift_conv_forward(const float* in, int64_t N, int64_t C, int64_t Hi, int64_t Wi,
                        const float* a, int64_t M, const int64_t* shifts, int64_t T, float* out,
                        int64_t Ho, int64_t Wo, const float* bias) {
  const Plan p = make_plan(shifts, T, Hi, Wi, Ho, Wo);
  const int64_t K = T * C, blocks = (M + kMR - 1) / kMR;
  // weights [block][k][kMR] (rows past M are zero), from a (M, T, C) = (M, K)
  Buffer ap(blocks * K * kMR);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) ap.get()[(m / kMR * K + k) * kMR + m % kMR] = a[m * K + k];
  const int64_t chunk = images_per_chunk(N, C, p), tiles = (p.grid + kNR - 1) / kNR;
  Buffer padded(chunk * C * p.plane);
#pragma omp parallel if (N * M * K * p.grid >= kParallelMacs)
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t count = std::min(chunk, N - n0);
    pad_images(in + n0 * C * Hi * Wi, count * C, Hi, Wi, p, padded.get());  // ends in a barrier
#pragma omp for schedule(static)
    for (int64_t i = 0; i < count * tiles * blocks; ++i) {
      const int64_t img = i / (tiles * blocks), tile = i / blocks % tiles, blk = i % blocks;
      const int64_t m0 = blk * kMR;
      const int rows = static_cast<int>(std::min<int64_t>(kMR, M - m0));
      kForwardTiles[rows](ap.get() + blk * K * kMR, padded.get() + img * C * p.plane + tile * kNR,
                          p.d.data(), T, C, p.plane, out + ((n0 + img) * M + m0) * Ho * Wo,
                          Ho * Wo, bias ? bias + m0 : nullptr, tile * kNR, p.Wp, Wo, p.grid);
    }  // the barrier here keeps the next chunk's padding off planes still being read
  }
}

void shift_conv_weight_grad(const float* x, int64_t N, int64_t C, int64_t Hi, int64_t Wi,
                            const float* gy, int64_t M, int64_t Ho, int64_t Wo,
                            const int64_t* shifts, int64_t T, float* gw) {
  const Plan p = make_plan(shifts, T, Hi, Wi, Ho, Wo);
  const int64_t Opad = (M + 15) / 16 * 16, sums = T * C * Opad;
  // Pixel blocks, each summed by one thread into its own copy of gW: the block's gy^T
  // (~128 KB) stays in that thread's L2 while every tile sweeps it. A block is several whole
  // images, a few whole rows of one, or a segment of one row when a row alone is longer (1-D).
  const int64_t block_pixels = std::max<int64_t>(16, 32768 / Opad);
  const int64_t group = std::max<int64_t>(1, block_pixels / (Ho * Wo));  // images per block
  const int64_t seg = std::min(Wo, block_pixels);
  const int64_t block_rows = seg < Wo ? 1 : std::max<int64_t>(1, std::min(Ho, block_pixels / Wo));
  const int64_t row_blocks = (Ho + block_rows - 1) / block_rows, segs = (Wo + seg - 1) / seg;
  const int64_t chunk = images_per_chunk(N, C, p);
  const bool parallel = N * M * T * C * Ho * Wo >= kParallelMacs;
  const int threads = parallel ? max_threads() : 1;
  Buffer acc(threads * sums), padded(chunk * C * p.plane);
  Buffer gyt(threads * group * block_rows * seg * Opad);
#pragma omp parallel if (parallel) num_threads(threads)
  {
    const int64_t tid = thread_id();
    float* mine = acc.get() + tid * sums;
    float* tgyt = gyt.get() + tid * group * block_rows * seg * Opad;
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t count = std::min(chunk, N - n0);
      pad_images(x + n0 * C * Hi * Wi, count * C, Hi, Wi, p, padded.get());  // ends in a barrier
      const int64_t blocks = (count + group - 1) / group * row_blocks * segs;
#pragma omp for schedule(static)
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t j0 = b / (row_blocks * segs) * group, oy0 = b / segs % row_blocks * block_rows;
        const int64_t ox0 = b % segs * seg;
        const int64_t imgs = std::min(group, count - j0), rows = std::min(block_rows, Ho - oy0);
        const int64_t width = std::min(seg, Wo - ox0);
        // gy^T, [image][pixel][Opad], 16 pixels by all channels at a time (the 16 output
        // lines stay in L1 while the channels stream by); the lanes past M are never written,
        // so they keep the buffer's zeros
        for (int64_t img = 0; img < imgs; ++img)
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < width; j += 16) {
              const int64_t len = std::min<int64_t>(16, width - j);
              float* dst = tgyt + ((img * rows + r) * width + j) * Opad;
              const float* src = gy + ((n0 + j0 + img) * M * Ho + oy0 + r) * Wo + ox0 + j;
              for (int64_t o = 0; o < M; ++o, src += Ho * Wo)
                for (int64_t l = 0; l < len; ++l) dst[l * Opad + o] = src[l];
            }
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c0 = 0; c0 < C; c0 += kRC)
            for (int64_t o0 = 0; o0 < Opad; o0 += 16 * kOV) {
              const int r = static_cast<int>(std::min<int64_t>(kRC, C - c0));
              const int v = static_cast<int>(std::min<int64_t>(kOV, (Opad - o0) / 16));
              weight_tile_for(r, v)(
                  padded.get() + (j0 * C + c0) * p.plane + oy0 * p.Wp + ox0 + p.d[t], p.plane,
                  p.Wp, C * p.plane, tgyt + o0, Opad, imgs, rows, width,
                  mine + (t * C + c0) * Opad + o0);
            }
      }  // the barrier here keeps the next chunk's padding off planes still being read
    }
  }
  // the threads' partial sums, added in thread order: repeatable for a given thread count
  for (int64_t tc = 0; tc < T * C; ++tc)
    for (int64_t o = 0; o < M; ++o) {
      float v = 0.0f;
      for (int th = 0; th < threads; ++th) v += acc.get()[th * sums + tc * Opad + o];
      gw[tc * M + o] = v;
    }
}

#else  // not x86-64 GCC/Clang: the callers use the im2col + BLAS path

bool direct_supported() { return false; }

void shift_conv_forward(const float*, int64_t, int64_t, int64_t, int64_t, const float*, int64_t,
                        const int64_t*, int64_t, float*, int64_t, int64_t, const float*) {
  throw std::runtime_error("the direct tap convolution needs an x86-64 CPU with AVX-512");
}

void shift_conv_weight_grad(const float*, int64_t, int64_t, int64_t, int64_t, const float*,
                            int64_t, int64_t, int64_t, const int64_t*, int64_t, float*) {
  throw std::runtime_error("the direct tap convolution needs an x86-64 CPU with AVX-512");
}

#endif

}  // namespace tapconv
}  // namespace gmcore
