// Vector quantization on the CPU: OpenMP over row blocks, the math from vq.h.
//
// Nearest code.  The codebook is packed once into tiles of NR codes, transposed and pre-scaled
// (w[t][dd][j] = -2 c[t*NR + j][dd]) with the norms ||c||^2 alongside (+inf for the padding codes
// of the last tile, so they never win).  A register-blocked micro-kernel then computes the scores
// of MR rows x NR codes at a time (the GEMM pattern: broadcast a z value, multiply a vector of
// codes) and folds them into per-lane running minima; the lanes are merged at the end of the row.
// Extra memory: the packed codebook (K*D) and its norms (K); nothing of size N x K.
//
// The hot functions are compiled several times (AVX-512, AVX2+FMA, baseline) and picked at load
// time (GCC target_clones): the build uses no -march flag, so the wheel runs on any x86-64.
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

#include "vq.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define GM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define GM_INLINE inline __attribute__((always_inline))
#else
#define GM_CLONES
#define GM_INLINE inline
#endif

namespace gmcore {

namespace {

// 8 x 32 accumulators: 16 AVX-512 registers of float, 16 independent FMA chains (enough to
// cover FMA latency on two pipes) and 16 FMAs per 10 loads.  Measured on a 2-core Zen 5 at
// N=65536, K=1024, D=64 float32: 8x16 103 ms, 4x32 30 ms, 8x32 28 ms, 12x32 45 ms.
constexpr int MR = 8;   // rows per micro-tile
constexpr int NR = 32;  // codes per micro-tile
constexpr int64_t kRowChunk = 64;  // rows per OpenMP work item

template <typename T>
struct Packed {
  std::vector<T> w;   // tiles x d x NR
  std::vector<T> cn;  // tiles x NR
  int64_t tiles;
};

template <typename T>
Packed<T> pack_codebook(const T* c, int64_t k, int64_t d) {
  Packed<T> p;
  p.tiles = (k + NR - 1) / NR;
  p.w.assign(static_cast<size_t>(p.tiles * d * NR), T(0));
  p.cn.assign(static_cast<size_t>(p.tiles * NR), std::numeric_limits<T>::infinity());
  for (int64_t code = 0; code < k; ++code) {
    const T* row = c + code * d;
    T* dst = p.w.data() + (code / NR) * d * NR + (code % NR);
    T norm = 0;
    for (int64_t dd = 0; dd < d; ++dd) {
      norm += row[dd] * row[dd];
      dst[dd * NR] = vq::packed_weight(row[dd]);
    }
    p.cn[static_cast<size_t>(code)] = norm;
  }
  return p;
}

// Nearest code of `rows` (<= MR) rows starting at z; the missing rows of a short block repeat
// the first one (their results are dropped).
template <typename T>
GM_INLINE void nearest_block(const T* z, int rows, const T* w, const T* cn, int64_t tiles, int64_t k,
                             int64_t d, int64_t* out) {
  const T* zr[MR];
  for (int r = 0; r < MR; ++r) zr[r] = z + (r < rows ? r : 0) * d;
  T best[MR][NR];
  int32_t best_k[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) {
      best[r][j] = std::numeric_limits<T>::infinity();
      best_k[r][j] = -1;
    }
  for (int64_t t = 0; t < tiles; ++t) {
    const T* wt = w + t * d * NR;
    const T* ct = cn + t * NR;
    T acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NR; ++j) acc[r][j] = ct[j];
    for (int64_t dd = 0; dd < d; ++dd) {
      const T* wv = wt + dd * NR;
      for (int r = 0; r < MR; ++r) {
        const T zv = zr[r][dd];
        for (int j = 0; j < NR; ++j) acc[r][j] = vq::score_step(acc[r][j], zv, wv[j]);
      }
    }
    const int32_t base = static_cast<int32_t>(t * NR);
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NR; ++j) {
        // strict <: within a lane codes arrive in increasing index, so ties keep the lowest
        const bool win = acc[r][j] < best[r][j];
        best[r][j] = win ? acc[r][j] : best[r][j];
        best_k[r][j] = win ? base + j : best_k[r][j];
      }
  }
  for (int r = 0; r < rows; ++r) {
    T b = best[r][0];
    int64_t bk = best_k[r][0];
    for (int j = 1; j < NR; ++j) {
      if (best_k[r][j] >= 0 && (bk < 0 || vq::better(best[r][j], int64_t(best_k[r][j]), b, bk))) {
        b = best[r][j];
        bk = best_k[r][j];
      }
    }
    out[r] = vq::finalize_index(bk, k, vq::row_is_finite(zr[r], d));
  }
}

