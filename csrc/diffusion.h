// Fused diffusion steps: the per-element math, written once.
//
// Included by csrc/diffusion_cpu.cpp (host build: GM_HOST_DEVICE is empty) and by
// csrc/diffusion.cu (nvcc: __host__ __device__), so the CPU tests exercise the arithmetic the
// GPU runs.  The specification is gmcore/functional/_diffusion_reference.py.
//
// Layout: data arrays are C-contiguous (B, N) (one row per example); the learned-range model
// output is (B, 2N): eps in columns [0, N), v in [N, 2N).  t / t_prev are int64 (B,), range-
// checked by the caller (t_prev = -1: the final DDIM step, abar_prev = 1).  `tab` is the packed
// (kRows, nT) coefficient table of NoiseSchedule.table in the data dtype; `w` the (nT,)
// per-timestep loss weights.  Element math runs in T; per-example sums accumulate in double.
#pragma once

#include <math.h>

#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace diff {

// Rows of the coefficient table (gmcore.schedules.ROWS).
enum Row : int {
  kSqrtAcp = 0,
  kSqrt1mAcp = 1,
  kSqrtRecipAcp = 2,
  kSqrtRecipm1Acp = 3,
  kCoef1 = 4,
  kCoef2 = 5,
  kPostLogvar = 6,
  kLogBeta = 7,
  kLargeLogvar = 8,
  kAcp = 9,
  kOneMAcp = 10,
  kRows = 11
};

enum VarType : int { kFixedSmall = 0, kFixedLarge = 1, kLearnedRange = 2 };

GM_HOST_DEVICE inline float d_exp(float x) { return expf(x); }
GM_HOST_DEVICE inline double d_exp(double x) { return exp(x); }
GM_HOST_DEVICE inline float d_log(float x) { return logf(x); }
GM_HOST_DEVICE inline double d_log(double x) { return log(x); }
GM_HOST_DEVICE inline float d_log1p(float x) { return log1pf(x); }
GM_HOST_DEVICE inline double d_log1p(double x) { return log1p(x); }
GM_HOST_DEVICE inline float d_sqrt(float x) { return sqrtf(x); }
GM_HOST_DEVICE inline double d_sqrt(double x) { return sqrt(x); }

template <typename T>
GM_HOST_DEVICE inline T coef(const T* tab, int64_t nT, int row, int64_t t) {
  return tab[static_cast<int64_t>(row) * nT + t];
}

// clamp to [-1, 1]; NaN passes through (as the reference's clamp)
template <typename T>
GM_HOST_DEVICE inline T clip1(T x) {
  return x < T(-1) ? T(-1) : (x > T(1) ? T(1) : x);
}

template <typename T>
GM_HOST_DEVICE inline T sigmoid(T z) {
  if (z >= T(0)) return T(1) / (T(1) + d_exp(-z));
  const T e = d_exp(z);
  return e / (T(1) + e);
}

template <typename T>
GM_HOST_DEVICE inline T logsigmoid(T z) {
  const T m = z < T(0) ? z : T(0);
  return m - d_log1p(d_exp(z < T(0) ? z : -z));
}

template <typename T>
GM_HOST_DEVICE inline T q_sample_elem(T x0, T noise, T sqrt_acp, T sqrt_1m_acp) {
  return sqrt_acp * x0 + sqrt_1m_acp * noise;
}

template <typename T>
GM_HOST_DEVICE inline T predict_x0_elem(T xt, T eps, T sr, T srm1, bool clip) {
  const T x0 = sr * xt - srm1 * eps;
  return clip ? clip1(x0) : x0;
}

// Per-example coefficients of one DDPM step.
template <typename T>
struct DdpmCoefs {
  T sr, srm1, c1, c2, lo, hi, fixed_logvar;
  T fixed_std;  // exp(fixed_logvar / 2): one exp per example for the fixed variance types
  bool final_step;
};

