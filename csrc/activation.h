// Pointwise activations: forward y = f(x) and backward dx = g f'(x), the per-element math written
// once for the host (and for a CUDA twin, should one be added: GM_HOST_DEVICE).
//
//   gelu        x Phi(x),  Phi(x) = erfc(-x/sqrt2)/2          f' = Phi(x) + x phi(x)
//   gelu_tanh   x s(2u),   u = K (x + C x^3)                  f' = s + x s (1-s) 2 u'
//               (0.5 (1 + tanh u) = sigmoid(2u): the same function, no cancellation as x -> -inf)
//   silu        x s(x)                                        f' = s + x s (1-s)
//   elu         x > 0 ? x : alpha expm1(x)                    f' = x > 0 ? 1 : alpha exp(x)
//   leaky_relu  x > 0 ? x : slope x                           f' = x > 0 ? 1 : slope
//   softplus    b x > thr ? x : log1p(exp(b x)) / b           f' = b x > thr ? 1 : s(b x)
//   mish        x tanh(softplus(x)) = x t                     f' = t + x (1 - t^2) s(x)
//   concat_elu  [elu(x), elu(-x)] along channels              dx = g1 elu'(x) - g2 elu'(-x)
//
// Every exp is taken of a non-positive argument, e = exp(-|z|) in (0, 1]: then s(z) is 1/(1+e)
// or e/(1+e) by sign, s(1-s) = e/(1+e)^2, log1p(exp(z)) = max(z, 0) + log1p(e), and mish's
// t = tanh(log1p(exp x)) = n/(n+2) with n = e^x (e^x + 2) takes the closed forms below.  Nothing
// overflows, nothing cancels.  Branches are true selects (?:) between computed values, so the
// CPU loops vectorise (-fno-trapping-math) and an inf in the branch not taken never leaks.
//
// The transcendental functions come from a policy: Libm (float64 on the CPU, and any device code)
// or FastF (float32 on the CPU: branch-free polynomials the compiler vectorises; libm calls keep
// a loop scalar).  FastF's erfc is relative to ~2e-7 for z >= 0 (torch's vectorised float erf
// has absolute error 1.5e-7), its exp is Cephes' (~1 ulp).
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

#if defined(__CUDACC__)
#define GM_ACT_INLINE __forceinline__
#elif defined(__GNUC__)
#define GM_ACT_INLINE __attribute__((always_inline)) inline
#else
#define GM_ACT_INLINE inline
#endif

