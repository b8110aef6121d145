// softmax / log_softmax / cross_entropy on the CPU: OpenMP over work items, the math from
// softmax.h, SIMD inside an item.
//
// A work item is one row (inner == 1: the reduced dim is the last, contiguous) or a tile of up
// to kTile consecutive inner positions of one outer index (inner > 1: the reduced dim is strided
// by `inner`, so the loops run over the tile's contiguous positions, one class after the other,
// with the tile's running max and sum in small arrays). Each is two or three passes over data
// that stays in cache, so the whole op reads its input once from memory.
//
// float32 uses dlml.h's vectorisable VecF exp/log (a few ulp from libm); float64 calls libm.
// On x86-64 the items are compiled twice (baseline and AVX2+FMA) and picked at run time, as in
// dlml_cpu.cpp: the build targets the baseline ISA.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "softmax.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "dlml.h"  // VecF / Libm: exp and log, vectorisable for float32

#define GM_SMX_INLINE GM_DLML_INLINE

namespace gmcore {

namespace {

constexpr int64_t kTile = 64;

template <typename T>
using M = typename std::conditional<std::is_same<T, float>::value, dlml::VecF, dlml::Libm>::type;

template <typename T>
GM_SMX_INLINE T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// Items split (outer, C, inner) into rows or (outer, tile) pairs.
struct Shape {
  int64_t outer, C, inner, tiles;
  int64_t items() const { return inner == 1 ? outer : outer * tiles; }
};

inline Shape make_shape(int64_t outer, int64_t C, int64_t inner) {
  return Shape{outer, C, inner, (inner + kTile - 1) / kTile};
}

// ---- softmax / log_softmax forward ---------------------------------------------------------

template <typename T, bool kLog>
struct SoftmaxFwd {
  const T* x;
  T* y;
  Shape sh;

  GM_SMX_INLINE void item(int64_t i) const {
    using Mt = M<T>;
    const int64_t C = sh.C;
    if (sh.inner == 1) {
      const T* __restrict__ xr = x + i * C;
      T* __restrict__ yr = y + i * C;
      T m = neg_inf<T>();
#pragma omp simd reduction(max : m)
      for (int64_t c = 0; c < C; ++c) m = xr[c] > m ? xr[c] : m;
      T s = 0;
      if (kLog) {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) s += Mt::exp(xr[c] - m);
        const T l = m + Mt::log(s);
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] - l;
      } else {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) {
          const T e = Mt::exp(xr[c] - m);
          yr[c] = e;
          s += e;
        }
        const T inv = T(1) / s;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yr[c] *= inv;
      }
      return;
    }
    const int64_t o = i / sh.tiles, j0 = (i % sh.tiles) * kTile;
    const int64_t n = std::min(kTile, sh.inner - j0), inner = sh.inner;
    const T* xb = x + o * C * inner + j0;
    T* yb = y + o * C * inner + j0;
    T m[kTile], s[kTile];
    for (int64_t j = 0; j < n; ++j) m[j] = neg_inf<T>(), s[j] = T(0);
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * inner;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) m[j] = xr[j] > m[j] ? xr[j] : m[j];
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * inner;
      T* __restrict__ yr = yb + c * inner;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T e = Mt::exp(xr[j] - m[j]);
        if (!kLog) yr[j] = e;
        s[j] += e;
      }
    }
    if (kLog) {
      for (int64_t j = 0; j < n; ++j) s[j] = m[j] + Mt::log(s[j]);  // s now holds lse
    } else {
      for (int64_t j = 0; j < n; ++j) s[j] = T(1) / s[j];
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * inner;
      T* __restrict__ yr = yb + c * inner;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yr[j] = kLog ? xr[j] - s[j] : yr[j] * s[j];
    }
  }
};

// ---- softmax / log_softmax backward --------------------------------------------------------

template <typename T, bool kLog>
struct SoftmaxBwd {
  const T* y;
  const T* g;
  T* dx;
  Shape sh;