template <typename T>
GM_HOST_DEVICE inline DdpmCoefs<T> ddpm_coefs(const T* tab, int64_t nT, int64_t t, int var_code) {
  DdpmCoefs<T> c;
  c.sr = coef(tab, nT, kSqrtRecipAcp, t);
  c.srm1 = coef(tab, nT, kSqrtRecipm1Acp, t);
  c.c1 = coef(tab, nT, kCoef1, t);
  c.c2 = coef(tab, nT, kCoef2, t);
  c.lo = coef(tab, nT, kPostLogvar, t);
  c.hi = coef(tab, nT, kLogBeta, t);
  c.fixed_logvar = var_code == kFixedLarge ? coef(tab, nT, kLargeLogvar, t) : c.lo;
  c.fixed_std = d_exp(c.fixed_logvar * T(0.5));
  c.final_step = t == 0;
  return c;
}

// x_{t-1} = mean + exp(logvar / 2) noise, the mean alone at t = 0 (noise not read).
template <typename T>
GM_HOST_DEVICE inline T ddpm_elem(T xt, T eps, T v, T noise, const DdpmCoefs<T>& c, int var_code,
                                  bool clip) {
  const T x0 = predict_x0_elem(xt, eps, c.sr, c.srm1, clip);
  const T mean = c.c1 * x0 + c.c2 * xt;
  if (c.final_step) return mean;
  if (var_code != kLearnedRange) return mean + c.fixed_std * noise;
  const T frac = (v + T(1)) * T(0.5);
  const T lv = frac * c.hi + (T(1) - frac) * c.lo;
  return mean + d_exp(lv * T(0.5)) * noise;
}

// Per-example coefficients of one DDIM step (Song et al. 2021, eq. 12).
template <typename T>
struct DdimCoefs {
  T sr, srm1, sqrt_acp_prev, dir, sigma;
};

template <typename T>
GM_HOST_DEVICE inline DdimCoefs<T> ddim_coefs(const T* tab, int64_t nT, int64_t t, int64_t tp,
                                              T eta) {
  DdimCoefs<T> c;
  c.sr = coef(tab, nT, kSqrtRecipAcp, t);
  c.srm1 = coef(tab, nT, kSqrtRecipm1Acp, t);
  const T acp_t = coef(tab, nT, kAcp, t), om_t = coef(tab, nT, kOneMAcp, t);
  const T acp_p = tp >= 0 ? coef(tab, nT, kAcp, tp) : T(1);
  const T om_p = tp >= 0 ? coef(tab, nT, kOneMAcp, tp) : T(0);
  // abar_prev - abar_t from whichever rows are small: no cancellation in float32
  const T diff = acp_p <= T(0.5) ? acp_p - acp_t : om_t - om_p;
  T r = om_p / om_t * diff / acp_p;
  r = r > T(0) ? r : T(0);
  c.sigma = eta * d_sqrt(r);
  T d = om_p - c.sigma * c.sigma;
  d = d > T(0) ? d : T(0);
  c.dir = d_sqrt(d);
  c.sqrt_acp_prev = d_sqrt(acp_p);
  return c;
}

// With clip the x0 prediction is clamped and eps re-derived from it; noise unread if sigma == 0.
template <typename T>
GM_HOST_DEVICE inline T ddim_elem(T xt, T eps, T noise, const DdimCoefs<T>& c, bool clip) {
  T x0 = c.sr * xt - c.srm1 * eps;
  if (clip) {
    x0 = clip1(x0);
    eps = (c.sr * xt - x0) / c.srm1;
  }
  const T base = c.sqrt_acp_prev * x0 + c.dir * eps;
  return c.sigma == T(0) ? base : base + c.sigma * noise;
}

