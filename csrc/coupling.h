// Affine coupling (NICE / RealNVP / Glow): the per-element math, written once.
//
// Included by csrc/coupling_cpu.cpp (host build: GM_HOST_DEVICE is empty) and csrc/coupling.cu
// (nvcc: __host__ __device__), so the CPU tests exercise the arithmetic the GPU runs.
//
// Definitions (gmcore/functional/coupling.py has the derivations), r = raw log-scale:
//   fn 0 "exp":     s = exp(r),           log s = r,               dlog s/dr = 1
//   fn 1 "sigmoid": s = sigmoid(r + 2),   log s = logsigmoid(r+2), dlog s/dr = sigmoid(-(r+2))
//   fn 2 "tanh":    s = exp(tanh r),      log s = tanh r,          dlog s/dr = 1 - tanh(r)^2
//                                         (computed as 4v/(1+v)^2, v = exp(-2|r|))
//   forward y = x s + b, logdet = sum log s;  inverse x = (y - b) (1/s), logdet = -sum log s.
//
// The transcendental functions are our own branch-free forms (range reduction + polynomial,
// true selects for inf/NaN) so that GCC vectorises the CPU loops without -ffast-math (libm's
// expf/tanhf calls would keep them scalar); accuracy is a few ulp, checked against float64 in
// tests/kernels/test_coupling.py.
#pragma once

