// Discretized logistic mixture NLL (+ fused gradient) on the CPU: OpenMP over tiles of
// positions, the per-element math from dlml.h.
//
// A tile is one example b and up to kTile consecutive positions n, so every inner loop runs
// over contiguous memory (params are (B, P, N): channel rows of length N). Pass 1, per
// component k: the per-channel terms (writing their unscaled derivatives into grad), the
// component score lp_k = logit_k + sum_c logp_c,k. Then per position the two logsumexps over
// k give nll = lse(logits) - lse(lp). Pass 2 (gradient only), with the responsibilities
// w_k = softmax(lp)_k and pi_k = softmax(logits)_k:
//   d nll / d logit_k = pi_k - w_k,   d nll / d theta_{c,k} = -w_k d logp_{c,k} / d theta.
#include <algorithm>
#include <vector>

#include "dlml.h"

namespace gmcore {

namespace {

constexpr int64_t kTile = 64;

template <typename T, bool kGrad>
void run(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K, int64_t N,
         int64_t num_bins) {
  using namespace dlml;
  const Consts<T> kc = make_consts<T>(num_bins);
  const int64_t P = int64_t(K) * params_per_component(C);
  const int64_t tiles = (N + kTile - 1) / kTile;
  const int64_t work = B * tiles;
  const T lo = T(kLogScaleMin);

#pragma omp parallel if (B * N * K > 4096)
  {
    std::vector<T> lp(size_t(K) * kTile), el(size_t(K) * kTile), acc(kTile);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < work; ++t) {
      const int64_t b = t / tiles, n0 = (t % tiles) * kTile;
      const int64_t nt = std::min(kTile, N - n0);
      const T* xb = x + b * C * N + n0;
      const T* pb = params + b * P * N + n0;
      T* gb = kGrad ? grad + b * P * N + n0 : nullptr;

      for (int k = 0; k < K; ++k) {
        std::fill(acc.begin(), acc.begin() + nt, T(0));
        for (int c = 0; c < C; ++c) {
          const int64_t mo = (mean_ch(c, C, K) + k) * N, so = (lscale_ch(c, C, K) + k) * N;
          const int64_t q0 = c * (c - 1) / 2;
          for (int64_t i = 0; i < nt; ++i) {
            T mu = pb[mo + i];
            T th[2] = {T(0), T(0)};  // c <= 2: at most two earlier channels
            for (int j = 0; j < c; ++j) {
              th[j] = f_tanh(pb[(coeff_ch(q0 + j, C, K) + k) * N + i]);
              mu += th[j] * xb[j * N + i];
            }
            const T raw = pb[so + i];
            const T s = raw < lo ? lo : raw;  // NaN stays NaN
            const Term<T> tm = bin_term<T, kGrad>(xb[c * N + i], mu, s, kc);
            acc[i] += tm.logp;
            if (kGrad) {
              gb[mo + i] = tm.dmu;
              gb[so + i] = raw >= lo ? tm.ds : T(0);  // the clamp passes the gradient at -7
              for (int j = 0; j < c; ++j)
                gb[(coeff_ch(q0 + j, C, K) + k) * N + i] = tm.dmu * (T(1) - th[j] * th[j]) * xb[j * N + i];
            }
          }
        }
        for (int64_t i = 0; i < nt; ++i) lp[k * kTile + i] = pb[k * N + i] + acc[i];
      }

      T* out = nll + b * N + n0;
      for (int64_t i = 0; i < nt; ++i) {
        T m1 = pb[i], m2 = lp[i];
        for (int k = 1; k < K; ++k) {
          m1 = std::max(m1, pb[k * N + i]);
          m2 = std::max(m2, lp[k * kTile + i]);
        }
        T s1 = T(0), s2 = T(0);
        for (int k = 0; k < K; ++k) {
          const T e1 = f_exp(pb[k * N + i] - m1), e2 = f_exp(lp[k * kTile + i] - m2);
          el[k * kTile + i] = e1;
          lp[k * kTile + i] = e2;
          s1 += e1;
          s2 += e2;
        }
        out[i] = (m1 + f_log(s1)) - (m2 + f_log(s2));
        if (kGrad) {
          const T r1 = T(1) / s1, r2 = T(1) / s2;
          for (int k = 0; k < K; ++k) {
            el[k * kTile + i] *= r1;  // pi_k
            lp[k * kTile + i] *= r2;  // w_k
          }
        }
      }
      if (!kGrad) continue;
      for (int k = 0; k < K; ++k) {
        const T* w = &lp[k * kTile];
        const T* pi = &el[k * kTile];
        T* gl = gb + k * N;
        for (int64_t i = 0; i < nt; ++i) gl[i] = pi[i] - w[i];
        for (int c = 0; c < C; ++c) {
          T* gm = gb + (mean_ch(c, C, K) + k) * N;
          T* gs = gb + (lscale_ch(c, C, K) + k) * N;
          for (int64_t i = 0; i < nt; ++i) {
            gm[i] *= -w[i];
            gs[i] *= -w[i];
          }
        }
        for (int q = 0; q < C * (C - 1) / 2; ++q) {
          T* gc = gb + (coeff_ch(q, C, K) + k) * N;
          for (int64_t i = 0; i < nt; ++i) gc[i] *= -w[i];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void dlml_forward_cpu(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K,
                      int64_t N, int64_t num_bins) {
  if (grad)
    run<T, true>(x, params, nll, grad, B, C, K, N, num_bins);
  else
    run<T, false>(x, params, nll, grad, B, C, K, N, num_bins);
}

template void dlml_forward_cpu<float>(const float*, const float*, float*, float*, int64_t, int, int,
                                      int64_t, int64_t);
template void dlml_forward_cpu<double>(const double*, const double*, double*, double*, int64_t, int,
                                       int, int64_t, int64_t);

}  // namespace gmcore
