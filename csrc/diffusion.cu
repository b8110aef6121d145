// Fused diffusion steps on CUDA; the math from diffusion.h.
//
// Elementwise ops: one thread per element, grid-stride over B * N (int64 offsets), the
// example's coefficients gathered from the table per element (the table is tiny and cached).
// Per-example losses: one block per example, a strided loop and a block reduction in double
// (deterministic, no scratch memory); the backward passes are elementwise.
#include <cuda_runtime.h>

#include "cuda_util.h"
#include "diffusion.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void q_sample_kernel(const T* __restrict__ x0, const T* __restrict__ noise,
                                const int64_t* __restrict__ t, const T* __restrict__ tab, int64_t nT,
                                T* __restrict__ out, int64_t B, int64_t N) {
  const int64_t total = B * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tb = t[i / N];
    out[i] = diff::q_sample_elem(x0[i], noise[i], diff::coef(tab, nT, diff::kSqrtAcp, tb),
                                 diff::coef(tab, nT, diff::kSqrt1mAcp, tb));
  }
}

template <typename T>
__global__ void predict_x0_kernel(const T* __restrict__ xt, const T* __restrict__ eps,
                                  const int64_t* __restrict__ t, const T* __restrict__ tab, int64_t nT,
                                  bool clip, T* __restrict__ out, int64_t B, int64_t N) {
  const int64_t total = B * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tb = t[i / N];
    out[i] = diff::predict_x0_elem(xt[i], eps[i], diff::coef(tab, nT, diff::kSqrtRecipAcp, tb),
                                   diff::coef(tab, nT, diff::kSqrtRecipm1Acp, tb), clip);
  }
}

template <typename T>
__global__ void ddpm_kernel(const T* __restrict__ xt, const T* __restrict__ mo, const T* __restrict__ noise,
                            const int64_t* __restrict__ t, const T* __restrict__ tab, int64_t nT,
                            int var_code, bool clip, T* __restrict__ out, int64_t B, int64_t N) {
  const int64_t total = B * N;
  const bool learned = var_code == diff::kLearnedRange;
  const int64_t stride = learned ? 2 * N : N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N, j = i - b * N;
    const diff::DdpmCoefs<T> c = diff::ddpm_coefs(tab, nT, t[b], var_code);
    const T e = mo[b * stride + j];
    const T v = learned ? mo[b * stride + N + j] : T(0);
    out[i] = diff::ddpm_elem(xt[i], e, v, noise[i], c, var_code, clip);
  }
}

template <typename T>
__global__ void ddim_kernel(const T* __restrict__ xt, const T* __restrict__ eps, const T* __restrict__ noise,
                            const int64_t* __restrict__ t, const int64_t* __restrict__ tp,
                            const T* __restrict__ tab, int64_t nT, T eta, bool clip, T* __restrict__ out,
                            int64_t B, int64_t N) {
  const int64_t total = B * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N;
    const diff::DdimCoefs<T> c = diff::ddim_coefs(tab, nT, t[b], tp[b], eta);
    out[i] = diff::ddim_elem(xt[i], eps[i], noise[i], c, clip);
  }
}

// Sum of two doubles over the block; the result is valid in thread 0.
__device__ inline double2 block_sum2(double a, double b) {
  __shared__ double sa[kThreads / 32], sb[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sa[warp] = a;
    sb[warp] = b;
  }
  __syncthreads();
  double2 r = make_double2(0.0, 0.0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) {
      r.x += sa[w];
      r.y += sb[w];
    }
  }
  return r;
}

template <typename T>
__global__ void eps_loss_fwd_kernel(const T* __restrict__ pred, const T* __restrict__ noise,
                                    const int64_t* __restrict__ t, const T* __restrict__ w,
                                    T* __restrict__ out, int64_t N) {
  const int64_t b = blockIdx.x;
  const T* p = pred + b * N;
  const T* n = noise + b * N;
  double acc = 0.0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const double d = static_cast<double>(p[j] - n[j]);
    acc += d * d;
  }
  const double2 s = block_sum2(acc, 0.0);
  if (threadIdx.x == 0) out[b] = static_cast<T>(static_cast<double>(w[t[b]]) * (s.x / static_cast<double>(N)));
}

template <typename T>
__global__ void eps_loss_bwd_kernel(const T* __restrict__ pred, const T* __restrict__ noise,
                                    const int64_t* __restrict__ t, const T* __restrict__ w,
                                    const T* __restrict__ g, T* __restrict__ grad, int64_t B, int64_t N) {
  const int64_t total = B * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N;
    const T s = static_cast<T>(2.0 * static_cast<double>(g[b]) * static_cast<double>(w[t[b]]) /
                               static_cast<double>(N));
    grad[i] = s * (pred[i] - noise[i]);
  }
}