template <typename T>
GM_INLINE void nearest_rows(const T* z, int64_t n, const T* w, const T* cn, int64_t tiles, int64_t k,
                            int64_t d, int64_t* out) {
  for (int64_t i = 0; i < n; i += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, n - i));
    nearest_block<T>(z + i * d, rows, w, cn, tiles, k, d, out + i);
  }
}

GM_CLONES void nearest_rows_f32(const float* z, int64_t n, const float* w, const float* cn,
                                int64_t tiles, int64_t k, int64_t d, int64_t* out) {
  nearest_rows<float>(z, n, w, cn, tiles, k, d, out);
}

GM_CLONES void nearest_rows_f64(const double* z, int64_t n, const double* w, const double* cn,
                                int64_t tiles, int64_t k, int64_t d, int64_t* out) {
  nearest_rows<double>(z, n, w, cn, tiles, k, d, out);
}

inline void nearest_rows_any(const float* z, int64_t n, const float* w, const float* cn, int64_t tiles,
                             int64_t k, int64_t d, int64_t* out) {
  nearest_rows_f32(z, n, w, cn, tiles, k, d, out);
}
inline void nearest_rows_any(const double* z, int64_t n, const double* w, const double* cn,
                             int64_t tiles, int64_t k, int64_t d, int64_t* out) {
  nearest_rows_f64(z, n, w, cn, tiles, k, d, out);
}

}  // namespace

template <typename T>
void vq_nearest_cpu(const T* z, const T* codebook, int64_t* indices, int64_t n, int64_t k, int64_t d) {
  if (n == 0) return;
  if (k <= 0) throw std::invalid_argument("vq_nearest_cpu: the codebook is empty");
  if (k > std::numeric_limits<int32_t>::max() - NR)
    throw std::invalid_argument("vq_nearest_cpu: codebook too large (K must be < 2^31 - 32)");
  const Packed<T> p = pack_codebook(codebook, k, d);
  const int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
#pragma omp parallel for schedule(dynamic, 4) if (n * k * d > 65536)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kRowChunk;
    const int64_t rows = std::min<int64_t>(kRowChunk, n - i0);
    nearest_rows_any(z + i0 * d, rows, p.w.data(), p.cn.data(), p.tiles, k, d, indices + i0);
  }
}

// Cluster statistics: counts[c] = #{i : idx_i = c}, sums[c] = sum_{i : idx_i = c} z_i.  Threads
// split the feature dimension, so each sums[c][j] is accumulated by one thread in row order:
// deterministic, and no per-thread copies of sums.
template <typename T>
void vq_ema_stats_cpu(const T* z, const int64_t* indices, T* counts, T* sums, int64_t n, int64_t k,
                      int64_t d) {
  std::fill(sums, sums + k * d, T(0));
  std::vector<int64_t> exact(static_cast<size_t>(k), 0);  // float32 counts stop at 2^24
  for (int64_t i = 0; i < n; ++i) ++exact[static_cast<size_t>(indices[i])];
  for (int64_t c = 0; c < k; ++c) counts[c] = static_cast<T>(exact[static_cast<size_t>(c)]);
  constexpr int64_t kCols = 16;
  const int64_t col_chunks = (d + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t cc = 0; cc < col_chunks; ++cc) {
    const int64_t j0 = cc * kCols, j1 = std::min(d, j0 + kCols);
    for (int64_t i = 0; i < n; ++i) {
      const T* zr = z + i * d;
      T* sr = sums + indices[i] * d;
      for (int64_t j = j0; j < j1; ++j) sr[j] += zr[j];
    }
  }
}

template void vq_nearest_cpu<float>(const float*, const float*, int64_t*, int64_t, int64_t, int64_t);
template void vq_nearest_cpu<double>(const double*, const double*, int64_t*, int64_t, int64_t, int64_t);
template void vq_ema_stats_cpu<float>(const float*, const int64_t*, float*, float*, int64_t, int64_t,
                                      int64_t);
template void vq_ema_stats_cpu<double>(const double*, const int64_t*, double*, double*, int64_t,
                                       int64_t, int64_t);

}  // namespace gmcore
