// Discretized logistic mixture NLL (+ fused gradient) on the CPU: OpenMP over tiles of
// positions, the per-element math from dlml.h, SIMD over the positions of a tile.
//
// A tile is one example b and up to kTile consecutive positions n, so every inner loop runs
// over contiguous memory (params are (B, P, N): channel rows of length N) and is a
// `omp simd` loop over the branch-free term. Pass 1, per component k: the per-channel terms
// (their unscaled derivatives go straight into grad) and the component score
// lp_k = logit_k + sum_c logp_{c,k}. Then per position the two logsumexps over k give
// nll = lse(logits) - lse(lp). Pass 2 (gradient only), with the responsibilities
// w_k = softmax(lp)_k and pi_k = softmax(logits)_k:
//   d nll / d logit_k = pi_k - w_k,   d nll / d theta_{c,k} = -w_k d logp_{c,k} / d theta.
//
// float32 uses the vectorisable VecF functions; float64 calls libm (scalar). On x86-64 the
// tile is compiled three times (baseline, AVX2+FMA, AVX-512) and picked at run time, since
// the build targets the baseline ISA.
// The select-only term vectorises only when the compiler may evaluate every candidate value
// of a ?: (GCC keeps FP operations that could raise an exception flag out of if-conversion
// under the default -ftrapping-math). Nothing here reads the exception flags; inf and NaN
// keep their IEEE meaning (this is not -ffast-math).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <type_traits>
#include <vector>

#include "dlml.h"