  GM_SMX_INLINE void item(int64_t i) const {
    using Mt = M<T>;
    const int64_t C = sh.C;
    if (sh.inner == 1) {
      const T* __restrict__ yr = y + i * C;
      const T* __restrict__ gr = g + i * C;
      T* __restrict__ dr = dx + i * C;
      T s = 0;
      if (kLog) {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) s += gr[c];
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dr[c] = gr[c] - Mt::exp(yr[c]) * s;
      } else {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) s += gr[c] * yr[c];
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dr[c] = yr[c] * (gr[c] - s);
      }
      return;
    }
    const int64_t o = i / sh.tiles, j0 = (i % sh.tiles) * kTile;
    const int64_t n = std::min(kTile, sh.inner - j0), inner = sh.inner;
    const int64_t off = o * C * inner + j0;
    T s[kTile];
    for (int64_t j = 0; j < n; ++j) s[j] = T(0);
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ yr = y + off + c * inner;
      const T* __restrict__ gr = g + off + c * inner;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) s[j] += kLog ? gr[j] : gr[j] * yr[j];
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ yr = y + off + c * inner;
      const T* __restrict__ gr = g + off + c * inner;
      T* __restrict__ dr = dx + off + c * inner;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j)
        dr[j] = kLog ? gr[j] - Mt::exp(yr[j]) * s[j] : yr[j] * (gr[j] - s[j]);
    }
  }
};

// ---- cross_entropy forward -----------------------------------------------------------------

template <typename T>
struct CeFwd {
  const T* x;
  const int64_t* target;
  const T* weight;  // null: all ones
  T* loss;
  T* wt;
  T* lse;
  Shape sh;
  int64_t ignore;
  T eps, W;

  GM_SMX_INLINE void position(const T* xr, int64_t stride, int64_t p, T m, T s, T sx) const {
    const int64_t t = target[p];
    const T l = m + M<T>::log(s);
    lse[p] = l;
    if (t == ignore) {
      loss[p] = T(0), wt[p] = T(0);
      return;
    }
    const T w = weight ? weight[t] : T(1);
    wt[p] = w;
    loss[p] = smx::ce_loss(l, xr[t * stride], w, sx, W, eps, sh.C);
  }

  GM_SMX_INLINE void item(int64_t i) const {
    using Mt = M<T>;
    const int64_t C = sh.C;
    const bool smooth = eps != T(0);
    if (sh.inner == 1) {
      const T* __restrict__ xr = x + i * C;
      T m = neg_inf<T>();
#pragma omp simd reduction(max : m)
      for (int64_t c = 0; c < C; ++c) m = xr[c] > m ? xr[c] : m;
      T s = 0, sx = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += Mt::exp(xr[c] - m);
      if (smooth && weight) {
#pragma omp simd reduction(+ : sx)
        for (int64_t c = 0; c < C; ++c) sx += weight[c] * xr[c];
      } else if (smooth) {
#pragma omp simd reduction(+ : sx)
        for (int64_t c = 0; c < C; ++c) sx += xr[c];
      }
      position(xr, 1, i, m, s, sx);
      return;
    }
    const int64_t o = i / sh.tiles, j0 = (i % sh.tiles) * kTile;
    const int64_t n = std::min(kTile, sh.inner - j0), inner = sh.inner;
    const T* xb = x + o * C * inner + j0;
    T m[kTile], s[kTile], sx[kTile];
    for (int64_t j = 0; j < n; ++j) m[j] = neg_inf<T>(), s[j] = T(0), sx[j] = T(0);
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * inner;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) m[j] = xr[j] > m[j] ? xr[j] : m[j];
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * inner;
      const T wc = weight ? weight[c] : T(1);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) s[j] += Mt::exp(xr[j] - m[j]);
      if (smooth) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) sx[j] += wc * xr[j];
      }
    }
    for (int64_t j = 0; j < n; ++j) position(xb + j, inner, o * inner + j0 + j, m[j], s[j], sx[j]);
  }
};

// ---- cross_entropy backward ----------------------------------------------------------------

template <typename T>
struct CeBwd {
  const T* x;
  const int64_t* target;
  const T* weight;
  const T* lse;
  const T* gl;
  T* dx;
  Shape sh;
  int64_t ignore;
  T eps, W;

  GM_SMX_INLINE smx::CeGrad<T> coef(int64_t p, int64_t* t) const {
    *t = target[p];
    if (*t == ignore) return smx::CeGrad<T>{T(0), T(0), T(0)};
    const T w = weight ? weight[*t] : T(1);
    return smx::ce_grad(gl[p], w, W, eps, sh.C);
  }

