// Normalisation on the CPU: OpenMP over rows (layer/group norm) or channels (batch norm), the
// math from norm.h.
//
// Memory passes.  Forward: one read for the statistics, one read + one write to normalise; the
// second read of a row / channel hits the cache (a layer-norm row is a few KB, a group-norm
// group or a batch-norm channel at model sizes tens of KB).  Backward: one read of x and dy for
// the two sums (and the weight/bias partials), one pass for dx, again from the cache.
//
// Sums run in double with eight independent accumulators, which GCC vectorises (it does not
// reorder a single FP accumulator) and which hide the add latency.  dweight/dbias of the row
// layout are summed per thread and the thread partials added in a fixed order.
//
// The per-row / per-channel work is compiled twice, for the baseline (SSE2: the build sets no
// -march) and for AVX2 + FMA, picked at run time by CPUID (as csrc/coupling_cpu.cpp does); the
// OpenMP loops stay in plain functions and call the chosen variant through a pointer.  Without
// weight the backward reads a vector of ones, so the inner loops have no branches.
//
// fp-contract=off: no fused multiply-adds, so the baseline and AVX2 variants round alike (results
// do not depend on the CPU) and w dy - mean(w dy) cancels exactly where it should (an FMA would
// keep the product's rounding residual, times rstd ~ 1/sqrt(eps) on a one-element row).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "norm.h"

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define GM_NORM_AVX2 1
#define GM_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GM_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define GM_NORM_AVX2 0
#define GM_ALWAYS_INLINE inline
#endif

