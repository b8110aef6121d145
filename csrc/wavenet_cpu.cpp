// WaveNet gated activation on the CPU: OpenMP over (example, channel) rows, the per-element
// math from wavenet.h, SIMD over the time steps of a row.
//
// A row is one example n and one gate channel g: its filter half z[n, g, :], its gate half
// z[n, G+g, :] and its output a[n, g, :] are contiguous runs of L values, so every inner loop
// is an `omp simd` loop over contiguous memory with the row's two biases held in registers.
// float32 uses the vectorisable VecF exp/tanh; float64 calls libm (scalar).  On x86-64 the row
// loop is compiled three times (baseline, AVX2+FMA, AVX-512) and picked at run time, since the
// build targets the baseline ISA.
// The select-only element vectorises only when the compiler may evaluate both sides of a ?:
// (GCC keeps FP operations that could raise an exception flag out of if-conversion under the
// default -ftrapping-math).  Nothing here reads the exception flags; inf and NaN keep their
// IEEE meaning (this is not -ffast-math).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <type_traits>

#include "wavenet.h"

namespace gmcore {

namespace {

using namespace wavenet;

template <typename T>
using MathFor = typename std::conditional<std::is_same<T, float>::value, VecF, Libm>::type;

// Rows [r0, r1) of the forward.
template <typename T>
GM_WN_INLINE void fwd_rows_impl(const T* __restrict__ z, const T* __restrict__ bias,
                                const T* __restrict__ cond, T* __restrict__ a,
                                T* __restrict__ ts, int64_t G, int64_t L, int64_t r0, int64_t r1) {
  using M = MathFor<T>;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / G, g = row % G;
    const int64_t o1 = (n * 2 * G + g) * L, o2 = o1 + G * L;
    const T b1 = bias[g], b2 = bias[G + g];
    const T* z1 = z + o1;
    const T* z2 = z + o2;
    T* t1 = ts + o1;
    T* s2 = ts + o2;
    T* ar = a + row * L;
    if (cond) {
      const T* c1 = cond + o1;
      const T* c2 = cond + o2;
#pragma omp simd
      for (int64_t i = 0; i < L; ++i) {
        T t, s, v;
        gate_forward_elem<T, M>(z1[i] + b1 + c1[i], z2[i] + b2 + c2[i], t, s, v);
        t1[i] = t;
        s2[i] = s;
        ar[i] = v;
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < L; ++i) {
        T t, s, v;
        gate_forward_elem<T, M>(z1[i] + b1, z2[i] + b2, t, s, v);
        t1[i] = t;
        s2[i] = s;
        ar[i] = v;
      }
    }
  }
}

template <typename T>
GM_WN_INLINE void bwd_rows_impl(const T* __restrict__ ts, const T* __restrict__ ga,
                                T* __restrict__ dz, int64_t G, int64_t L, int64_t r0, int64_t r1) {
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t n = row / G, g = row % G;
    const int64_t o1 = (n * 2 * G + g) * L, o2 = o1 + G * L;
    const T* t1 = ts + o1;
    const T* s2 = ts + o2;
    const T* gr = ga + row * L;
    T* d1 = dz + o1;
    T* d2 = dz + o2;
#pragma omp simd
    for (int64_t i = 0; i < L; ++i) {
      T a1, a2;
      gate_backward_elem<T>(t1[i], s2[i], gr[i], a1, a2);
      d1[i] = a1;
      d2[i] = a2;
    }
  }
}

#define GM_WN_FWD_ARGS \
  const T *z, const T *bias, const T *cond, T *a, T *ts, int64_t G, int64_t L, int64_t r0, int64_t r1
#define GM_WN_FWD_PASS z, bias, cond, a, ts, G, L, r0, r1
#define GM_WN_BWD_ARGS const T *ts, const T *ga, T *dz, int64_t G, int64_t L, int64_t r0, int64_t r1
#define GM_WN_BWD_PASS ts, ga, dz, G, L, r0, r1

