// Discretized logistic mixture NLL (+ fused gradient) on CUDA: one thread per position (b, n),
// the per-element math from dlml.h.
//
// Consecutive threads take consecutive n, so every load of a parameter row is coalesced.
// Pass 1 over the components keeps two online logsumexps (of the logits and of the component
// scores lp_k = logit_k + sum_c logp_c,k); with a gradient it parks lp_k in grad's logit slot
// and the unscaled per-channel derivatives in their slots. Pass 2 rescales them with the
// responsibilities w_k = exp(lp_k - lse(lp)) (see csrc/dlml_cpu.cpp for the formulas).
#include <cuda_runtime.h>

#include "cuda_util.h"
#include "dlml.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;

template <typename T>
struct Lse {
  T m, s;
  __device__ void push(T v) {
    if (v == -T(INFINITY)) return;  // a component with zero weight adds nothing
    if (v > m) {
      s = s * dlml::Libm::exp(m - v) + T(1);  // m = -inf at the start: exp(-inf) = 0
      m = v;
    } else {
      s += dlml::Libm::exp(v - m);
    }
  }
  __device__ T value() const { return m + dlml::Libm::log(s); }
};

template <typename T, bool kGrad>
__global__ void dlml_kernel(const T* __restrict__ x, const T* __restrict__ params,
                            T* __restrict__ nll, T* __restrict__ grad, int64_t B, int C, int K,
                            int64_t N, dlml::Consts<T> kc) {
  using namespace dlml;
  const int64_t P = int64_t(K) * params_per_component(C);
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < B * N;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / N, n = idx % N;
    const T* xb = x + b * C * N + n;
    const T* pb = params + b * P * N + n;
    T* gb = kGrad ? grad + b * P * N + n : nullptr;
    T xs[3];
    for (int c = 0; c < C; ++c) xs[c] = xb[c * N];
    Lse<T> l1{-T(INFINITY), T(0)}, l2{-T(INFINITY), T(0)};
    for (int k = 0; k < K; ++k) {
      T acc = T(0);
      for (int c = 0; c < C; ++c) {
        const int64_t mo = (mean_ch(c, C, K) + k) * N, so = (lscale_ch(c, C, K) + k) * N;
        const int q0 = c * (c - 1) / 2;
        T mu = pb[mo];
        T th[2] = {T(0), T(0)};
        for (int j = 0; j < c; ++j) {
          th[j] = Libm::tanh(pb[(coeff_ch(q0 + j, C, K) + k) * N]);
          mu += th[j] * xs[j];
        }
        const Term<T> tm = bin_term<T, kGrad, Libm>(xs[c], mu, pb[so], kc);
        acc += tm.logp;
        if (kGrad) {
          gb[mo] = tm.dmu;
          gb[so] = tm.ds;
          for (int j = 0; j < c; ++j)
            gb[(coeff_ch(q0 + j, C, K) + k) * N] = tm.dmu * (T(1) - th[j] * th[j]) * xs[j];
        }
      }
      const T logit = pb[k * N];
      const T lp = logit + acc;
      l1.push(logit);
      l2.push(lp);
      if (kGrad) gb[k * N] = lp;
    }
    const T lse1 = l1.value(), lse2 = l2.value();
    nll[b * N + n] = lse1 - lse2;
    if (kGrad) {
      for (int k = 0; k < K; ++k) {
        const T w = Libm::exp(gb[k * N] - lse2);
        gb[k * N] = Libm::exp(pb[k * N] - lse1) - w;
        for (int c = 0; c < C; ++c) {
          gb[(mean_ch(c, C, K) + k) * N] *= -w;
          gb[(lscale_ch(c, C, K) + k) * N] *= -w;
        }
        for (int q = 0; q < C * (C - 1) / 2; ++q) gb[(coeff_ch(q, C, K) + k) * N] *= -w;
      }
    }
  }
}

}  // namespace

template <typename T>
void dlml_forward_cuda(const T* x, const T* params, T* nll, T* grad, int64_t B, int C, int K,
                       int64_t N, int64_t num_bins, std::uintptr_t stream) {
  const int64_t total = B * N;
  if (total == 0) return;
  const auto kc = dlml::make_consts<T>(num_bins);
  const unsigned blocks = blocks_for(total, kThreads);
  if (grad) {
    dlml_kernel<T, true><<<blocks, kThreads, 0, as_stream(stream)>>>(x, params, nll, grad, B, C, K, N, kc);
  } else {
    dlml_kernel<T, false><<<blocks, kThreads, 0, as_stream(stream)>>>(x, params, nll, grad, B, C, K, N, kc);
  }
  cuda_check_launch("dlml_forward kernel launch");
}

template void dlml_forward_cuda<float>(const float*, const float*, float*, float*, int64_t, int, int,
                                       int64_t, int64_t, std::uintptr_t);
template void dlml_forward_cuda<double>(const double*, const double*, double*, double*, int64_t, int,
                                        int, int64_t, int64_t, std::uintptr_t);

}  // namespace gmcore
