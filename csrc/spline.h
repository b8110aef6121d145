// Monotonic rational-quadratic spline with linear tails (Durkan et al. 2019, "Neural Spline
// Flows"): the per-element math of the forward/inverse map and of its backward, written once.
//
// Included by csrc/spline_cpu.cpp (host build) and csrc/spline.cu (nvcc), so the CPU tests
// exercise the arithmetic the GPU runs.  The definitions match the reference
// gmcore/functional/spline.py exactly (its module docstring states them):
//
//   knots     X_0 = -B,  X_j = 2B sum_{i<j} f_i - B (0 < j < K),  X_K = B,
//             f = min_w + (1 - K min_w) softmax(W);  likewise Y from H with min_h
//   slopes    d_0 = d_K = 1,  d_j = min_d + softplus(D_{j-1} + c),  c = log(expm1(1 - min_d))
//   bin k     the number of interior knots <= v (X for the forward map, Y for the inverse)
//   in bin k, theta = (v - X_k) / w_k, s = h_k / w_k, t1 = theta (1 - theta):
//     F(theta)  = Y_k + h_k (s theta^2 + d_k t1) / (s + (d_k + d_{k+1} - 2 s) t1)
//     LD(theta) = log(s^2 (d_{k+1} theta^2 + 2 s t1 + d_k (1 - theta)^2)) - 2 log(den)
//   forward: y = F(theta), logdet = LD(theta);  inverse: theta solves F(theta) = v (stable root
//   2c / (-b - sqrt(b^2 - 4ac))), x = X_k + theta w_k, logdet = -LD(theta).
//   Outside [-B, B] the map is the identity with logdet 0; NaN inputs give NaN.
//
// Backward (reverse mode, recomputing the forward per element; K <= kMaxBins):
//   forward map:  g_theta = gy F_theta + gl LD_theta, and gy, gl onto (h, s, d_k, d_k1, Y_k)
//                 through F's and LD's partials; theta = (v - X_k) / w gives g_v = g_theta / w,
//                 g_Xk = -g_theta / w, g_w = -g_theta theta / w.
//   inverse map:  x = X_k + theta w and logdet = -LD(theta) give g_theta = gx w - gl LD_theta
//                 and direct terms; theta is implicit in F(theta; p) = v, so
//                 d theta / d v = 1 / F_theta and d theta / d p = -F_p / F_theta.
//   then s = h / w, the knots (cumulative sums of the floored softmax: the gradient of f_i is
//   2B times the suffix sum of the knot gradients), the softmax, and the softplus slopes.
#pragma once

#include <math.h>

#include <cstdint>

#include "gm_math.h"
#include "host_device.h"

