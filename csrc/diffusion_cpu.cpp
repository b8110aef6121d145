// Fused diffusion steps on the CPU: OpenMP over (example, chunk) pairs for the elementwise ops
// and the backward passes, over examples for the per-example loss sums.  Math: diffusion.h.
#include <algorithm>

#include "diffusion.h"

namespace gmcore {

namespace {

constexpr int64_t kChunk = 4096;
// Work (in elements) from which OpenMP threads pay off.  The elementwise ops are memory-bound:
// one core nearly saturates its share of bandwidth, and on a busy machine a parallel region
// waits for every worker to be scheduled (milliseconds), so they go parallel only on large
// arrays.  The hybrid loss spends ~20 transcendental calls per element: parallel much earlier.
constexpr int64_t kParallelMin = int64_t(1) << 20;
constexpr int64_t kParallelMinHybrid = int64_t(1) << 15;

inline int64_t n_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

// Run body(b, j0, j1) over every (example, chunk) pair, in parallel when the work is large.
template <typename F>
inline void for_chunks(int64_t B, int64_t N, F body, int64_t parallel_min = kParallelMin) {
  const int64_t nc = n_chunks(N);
  const int64_t total = B * nc;
#pragma omp parallel for schedule(static) if (B * N >= parallel_min)
  for (int64_t k = 0; k < total; ++k) {
    const int64_t b = k / nc, c = k % nc;
    body(b, c * kChunk, std::min(N, (c + 1) * kChunk));
  }
}

}  // namespace

template <typename T>
void diffusion_q_sample_cpu(const T* x0, const T* noise, const int64_t* t, const T* tab, int64_t nT,
                            T* out, int64_t B, int64_t N) {
  for_chunks(B, N, [&](int64_t b, int64_t j0, int64_t j1) {
    const T a = diff::coef(tab, nT, diff::kSqrtAcp, t[b]);
    const T s = diff::coef(tab, nT, diff::kSqrt1mAcp, t[b]);
    const int64_t o = b * N;
    for (int64_t j = j0; j < j1; ++j) out[o + j] = diff::q_sample_elem(x0[o + j], noise[o + j], a, s);
  });
}

template <typename T>
void diffusion_predict_x0_cpu(const T* xt, const T* eps, const int64_t* t, const T* tab, int64_t nT,
                              bool clip, T* out, int64_t B, int64_t N) {
  for_chunks(B, N, [&](int64_t b, int64_t j0, int64_t j1) {
    const T sr = diff::coef(tab, nT, diff::kSqrtRecipAcp, t[b]);
    const T srm1 = diff::coef(tab, nT, diff::kSqrtRecipm1Acp, t[b]);
    const int64_t o = b * N;
    for (int64_t j = j0; j < j1; ++j) out[o + j] = diff::predict_x0_elem(xt[o + j], eps[o + j], sr, srm1, clip);
  });
}

template <typename T>
void diffusion_ddpm_step_cpu(const T* xt, const T* model_out, const T* noise, const int64_t* t,
                             const T* tab, int64_t nT, int var_code, bool clip, T* out, int64_t B,
                             int64_t N) {
  const int64_t stride = var_code == diff::kLearnedRange ? 2 * N : N;
  for_chunks(B, N, [&](int64_t b, int64_t j0, int64_t j1) {
    const diff::DdpmCoefs<T> c = diff::ddpm_coefs(tab, nT, t[b], var_code);
    const T* e = model_out + b * stride;
    const T* v = var_code == diff::kLearnedRange ? e + N : e;  // v unread unless learned_range
    const int64_t o = b * N;
    for (int64_t j = j0; j < j1; ++j)
      out[o + j] = diff::ddpm_elem(xt[o + j], e[j], v[j], noise[o + j], c, var_code, clip);
  });
}

template <typename T>
void diffusion_ddim_step_cpu(const T* xt, const T* eps, const T* noise, const int64_t* t,
                             const int64_t* t_prev, const T* tab, int64_t nT, T eta, bool clip,
                             T* out, int64_t B, int64_t N) {
  for_chunks(B, N, [&](int64_t b, int64_t j0, int64_t j1) {
    const diff::DdimCoefs<T> c = diff::ddim_coefs(tab, nT, t[b], t_prev[b], eta);
    const int64_t o = b * N;
    for (int64_t j = j0; j < j1; ++j) out[o + j] = diff::ddim_elem(xt[o + j], eps[o + j], noise[o + j], c, clip);
  });
}

template <typename T>
void diffusion_eps_loss_fwd_cpu(const T* pred, const T* noise, const int64_t* t, const T* w, T* out,
                                int64_t B, int64_t N) {
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    const T* p = pred + b * N;
    const T* n = noise + b * N;
    // 8 independent partial sums: no loop-carried dependency, so the loop vectorizes
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= N; j += 8) {
      for (int k = 0; k < 8; ++k) {
        const double d = static_cast<double>(p[j + k] - n[j + k]);
        acc[k] += d * d;
      }
    }
    for (; j < N; ++j) {
      const double d = static_cast<double>(p[j] - n[j]);
      acc[0] += d * d;
    }
    const double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    out[b] = static_cast<T>(static_cast<double>(w[t[b]]) * (sum / static_cast<double>(N)));
  }
}

