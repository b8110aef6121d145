// WaveNet gated activation: the per-element math, written once.
//
// Included by csrc/wavenet_cpu.cpp (host build: GM_HOST_DEVICE is empty) and csrc/wavenet.cu
// (nvcc: __host__ __device__), so the CPU tests exercise the arithmetic the GPU runs.  The
// specification is gate_forward_reference / gate_backward_reference in
// gmcore/functional/wavenet.py.
//
// Layout: the dilated conv's output z is (N, 2G, L) (L = time steps), channels [0, G) the
// "filter" half and [G, 2G) the "gate" half.  Forward, per (n, g, t):
//     z1 = z[n, g, t] + bias[g] + cond[n, g, t]           (cond optional)
//     z2 = z[n, G+g, t] + bias[G+g] + cond[n, G+g, t]
//     t = tanh(z1),  s = sigmoid(z2),  a = t * s
// and t, s are saved (in a (N, 2G, L) array shaped like z) for the backward:
//     da/dz1 = s (1 - t^2),  da/dz2 = t s (1 - s)
// so with ga = dL/da:  dz1 = ga s (1 - t^2),  dz2 = ga t s (1 - s).
//
// Stable forms: sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) otherwise, e = exp(-|x|) (never
// exp of a large positive number); tanh from libm, or (float32 on the CPU) the VecF policy:
// an odd polynomial for |x| < 0.625 (no cancellation near 0) and (1 - e)/(1 + e),
// e = exp(-2|x|), above.  Special values: tanh(+-inf) = +-1, sigmoid(+inf) = 1,
// sigmoid(-inf) = 0, NaN stays NaN.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

// Forced inlining: the CPU loops vectorise only when the whole element is inlined into them.
#if defined(__CUDACC__)
#define GM_WN_INLINE __forceinline__
#elif defined(__GNUC__)
#define GM_WN_INLINE __attribute__((always_inline)) inline
#else
#define GM_WN_INLINE inline
#endif

namespace gmcore {
namespace wavenet {

// The C library, float overloads picked explicitly so host and device round alike.
struct Libm {
  GM_HOST_DEVICE static GM_WN_INLINE float exp(float x) { return expf(x); }
  GM_HOST_DEVICE static GM_WN_INLINE double exp(double x) { return ::exp(x); }
  GM_HOST_DEVICE static GM_WN_INLINE float tanh(float x) { return tanhf(x); }
  GM_HOST_DEVICE static GM_WN_INLINE double tanh(double x) { return ::tanh(x); }
};

// Branch-free float32 exp and tanh (host only; libm calls stop the loop from vectorising).
// exp: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n*ln2_hi), exp(r) by
// its Taylor series to r^7 (truncation < 6e-9 relative), 2^n built in the exponent bits.
// exp(x < -87.3) = 0 (no denormals), exp(x > 88) = inf (only x <= 0 occurs here), exp(NaN) = NaN.
// tanh: |x| < 0.625: x + x^3 P(x^2), P a degree-4 least-squares-minimax fit of
// (tanh x - x)/x^3 (relative error 1.2e-8 in exact arithmetic, < 1 ulp in float32);
// otherwise 1 - 2e/(1 + e) with e = exp(-2|x|) <= 0.29 (no cancellation).
struct VecF {
  static GM_WN_INLINE float bits_to_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
  }
  static GM_WN_INLINE float exp(float x) {
    const bool lo = x < -87.3f, hi = x > 88.0f;
    const float xc = lo ? -87.3f : (hi ? 88.0f : (x == x ? x : 0.0f));  // finite, in range
    const float shifter = 12582912.0f;                                  // 1.5 * 2^23
    const float n = (xc * 1.44269504088896341f + shifter) - shifter;    // round to nearest
    const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float y = p * bits_to_float((int32_t(n) + 127) << 23);
    return x == x ? (lo ? 0.0f : (hi ? INFINITY : y)) : x;
  }
  static GM_WN_INLINE float tanh(float x) {
    const float ax = fabsf(x);
    const float y = ax * ax;
    float p = -0.005784622683271507f;
    p = p * y + 0.02070897291880311f;
    p = p * y - 0.05376059373514105f;
    p = p * y + 0.13331683692536156f;
    p = p * y - 0.3333329037732003f;
    const float small = ax + ax * y * p;
    const float e = exp(-2.0f * ax);
    const float large = 1.0f - (e + e) / (1.0f + e);
    const float r = ax < 0.625f ? small : large;  // NaN: the large branch, NaN
    return copysignf(r, x);
  }
};

template <typename T, typename M>
GM_HOST_DEVICE GM_WN_INLINE T sigmoid(T x) {
  const T e = M::exp(x < T(0) ? x : -x);  // exp(-|x|); NaN stays NaN
  const T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

// One element of the forward: (t, s, a) from the two pre-activations.
template <typename T, typename M>
GM_HOST_DEVICE GM_WN_INLINE void gate_forward_elem(T z1, T z2, T& t, T& s, T& a) {
  t = M::tanh(z1);
  s = sigmoid<T, M>(z2);
  a = t * s;
}

// One element of the backward: (dz1, dz2) from the saved (t, s) and ga = dL/da.
template <typename T>
GM_HOST_DEVICE GM_WN_INLINE void gate_backward_elem(T t, T s, T ga, T& dz1, T& dz2) {
  const T gs = ga * s;
  dz1 = gs * (T(1) - t * t);
  dz2 = gs * t * (T(1) - s);
}

}  // namespace wavenet

// Launchers (host functions).  CPU: csrc/wavenet_cpu.cpp.  CUDA: csrc/wavenet.cu.
// z, cond, ts, dz: (N, 2G, L); a, ga: (N, G, L); bias: (2G,) (never null: pass zeros);
// cond may be null.  All contiguous, one dtype, no output aliasing an input.
template <typename T>
void wavenet_gate_forward_cpu(const T* z, const T* bias, const T* cond, T* a, T* ts, int64_t N,
                              int64_t G, int64_t L);
template <typename T>
void wavenet_gate_backward_cpu(const T* ts, const T* ga, T* dz, int64_t N, int64_t G, int64_t L);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t passed as an integer.  Throw std::runtime_error
// naming the CUDA error on failure.
template <typename T>
void wavenet_gate_forward_cuda(const T* z, const T* bias, const T* cond, T* a, T* ts, int64_t N,
                               int64_t G, int64_t L, std::uintptr_t stream);
template <typename T>
void wavenet_gate_backward_cuda(const T* ts, const T* ga, T* dz, int64_t N, int64_t G, int64_t L,
                                std::uintptr_t stream);
#endif

}  // namespace gmcore