namespace gmcore {

namespace {

constexpr int64_t kParallelMin = 32768;  // elements below which one thread is faster
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

GM_ALWAYS_INLINE double sum8(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// s1 += sum(x - k), s2 += sum((x - k)^2) over one contiguous span.
template <typename T>
GM_ALWAYS_INLINE void shifted_sums(const T* __restrict x, int64_t n, double k, double& s1,
                                   double& s2) {
  double a = 0, q = 0;
#pragma omp simd reduction(+ : a, q)
  for (int64_t j = 0; j < n; ++j) {
    const double d = static_cast<double>(x[j]) - k;
    a += d;
    q += d * d;
  }
  s1 += a;
  s2 += q;
}

// y = (x - mean) * scale + shift over one span (one channel), in T (norm.h: split mean).
template <typename T>
GM_ALWAYS_INLINE void normalize_span(const T* __restrict x, T* __restrict y, int64_t n,
                                     double mean, double scale, double shift) {
  const norm::SplitMean<T> m = norm::split_mean<T>(mean);
  const T s = static_cast<T>(scale), t = static_cast<T>(shift);
  for (int64_t j = 0; j < n; ++j) y[j] = norm::centered(x[j], m) * s + t;
}

// A layer-norm row: the affine parameters vary per element.
template <typename T, bool HW, bool HB>
GM_ALWAYS_INLINE void normalize_affine_span(const T* __restrict x, const T* __restrict w,
                                            const T* __restrict b, T* __restrict y, int64_t n,
                                            double mean, double rstd) {
  const norm::SplitMean<T> m = norm::split_mean<T>(mean);
  const T rs = static_cast<T>(rstd);
  for (int64_t j = 0; j < n; ++j) {
    const T v = norm::centered(x[j], m) * (HW ? rs * w[j] : rs);
    y[j] = HB ? v + b[j] : v;
  }
}

// sdy += sum(dy), sdyxh += sum(dy * xh) over one span (one channel), xh = (x - mean) * rstd.
template <typename T>
GM_ALWAYS_INLINE void grad_sums(const T* __restrict x, const T* __restrict dy, int64_t n,
                                double mean, double rstd, double& sdy, double& sdyxh) {
  double a = 0, q = 0;
#pragma omp simd reduction(+ : a, q)
  for (int64_t j = 0; j < n; ++j) {
    const double g = static_cast<double>(dy[j]);
    a += g;
    q += g * (static_cast<double>(x[j]) - mean);
  }
  sdy += a;
  sdyxh += q * rstd;
}

// dx = rstd (w dy - (ma + (x - mean) mbr)) over one span: the batch-statistics dx of norm.h
// with ma = mean(w dy), mbr = rstd mean(w dy xh) (both 0 for given statistics).  rstd multiplies
// last, so the error is a few ulp of rstd |w dy - ma| (a constant row, where rstd ~ 1/sqrt(eps),
// cancels exactly instead of leaving rstd * ulp(w dy)).
template <typename T>
GM_ALWAYS_INLINE void dx_span(const T* __restrict x, const T* __restrict dy, T* __restrict dx,
                              int64_t n, double mean, double rstd, double w, double ma,
                              double mbr) {
  const norm::SplitMean<T> m = norm::split_mean<T>(mean);
  const T rs = static_cast<T>(rstd), wt = static_cast<T>(w), mat = static_cast<T>(ma),
          mbt = static_cast<T>(mbr);
  for (int64_t j = 0; j < n; ++j) dx[j] = rs * (wt * dy[j] - (mat + norm::centered(x[j], m) * mbt));
}

// ---- the units of work: one row, one channel --------------------------------------------------

// One row of the row layout.  w, b point at the row's first channel (or are null).
template <typename T>
GM_ALWAYS_INLINE void row_forward_body(const T* __restrict xr, T* __restrict yr,
                                       const T* __restrict w, const T* __restrict b, int64_t K,
                                       int64_t S, double eps, double* mean, double* rstd) {
  const int64_t M = K * S;
  const double k0 = static_cast<double>(xr[0]);
  double s1 = 0, s2 = 0;
  shifted_sums(xr, M, k0, s1, s2);
  const norm::Moments mo = norm::finish_moments(k0, s1, s2, M);
  const double rs = norm::rstd_of(mo.var, eps);
  *mean = mo.mean;
  *rstd = rs;
  if (S == 1) {
    if (w && b) normalize_affine_span<T, true, true>(xr, w, b, yr, K, mo.mean, rs);
    else if (w) normalize_affine_span<T, true, false>(xr, w, b, yr, K, mo.mean, rs);
    else if (b) normalize_affine_span<T, false, true>(xr, w, b, yr, K, mo.mean, rs);
    else normalize_span(xr, yr, K, mo.mean, rs, 0.0);
    return;
  }
  for (int64_t k = 0; k < K; ++k) {
    const double scale = w ? rs * static_cast<double>(w[k]) : rs;
    const double shift = b ? static_cast<double>(b[k]) : 0.0;
    normalize_span(xr + k * S, yr + k * S, S, mo.mean, scale, shift);
  }
}

// One row's backward: dx, and dy xh / dy added into the channel partials pw / pb.  w (never
// null: ones without weight), pw and pb point at the row's first channel.
template <typename T>
GM_ALWAYS_INLINE void row_backward_body(const T* __restrict xr, const T* __restrict gr,
                                        T* __restrict dr, const T* __restrict w, int64_t K,
                                        int64_t S, double mu, double rs, double* __restrict pw,
                                        double* __restrict pb) {
  const int64_t M = K * S;
  double A = 0, B = 0;  // sum(w dy), sum(w dy xh)
  if (S == 1) {
    // omp simd: GCC vectorises this reduction (with the partial updates) only when told it may
    // reorder the sums; 8 scalar accumulators stayed scalar here (4x slower)
#pragma omp simd reduction(+ : A, B)
    for (int64_t j = 0; j < K; ++j) {
      const double g = static_cast<double>(gr[j]);
      const double t = g * ((static_cast<double>(xr[j]) - mu) * rs);
      const double wk = static_cast<double>(w[j]);
      pw[j] += t;
      pb[j] += g;
      A += wk * g;
      B += wk * t;
    }
    const norm::SplitMean<T> m = norm::split_mean<T>(mu);
    const T rst = static_cast<T>(rs), mat = static_cast<T>(A / M),
            mbt = static_cast<T>(rs * B / M);
    for (int64_t k = 0; k < K; ++k)
      dr[k] = rst * (w[k] * gr[k] - (mat + norm::centered(xr[k], m) * mbt));
    return;
  }
  for (int64_t k = 0; k < K; ++k) {
    double sdy = 0, sdyxh = 0;
    grad_sums(xr + k * S, gr + k * S, S, mu, rs, sdy, sdyxh);
    const double wk = static_cast<double>(w[k]);
    A += wk * sdy;
    B += wk * sdyxh;
    pw[k] += sdyxh;
    pb[k] += sdy;
  }
  for (int64_t k = 0; k < K; ++k)
    dx_span(xr + k * S, gr + k * S, dr + k * S, S, mu, rs, static_cast<double>(w[k]), A / M,
            rs * B / M);
}

// One channel of the (N, C, S) layout, S > 1.
template <typename T>
GM_ALWAYS_INLINE void chan_forward_body(const T* __restrict x, T* __restrict y, int64_t c,
                                        int64_t N, int64_t C, int64_t S, const T* w, const T* b,
                                        double eps, bool train, double* mean, double* var,
                                        double* rstd) {
  if (train) {
    const double k0 = static_cast<double>(x[c * S]);
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < N; ++n) shifted_sums(x + (n * C + c) * S, S, k0, s1, s2);
    const norm::Moments mo = norm::finish_moments(k0, s1, s2, N * S);
    mean[c] = mo.mean;
    var[c] = mo.var;
    rstd[c] = norm::rstd_of(mo.var, eps);
  }
  const double scale = w ? rstd[c] * static_cast<double>(w[c]) : rstd[c];
  const double shift = b ? static_cast<double>(b[c]) : 0.0;
  for (int64_t n = 0; n < N; ++n)
    normalize_span(x + (n * C + c) * S, y + (n * C + c) * S, S, mean[c], scale, shift);
}

template <typename T>
GM_ALWAYS_INLINE void chan_backward_body(const T* __restrict x, const T* __restrict dy,
                                         T* __restrict dx, int64_t c, int64_t N, int64_t C,
                                         int64_t S, const T* w, const double* mean,
                                         const double* rstd, T* dw, T* db, bool train) {
  const int64_t M = N * S;
  const double mu = mean[c], rs = rstd[c], wk = w ? static_cast<double>(w[c]) : 1.0;
  double sdy = 0, sdyxh = 0;
  if (train || dw || db) {
    for (int64_t n = 0; n < N; ++n)
      grad_sums(x + (n * C + c) * S, dy + (n * C + c) * S, S, mu, rs, sdy, sdyxh);
    if (dw) dw[c] = static_cast<T>(sdyxh);
    if (db) db[c] = static_cast<T>(sdy);
  }
  if (!dx) return;
  const double ma = train ? wk * sdy / M : 0.0, mbr = train ? rs * wk * sdyxh / M : 0.0;
  for (int64_t n = 0; n < N; ++n)
    dx_span(x + (n * C + c) * S, dy + (n * C + c) * S, dx + (n * C + c) * S, S, mu, rs, wk, ma,
            mbr);
}

// The baseline and AVX2 variants of each unit, and the run-time choice.
#define GM_NORM_VARIANTS(NAME, PARAMS, ARGS)                     \
  template <typename T>                                          \
  void NAME##_base PARAMS {                                      \
    NAME##_body<T> ARGS;                                         \
  }                                                              \
  GM_NORM_AVX2_VARIANT(NAME, PARAMS, ARGS)                       \
  template <typename T>                                          \
  auto NAME##_pick() -> decltype(&NAME##_base<T>) {              \
    GM_NORM_AVX2_PICK(NAME)                                      \
    return &NAME##_base<T>;                                      \
  }

