// Discretized logistic mixture likelihood: the per-element math, written once.
//
// Included by csrc/dlml_cpu.cpp (host build: GM_HOST_DEVICE is empty) and csrc/dlml.cu (nvcc),
// so the CPU tests exercise the arithmetic the GPU runs.  The specification is
// gmcore/functional/_dlml_reference.py (layout, bin rules, tail threshold).
//
// One term: the log-probability of x's bin under Logistic(mu, exp(s)), s the clamped
// log-scale, inv = exp(-s), h = 1/(num_bins-1), a = inv*(x-mu+h), b = inv*(x-mu-h):
//   first bin (x < -1+h):  log sigmoid(a)                      d/da = sigmoid(-a)
//   last bin  (x > 1-h):   log(1 - sigmoid(b)) = -softplus(b)  d/db = -sigmoid(b)
//   interior:  sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-d)),  d = a-b = 2h*inv,
//              so log P = logsig(a) + logsig(-b) + log(-expm1(-d))  (no cancellation), with
//              d/dmu = inv (sigmoid(b) - sigmoid(-a)),
//              d/ds  = -a sigmoid(-a) + b sigmoid(b) - d/expm1(d)     (da/ds = -a, dd/ds = -d)
//   tail (interior with P <= thr): log pdf(x) + log(2h) = u - s - 2 softplus(u) - log((nb-1)/2),
//              u = inv*(x-mu);  d/du = 1 - 2 sigmoid(u),  d/dmu = -inv d/du,  d/ds = -u d/du - 1.
// P <= d/4 (the density is at most 1/4 in units of a), so d <= 4 thr is always a tail bin
// (the reference tests it first to keep its autodiff finite; true selects need no test).
//
// The term is branch-free (every case computed, then true selects with ?:), so the CPU loop
// over positions vectorises; the transcendental functions come from a policy: Libm (CUDA,
// and the float64 CPU path) or VecF (float32 CPU path: polynomial exp/log that the compiler
// can vectorise, since libm calls stop vectorisation).
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

// Forced inlining: the CPU loops vectorise only when the whole term is inlined into them.
#if defined(__CUDACC__)
#define GM_DLML_INLINE __forceinline__
#elif defined(__GNUC__)
#define GM_DLML_INLINE __attribute__((always_inline)) inline
#else
#define GM_DLML_INLINE inline
#endif