template <typename T>
void diffusion_eps_loss_bwd_cpu(const T* pred, const T* noise, const int64_t* t, const T* w,
                                const T* g, T* grad, int64_t B, int64_t N) {
  for_chunks(B, N, [&](int64_t b, int64_t j0, int64_t j1) {
    const T s = static_cast<T>(2.0 * static_cast<double>(g[b]) * static_cast<double>(w[t[b]]) /
                               static_cast<double>(N));
    const int64_t o = b * N;
    for (int64_t j = j0; j < j1; ++j) grad[o + j] = s * (pred[o + j] - noise[o + j]);
  });
}

template <typename T>
void diffusion_hybrid_fwd_cpu(const T* model_out, const T* x0, const T* xt, const T* noise,
                              const int64_t* t, const T* tab, int64_t nT, const T* w, double vb_weight,
                              T* out, int64_t B, int64_t N) {
#pragma omp parallel for schedule(static) if (B * N >= kParallelMinHybrid)
  for (int64_t b = 0; b < B; ++b) {
    const diff::VbCoefs<T> c = diff::vb_coefs(tab, nT, t[b]);
    const T* e = model_out + b * 2 * N;
    const T* v = e + N;
    const int64_t o = b * N;
    double mse = 0.0, vb = 0.0;
    for (int64_t j = 0; j < N; ++j) {
      const double d = static_cast<double>(e[j] - noise[o + j]);
      mse += d * d;
      vb += static_cast<double>(diff::vb_elem(x0[o + j], xt[o + j], e[j], v[j], c).value);
    }
    const double n = static_cast<double>(N);
    out[b] = static_cast<T>(static_cast<double>(w[t[b]]) * (mse / n + vb_weight * (vb / n / diff::kLn2)));
  }
}

template <typename T>
void diffusion_hybrid_bwd_cpu(const T* model_out, const T* x0, const T* xt, const T* noise,
                              const int64_t* t, const T* tab, int64_t nT, const T* w, double vb_weight,
                              const T* g, T* grad, int64_t B, int64_t N) {
  for_chunks(B, N, [&](int64_t b, int64_t j0, int64_t j1) {
    const diff::VbCoefs<T> c = diff::vb_coefs(tab, nT, t[b]);
    const double gw = static_cast<double>(g[b]) * static_cast<double>(w[t[b]]);
    const T se = static_cast<T>(2.0 * gw / static_cast<double>(N));
    const T sv = static_cast<T>(gw * vb_weight / (static_cast<double>(N) * diff::kLn2));
    const T* e = model_out + b * 2 * N;
    const T* v = e + N;
    T* ge = grad + b * 2 * N;
    T* gv = ge + N;
    const int64_t o = b * N;
    for (int64_t j = j0; j < j1; ++j) {
      ge[j] = se * (e[j] - noise[o + j]);
      gv[j] = sv * diff::vb_elem(x0[o + j], xt[o + j], e[j], v[j], c).d_v;
    }
  }, kParallelMinHybrid);
}

#define GM_DIFFUSION_INSTANTIATE(T)                                                                 \
  template void diffusion_q_sample_cpu<T>(const T*, const T*, const int64_t*, const T*, int64_t, T*, \
                                          int64_t, int64_t);                                         \
  template void diffusion_predict_x0_cpu<T>(const T*, const T*, const int64_t*, const T*, int64_t,   \
                                            bool, T*, int64_t, int64_t);                             \
  template void diffusion_ddpm_step_cpu<T>(const T*, const T*, const T*, const int64_t*, const T*,   \
                                           int64_t, int, bool, T*, int64_t, int64_t);                \
  template void diffusion_ddim_step_cpu<T>(const T*, const T*, const T*, const int64_t*,             \
                                           const int64_t*, const T*, int64_t, T, bool, T*, int64_t,  \
                                           int64_t);                                                 \
  template void diffusion_eps_loss_fwd_cpu<T>(const T*, const T*, const int64_t*, const T*, T*,      \
                                              int64_t, int64_t);                                     \
  template void diffusion_eps_loss_bwd_cpu<T>(const T*, const T*, const int64_t*, const T*,          \
                                              const T*, T*, int64_t, int64_t);                       \
  template void diffusion_hybrid_fwd_cpu<T>(const T*, const T*, const T*, const T*, const int64_t*,  \
                                            const T*, int64_t, const T*, double, T*, int64_t,        \
                                            int64_t);                                                \
  template void diffusion_hybrid_bwd_cpu<T>(const T*, const T*, const T*, const T*, const int64_t*,  \
                                            const T*, int64_t, const T*, double, const T*, T*,       \
                                            int64_t, int64_t);

GM_DIFFUSION_INSTANTIATE(float)
GM_DIFFUSION_INSTANTIATE(double)
#undef GM_DIFFUSION_INSTANTIATE

}  // namespace gmcore