#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace gmcore {
namespace coupling {

enum ScaleFn : int { kExp = 0, kSigmoid = 1, kTanh = 2 };

template <typename T>
struct Scale {
  T s;       // the scale
  T inv_s;   // 1 / s (inf where s underflows)
  T log_s;   // log s
  T dlog_s;  // d log s / d r
};

// ---- bit casts and 2^k ------------------------------------------------------------------------

GM_HOST_DEVICE inline float bits_to_float(int32_t i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}
GM_HOST_DEVICE inline int32_t float_to_bits(float f) {
  int32_t i;
  memcpy(&i, &f, sizeof i);
  return i;
}
GM_HOST_DEVICE inline double bits_to_double(int64_t i) {
  double f;
  memcpy(&f, &i, sizeof f);
  return f;
}
GM_HOST_DEVICE inline int64_t double_to_bits(double f) {
  int64_t i;
  memcpy(&i, &f, sizeof i);
  return i;
}

// ---- exp ----------------------------------------------------------------------------------
// exp(x) = 2^k exp(f), k = round(x / ln2), |f| <= ln2/2.  Rounding by the magic-number trick
// (adding 1.5 * 2^23 leaves k in the low mantissa bits: no float->int conversion needed), and 2^k
// applied as two factors 2^(k/2) 2^(k - k/2) so results near overflow and in the subnormal range
// round correctly.  x is clamped first (exp(89) = inf, exp(-104) = 0 in float32); a NaN passes
// the clamps and propagates.  No NaN select: GCC would not if-convert it (trapping math).

// Cephes expf polynomial: exp(f) - 1 - f = f^2 P(f) on |f| <= ln2/2 (float32).
GM_HOST_DEVICE inline float expm1_reduced(float f) {
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  return p * f * f + f;
}

// Cephes exp Pade form (float64): exp(f) - 1 = 2 f P(f^2) / (Q(f^2) - f P(f^2)).
GM_HOST_DEVICE inline double expm1_reduced(double f) {
  const double z = f * f;
  double p = 1.26177193074810590878e-4;
  p = p * z + 3.02994407707441961300e-2;
  p = p * z + 9.99999999999999999910e-1;
  p *= f;
  double q = 3.00198505138664455042e-6;
  q = q * z + 2.52448340349684104192e-3;
  q = q * z + 2.27265548208155028766e-1;
  q = q * z + 2.00000000000000000009e0;
  return 2.0 * p / (q - p);
}

GM_HOST_DEVICE inline float gm_exp(float x) {
  float c = x > 89.0f ? 89.0f : x;
  c = c < -104.0f ? -104.0f : c;
  const float t = c * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: round to nearest
  const int32_t k = float_to_bits(t) - 0x4B400000;
  const float kf = t - 12582912.0f;
  const float f = (c - kf * 0.693359375f) + kf * 2.12194440e-4f;  // Cody-Waite ln2 = hi - lo
  const float p = 1.0f + expm1_reduced(f);
  const int32_t k1 = k >> 1, k2 = k - k1;
  const float r = p * bits_to_float((k1 + 127) << 23) * bits_to_float((k2 + 127) << 23);
  return r;  // NaN needs no select: the clamps pass it through and it propagates
}

GM_HOST_DEVICE inline double gm_exp(double x) {
  double c = x > 710.0 ? 710.0 : x;
  c = c < -746.0 ? -746.0 : c;
  const double t = c * 1.4426950408889634074 + 6755399441055744.0;  // 1.5 * 2^52
  const int64_t k = static_cast<int64_t>(static_cast<int32_t>(double_to_bits(t)));  // low bits
  const double kf = t - 6755399441055744.0;
  const double f = (c - kf * 6.93145751953125e-1) - kf * 1.42860682030941723212e-6;
  const double p = 1.0 + expm1_reduced(f);
  const int64_t k1 = k >> 1, k2 = k - k1;
  const double r = p * bits_to_double((k1 + 1023) << 52) * bits_to_double((k2 + 1023) << 52);
  return r;  // NaN needs no select: the clamps pass it through and it propagates
}

// ---- log1p on [0, 1] ------------------------------------------------------------------------
// log1p(e) = 2 atanh(u), u = e / (2 + e) in [0, 1/3]:  2 (u + u^3/3 + u^5/5 + ...), the series
// truncated where (1/3)^n / n drops below the precision (float: u^15, double: u^35).  Only
// called with e = exp(-|z|) in (0, 1] (log-sigmoid), where it is accurate to ~1 ulp.
GM_HOST_DEVICE inline float log1p01(float e) {
  const float u = e / (2.0f + e), w = u * u;
  float p = 1.0f / 15;
  p = p * w + 1.0f / 13;
  p = p * w + 1.0f / 11;
  p = p * w + 1.0f / 9;
  p = p * w + 1.0f / 7;
  p = p * w + 1.0f / 5;
  p = p * w + 1.0f / 3;
  return 2.0f * (u + u * w * p);
}

GM_HOST_DEVICE inline double log1p01(double e) {
  const double u = e / (2.0 + e), w = u * u;
  double p = 1.0 / 35;
  for (int n = 33; n >= 3; n -= 2) p = p * w + 1.0 / n;  // constant trip count: unrolled
  return 2.0 * (u + u * w * p);
}

// ---- tanh and its derivative ----------------------------------------------------------------
// tanh|r| = -m / (2 + m), m = expm1(-2|r|): for 2|r| < 0.34 (< ln2/2) m is the reduced
// polynomial itself (no cancellation near 0); beyond, m = exp(-2|r|) - 1 loses nothing
// (|m| > 0.28).  1 - tanh^2 = 4v / (1 + v)^2 with v = exp(-2|r|) = 1 + m: no cancellation as
// |r| grows (1 - t*t would lose every digit once t rounds near 1).  NaN propagates.
template <typename T>
GM_HOST_DEVICE inline void tanh_sech2(T r, T* t_out, T* sech2_out) {
  const T a = r < T(0) ? -r : r;
  const T small = expm1_reduced(-T(2) * (a < T(0.17) ? a : T(0)));
  const T e2 = gm_exp(-T(2) * a);
  const bool near0 = a < T(0.17);
  const T m = near0 ? small : e2 - T(1);
  const T t = -m / (T(2) + m);
  const T v = near0 ? T(1) + small : e2;  // not 1 + m: that rounds a tiny e2 to 0
  *t_out = r < T(0) ? -t : t;
  *sech2_out = T(4) * v / ((T(1) + v) * (T(1) + v));
}

// ---- the scale ------------------------------------------------------------------------------

template <typename T, int FN>
GM_HOST_DEVICE inline Scale<T> scale_parts(T r) {
  if (FN == kExp) {
    return Scale<T>{gm_exp(r), gm_exp(-r), r, T(1)};
  } else if (FN == kSigmoid) {
    const T z = r + T(2);
    const T az = z < T(0) ? -z : z;
    const T e = gm_exp(-az);  // in (0, 1]: neither side overflows
    const T d = T(1) / (T(1) + e);
    const T l = log1p01(e);
    const bool pos = z >= T(0);
    // z < 0: 1/s = (1 + e)/e, inf once e underflows; sigmoid(-z) = 1 - s computed exactly
    return Scale<T>{pos ? d : e * d, pos ? T(1) + e : (T(1) + e) / e, pos ? -l : z - l,
                    pos ? e * d : d};
  } else {
    T t, sech2;
    tanh_sech2(r, &t, &sech2);
    return Scale<T>{gm_exp(t), gm_exp(-t), t, sech2};
  }
}

// forward element: y = x s + b, or the inverse x = (y - b) / s
template <typename T, bool INV>
GM_HOST_DEVICE inline T forward_elem(T x, T b, const Scale<T>& sc) {
  return INV ? (x - b) * sc.inv_s : x * sc.s + b;
}

// backward element; a = the op's input x (forward) or its output x (inverse), gl = g_logdet[row].
// d_b (d_shift) is written for the inverse only: forward, d_shift = g and no copy is made.
template <typename T, bool INV>
GM_HOST_DEVICE inline void backward_elem(T a, T g, T gl, const Scale<T>& sc, T* d_in, T* d_r,
                                         T* d_b) {
  if (INV) {
    const T dx = g * sc.inv_s;
    *d_in = dx;
    *d_b = -dx;
    *d_r = -(g * a + gl) * sc.dlog_s;
  } else {  // d_shift = g itself: the caller passes g on, no kernel writes it
    const T gs = g * sc.s;
    *d_in = gs;
    *d_r = (gs * a + gl) * sc.dlog_s;
    (void)d_b;
  }
}

}  // namespace coupling

// Launchers.  Arrays are contiguous (rows, n); logdet / g_logdet have `rows` entries; d_b is
// written only when `inverse` (it may be null otherwise).
template <typename T>
void coupling_forward_cpu(const T* x, const T* r, const T* b, T* y, T* logdet, int64_t rows,
                          int64_t n, int fn, bool inverse);
template <typename T>
void coupling_backward_cpu(const T* a, const T* r, const T* g, const T* g_logdet, T* d_in, T* d_r,
                           T* d_b, int64_t rows, int64_t n, int fn, bool inverse);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t as an integer.  Throw std::runtime_error on failure.
template <typename T>
void coupling_forward_cuda(const T* x, const T* r, const T* b, T* y, T* logdet, int64_t rows,
                           int64_t n, int fn, bool inverse, std::uintptr_t stream);
template <typename T>
void coupling_backward_cuda(const T* a, const T* r, const T* g, const T* g_logdet, T* d_in,
                            T* d_r, T* d_b, int64_t rows, int64_t n, int fn, bool inverse,
                            std::uintptr_t stream);
#endif

}  // namespace gmcore