namespace gmcore {
namespace dlml {

// The C library, float overloads picked explicitly so host and device round alike.
struct Libm {
  GM_HOST_DEVICE static float exp(float x) { return expf(x); }
  GM_HOST_DEVICE static double exp(double x) { return ::exp(x); }
  GM_HOST_DEVICE static float log(float x) { return logf(x); }
  GM_HOST_DEVICE static double log(double x) { return ::log(x); }
  GM_HOST_DEVICE static float log1p(float x) { return log1pf(x); }
  GM_HOST_DEVICE static double log1p(double x) { return ::log1p(x); }
  GM_HOST_DEVICE static float expm1(float x) { return expm1f(x); }
  GM_HOST_DEVICE static double expm1(double x) { return ::expm1(x); }
  GM_HOST_DEVICE static float tanh(float x) { return tanhf(x); }
  GM_HOST_DEVICE static double tanh(double x) { return ::tanh(x); }
};

// Branch-free float32 functions (host only), a few ulp from libm: Cephes-style polynomials on
// a reduced argument, the exponent handled by bit manipulation. Special values by selects:
// exp(NaN) = NaN, exp(x < -87.3) = 0 (no denormals), exp(x > 88.3) = inf; log(0) = -inf,
// log(x < 0 or NaN) = NaN, log(inf) = inf (denormal inputs are not handled: none occur here).
struct VecF {
  static GM_DLML_INLINE float as_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
  }
  static GM_DLML_INLINE int32_t as_int(float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i;
  }
  static GM_DLML_INLINE float exp(float x) {
    const float xc = x < -87.33f ? -87.33f : (x > 88.3f ? 88.3f : x);  // NaN passes through
    const float t = xc * 1.44269504088896341f + 12582912.0f;           // round to nearest
    const float n = t - 12582912.0f;
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float y = p * as_float((int32_t(n) + 127) << 23);
    return x < -87.33f ? 0.0f : (x > 88.3f ? INFINITY : y);
  }
  static GM_DLML_INLINE float log(float x) {
    const int32_t bits = as_int(x);
    float e = float(((bits >> 23) & 0xff) - 126);
    float m = as_float((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
    const bool small = m < 0.707106781186547524f;
    const float e1 = e - 1.0f, m2 = m + m - 1.0f, m1 = m - 1.0f;
    e = small ? e1 : e;
    m = small ? m2 : m1;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z + e * -2.12194440e-4f - 0.5f * z;
    const float res = m + y + e * 0.693359375f;
    return x > 0.0f ? (x == INFINITY ? x : res) : (x == 0.0f ? -INFINITY : NAN);
  }
  // log1p(x) = log(u) * x / (u - 1), u = 1 + x (Kahan): exact where u rounds to 1.
  static GM_DLML_INLINE float log1p(float x) {
    const float u = 1.0f + x;
    const float d = u - 1.0f;
    const float ds = d == 0.0f ? 1.0f : d;  // selects between computed values only: the
    const float r = log(u) * (x / ds);      // compiler may not speculate FP ops (trapping math)
    return d == 0.0f ? x : r;
  }
  // exp(x) - 1 where that is accurate (|x| >= 0.5: <= 3 ulp), else Taylor to x^9
  // (truncation < 1.1e-8 relative, below float's 6e-8).
  static GM_DLML_INLINE float expm1(float x) {
    float p = 1.0f / 362880;
    p = p * x + 1.0f / 40320;
    p = p * x + 1.0f / 5040;
    p = p * x + 1.0f / 720;
    p = p * x + 1.0f / 120;
    p = p * x + 1.0f / 24;
    p = p * x + 1.0f / 6;
    p = p * x + 0.5f;
    p = p * x + 1.0f;
    const float small = x * p;
    const float big = exp(x) - 1.0f;
    return x > -0.5f ? (x < 0.5f ? small : big) : big;
  }
  // tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): no overflow, accurate near 0.
  static GM_DLML_INLINE float tanh(float x) {
    const float nx = -x;
    const float ax = x < 0.0f ? nx : x;
    const float t = expm1(-2.0f * ax);
    const float r = -t / (2.0f + t);
    const float nr = -r;
    return x < 0.0f ? nr : (x == x ? r : x);
  }
};

constexpr double kLogScaleMin = -7.0;

// Constants of one call, computed in double on the host (as the reference does) and rounded
// to T once, so every implementation compares against the same numbers.
template <typename T>
struct Consts {
  T h, two_h, lo_edge, hi_edge, log_thr, log_half_bins;
};

inline double tail_threshold(int64_t num_bins) { return 1e-5 * 255.0 / double(num_bins - 1); }

template <typename T>
inline Consts<T> make_consts(int64_t num_bins) {
  const double h = 1.0 / double(num_bins - 1), thr = tail_threshold(num_bins);
  return Consts<T>{T(h),          T(2.0 * h),      T(-1.0 + h),
                   T(1.0 - h),    T(std::log(thr)), T(std::log(double(num_bins - 1) / 2.0))};
}

// Parameter channel offsets (gmcore/functional/_dlml_reference.py, "layout").
GM_HOST_DEVICE inline int64_t block_stride(int C, int K) { return C == 3 ? 3 * K : 2 * K; }
GM_HOST_DEVICE inline int64_t mean_ch(int c, int C, int K) { return K + c * block_stride(C, K); }
GM_HOST_DEVICE inline int64_t lscale_ch(int c, int C, int K) { return K + c * block_stride(C, K) + K; }
GM_HOST_DEVICE inline int64_t coeff_ch(int q, int C, int K) { return K + q * block_stride(C, K) + 2 * K; }
GM_HOST_DEVICE inline int params_per_component(int C) { return 1 + 2 * C + C * (C - 1) / 2; }

template <typename T>
GM_HOST_DEVICE GM_DLML_INLINE T clamp_log_scale(T raw) {
  return raw < T(kLogScaleMin) ? T(kLogScaleMin) : raw;  // NaN stays NaN
}

template <typename T>
struct Term {
  T logp;  // log P(bin of x)
  T dmu;   // d logp / d mu
  T ds;    // d logp / d raw log-scale (0 below the clamp; the clamp passes it at -7)
};

template <typename T, bool kGrad, class M>
GM_HOST_DEVICE GM_DLML_INLINE Term<T> bin_term(T x, T mu, T raw, const Consts<T>& k) {
  // Every candidate is computed unconditionally and ?: only picks among computed values:
  // that is what lets the compiler turn the loop into SIMD selects.
  const T zero = T(0), one = T(1);
  const T s = clamp_log_scale(raw);
  const T inv = M::exp(-s);
  const T cen = x - mu;
  const T a = inv * (cen + k.h);
  const T b = inv * (cen - k.h);
  const T u = inv * cen;
  const T d = inv * k.two_h;
  const T na = -a, nb = -b, nu = -u;
  const T ea = M::exp(a < zero ? a : na);  // exp(-|a|)
  const T eb = M::exp(b < zero ? b : nb);
  const T eu = M::exp(u < zero ? u : nu);
  // d <= 4 thr (the reference's "not wide") needs no test here: then P <= d/4 <= thr, so the
  // interior log below is <= log thr (or -inf when inv underflows to 0) and the tail is taken.
  const T em = M::expm1(-d);                 // exp(-d) - 1 in (-1, 0]
  const T min_a = a < zero ? a : zero;       // min(a, 0)
  const T min_nb = b > zero ? nb : zero;     // min(-b, 0)
  const T min_nu = u > zero ? nu : zero;
  // interior: logsig(a) + logsig(-b) + log(-em), the two log1p terms folded into one log
  const T lp_int = min_a + min_nb + M::log(-em / ((one + ea) * (one + eb)));
  const bool first = x < k.lo_edge, last = x > k.hi_edge;
  // (no bool arithmetic: nested selects on single comparisons vectorise, masks of mixed
  // widths do not; first and last are tested before inner wherever it is used)
  const bool inner = lp_int > k.log_thr;
  // first, last and tail each need one log1p(exp(-|z|)): one call on the selected argument
  const T l1p = M::log1p(first ? ea : (last ? eb : eu));
  const T lp_first = min_a - l1p, lp_last = min_nb - l1p;
  const T lp_tail = u - s + T(2) * (min_nu - l1p) - k.log_half_bins;
  Term<T> t;
  t.logp = first ? lp_first : (last ? lp_last : (inner ? lp_int : lp_tail));
  if (kGrad) {
    const T sna = (a >= zero ? ea : one) / (one + ea);  // sigmoid(-a)
    const T sb = (b >= zero ? one : eb) / (one + eb);   // sigmoid(b)
    const T du = one - T(2) * ((u >= zero ? one : eu) / (one + eu));
    const T dmu_first = -inv * sna, dmu_last = inv * sb, dmu_int = inv * (sb - sna);
    const T dmu_tail = -inv * du;
    t.dmu = first ? dmu_first : (last ? dmu_last : (inner ? dmu_int : dmu_tail));
    // d/expm1(d) = d * exp(-d) / (1 - exp(-d)) = d * (1 + em) / (-em)
    const T ds_first = na * sna, ds_last = b * sb;
    const T ds_int = na * sna + b * sb - d * (one + em) / (-em);
    const T ds_tail = nu * du - one;
    const T ds = first ? ds_first : (last ? ds_last : (inner ? ds_int : ds_tail));
    t.ds = raw >= T(kLogScaleMin) ? ds : zero;
  } else {
    t.dmu = zero;
    t.ds = zero;
  }
  return t;
}

}  // namespace dlml

// Launchers.  x: (B, C, N), params and grad: (B, P, N), nll: (B, N), all C-contiguous, one
// dtype.  grad == nullptr: forward only; else grad = d sum(nll) / d params, same pass.
// CPU: csrc/dlml_cpu.cpp.  CUDA: csrc/dlml.cu.
template <typename T>
void dlml_forward_cpu(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K,
                      int64_t N, int64_t num_bins);

#if defined(GMCORE_WITH_CUDA)
template <typename T>
void dlml_forward_cuda(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K,
                       int64_t N, int64_t num_bins, std::uintptr_t stream);
#endif

}  // namespace gmcore