namespace gmcore {
namespace spline {

constexpr int kMaxBins = 64;

using math::gm_exp;
using math::gm_log;
using math::gm_log1p;
using math::gm_sqrt;

template <typename T>
struct Options {
  int bins;
  bool inverse;
  T bound, min_w, min_h, min_d;
  T slope_offset;  // c = log(expm1(1 - min_d)): a zero parameter gives slope 1
};

// softplus(z) = log(1 + e^z), stable for large |z|; and its derivative sigmoid(z).
template <typename T>
GM_HOST_DEVICE inline T softplus(T z) {
  const T a = z < T(0) ? -z : z;
  return (z > T(0) ? z : T(0)) + gm_log1p(gm_exp(-a));
}
template <typename T>
GM_HOST_DEVICE inline T sigmoid(T z) {
  if (z >= T(0)) return T(1) / (T(1) + gm_exp(-z));
  const T e = gm_exp(z);
  return e / (T(1) + e);
}

// Softmax of u[0..K) into sm, then the knots (K+1 values) from -bound to bound.
template <typename T>
GM_HOST_DEVICE inline void knots(const T* u, int K, T min_size, T bound, T* sm, T* knot) {
  T m = u[0];
  for (int j = 1; j < K; ++j) m = u[j] > m ? u[j] : m;
  T s = T(0);
  for (int j = 0; j < K; ++j) {
    sm[j] = gm_exp(u[j] - m);
    s += sm[j];
  }
  const T inv = T(1) / s;
  const T scale = T(1) - T(K) * min_size;
  T cum = T(0);
  knot[0] = -bound;
  for (int j = 0; j < K; ++j) {
    sm[j] *= inv;
    if (j < K - 1) {
      cum += min_size + scale * sm[j];
      knot[j + 1] = cum * (T(2) * bound) - bound;
    }
  }
  knot[K] = bound;
}

// The slope at knot j (0..K) from the unconstrained interior parameters D[0..K-2].
template <typename T>
GM_HOST_DEVICE inline T slope(const T* D, int j, const Options<T>& o) {
  if (j == 0 || j == o.bins) return T(1);
  return o.min_d + softplus(D[j - 1] + o.slope_offset);
}

// Number of interior knots (1..K-1) at or below v.
template <typename T>
GM_HOST_DEVICE inline int bin_of(const T* knot, int K, T v) {
  int k = 0;
  for (int j = 1; j < K; ++j) k += knot[j] <= v ? 1 : 0;
  return k;
}

// The rational-quadratic piece at theta and its partial derivatives (theta, h, s, d0, d1 held
// as independent variables; Y_k enters F with derivative 1).
template <typename T>
struct Piece {
  T F;                                   // F(theta) - Y_k
  T LD;                                  // log dF/dx
  T F_theta, F_h, F_s, F_d0, F_d1;       // partials of F
  T LD_theta, LD_s, LD_d0, LD_d1;        // partials of LD (independent of h)
};

template <typename T>
GM_HOST_DEVICE inline Piece<T> piece(T theta, T h, T s, T d0, T d1, bool partials) {
  Piece<T> p;
  const T om = T(1) - theta;
  const T t1 = theta * om;
  const T curv = d0 + d1 - T(2) * s;
  const T A = s * theta * theta + d0 * t1;
  const T den = s + curv * t1;
  const T P = d1 * theta * theta + T(2) * s * t1 + d0 * om * om;
  p.F = h * A / den;
  p.LD = gm_log(s * s * P) - T(2) * gm_log(den);
  if (!partials) return p;
  const T dt1 = T(1) - T(2) * theta;
  const T iden = T(1) / den, iP = T(1) / P;
  const T A_den2 = A * iden * iden;
  p.F_h = A * iden;
  p.F_theta = h * ((T(2) * s * theta + d0 * dt1) * iden - A_den2 * curv * dt1);
  p.F_s = h * (theta * theta * iden - A_den2 * (T(1) - T(2) * t1));
  p.F_d0 = h * (t1 * iden - A_den2 * t1);
  p.F_d1 = -h * A_den2 * t1;
  p.LD_theta = (T(2) * d1 * theta + T(2) * s * dt1 - T(2) * d0 * om) * iP - T(2) * curv * dt1 * iden;
  p.LD_s = T(2) / s + T(2) * t1 * iP - T(2) * (T(1) - T(2) * t1) * iden;
  p.LD_d0 = om * om * iP - T(2) * t1 * iden;
  p.LD_d1 = theta * theta * iP - T(2) * t1 * iden;
  return p;
}

// The bin's quantities for input v: knots, bin, theta (solving the quadratic when inverse).
template <typename T>
struct Bin {
  T sx[kMaxBins], sy[kMaxBins];          // softmaxes of W and H
  T X[kMaxBins + 1], Y[kMaxBins + 1];    // knots
  int k;
  T w, h, s, d0, d1, theta;
};

template <typename T>
GM_HOST_DEVICE inline void locate(T v, const T* W, const T* H, const T* D, const Options<T>& o,
                                  Bin<T>& b) {
  const int K = o.bins;
  knots(W, K, o.min_w, o.bound, b.sx, b.X);
  knots(H, K, o.min_h, o.bound, b.sy, b.Y);
  b.k = bin_of(o.inverse ? b.Y : b.X, K, v);
  const int k = b.k;
  b.w = b.X[k + 1] - b.X[k];
  b.h = b.Y[k + 1] - b.Y[k];
  b.s = b.h / b.w;
  b.d0 = slope(D, k, o);
  b.d1 = slope(D, k + 1, o);
  if (!o.inverse) {
    b.theta = (v - b.X[k]) / b.w;
    return;
  }
  const T dy = v - b.Y[k];
  const T curv = b.d0 + b.d1 - T(2) * b.s;
  const T qa = b.h * (b.s - b.d0) + dy * curv;
  const T qb = b.h * b.d0 - dy * curv;
  const T qc = -b.s * dy;
  T disc = qb * qb - T(4) * qa * qc;
  disc = disc > T(0) ? disc : T(0);  // >= 0 in a monotone bin, up to rounding
  b.theta = (T(2) * qc) / (-qb - gm_sqrt(disc));
}

template <typename T>
GM_HOST_DEVICE inline bool inside(T x, T bound) {
  return x >= -bound && x <= bound;  // false for NaN
}

// y and logdet of one element.
template <typename T>
GM_HOST_DEVICE inline void forward_elem(T x, const T* W, const T* H, const T* D,
                                        const Options<T>& o, T* y, T* ld) {
  if (!inside(x, o.bound)) {
    *y = x;
    *ld = x == x ? T(0) : x;  // NaN in, NaN out
    return;
  }
  Bin<T> b;
  locate(x, W, H, D, o, b);
  const Piece<T> p = piece(b.theta, b.h, b.s, b.d0, b.d1, false);
  if (o.inverse) {
    *y = b.X[b.k] + b.theta * b.w;
    *ld = -p.LD;
  } else {
    *y = b.Y[b.k] + p.F;
    *ld = p.LD;
  }
}

// Gradient of one knot row (X from W, or Y from H): g_knot[0..K] -> gU[0..K).
template <typename T>
GM_HOST_DEVICE inline void knots_backward(const T* sm, const T* g_knot, int K, T min_size, T bound,
                                          T* gU) {
  // knot j (0 < j < K) = 2B sum_{i<j} f_i - B: g f_i = 2B sum_{j=i+1}^{K-1} g_knot[j]
  const T scale = (T(1) - T(K) * min_size) * (T(2) * bound);
  T suffix = T(0), dot = T(0);
  for (int i = K - 1; i >= 0; --i) {
    gU[i] = scale * suffix;  // gradient of softmax entry i, for now
    dot += sm[i] * gU[i];
    if (i >= 1) suffix += g_knot[i];
  }
  for (int i = 0; i < K; ++i) gU[i] = sm[i] * (gU[i] - dot);
}

// Gradients of one element: gy, gl (upstream gradients of y and logdet) -> gx, gW[K], gH[K],
// gD[K-1].
template <typename T>
GM_HOST_DEVICE inline void backward_elem(T x, const T* W, const T* H, const T* D, T gy, T gl,
                                         const Options<T>& o, T* gx, T* gW, T* gH, T* gD) {
  const int K = o.bins;
  if (!inside(x, o.bound)) {
    const T z = x == x ? T(0) : x;  // NaN in: NaN gradients for its parameters
    *gx = x == x ? gy : x;
    for (int j = 0; j < K; ++j) gW[j] = gH[j] = z;
    for (int j = 0; j < K - 1; ++j) gD[j] = z;
    return;
  }
  Bin<T> b;
  locate(x, W, H, D, o, b);
  const Piece<T> p = piece(b.theta, b.h, b.s, b.d0, b.d1, true);
  T g_v, g_Xk, g_Yk, g_w, g_h, g_s, g_d0, g_d1;
  if (!o.inverse) {
    const T g_theta = gy * p.F_theta + gl * p.LD_theta;
    g_Yk = gy;
    g_h = gy * p.F_h;
    g_s = gy * p.F_s + gl * p.LD_s;
    g_d0 = gy * p.F_d0 + gl * p.LD_d0;
    g_d1 = gy * p.F_d1 + gl * p.LD_d1;
    g_v = g_theta / b.w;
    g_Xk = -g_v;
    g_w = -g_v * b.theta;
  } else {
    // out = X_k + theta w, logdet = -LD(theta, s, d0, d1), theta implicit in F(theta) = v - Y_k
    const T g_theta = gy * b.w - gl * p.LD_theta;
    const T q = g_theta / p.F_theta;
    g_v = q;
    g_Xk = gy;
    g_w = gy * b.theta;
    g_Yk = -q;
    g_h = -q * p.F_h;
    g_s = -q * p.F_s - gl * p.LD_s;
    g_d0 = -q * p.F_d0 - gl * p.LD_d0;
    g_d1 = -q * p.F_d1 - gl * p.LD_d1;
  }
  // s = h / w
  g_h += g_s / b.w;
  g_w -= g_s * b.s / b.w;
  // bin sizes are knot differences: w = X_{k+1} - X_k, h = Y_{k+1} - Y_k
  T gX[kMaxBins + 1], gY[kMaxBins + 1];
  for (int j = 0; j <= K; ++j) gX[j] = gY[j] = T(0);
  gX[b.k] += g_Xk - g_w;
  gX[b.k + 1] += g_w;
  gY[b.k] += g_Yk - g_h;
  gY[b.k + 1] += g_h;
  knots_backward(b.sx, gX, K, o.min_w, o.bound, gW);
  knots_backward(b.sy, gY, K, o.min_h, o.bound, gH);
  for (int j = 0; j < K - 1; ++j) gD[j] = T(0);
  if (b.k >= 1) gD[b.k - 1] = g_d0 * sigmoid(D[b.k - 1] + o.slope_offset);
  if (b.k + 1 <= K - 1) gD[b.k] = g_d1 * sigmoid(D[b.k] + o.slope_offset);
  *gx = g_v;
}

}  // namespace spline

// Launchers (host functions).  CPU: csrc/spline_cpu.cpp.  CUDA: csrc/spline.cu.
// x, y, ld, gy, gl, gx: (n,); W, H, gW, gH: (n, K); D, gD: (n, K - 1); all contiguous, one dtype.
template <typename T>
void spline_forward_cpu(const T* x, const T* W, const T* H, const T* D, T* y, T* ld, int64_t n,
                        const spline::Options<T>& o);
template <typename T>
void spline_backward_cpu(const T* x, const T* W, const T* H, const T* D, const T* gy,
                         const T* gl, T* gx, T* gW, T* gH, T* gD, int64_t n,
                         const spline::Options<T>& o);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t passed as an integer.  Throw std::runtime_error
// naming the CUDA error on failure.
template <typename T>
void spline_forward_cuda(const T* x, const T* W, const T* H, const T* D, T* y, T* ld, int64_t n,
                         const spline::Options<T>& o, std::uintptr_t stream);
template <typename T>
void spline_backward_cuda(const T* x, const T* W, const T* H, const T* D, const T* gy,
                          const T* gl, T* gx, T* gW, T* gH, T* gD, int64_t n,
                          const spline::Options<T>& o, std::uintptr_t stream);
#endif

}  // namespace gmcore