#if GM_NORM_AVX2
#define GM_NORM_AVX2_VARIANT(NAME, PARAMS, ARGS) \
  template <typename T>                          \
  GM_TARGET_AVX2 void NAME##_avx2 PARAMS {       \
    NAME##_body<T> ARGS;                         \
  }
#define GM_NORM_AVX2_PICK(NAME) \
  if (cpu_has_avx2()) return &NAME##_avx2<T>;
bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define GM_NORM_AVX2_VARIANT(NAME, PARAMS, ARGS)
#define GM_NORM_AVX2_PICK(NAME)
#endif

GM_NORM_VARIANTS(row_forward,
                 (const T* xr, T* yr, const T* w, const T* b, int64_t K, int64_t S, double eps,
                  double* mean, double* rstd),
                 (xr, yr, w, b, K, S, eps, mean, rstd))
GM_NORM_VARIANTS(row_backward,
                 (const T* xr, const T* gr, T* dr, const T* w, int64_t K, int64_t S, double mu,
                  double rs, double* pw, double* pb),
                 (xr, gr, dr, w, K, S, mu, rs, pw, pb))
GM_NORM_VARIANTS(chan_forward,
                 (const T* x, T* y, int64_t c, int64_t N, int64_t C, int64_t S, const T* w,
                  const T* b, double eps, bool train, double* mean, double* var, double* rstd),
                 (x, y, c, N, C, S, w, b, eps, train, mean, var, rstd))
GM_NORM_VARIANTS(chan_backward,
                 (const T* x, const T* dy, T* dx, int64_t c, int64_t N, int64_t C, int64_t S,
                  const T* w, const double* mean, const double* rstd, T* dw, T* db, bool train),
                 (x, dy, dx, c, N, C, S, w, mean, rstd, dw, db, train))

