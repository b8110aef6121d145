// Vector quantization (nearest codebook row, EMA cluster statistics): the math, written once.
//
// Included by csrc/vq_cpu.cpp (host build: GM_HOST_DEVICE is empty) and by csrc/vq.cu (nvcc:
// __host__ __device__), so the CPU tests exercise the arithmetic the GPU runs.
//
// Distance.  For a row z and code c, ||z - c||^2 = ||z||^2 + ||c||^2 - 2 z.c.  ||z||^2 is the
// same for every code of a row, so the argmin only needs the *score*
//     s(z, c) = ||c||^2 - 2 z.c = ||c||^2 + sum_d z_d * (-2 c_d)
// The kernels precompute ||c||^2 once (O(K)), start each accumulator at it and add the products
// with the codebook pre-scaled by -2 (exact: a power of two).  No N x K matrix exists: the
// codebook is streamed in tiles and each row keeps a running (best score, best index).
//
// Ties and rounding.  Codes are visited in increasing index and a candidate replaces the best
// only when strictly smaller, so equal computed scores go to the lowest index.
//
// Non-finite values (the same in every implementation: reference, numba, cpp, triton, cuda).
// A row of z with a NaN or +-inf has no nearest code (its distance to every code is NaN or
// inf): its index is -1.  A code with a NaN or +-inf is never chosen: its norm is NaN or +inf,
// so each of its scores is NaN or +inf and never compares below the running best (which starts
// at +inf); the same holds for a code whose squared norm overflows.  A finite row that no code
// beats +inf for (every code non-finite, or every score overflowing) also gets -1.  The public
// op (gmcore.functional.vq_nearest) turns any -1 into a ValueError.
// The computed score carries float rounding of order eps * (||z||^2 + ||c||^2): when two codes
// are closer than that, implementations (and the float64 reference) may pick different ones,
// each within rounding of the true minimum.
#pragma once

#include <math.h>

#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace vq {

// Packed weight of a codebook entry: -2 c (exact scaling).
template <typename T>
GM_HOST_DEVICE inline T packed_weight(T c) {
  return T(-2) * c;
}

// One step of the accumulation of a score: acc + z_d * w_d (w = -2 c_d).  Written as a plain
// multiply-add: compilers contract it to an FMA where the target has one (nvcc always; the host
// clones built for AVX2/AVX-512), so rounding may differ by one FMA between targets.
template <typename T>
GM_HOST_DEVICE inline T score_step(T acc, T z, T w) {
  return acc + z * w;
}

// Does candidate (s, k) beat the current best (best, best_k)?  Strictly smaller score, or an
// equal score at a lower index (needed when candidates arrive out of index order, e.g. when
// per-lane or per-thread winners are merged).  NaN never beats anything.
template <typename T>
GM_HOST_DEVICE inline bool better(T s, int64_t k, T best, int64_t best_k) {
  return s < best || (s == best && k < best_k);
}

// Is every entry of the row z[0..d) finite?  (|NaN| < inf is false, as is |inf| < inf; written
// as a comparison so host and device agree without isfinite overloads.)
template <typename T>
GM_HOST_DEVICE inline bool row_is_finite(const T* z, int64_t d) {
  bool ok = true;
  for (int64_t j = 0; j < d; ++j) ok = ok && (fabs(z[j]) < static_cast<T>(INFINITY));
  return ok;
}

// Index reported for a row: -1 when the row has a NaN / inf, or when no score beat +inf (best_k
// still -1: every code non-finite, or every score overflowed); otherwise the winner.
GM_HOST_DEVICE inline int64_t finalize_index(int64_t best_k, int64_t k_count, bool row_finite) {
  return (!row_finite || best_k < 0 || best_k >= k_count) ? -1 : best_k;
}

}  // namespace vq

// Launchers (host functions).  CPU: csrc/vq_cpu.cpp.  CUDA: csrc/vq.cu.
// z: (n, d) contiguous; codebook: (k, d) contiguous; indices: (n,) int64, -1 for a row with no
// nearest code (above).
// counts: (k,), sums: (k, d), both in the dtype of z, overwritten (not accumulated into).
template <typename T>
void vq_nearest_cpu(const T* z, const T* codebook, int64_t* indices, int64_t n, int64_t k,
                    int64_t d);
template <typename T>
void vq_ema_stats_cpu(const T* z, const int64_t* indices, T* counts, T* sums, int64_t n, int64_t k,
                      int64_t d);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t passed as an integer.  Throw std::runtime_error
// naming the CUDA error on failure.  `cnorm` is caller-provided scratch of k entries.
template <typename T>
void vq_nearest_cuda(const T* z, const T* codebook, T* cnorm, int64_t* indices, int64_t n,
                     int64_t k, int64_t d, std::uintptr_t stream);
template <typename T>
void vq_ema_stats_cuda(const T* z, const int64_t* indices, T* counts, T* sums, int64_t n,
                       int64_t k, int64_t d, std::uintptr_t stream);
#endif

}  // namespace gmcore