// ---- the hybrid loss's variational-bound term ---------------------------------------------
//
// Per element, in nats: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0, the discretized
// Gaussian decoder NLL for t = 0 (improved DDPM: 256 bins of half width 1/255 on [-1, 1], edge
// bins open, tanh approximation Phi~(z) = sigmoid(u(z)), u(z) = 2K (z + A z^3), probabilities
// floored at 1e-12).  The model mean uses eps as given (the caller's stop-gradient), so the
// derivative returned is w.r.t. v only:  lp = frac hi + (1 - frac) lo, frac = (v + 1) / 2,
//   KL:  d/d lp = (1 - exp(lq - lp) - (mq - mp)^2 exp(-lp)) / 2
//   NLL: s = lp / 2, a = e^-s (x0 - mp - h), b = e^-s (x0 - mp + h), da/ds = -a, db/ds = -b;
//        left edge  d log Phi~(b)/ds = -b u'(b) sigmoid(-u(b)),
//        right edge d log(1 - Phi~(a))/ds = a u'(a) sigmoid(u(a)),
//        middle     d log(Phi~(b) - Phi~(a))/ds = (a phi(a) - b phi(b)) / delta,
//        phi(z) = u'(z) sigmoid(u) sigmoid(-u); zero where a probability is floored.
template <typename T>
struct VbCoefs {
  T sr, srm1, c1, c2, lo, hi;
  bool t0;
};

template <typename T>
GM_HOST_DEVICE inline VbCoefs<T> vb_coefs(const T* tab, int64_t nT, int64_t t) {
  VbCoefs<T> c;
  c.sr = coef(tab, nT, kSqrtRecipAcp, t);
  c.srm1 = coef(tab, nT, kSqrtRecipm1Acp, t);
  c.c1 = coef(tab, nT, kCoef1, t);
  c.c2 = coef(tab, nT, kCoef2, t);
  c.lo = coef(tab, nT, kPostLogvar, t);
  c.hi = coef(tab, nT, kLogBeta, t);
  c.t0 = t == 0;
  return c;
}

template <typename T>
struct VbValue {
  T value;  // nats
  T d_v;    // derivative w.r.t. v
};

template <typename T>
GM_HOST_DEVICE inline T cdf_logit(T z) {  // u(z)
  return T(1.5957691216057308) * (z + T(0.044715) * z * z * z);
}

template <typename T>
GM_HOST_DEVICE inline T cdf_logit_d(T z) {  // u'(z)
  return T(1.5957691216057308) * (T(1) + T(3 * 0.044715) * z * z);
}

template <typename T>
GM_HOST_DEVICE inline VbValue<T> vb_elem(T x0, T xt, T eps, T v, const VbCoefs<T>& c) {
  const T x0p = c.sr * xt - c.srm1 * eps;
  const T mp = c.c1 * x0p + c.c2 * xt;
  const T frac = (v + T(1)) * T(0.5);
  const T lp = frac * c.hi + (T(1) - frac) * c.lo;
  const T dlp = (c.hi - c.lo) * T(0.5);
  if (!c.t0) {
    const T mq = c.c1 * x0 + c.c2 * xt;
    const T d = mq - mp;
    const T e1 = d_exp(c.lo - lp);
    const T e2 = d * d * d_exp(-lp);
    return VbValue<T>{T(0.5) * (T(-1) + lp - c.lo + e1 + e2), T(0.5) * (T(1) - e1 - e2) * dlp};
  }
  const T log_min = T(-27.631021115928547);  // log(1e-12)
  const VbValue<T> floored{-log_min, T(0)};
  const T inv = d_exp(-(T(0.5) * lp));
  const T cc = x0 - mp;
  const T h = T(1.0 / 255.0);
  const T a = inv * (cc - h), b = inv * (cc + h);
  const T ua = cdf_logit(a), ub = cdf_logit(b);
  T logp, dlds;
  if (x0 < T(-0.999)) {
    logp = logsigmoid(ub);
    if (logp < log_min) return floored;
    dlds = -b * cdf_logit_d(b) * sigmoid(-ub);
  } else if (x0 > T(0.999)) {
    logp = logsigmoid(-ua);
    if (logp < log_min) return floored;
    dlds = a * cdf_logit_d(a) * sigmoid(ua);
  } else {
    const T delta = a > T(0) ? sigmoid(-ua) - sigmoid(-ub) : sigmoid(ub) - sigmoid(ua);
    if (delta < T(1e-12)) return floored;
    logp = d_log(delta);
    const T pa = cdf_logit_d(a) * sigmoid(ua) * sigmoid(-ua);
    const T pb = cdf_logit_d(b) * sigmoid(ub) * sigmoid(-ub);
    dlds = (a * pa - b * pb) / delta;
  }
  return VbValue<T>{-logp, -dlds * T(0.5) * dlp};
}