template <typename T>
__global__ void hybrid_fwd_kernel(const T* __restrict__ mo, const T* __restrict__ x0, const T* __restrict__ xt,
                                  const T* __restrict__ noise, const int64_t* __restrict__ t,
                                  const T* __restrict__ tab, int64_t nT, const T* __restrict__ w,
                                  double vb_weight, T* __restrict__ out, int64_t N) {
  const int64_t b = blockIdx.x;
  const diff::VbCoefs<T> c = diff::vb_coefs(tab, nT, t[b]);
  const T* e = mo + b * 2 * N;
  const T* v = e + N;
  const int64_t o = b * N;
  double mse = 0.0, vb = 0.0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const double d = static_cast<double>(e[j] - noise[o + j]);
    mse += d * d;
    vb += static_cast<double>(diff::vb_elem(x0[o + j], xt[o + j], e[j], v[j], c).value);
  }
  const double2 s = block_sum2(mse, vb);
  if (threadIdx.x == 0) {
    const double n = static_cast<double>(N);
    out[b] = static_cast<T>(static_cast<double>(w[t[b]]) * (s.x / n + vb_weight * (s.y / n / diff::kLn2)));
  }
}

template <typename T>
__global__ void hybrid_bwd_kernel(const T* __restrict__ mo, const T* __restrict__ x0, const T* __restrict__ xt,
                                  const T* __restrict__ noise, const int64_t* __restrict__ t,
                                  const T* __restrict__ tab, int64_t nT, const T* __restrict__ w,
                                  double vb_weight, const T* __restrict__ g, T* __restrict__ grad,
                                  int64_t B, int64_t N) {
  const int64_t total = B * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N, j = i - b * N;
    const diff::VbCoefs<T> c = diff::vb_coefs(tab, nT, t[b]);
    const double gw = static_cast<double>(g[b]) * static_cast<double>(w[t[b]]);
    const T se = static_cast<T>(2.0 * gw / static_cast<double>(N));
    const T sv = static_cast<T>(gw * vb_weight / (static_cast<double>(N) * diff::kLn2));
    const int64_t eo = b * 2 * N + j;
    const T e = mo[eo];
    grad[eo] = se * (e - noise[i]);
    grad[eo + N] = sv * diff::vb_elem(x0[i], xt[i], e, mo[eo + N], c).d_v;
  }
}

inline void check_grid_rows(int64_t B, const char* what) {
  if (B > 2147483647LL) throw std::invalid_argument(std::string("gmcore._C: ") + what + ": batch too large");
}

}  // namespace

template <typename T>
void diffusion_q_sample_cuda(const T* x0, const T* noise, const int64_t* t, const T* tab, int64_t nT,
                             T* out, int64_t B, int64_t N, std::uintptr_t stream) {
  if (B * N == 0) return;
  q_sample_kernel<T><<<blocks_for(B * N, kThreads), kThreads, 0, as_stream(stream)>>>(x0, noise, t, tab, nT, out, B, N);
  cuda_check_launch("diffusion q_sample kernel launch");
}

template <typename T>
void diffusion_predict_x0_cuda(const T* xt, const T* eps, const int64_t* t, const T* tab, int64_t nT,
                               bool clip, T* out, int64_t B, int64_t N, std::uintptr_t stream) {
  if (B * N == 0) return;
  predict_x0_kernel<T><<<blocks_for(B * N, kThreads), kThreads, 0, as_stream(stream)>>>(xt, eps, t, tab, nT, clip, out, B, N);
  cuda_check_launch("diffusion predict_x0 kernel launch");
}

template <typename T>
void diffusion_ddpm_step_cuda(const T* xt, const T* model_out, const T* noise, const int64_t* t,
                              const T* tab, int64_t nT, int var_code, bool clip, T* out, int64_t B,
                              int64_t N, std::uintptr_t stream) {
  if (B * N == 0) return;
  ddpm_kernel<T><<<blocks_for(B * N, kThreads), kThreads, 0, as_stream(stream)>>>(xt, model_out, noise, t, tab, nT, var_code, clip, out, B, N);
  cuda_check_launch("diffusion ddpm_step kernel launch");
}

template <typename T>
void diffusion_ddim_step_cuda(const T* xt, const T* eps, const T* noise, const int64_t* t,
                              const int64_t* t_prev, const T* tab, int64_t nT, T eta, bool clip,
                              T* out, int64_t B, int64_t N, std::uintptr_t stream) {
  if (B * N == 0) return;
  ddim_kernel<T><<<blocks_for(B * N, kThreads), kThreads, 0, as_stream(stream)>>>(xt, eps, noise, t, t_prev, tab, nT, eta, clip, out, B, N);
  cuda_check_launch("diffusion ddim_step kernel launch");
}