// [begin, end) of this thread's share of n items.
inline void thread_range(int64_t n, int64_t& begin, int64_t& end) {
  const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
  begin = n * t / nt;
  end = n * (t + 1) / nt;
}

}  // namespace

// ---- rows: layer_norm, group_norm --------------------------------------------------------------

template <typename T>
void norm_row_forward_cpu(const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                          int64_t R, int64_t G, int64_t K, int64_t S, double eps) {
  const int64_t M = K * S;
  if (M == 0) {  // as torch: the statistics of an empty set
    for (int64_t r = 0; r < R; ++r) mean[r] = rstd[r] = kNaN;
    return;
  }
  const auto unit = row_forward_pick<T>();
#pragma omp parallel for schedule(static) if (R * M > kParallelMin)
  for (int64_t r = 0; r < R; ++r) {
    const int64_t c0 = (r % G) * K;
    unit(x + r * M, y + r * M, w ? w + c0 : nullptr, b ? b + c0 : nullptr, K, S, eps, mean + r,
         rstd + r);
  }
}

template <typename T>
void norm_row_backward_cpu(const T* x, const T* dy, const T* w, const double* mean,
                           const double* rstd, T* dx, T* dw, T* db, int64_t R, int64_t G,
                           int64_t K, int64_t S) {
  const int64_t M = K * S, C = G * K;
  if (M == 0 || R == 0) {
    for (int64_t c = 0; c < C; ++c) {
      if (dw) dw[c] = T(0);
      if (db) db[c] = T(0);
    }
    return;
  }
  const bool parallel = R * M > kParallelMin;
  const int nt = parallel ? omp_get_max_threads() : 1;
  std::vector<T> ones(w ? 0 : C, T(1));
  const T* wv = w ? w : ones.data();
  // per-thread partials of dweight (first C) and dbias (next C)
  std::vector<double> part(static_cast<size_t>(nt) * 2 * C, 0.0);
  const auto unit = row_backward_pick<T>();
#pragma omp parallel num_threads(nt) if (parallel)
  {
    double* pw = part.data() + omp_get_thread_num() * 2 * C;
    double* pb = pw + C;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t c0 = (r % G) * K;
      unit(x + r * M, dy + r * M, dx + r * M, wv + c0, K, S, mean[r], rstd[r], pw + c0, pb + c0);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int t = 0; t < nt; ++t) {
      sw += part[t * 2 * C + c];
      sb += part[t * 2 * C + C + c];
    }
    if (dw) dw[c] = static_cast<T>(sw);
    if (db) db[c] = static_cast<T>(sb);
  }
}

// ---- channels: batch_norm -----------------------------------------------------------------------

namespace {

// (N, C) input (S == 1): the channels are columns.  Each thread owns a block of columns and walks
// every row, so reads stay contiguous and no partials cross threads.
template <typename T>
void chan_forward_columns(const T* x, const T* w, const T* b, T* y, double* mean, double* var,
                          double* rstd, int64_t N, int64_t C, double eps, bool train) {
#pragma omp parallel if (N * C > kParallelMin)
  {
    int64_t c0, c1;
    thread_range(C, c0, c1);
    const int64_t nc = c1 - c0;
    std::vector<double> scale(nc), shift(nc);
    if (train && nc > 0) {
      std::vector<double> k(nc), s1(nc, 0.0), s2(nc, 0.0);
      for (int64_t c = 0; c < nc; ++c) k[c] = static_cast<double>(x[c0 + c]);
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + n * C + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const double d = static_cast<double>(xr[c]) - k[c];
          s1[c] += d;
          s2[c] += d * d;
        }
      }
      for (int64_t c = 0; c < nc; ++c) {
        const norm::Moments mo = norm::finish_moments(k[c], s1[c], s2[c], N);
        mean[c0 + c] = mo.mean;
        var[c0 + c] = mo.var;
        rstd[c0 + c] = norm::rstd_of(mo.var, eps);
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      scale[c] = w ? rstd[c0 + c] * static_cast<double>(w[c0 + c]) : rstd[c0 + c];
      shift[c] = b ? static_cast<double>(b[c0 + c]) : 0.0;
    }
    const double* mu = mean + c0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * C + c0;
      T* yr = y + n * C + c0;
      for (int64_t c = 0; c < nc; ++c)
        yr[c] = static_cast<T>(norm::normalize(static_cast<double>(xr[c]), mu[c], scale[c],
                                               shift[c]));
    }
  }
}