template <typename T>
void fwd_base(GM_WN_FWD_ARGS) { fwd_rows_impl<T>(GM_WN_FWD_PASS); }
template <typename T>
void bwd_base(GM_WN_BWD_ARGS) { bwd_rows_impl<T>(GM_WN_BWD_PASS); }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GM_WN_MULTIVERSION 1
template <typename T>
__attribute__((target("avx2,fma"))) void fwd_avx2(GM_WN_FWD_ARGS) { fwd_rows_impl<T>(GM_WN_FWD_PASS); }
template <typename T>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void fwd_avx512(GM_WN_FWD_ARGS) {
  fwd_rows_impl<T>(GM_WN_FWD_PASS);
}
template <typename T>
__attribute__((target("avx2,fma"))) void bwd_avx2(GM_WN_BWD_ARGS) { bwd_rows_impl<T>(GM_WN_BWD_PASS); }
template <typename T>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void bwd_avx512(GM_WN_BWD_ARGS) {
  bwd_rows_impl<T>(GM_WN_BWD_PASS);
}
#endif

template <typename T>
using FwdFn = void (*)(GM_WN_FWD_ARGS);
template <typename T>
using BwdFn = void (*)(GM_WN_BWD_ARGS);

enum class Isa { base, avx2, avx512 };

Isa pick_isa() {
#if defined(GM_WN_MULTIVERSION)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::base;
}

template <typename T>
FwdFn<T> pick_fwd() {
#if defined(GM_WN_MULTIVERSION)
  switch (pick_isa()) {
    case Isa::avx512: return &fwd_avx512<T>;
    case Isa::avx2: return &fwd_avx2<T>;
    default: break;
  }
#endif
  return &fwd_base<T>;
}

template <typename T>
BwdFn<T> pick_bwd() {
#if defined(GM_WN_MULTIVERSION)
  switch (pick_isa()) {
    case Isa::avx512: return &bwd_avx512<T>;
    case Isa::avx2: return &bwd_avx2<T>;
    default: break;
  }
#endif
  return &bwd_base<T>;
}

// Rows per OpenMP chunk: whole rows, at least ~8k elements per chunk so that short rows (the
// one-step generation case, L = 1) do not pay a scheduling cost per row.
inline int64_t chunk_rows(int64_t L) { return L >= 8192 ? 1 : (8192 + L - 1) / L; }

}  // namespace

template <typename T>
void wavenet_gate_forward_cpu(const T* z, const T* bias, const T* cond, T* a, T* ts, int64_t N,
                              int64_t G, int64_t L) {
  static const FwdFn<T> fn = pick_fwd<T>();
  const int64_t rows = N * G;
  if (rows == 0 || L == 0) return;
  const int64_t chunk = chunk_rows(L);
  const int64_t chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (chunks > 1 && rows * L > 32768)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    fn(z, bias, cond, a, ts, G, L, r0, r1);
  }
}

template <typename T>
void wavenet_gate_backward_cpu(const T* ts, const T* ga, T* dz, int64_t N, int64_t G, int64_t L) {
  static const BwdFn<T> fn = pick_bwd<T>();
  const int64_t rows = N * G;
  if (rows == 0 || L == 0) return;
  const int64_t chunk = chunk_rows(L);
  const int64_t chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (chunks > 1 && rows * L > 32768)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    fn(ts, ga, dz, G, L, r0, r1);
  }
}

template void wavenet_gate_forward_cpu<float>(const float*, const float*, const float*, float*,
                                              float*, int64_t, int64_t, int64_t);
template void wavenet_gate_forward_cpu<double>(const double*, const double*, const double*, double*,
                                               double*, int64_t, int64_t, int64_t);
template void wavenet_gate_backward_cpu<float>(const float*, const float*, float*, int64_t, int64_t,
                                               int64_t);
template void wavenet_gate_backward_cpu<double>(const double*, const double*, double*, int64_t,
                                                int64_t, int64_t);

}  // namespace gmcore
