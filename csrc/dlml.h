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
//              d/dmu = inv (sigmoid(a) + sigmoid(b) - 1),
//              d/ds  = -a sigmoid(-a) + b sigmoid(b) - d/expm1(d)     (da/ds = -a, dd/ds = -d)
//   tail (interior with P <= thr): log pdf(x) + log(2h) = u - s - 2 softplus(u) - log((nb-1)/2),
//              u = inv*(x-mu);  d/du = 1 - 2 sigmoid(u),  d/dmu = -inv d/du,  d/ds = -u d/du - 1.
// P <= d/4 (the density is at most 1/4 in units of a), so d <= 4 thr is a tail bin without
// evaluating the log (which would be log(0) when inv underflows).
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace dlml {

// float overloads picked explicitly so host and device round alike (see logsumexp.h).
GM_HOST_DEVICE inline float f_exp(float x) { return expf(x); }
GM_HOST_DEVICE inline double f_exp(double x) { return exp(x); }
GM_HOST_DEVICE inline float f_log(float x) { return logf(x); }
GM_HOST_DEVICE inline double f_log(double x) { return log(x); }
GM_HOST_DEVICE inline float f_log1p(float x) { return log1pf(x); }
GM_HOST_DEVICE inline double f_log1p(double x) { return log1p(x); }
GM_HOST_DEVICE inline float f_abs(float x) { return fabsf(x); }
GM_HOST_DEVICE inline double f_abs(double x) { return fabs(x); }
// glibc's expm1f and tanhf are several times slower than expf (they dominated a profile of
// the CPU kernel). float: exp(x) - 1 where that is accurate (|x| >= 0.5: relative error
// <= 2.6 ulp), else Taylor to x^9 (truncation < 1.1e-8 relative, below float's 6e-8).
GM_HOST_DEVICE inline float f_expm1(float x) {
  if (!(fabsf(x) < 0.5f)) return expf(x) - 1.0f;  // NaN goes this way too
  return x * (1.0f + x * (0.5f + x * (1.0f / 6 + x * (1.0f / 24 + x * (1.0f / 120 + x * (1.0f / 720 +
         x * (1.0f / 5040 + x * (1.0f / 40320 + x * (1.0f / 362880)))))))));
}
GM_HOST_DEVICE inline double f_expm1(double x) { return expm1(x); }
// tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): no overflow, accurate near 0.
GM_HOST_DEVICE inline float f_tanh(float x) {
  const float t = f_expm1(-2.0f * fabsf(x));
  const float r = -t / (2.0f + t);
  return x < 0.0f ? -r : r;
}
GM_HOST_DEVICE inline double f_tanh(double x) { return tanh(x); }

constexpr double kLogScaleMin = -7.0;

// Constants of one call, computed in double on the host (as the reference does) and rounded
// to T once, so every implementation compares against the same numbers.
template <typename T>
struct Consts {
  T h, two_h, lo_edge, hi_edge, d_min, log_thr, log_half_bins;
};

inline double tail_threshold(int64_t num_bins) { return 1e-5 * 255.0 / double(num_bins - 1); }

template <typename T>
inline Consts<T> make_consts(int64_t num_bins) {
  const double h = 1.0 / double(num_bins - 1), thr = tail_threshold(num_bins);
  return Consts<T>{T(h),         T(2.0 * h),        T(-1.0 + h), T(1.0 - h),
                   T(4.0 * thr), T(std::log(thr)), T(std::log(double(num_bins - 1) / 2.0))};
}

// Parameter channel offsets (gmcore/functional/_dlml_reference.py, "layout").
GM_HOST_DEVICE inline int64_t block_stride(int C, int K) { return C == 3 ? 3 * K : 2 * K; }
GM_HOST_DEVICE inline int64_t mean_ch(int c, int C, int K) { return K + c * block_stride(C, K); }
GM_HOST_DEVICE inline int64_t lscale_ch(int c, int C, int K) { return K + c * block_stride(C, K) + K; }
GM_HOST_DEVICE inline int64_t coeff_ch(int q, int C, int K) { return K + q * block_stride(C, K) + 2 * K; }
GM_HOST_DEVICE inline int params_per_component(int C) { return 1 + 2 * C + C * (C - 1) / 2; }

// exp(-|z|), shared by softplus and sigmoid of z.
template <typename T>
struct Sig {
  T e;   // exp(-|z|)
  T lse; // log1p(e)
};

template <typename T>
GM_HOST_DEVICE inline Sig<T> sig_parts(T z) {
  const T e = f_exp(-f_abs(z));
  return Sig<T>{e, f_log1p(e)};
}
// log sigmoid(z) = min(z, 0) - log1p(exp(-|z|))
template <typename T>
GM_HOST_DEVICE inline T logsig(T z, Sig<T> p) { return (z < T(0) ? z : T(0)) - p.lse; }
// sigmoid(z) = 1/(1+e) for z >= 0, e/(1+e) otherwise
template <typename T>
GM_HOST_DEVICE inline T sigm(T z, Sig<T> p) { return (z >= T(0) ? T(1) : p.e) / (T(1) + p.e); }

template <typename T>
struct Term {
  T logp;  // log P(bin of x)
  T dmu;   // d logp / d mu
  T ds;    // d logp / d s (the clamped log-scale)
};

template <typename T, bool kGrad>
GM_HOST_DEVICE inline Term<T> bin_term(T x, T mu, T s, const Consts<T>& k) {
  const T inv = f_exp(-s);
  const T cen = x - mu;
  Term<T> t{T(0), T(0), T(0)};
  if (x < k.lo_edge) {  // first bin: (-inf, x+h]
    const T a = inv * (cen + k.h);
    const Sig<T> pa = sig_parts(a);
    t.logp = logsig(a, pa);
    if (kGrad) {
      const T sna = sigm(-a, pa);  // sigmoid(-a): same exp(-|a|)
      t.dmu = -inv * sna;
      t.ds = -a * sna;
    }
    return t;
  }
  if (x > k.hi_edge) {  // last bin: [x-h, inf)
    const T b = inv * (cen - k.h);
    const Sig<T> pb = sig_parts(b);
    t.logp = logsig(-b, pb);
    if (kGrad) {
      const T sb = sigm(b, pb);
      t.dmu = inv * sb;
      t.ds = b * sb;
    }
    return t;
  }
  const T d = inv * k.two_h;
  if (d > k.d_min) {
    const T a = inv * (cen + k.h);
    const T b = inv * (cen - k.h);
    const T em = f_expm1(-d);  // exp(-d) - 1, in (-1, 0)
    // exp(-|a|), exp(-|b|) with one exp when a and b (= a - d) have the same sign
    T ea, eb;
    if (b >= T(0)) {
      eb = f_exp(-b);
      ea = eb * (T(1) + em);
    } else if (a <= T(0)) {
      ea = f_exp(a);
      eb = ea * (T(1) + em);
    } else {
      ea = f_exp(-a);
      eb = f_exp(b);
    }
    // logsig(a) + logsig(-b) + log(-em) with one log: the log1p terms become a product
    const T logp = (a < T(0) ? a : T(0)) + (b > T(0) ? -b : T(0)) +
                   f_log(-em / ((T(1) + ea) * (T(1) + eb)));
    if (logp > k.log_thr) {
      t.logp = logp;
      if (kGrad) {
        const T sa = sigm(a, Sig<T>{ea, T(0)}), sb = sigm(b, Sig<T>{eb, T(0)});
        const T sna = sigm(-a, Sig<T>{ea, T(0)});  // 1 - sa without cancellation
        t.dmu = inv * (sb - sna);
        // d/expm1(d) = d * exp(-d) / (1 - exp(-d)) = d * (1 + em) / (-em)
        t.ds = -a * sna + b * sb - d * (T(1) + em) / (-em);
      }
      return t;
    }
  }
  const T u = inv * cen;  // tail: midpoint density times the bin width
  const Sig<T> pu = sig_parts(u);
  t.logp = u - s + T(2) * logsig(-u, pu) - k.log_half_bins;
  if (kGrad) {
    const T du = T(1) - T(2) * sigm(u, pu);
    t.dmu = -inv * du;
    t.ds = -u * du - T(1);
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