template <typename T>
void chan_backward_columns(const T* x, const T* dy, const T* w, const double* mean,
                           const double* rstd, T* dx, T* dw, T* db, int64_t N, int64_t C,
                           bool train) {
#pragma omp parallel if (N * C > kParallelMin)
  {
    int64_t c0, c1;
    thread_range(C, c0, c1);
    const int64_t nc = c1 - c0;
    std::vector<double> sdy(nc, 0.0), sdyxc(nc, 0.0), a(nc), q(nc), p(nc);
    const double* mu = mean + c0;
    if (train || dw || db) {
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + n * C + c0;
        const T* gr = dy + n * C + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const double g = static_cast<double>(gr[c]);
          sdy[c] += g;
          sdyxc[c] += g * (static_cast<double>(xr[c]) - mu[c]);
        }
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      const double rs = rstd[c0 + c], wk = w ? static_cast<double>(w[c0 + c]) : 1.0;
      const double sdyxh = sdyxc[c] * rs;
      if (dw) dw[c0 + c] = static_cast<T>(sdyxh);
      if (db) db[c0 + c] = static_cast<T>(sdy[c]);
      a[c] = rs * wk;
      q[c] = train ? -rs * rs * wk * sdyxh / N : 0.0;
      p[c] = train ? -rs * wk * sdy[c] / N : 0.0;
    }
    if (dx) {
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + n * C + c0;
        const T* gr = dy + n * C + c0;
        T* dr = dx + n * C + c0;
        for (int64_t c = 0; c < nc; ++c)
          dr[c] = static_cast<T>(a[c] * static_cast<double>(gr[c]) +
                                 (static_cast<double>(xr[c]) - mu[c]) * q[c] + p[c]);
      }
    }
  }
}

}  // namespace

template <typename T>
void norm_chan_forward_cpu(const T* x, const T* w, const T* b, T* y, double* mean, double* var,
                           double* rstd, int64_t N, int64_t C, int64_t S, double eps, bool train) {
  if (N * S == 0) {  // empty batch: nothing to normalise, statistics undefined
    if (train)
      for (int64_t c = 0; c < C; ++c) mean[c] = var[c] = rstd[c] = kNaN;
    return;
  }
  if (S == 1) return chan_forward_columns(x, w, b, y, mean, var, rstd, N, C, eps, train);
  const auto unit = chan_forward_pick<T>();
#pragma omp parallel for schedule(static) if (C * N * S > kParallelMin)
  for (int64_t c = 0; c < C; ++c) unit(x, y, c, N, C, S, w, b, eps, train, mean, var, rstd);
}

template <typename T>
void norm_chan_backward_cpu(const T* x, const T* dy, const T* w, const double* mean,
                            const double* rstd, T* dx, T* dw, T* db, int64_t N, int64_t C,
                            int64_t S, bool train) {
  if (N * S == 0) {
    for (int64_t c = 0; c < C; ++c) {
      if (dw) dw[c] = T(0);
      if (db) db[c] = T(0);
    }
    return;
  }
  if (S == 1) return chan_backward_columns(x, dy, w, mean, rstd, dx, dw, db, N, C, train);
  const auto unit = chan_backward_pick<T>();
#pragma omp parallel for schedule(static) if (C * N * S > kParallelMin)
  for (int64_t c = 0; c < C; ++c) unit(x, dy, dx, c, N, C, S, w, mean, rstd, dw, db, train);
}

#define GM_NORM_INSTANTIATE(T)                                                                   \
  template void norm_row_forward_cpu<T>(const T*, const T*, const T*, T*, double*, double*,    \
                                        int64_t, int64_t, int64_t, int64_t, double);            \
  template void norm_row_backward_cpu<T>(const T*, const T*, const T*, const double*,          \
                                         const double*, T*, T*, T*, int64_t, int64_t, int64_t, \
                                         int64_t);                                              \
  template void norm_chan_forward_cpu<T>(const T*, const T*, const T*, T*, double*, double*,   \
                                         double*, int64_t, int64_t, int64_t, double, bool);     \
  template void norm_chan_backward_cpu<T>(const T*, const T*, const T*, const double*,         \
                                          const double*, T*, T*, T*, int64_t, int64_t,         \
                                          int64_t, bool);
GM_NORM_INSTANTIATE(float)
GM_NORM_INSTANTIATE(double)
#undef GM_NORM_INSTANTIATE

}  // namespace gmcore