namespace gmcore {

namespace {

using namespace dlml;

constexpr int64_t kTile = 64;

template <typename T>
struct Scratch {  // per-thread buffers of one tile
  std::vector<T> lp, el, acc, m1, m2, s1, s2;
  explicit Scratch(int K)
      : lp(size_t(K) * kTile), el(size_t(K) * kTile), acc(kTile), m1(kTile), m2(kTile), s1(kTile),
        s2(kTile) {}
};

template <typename T>
using MathFor = typename std::conditional<std::is_same<T, float>::value, VecF, Libm>::type;

template <typename T, bool kGrad>
GM_DLML_INLINE void tile_impl(const T* __restrict__ xb, const T* __restrict__ pb, T* __restrict__ gb,
                              T* __restrict__ out, int64_t N, int C, int K, int64_t nt,
                              const Consts<T>& kc_in, Scratch<T>& sc) {
  using M = MathFor<T>;
  const Consts<T> kc = kc_in;  // a local copy: the loads are then loop-invariant for SIMD
  T* __restrict__ acc = sc.acc.data();
  T* __restrict__ lp = sc.lp.data();
  T* __restrict__ el = sc.el.data();
  T* __restrict__ m1 = sc.m1.data();
  T* __restrict__ m2 = sc.m2.data();
  T* __restrict__ s1 = sc.s1.data();
  T* __restrict__ s2 = sc.s2.data();
  const T* x0 = xb;
  const T* x1 = xb + N;
  const T* x2 = xb + 2 * N;
  for (int k = 0; k < K; ++k) {
    {  // channel 0: no coefficients
      const T* mp = pb + (mean_ch(0, C, K) + k) * N;
      const T* rp = pb + (lscale_ch(0, C, K) + k) * N;
      T* gm = kGrad ? gb + (mean_ch(0, C, K) + k) * N : nullptr;
      T* gs = kGrad ? gb + (lscale_ch(0, C, K) + k) * N : nullptr;
#pragma omp simd
      for (int64_t i = 0; i < nt; ++i) {
        const Term<T> t = bin_term<T, kGrad, M>(x0[i], mp[i], rp[i], kc);
        acc[i] = t.logp;
        if (kGrad) {
          gm[i] = t.dmu;
          gs[i] = t.ds;
        }
      }
    }
    if (C == 3) {
      const T* c0 = pb + (coeff_ch(0, C, K) + k) * N;  // green on red
      const T* c1 = pb + (coeff_ch(1, C, K) + k) * N;  // blue on red
      const T* c2 = pb + (coeff_ch(2, C, K) + k) * N;  // blue on green
      T* gc0 = kGrad ? gb + (coeff_ch(0, C, K) + k) * N : nullptr;
      T* gc1 = kGrad ? gb + (coeff_ch(1, C, K) + k) * N : nullptr;
      T* gc2 = kGrad ? gb + (coeff_ch(2, C, K) + k) * N : nullptr;
      const T* mp1 = pb + (mean_ch(1, C, K) + k) * N;
      const T* rp1 = pb + (lscale_ch(1, C, K) + k) * N;
      const T* mp2 = pb + (mean_ch(2, C, K) + k) * N;
      const T* rp2 = pb + (lscale_ch(2, C, K) + k) * N;
      T* gm1 = kGrad ? gb + (mean_ch(1, C, K) + k) * N : nullptr;
      T* gs1 = kGrad ? gb + (lscale_ch(1, C, K) + k) * N : nullptr;
      T* gm2 = kGrad ? gb + (mean_ch(2, C, K) + k) * N : nullptr;
      T* gs2 = kGrad ? gb + (lscale_ch(2, C, K) + k) * N : nullptr;
#pragma omp simd
      for (int64_t i = 0; i < nt; ++i) {
        const T t0 = M::tanh(c0[i]), t1 = M::tanh(c1[i]), t2 = M::tanh(c2[i]);
        const Term<T> g = bin_term<T, kGrad, M>(x1[i], mp1[i] + t0 * x0[i], rp1[i], kc);
        const Term<T> bl = bin_term<T, kGrad, M>(x2[i], mp2[i] + t1 * x0[i] + t2 * x1[i], rp2[i], kc);
        acc[i] += g.logp + bl.logp;
        if (kGrad) {
          gm1[i] = g.dmu;
          gs1[i] = g.ds;
          gm2[i] = bl.dmu;
          gs2[i] = bl.ds;
          gc0[i] = g.dmu * (T(1) - t0 * t0) * x0[i];
          gc1[i] = bl.dmu * (T(1) - t1 * t1) * x0[i];
          gc2[i] = bl.dmu * (T(1) - t2 * t2) * x1[i];
        }
      }
    }
    const T* lg = pb + k * N;
    T* lpk = lp + k * kTile;
#pragma omp simd
    for (int64_t i = 0; i < nt; ++i) lpk[i] = lg[i] + acc[i];
  }

  // logsumexp over the components, per position
#pragma omp simd
  for (int64_t i = 0; i < nt; ++i) {
    m1[i] = pb[i];
    m2[i] = lp[i];
    s1[i] = T(0);
    s2[i] = T(0);
  }
  for (int k = 1; k < K; ++k) {
    const T* lg = pb + k * N;
    const T* lpk = lp + k * kTile;
#pragma omp simd
    for (int64_t i = 0; i < nt; ++i) {
      m1[i] = lg[i] > m1[i] ? lg[i] : m1[i];
      m2[i] = lpk[i] > m2[i] ? lpk[i] : m2[i];
    }
  }
  for (int k = 0; k < K; ++k) {
    const T* lg = pb + k * N;
    T* lpk = lp + k * kTile;
    T* elk = el + k * kTile;
#pragma omp simd
    for (int64_t i = 0; i < nt; ++i) {
      const T e1 = M::exp(lg[i] - m1[i]), e2 = M::exp(lpk[i] - m2[i]);
      elk[i] = e1;
      lpk[i] = e2;
      s1[i] += e1;
      s2[i] += e2;
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < nt; ++i) out[i] = (m1[i] + M::log(s1[i])) - (m2[i] + M::log(s2[i]));
  if (!kGrad) return;

  for (int k = 0; k < K; ++k) {
    T* w = lp + k * kTile;
    const T* e1 = el + k * kTile;
    T* gl = gb + k * N;
#pragma omp simd
    for (int64_t i = 0; i < nt; ++i) {
      w[i] = -(w[i] / s2[i]);  // -w_k: the factor of every other slot of component k
      gl[i] = e1[i] / s1[i] + w[i];
    }
    for (int c = 0; c < C; ++c) {
      T* gm = gb + (mean_ch(c, C, K) + k) * N;
      T* gs = gb + (lscale_ch(c, C, K) + k) * N;
#pragma omp simd
      for (int64_t i = 0; i < nt; ++i) {
        gm[i] *= w[i];
        gs[i] *= w[i];
      }
    }
    for (int q = 0; q < C * (C - 1) / 2; ++q) {
      T* gc = gb + (coeff_ch(q, C, K) + k) * N;
#pragma omp simd
      for (int64_t i = 0; i < nt; ++i) gc[i] *= w[i];
    }
  }
}

// One tile, compiled for the baseline and (x86-64) for AVX2 and AVX-512.
#define GM_DLML_TILE_ARGS                                                                        \
  const T *xb, const T *pb, T *gb, T *out, int64_t N, int C, int K, int64_t nt, const Consts<T> &kc, \
      Scratch<T> &sc
#define GM_DLML_TILE_PASS xb, pb, gb, out, N, C, K, nt, kc, sc

template <typename T, bool kGrad>
void tile_base(GM_DLML_TILE_ARGS) { tile_impl<T, kGrad>(GM_DLML_TILE_PASS); }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GM_DLML_MULTIVERSION 1
template <typename T, bool kGrad>
__attribute__((target("avx2,fma"))) void tile_avx2(GM_DLML_TILE_ARGS) {
  tile_impl<T, kGrad>(GM_DLML_TILE_PASS);
}
template <typename T, bool kGrad>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void tile_avx512(GM_DLML_TILE_ARGS) {
  tile_impl<T, kGrad>(GM_DLML_TILE_PASS);
}
#endif

template <typename T, bool kGrad>
using TileFn = void (*)(GM_DLML_TILE_ARGS);

template <typename T, bool kGrad>
TileFn<T, kGrad> pick_tile() {
#if defined(GM_DLML_MULTIVERSION)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return &tile_avx512<T, kGrad>;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &tile_avx2<T, kGrad>;
#endif
  return &tile_base<T, kGrad>;
}

template <typename T, bool kGrad>
void run(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K, int64_t N,
         int64_t num_bins) {
  const Consts<T> kc = make_consts<T>(num_bins);
  const int64_t P = int64_t(K) * params_per_component(C);
  const int64_t tiles = (N + kTile - 1) / kTile;
  const int64_t work = B * tiles;
  static const TileFn<T, kGrad> tile = pick_tile<T, kGrad>();

#pragma omp parallel if (B * N * K * C > 16384)
  {
    Scratch<T> sc(K);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < work; ++t) {
      const int64_t b = t / tiles, n0 = (t % tiles) * kTile;
      const int64_t nt = std::min(kTile, N - n0);
      tile(x + b * C * N + n0, params + b * P * N + n0, kGrad ? grad + b * P * N + n0 : nullptr,
           nll + b * N + n0, N, C, K, nt, kc, sc);
    }
  }
}

}  // namespace

template <typename T>
void dlml_forward_cpu(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K,
                      int64_t N, int64_t num_bins) {
  if (grad)
    run<T, true>(x, params, nll, grad, B, C, K, N, num_bins);
  else
    run<T, false>(x, params, nll, grad, B, C, K, N, num_bins);
}

template void dlml_forward_cpu<float>(const float*, const float*, float*, float*, int64_t, int, int,
                                      int64_t, int64_t);
template void dlml_forward_cpu<double>(const double*, const double*, double*, double*, int64_t, int,
                                       int, int64_t, int64_t);

}  // namespace gmcore