constexpr double kLn2 = 0.69314718055994530942;

}  // namespace diff

// ---- launchers (host functions).  CPU: csrc/diffusion_cpu.cpp.  CUDA: csrc/diffusion.cu. ----
template <typename T>
void diffusion_q_sample_cpu(const T* x0, const T* noise, const int64_t* t, const T* tab, int64_t nT,
                            T* out, int64_t B, int64_t N);
template <typename T>
void diffusion_predict_x0_cpu(const T* xt, const T* eps, const int64_t* t, const T* tab, int64_t nT,
                              bool clip, T* out, int64_t B, int64_t N);
template <typename T>
void diffusion_ddpm_step_cpu(const T* xt, const T* model_out, const T* noise, const int64_t* t,
                             const T* tab, int64_t nT, int var_code, bool clip, T* out, int64_t B,
                             int64_t N);
template <typename T>
void diffusion_ddim_step_cpu(const T* xt, const T* eps, const T* noise, const int64_t* t,
                             const int64_t* t_prev, const T* tab, int64_t nT, T eta, bool clip,
                             T* out, int64_t B, int64_t N);
template <typename T>
void diffusion_eps_loss_fwd_cpu(const T* pred, const T* noise, const int64_t* t, const T* w, T* out,
                                int64_t B, int64_t N);
template <typename T>
void diffusion_eps_loss_bwd_cpu(const T* pred, const T* noise, const int64_t* t, const T* w,
                                const T* g, T* grad, int64_t B, int64_t N);
template <typename T>
void diffusion_hybrid_fwd_cpu(const T* model_out, const T* x0, const T* xt, const T* noise,
                              const int64_t* t, const T* tab, int64_t nT, const T* w, double vb_weight,
                              T* out, int64_t B, int64_t N);
template <typename T>
void diffusion_hybrid_bwd_cpu(const T* model_out, const T* x0, const T* xt, const T* noise,
                              const int64_t* t, const T* tab, int64_t nT, const T* w, double vb_weight,
                              const T* g, T* grad, int64_t B, int64_t N);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t as an integer.  Throw std::runtime_error naming
// the CUDA error on failure.
template <typename T>
void diffusion_q_sample_cuda(const T* x0, const T* noise, const int64_t* t, const T* tab, int64_t nT,
                             T* out, int64_t B, int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_predict_x0_cuda(const T* xt, const T* eps, const int64_t* t, const T* tab, int64_t nT,
                               bool clip, T* out, int64_t B, int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_ddpm_step_cuda(const T* xt, const T* model_out, const T* noise, const int64_t* t,
                              const T* tab, int64_t nT, int var_code, bool clip, T* out, int64_t B,
                              int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_ddim_step_cuda(const T* xt, const T* eps, const T* noise, const int64_t* t,
                              const int64_t* t_prev, const T* tab, int64_t nT, T eta, bool clip,
                              T* out, int64_t B, int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_eps_loss_fwd_cuda(const T* pred, const T* noise, const int64_t* t, const T* w, T* out,
                                 int64_t B, int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_eps_loss_bwd_cuda(const T* pred, const T* noise, const int64_t* t, const T* w,
                                 const T* g, T* grad, int64_t B, int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_hybrid_fwd_cuda(const T* model_out, const T* x0, const T* xt, const T* noise,
                               const int64_t* t, const T* tab, int64_t nT, const T* w,
                               double vb_weight, T* out, int64_t B, int64_t N, std::uintptr_t stream);
template <typename T>
void diffusion_hybrid_bwd_cuda(const T* model_out, const T* x0, const T* xt, const T* noise,
                               const int64_t* t, const T* tab, int64_t nT, const T* w,
                               double vb_weight, const T* g, T* grad, int64_t B, int64_t N,
                               std::uintptr_t stream);
#endif

}  // namespace gmcore