template <typename T>
void diffusion_eps_loss_fwd_cuda(const T* pred, const T* noise, const int64_t* t, const T* w, T* out,
                                 int64_t B, int64_t N, std::uintptr_t stream) {
  if (B == 0) return;
  check_grid_rows(B, "diffusion eps_loss_fwd");
  eps_loss_fwd_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, as_stream(stream)>>>(pred, noise, t, w, out, N);
  cuda_check_launch("diffusion eps_loss_fwd kernel launch");
}

template <typename T>
void diffusion_eps_loss_bwd_cuda(const T* pred, const T* noise, const int64_t* t, const T* w,
                                 const T* g, T* grad, int64_t B, int64_t N, std::uintptr_t stream) {
  if (B * N == 0) return;
  eps_loss_bwd_kernel<T><<<blocks_for(B * N, kThreads), kThreads, 0, as_stream(stream)>>>(pred, noise, t, w, g, grad, B, N);
  cuda_check_launch("diffusion eps_loss_bwd kernel launch");
}

template <typename T>
void diffusion_hybrid_fwd_cuda(const T* model_out, const T* x0, const T* xt, const T* noise,
                               const int64_t* t, const T* tab, int64_t nT, const T* w,
                               double vb_weight, T* out, int64_t B, int64_t N, std::uintptr_t stream) {
  if (B == 0) return;
  check_grid_rows(B, "diffusion hybrid_fwd");
  hybrid_fwd_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, as_stream(stream)>>>(model_out, x0, xt, noise, t, tab, nT, w, vb_weight, out, N);
  cuda_check_launch("diffusion hybrid_fwd kernel launch");
}

template <typename T>
void diffusion_hybrid_bwd_cuda(const T* model_out, const T* x0, const T* xt, const T* noise,
                               const int64_t* t, const T* tab, int64_t nT, const T* w,
                               double vb_weight, const T* g, T* grad, int64_t B, int64_t N,
                               std::uintptr_t stream) {
  if (B * N == 0) return;
  hybrid_bwd_kernel<T><<<blocks_for(B * N, kThreads), kThreads, 0, as_stream(stream)>>>(model_out, x0, xt, noise, t, tab, nT, w, vb_weight, g, grad, B, N);
  cuda_check_launch("diffusion hybrid_bwd kernel launch");
}

#define GM_DIFFUSION_CUDA_INSTANTIATE(T)                                                                  \
  template void diffusion_q_sample_cuda<T>(const T*, const T*, const int64_t*, const T*, int64_t, T*,      \
                                           int64_t, int64_t, std::uintptr_t);                              \
  template void diffusion_predict_x0_cuda<T>(const T*, const T*, const int64_t*, const T*, int64_t, bool,  \
                                             T*, int64_t, int64_t, std::uintptr_t);                        \
  template void diffusion_ddpm_step_cuda<T>(const T*, const T*, const T*, const int64_t*, const T*,        \
                                            int64_t, int, bool, T*, int64_t, int64_t, std::uintptr_t);     \
  template void diffusion_ddim_step_cuda<T>(const T*, const T*, const T*, const int64_t*, const int64_t*,  \
                                            const T*, int64_t, T, bool, T*, int64_t, int64_t,              \
                                            std::uintptr_t);                                               \
  template void diffusion_eps_loss_fwd_cuda<T>(const T*, const T*, const int64_t*, const T*, T*, int64_t,  \
                                               int64_t, std::uintptr_t);                                   \
  template void diffusion_eps_loss_bwd_cuda<T>(const T*, const T*, const int64_t*, const T*, const T*, T*, \
                                               int64_t, int64_t, std::uintptr_t);                          \
  template void diffusion_hybrid_fwd_cuda<T>(const T*, const T*, const T*, const T*, const int64_t*,       \
                                             const T*, int64_t, const T*, double, T*, int64_t, int64_t,    \
                                             std::uintptr_t);                                              \
  template void diffusion_hybrid_bwd_cuda<T>(const T*, const T*, const T*, const T*, const int64_t*,       \
                                             const T*, int64_t, const T*, double, const T*, T*, int64_t,   \
                                             int64_t, std::uintptr_t);

GM_DIFFUSION_CUDA_INSTANTIATE(float)
GM_DIFFUSION_CUDA_INSTANTIATE(double)
#undef GM_DIFFUSION_CUDA_INSTANTIATE

}  // namespace gmcore