namespace gmcore {
namespace act {

// Op codes shared with bindings/activation.cpp (the Python side passes names).
enum Op : int { kGelu = 0, kGeluTanh, kSilu, kElu, kLeakyRelu, kSoftplus, kMish, kNumOps };

// ---- math policies ---------------------------------------------------------------------------

struct Libm {
  GM_HOST_DEVICE static GM_ACT_INLINE float exp(float x) { return expf(x); }
  GM_HOST_DEVICE static GM_ACT_INLINE double exp(double x) { return ::exp(x); }
  GM_HOST_DEVICE static GM_ACT_INLINE float expm1(float x) { return expm1f(x); }
  GM_HOST_DEVICE static GM_ACT_INLINE double expm1(double x) { return ::expm1(x); }
  // log1p(e) for e in [0, 1]
  GM_HOST_DEVICE static GM_ACT_INLINE float log1p01(float e) { return log1pf(e); }
  GM_HOST_DEVICE static GM_ACT_INLINE double log1p01(double e) { return ::log1p(e); }
  // erfc(z) for z >= 0 (or NaN); e = exp(-z^2) is given (FastF uses it, libm does not)
  GM_HOST_DEVICE static GM_ACT_INLINE float erfc_pos(float z, float) { return erfcf(z); }
  GM_HOST_DEVICE static GM_ACT_INLINE double erfc_pos(double z, double) { return ::erfc(z); }
};

// float32 only, host only.
struct FastF {
  static GM_ACT_INLINE float as_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
  }
  // Cephes expf: exp(x) = 2^n exp(r), |r| <= ln2/2.  exp(x < -87.33) = 0 (no denormals),
  // exp(x > 88.3) = inf, NaN propagates (it passes the clamps and the final selects).
  static GM_ACT_INLINE float exp(float x) {
    const float xc = x < -87.33f ? -87.33f : (x > 88.3f ? 88.3f : x);
    const float t = xc * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: round to nearest
    const float n = t - 12582912.0f;
    const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // Cody-Waite ln2 = hi - lo
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float y = p * as_float((static_cast<int32_t>(n) + 127) << 23);
    return x < -87.33f ? 0.0f : (x > 88.3f ? INFINITY : y);
  }
  // exp(x) - 1: Taylor to x^9 on |x| < 0.5 (truncation < 1.1e-8 relative), else exp(x) - 1
  // (|result| > 0.39 there: no cancellation).
  static GM_ACT_INLINE float expm1(float x) {
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
    return x > -0.5f ? (x < 0.5f ? small : big) : big;  // nested ?: (no &&): if-converted
  }
  // log1p(e), e in [0, 1]: 2 atanh(u), u = e / (2 + e) <= 1/3, the odd series to u^15.
  static GM_ACT_INLINE float log1p01(float e) {
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
  // erfc(z), z >= 0, given e = exp(-z^2): t e Q(t), t = 1 / (1 + z/2), Q a degree-10 fit of
  // erfc(z) exp(z^2) / t on t in (0, 1] (least squares on Chebyshev nodes; relative error 1.2e-8
  // in exact arithmetic, 1.7e-7 evaluated in float).  The caller's e is shared with the pdf.
  static GM_ACT_INLINE float erfc_pos(float z, float e) {
    const float t = 1.0f / (1.0f + 0.5f * z);
    float q = 4.3173065892e-02f;
    q = q * t - 2.3460549045e-01f;
    q = q * t + 4.9338574145e-01f;
    q = q * t - 4.5456371766e-01f;
    q = q * t + 1.3185003977e-01f;
    q = q * t - 5.9050909800e-02f;
    q = q * t + 9.3414748435e-02f;
    q = q * t + 1.7532407539e-01f;
    q = q * t + 2.4688387983e-01f;
    q = q * t + 2.8209377679e-01f;
    q = q * t + 2.8209479506e-01f;
    return t * e * q;
  }
};

// ---- per-element forward and backward ----------------------------------------------------------

template <typename T>
struct Consts {
  static constexpr T kSqrt1_2 = T(0.70710678118654752440);
  static constexpr T kInvSqrt2Pi = T(0.39894228040143267794);
  static constexpr T kGeluK = T(0.79788456080286535588);  // sqrt(2 / pi)
  static constexpr T kGeluC = T(0.044715);
};

// y = f(x); a, b are the op's scalars (elu: alpha; leaky_relu: slope; softplus: beta, threshold).
template <int OP, typename T, typename M>
GM_HOST_DEVICE GM_ACT_INLINE T forward(T x, T a, T b) {
  using C = Consts<T>;
  if constexpr (OP == kGelu) {
    const T ax = x < T(0) ? -x : x;
    const T e = M::exp(T(-0.5) * x * x);  // exp(-z^2), z = |x| / sqrt2
    const T c = T(0.5) * M::erfc_pos(ax * C::kSqrt1_2, e);  // Phi(-|x|)
    return x * (x < T(0) ? c : T(1) - c);
  } else if constexpr (OP == kGeluTanh) {
    const T z = T(2) * C::kGeluK * (x + C::kGeluC * x * x * x);
    const T az = z < T(0) ? -z : z;
    const T e = M::exp(-az);
    const T r = T(1) / (T(1) + e);
    return x * (z >= T(0) ? r : e * r);
  } else if constexpr (OP == kSilu) {
    const T ax = x < T(0) ? -x : x;
    const T e = M::exp(-ax);
    const T r = T(1) / (T(1) + e);
    return x * (x >= T(0) ? r : e * r);
  } else if constexpr (OP == kElu) {
    // expm1(-|x|): the branch not taken cannot overflow (GCC vectorises this form, not
    // min(x, 0)); 0 - |x|, not -|x|: elu(0) = +0 as torch
    const T ax = x < T(0) ? -x : x;
    const T m = M::expm1(T(0) - ax);
    return x > T(0) ? x : a * m;
  } else if constexpr (OP == kLeakyRelu) {
    return x > T(0) ? x : x * a;
  } else if constexpr (OP == kSoftplus) {
    const T z = x * a;
    const T az = z < T(0) ? -z : z;
    const T sp = ((z > T(0) ? z : T(0)) + M::log1p01(M::exp(-az))) / a;
    return z > b ? x : sp;
  } else {  // kMish: t = n / (n + 2), n = e^x (e^x + 2); with e = exp(-|x|):
            //   x >= 0: t = (1 + 2e) / (1 + 2e + 2e^2);  x < 0: t = e (e + 2) / (e^2 + 2e + 2)
    const T ax = x < T(0) ? -x : x;
    const T e = M::exp(-ax);
    const bool pos = x >= T(0);
    const T num = pos ? T(1) + T(2) * e : e * (e + T(2));
    const T den = pos ? T(1) + T(2) * e * (T(1) + e) : e * (e + T(2)) + T(2);
    return x * (num / den);
  }
}

// dx = g f'(x).
template <int OP, typename T, typename M>
GM_HOST_DEVICE GM_ACT_INLINE T backward(T g, T x, T a, T b) {
  using C = Consts<T>;
  if constexpr (OP == kGelu) {
    const T ax = x < T(0) ? -x : x;
    const T e = M::exp(T(-0.5) * x * x);
    const T c = T(0.5) * M::erfc_pos(ax * C::kSqrt1_2, e);
    const T cdf = x < T(0) ? c : T(1) - c;
    const T pdf = e * C::kInvSqrt2Pi;
    return g * (cdf + x * pdf);
  } else if constexpr (OP == kGeluTanh) {
    const T x2 = x * x;
    const T z = T(2) * C::kGeluK * (x + C::kGeluC * x2 * x);
    const T az = z < T(0) ? -z : z;
    const T e = M::exp(-az);
    const T r = T(1) / (T(1) + e);
    const T s = z >= T(0) ? r : e * r;
    const T ss = e * r * r;  // s (1 - s)
    // ss == 0 (|z| large): the second term is 0, not x * 0 * inf (x^2 overflows first)
    const T dz = T(2) * C::kGeluK * (T(1) + T(3) * C::kGeluC * x2);
    const T second = ss == T(0) ? T(0) : x * ss * dz;
    return g * (s + second);
  } else if constexpr (OP == kSilu) {
    const T ax = x < T(0) ? -x : x;
    const T e = M::exp(-ax);
    const T r = T(1) / (T(1) + e);
    const T s = x >= T(0) ? r : e * r;
    return g * (s + x * (e * r * r));
  } else if constexpr (OP == kElu) {
    const T ax = x < T(0) ? -x : x;
    const T ex = M::exp(-ax);  // exp(x) where it is used
    return x > T(0) ? g : g * (a * ex);
  } else if constexpr (OP == kLeakyRelu) {
    return x > T(0) ? g : g * a;
  } else if constexpr (OP == kSoftplus) {
    const T z = x * a;
    const T az = z < T(0) ? -z : z;
    const T e = M::exp(-az);
    const T r = T(1) / (T(1) + e);
    const T s = z >= T(0) ? r : e * r;
    return z > b ? g : g * s;
  } else {  // kMish: f' = t + x (1 - t^2) s(x), with (e = exp(-|x|))
            //   x >= 0: 1 - t^2 = 4 e^2 (1 + e)^2 / D^2, s = 1 / (1 + e),  D = 1 + 2e + 2e^2
            //   x < 0:  1 - t^2 = 4 (1 + e)^2 / D^2,     s = e / (1 + e),  D = e^2 + 2e + 2
    const T ax = x < T(0) ? -x : x;
    const T e = M::exp(-ax);
    const bool pos = x >= T(0);
    const T num = pos ? T(1) + T(2) * e : e * (e + T(2));
    const T den = pos ? T(1) + T(2) * e * (T(1) + e) : e * (e + T(2)) + T(2);
    const T t = num / den;
    const T q = T(4) * e * (T(1) + e) / (den * den);  // (1 - t^2) s, over e on the positive side
    const T d = pos ? q * e : q;
    return g * (t + x * d);
  }
}

// concat_elu: y1 = elu(x), y2 = elu(-x); both from one m = expm1(-|x|).
template <typename T, typename M>
GM_HOST_DEVICE GM_ACT_INLINE void concat_elu_forward(T x, T alpha, T* y1, T* y2) {
  const T ax = x < T(0) ? -x : x;
  const T m = alpha * M::expm1(T(0) - ax);  // +0 at x = 0, as elu(0)
  *y1 = x > T(0) ? x : m;
  *y2 = x < T(0) ? -x : m;
}

// dx = g1 elu'(x) - g2 elu'(-x), elu'(v) = v > 0 ? 1 : alpha exp(v); both from e = exp(-|x|).
template <typename T, typename M>
GM_HOST_DEVICE GM_ACT_INLINE T concat_elu_backward(T g1, T g2, T x, T alpha) {
  const T ax = x < T(0) ? -x : x;
  const T ae = alpha * M::exp(-ax);
  const T d1 = x > T(0) ? T(1) : ae;
  const T d2 = x < T(0) ? T(1) : ae;
  return g1 * d1 - g2 * d2;
}

}  // namespace act

// Launchers (host functions, csrc/activation_cpu.cpp).  Arrays are contiguous; n elements.
// op is an act::Op; a, b its scalars.  Throw std::invalid_argument on an unknown op.
// g_scalar: g holds one value, broadcast to all n elements.
template <typename T>
void activation_forward_cpu(int op, const T* x, T* y, int64_t n, T a, T b);
template <typename T>
void activation_backward_cpu(int op, const T* g, const T* x, T* dx, int64_t n, T a, T b,
                             bool g_scalar);
// concat_elu: x (rows, n) -> y (rows, 2n); backward g (rows, 2n), x (rows, n) -> dx (rows, n).
template <typename T>
void concat_elu_forward_cpu(const T* x, T* y, int64_t rows, int64_t n, T alpha);
template <typename T>
void concat_elu_backward_cpu(const T* g, const T* x, T* dx, int64_t rows, int64_t n, T alpha);

}  // namespace gmcore