  GM_SMX_INLINE void item(int64_t i) const {
    using Mt = M<T>;
    const int64_t C = sh.C;
    if (sh.inner == 1) {
      const T* __restrict__ xr = x + i * C;
      T* __restrict__ dr = dx + i * C;
      int64_t t;
      const smx::CeGrad<T> k = coef(i, &t);
      if (t == ignore) {
        std::fill(dr, dr + C, T(0));  // exact zeros, even where a logit is inf or NaN
        return;
      }
      const T l = lse[i];
      if (weight && k.b != T(0)) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dr[c] = k.a * Mt::exp(xr[c] - l) - k.b * weight[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dr[c] = k.a * Mt::exp(xr[c] - l) - k.b;
      }
      dr[t] -= k.d;
      return;
    }
    const int64_t o = i / sh.tiles, j0 = (i % sh.tiles) * kTile;
    const int64_t n = std::min(kTile, sh.inner - j0), inner = sh.inner;
    const int64_t off = o * C * inner + j0, p0 = o * inner + j0;
    T a[kTile], b[kTile], l[kTile];
    for (int64_t j = 0; j < n; ++j) {
      int64_t t;
      const smx::CeGrad<T> k = coef(p0 + j, &t);
      a[j] = k.a, b[j] = k.b, l[j] = lse[p0 + j];
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = x + off + c * inner;
      T* __restrict__ dr = dx + off + c * inner;
      const T wc = weight ? weight[c] : T(1);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dr[j] = a[j] * Mt::exp(xr[j] - l[j]) - b[j] * wc;
    }
    for (int64_t j = 0; j < n; ++j) {
      int64_t t;
      const smx::CeGrad<T> k = coef(p0 + j, &t);
      if (t == ignore) {
        for (int64_t c = 0; c < C; ++c) dx[off + c * inner + j] = T(0);
      } else {
        dx[off + t * inner + j] -= k.d;
      }
    }
  }
};

// ---- the run loop: items split evenly over the threads, the item body per ISA ---------------

template <class K>
void items_base(const K& k, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) k.item(i);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GM_SMX_MULTIVERSION 1
template <class K>
__attribute__((target("avx2,fma"))) void items_avx2(const K& k, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) k.item(i);
}
#endif

template <class K>
using ItemsFn = void (*)(const K&, int64_t, int64_t);

template <class K>
ItemsFn<K> pick() {
#if defined(GM_SMX_MULTIVERSION)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &items_avx2<K>;
#endif
  return &items_base<K>;
}

template <class K>
void run(const K& k, int64_t work) {
  static const ItemsFn<K> fn = pick<K>();
  const int64_t n = k.sh.items();
  if (n == 0) return;
#pragma omp parallel if (work > 32768)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) fn(k, b, e);
  }
}

}  // namespace

template <typename T>
void softmax_forward_cpu(const T* x, T* y, int64_t outer, int64_t C, int64_t inner, bool log) {
  const Shape sh = make_shape(outer, C, inner);
  if (log)
    run(SoftmaxFwd<T, true>{x, y, sh}, outer * C * inner);
  else
    run(SoftmaxFwd<T, false>{x, y, sh}, outer * C * inner);
}

template <typename T>
void softmax_backward_cpu(const T* y, const T* g, T* dx, int64_t outer, int64_t C, int64_t inner,
                          bool log) {
  const Shape sh = make_shape(outer, C, inner);
  if (log)
    run(SoftmaxBwd<T, true>{y, g, dx, sh}, outer * C * inner);
  else
    run(SoftmaxBwd<T, false>{y, g, dx, sh}, outer * C * inner);
}

template <typename T>
void cross_entropy_forward_cpu(const T* x, const int64_t* target, const T* weight, T* loss, T* wt,
                               T* lse, int64_t outer, int64_t C, int64_t inner,
                               int64_t ignore_index, T eps, T W) {
  run(CeFwd<T>{x, target, weight, loss, wt, lse, make_shape(outer, C, inner), ignore_index, eps, W},
      outer * C * inner);
}

template <typename T>
void cross_entropy_backward_cpu(const T* x, const int64_t* target, const T* weight, const T* lse,
                                const T* gl, T* dx, int64_t outer, int64_t C, int64_t inner,
                                int64_t ignore_index, T eps, T W) {
  run(CeBwd<T>{x, target, weight, lse, gl, dx, make_shape(outer, C, inner), ignore_index, eps, W},
      outer * C * inner);
}

#define GM_SMX_INSTANTIATE(T)                                                                    \
  template void softmax_forward_cpu<T>(const T*, T*, int64_t, int64_t, int64_t, bool);           \
  template void softmax_backward_cpu<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool); \
  template void cross_entropy_forward_cpu<T>(const T*, const int64_t*, const T*, T*, T*, T*,     \
                                             int64_t, int64_t, int64_t, int64_t, T, T);          \
  template void cross_entropy_backward_cpu<T>(const T*, const int64_t*, const T*, const T*,      \
                                              const T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                              T, T);
GM_SMX_INSTANTIATE(float)
GM_SMX_INSTANTIATE(double)

}  // namespace gmcore
