// Fused scaled-dot-product attention on CUDA: the second GPU path (Triton's flash kernels in
// kernels/triton/attention.py are the primary one), written for clarity and cross-checks.
//
// One thread per query row (forward, dq) or per key (dk, dv), the math from attention.h; each
// thread accumulates straight into the row of the output it owns, so no atomics are needed and
// results are deterministic.  Forward keeps the online-softmax state in registers and saves
// only the row lse; backward recomputes the probabilities from it.
#include <cuda_runtime.h>

#include "attention.h"
#include "cuda_util.h"

namespace gmcore {

namespace {

constexpr int kThreads = 128;

template <typename T>
__device__ inline T score(const T* __restrict__ qi, const T* __restrict__ kj, int64_t E, T scale,
                          const T* __restrict__ mrow, int64_t j, int64_t mcs) {
  T s = 0;
  for (int64_t e = 0; e < E; ++e) s += qi[e] * kj[e];
  s *= scale;
  if (mrow != nullptr) s += mrow[j * mcs];
  return s;
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                               const T* __restrict__ v, const T* __restrict__ mask,
                               const int64_t* __restrict__ moff, int64_t mrs, int64_t mcs,
                               T* __restrict__ o, T* __restrict__ lse, int64_t L, int64_t S,
                               int64_t E, int64_t Ev, T scale, bool causal) {
  const int64_t b = blockIdx.x, i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (i >= L) return;
  const T* qi = q + (b * L + i) * E;
  const T* kb = k + b * S * E;
  const T* vb = v + b * S * Ev;
  const T* mrow = mask != nullptr ? mask + moff[b] + i * mrs : nullptr;
  T* oi = o + (b * L + i) * Ev;
  for (int64_t c = 0; c < Ev; ++c) oi[c] = T(0);
  T m = attn::neg_inf<T>(), l = T(0);
  const int64_t jend = causal ? (i + 1 < S ? i + 1 : S) : S;
  for (int64_t j = 0; j < jend; ++j) {
    const T s = score(qi, kb + j * E, E, scale, mrow, j, mcs);
    const T mnew = s > m ? s : m;
    const T shift = attn::shift_of(mnew);
    const T alpha = attn::ex(m - shift), p = attn::ex(s - shift);
    l = l * alpha + p;
    m = mnew;
    const T* vj = vb + j * Ev;
    for (int64_t c = 0; c < Ev; ++c) oi[c] = oi[c] * alpha + p * vj[c];
  }
  const T inv = attn::inv_sum(l);
  for (int64_t c = 0; c < Ev; ++c) oi[c] *= inv;
  lse[b * L + i] = attn::finish_lse(m, l);
}

// delta_i = do_i . out_i
template <typename T>
__global__ void delta_kernel(const T* __restrict__ o, const T* __restrict__ dout,
                             T* __restrict__ delta, int64_t rows, int64_t Ev) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  T d = 0;
  for (int64_t c = 0; c < Ev; ++c) d += o[r * Ev + c] * dout[r * Ev + c];
  delta[r] = d;
}

// dq_i = scale sum_j ds_ij k_j: one thread per query row.
template <typename T>
__global__ void dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                          const T* __restrict__ dout, const T* __restrict__ lse,
                          const T* __restrict__ delta, const T* __restrict__ mask,
                          const int64_t* __restrict__ moff, int64_t mrs, int64_t mcs,
                          T* __restrict__ dq, int64_t L, int64_t S, int64_t E, int64_t Ev, T scale,
                          bool causal) {
  const int64_t b = blockIdx.x, i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (i >= L) return;
  const T* qi = q + (b * L + i) * E;
  const T* gi = dout + (b * L + i) * Ev;
  const T* mrow = mask != nullptr ? mask + moff[b] + i * mrs : nullptr;
  const T li = lse[b * L + i], di = delta[b * L + i];
  T* dqi = dq + (b * L + i) * E;
  for (int64_t e = 0; e < E; ++e) dqi[e] = T(0);
  const int64_t jend = causal ? (i + 1 < S ? i + 1 : S) : S;
  for (int64_t j = 0; j < jend; ++j) {
    const T p = attn::prob(score(qi, k + (b * S + j) * E, E, scale, mrow, j, mcs), li);
    const T* vj = v + (b * S + j) * Ev;
    T dp = 0;
    for (int64_t c = 0; c < Ev; ++c) dp += gi[c] * vj[c];
    const T ds = p * (dp - di) * scale;
    const T* kj = k + (b * S + j) * E;
    for (int64_t e = 0; e < E; ++e) dqi[e] += ds * kj[e];
  }
}

// dk_j = scale sum_i ds_ij q_i, dv_j = sum_i p_ij do_i: one thread per key.
template <typename T>
__global__ void dkv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                           const T* __restrict__ dout, const T* __restrict__ lse,
                           const T* __restrict__ delta, const T* __restrict__ mask,
                           const int64_t* __restrict__ moff, int64_t mrs, int64_t mcs,
                           T* __restrict__ dk, T* __restrict__ dv, int64_t L, int64_t S, int64_t E,
                           int64_t Ev, T scale, bool causal) {
  const int64_t b = blockIdx.x, j = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (j >= S) return;
  const T* kj = k + (b * S + j) * E;
  const T* vj = v + (b * S + j) * Ev;
  T* dkj = dk + (b * S + j) * E;
  T* dvj = dv + (b * S + j) * Ev;
  for (int64_t e = 0; e < E; ++e) dkj[e] = T(0);
  for (int64_t c = 0; c < Ev; ++c) dvj[c] = T(0);
  for (int64_t i = causal ? j : 0; i < L; ++i) {
    const T* qi = q + (b * L + i) * E;
    const T* gi = dout + (b * L + i) * Ev;
    const T* mrow = mask != nullptr ? mask + moff[b] + i * mrs : nullptr;
    const T p = attn::prob(score(qi, kj, E, scale, mrow, j, mcs), lse[b * L + i]);
    T dp = 0;
    for (int64_t c = 0; c < Ev; ++c) {
      dp += gi[c] * vj[c];
      dvj[c] += p * gi[c];
    }
    const T ds = p * (dp - delta[b * L + i]) * scale;
    for (int64_t e = 0; e < E; ++e) dkj[e] += ds * qi[e];
  }
}

// Slices on x (up to 2^31 - 1 of them), row (or key) blocks on y (up to 65535 * kThreads rows).
dim3 grid_for(int64_t n, int64_t BH) {
  return dim3(static_cast<unsigned>(BH), static_cast<unsigned>((n + kThreads - 1) / kThreads));
}

}  // namespace

template <typename T>
void attention_forward_cuda(const T* q, const T* k, const T* v, const T* mask, const int64_t* moff,
                            int64_t mrs, int64_t mcs, T* o, T* lse, int64_t BH, int64_t L,
                            int64_t S, int64_t E, int64_t Ev, T scale, bool causal,
                            std::uintptr_t stream) {
  if (BH == 0 || L == 0) return;
  forward_kernel<T><<<grid_for(L, BH), kThreads, 0, as_stream(stream)>>>(
      q, k, v, mask, moff, mrs, mcs, o, lse, L, S, E, Ev, scale, causal);
  cuda_check_launch("attention forward_kernel");
}

template <typename T>
void attention_backward_cuda(const T* q, const T* k, const T* v, const T* o, const T* dout,
                             const T* lse, const T* mask, const int64_t* moff, int64_t mrs,
                             int64_t mcs, T* dq, T* dk, T* dv, int64_t BH, int64_t L, int64_t S,
                             int64_t E, int64_t Ev, T scale, bool causal, std::uintptr_t stream) {
  if (BH == 0) return;
  const cudaStream_t st = as_stream(stream);
  T* delta = nullptr;
  if (L > 0) {
    cuda_check(cudaMallocAsync(reinterpret_cast<void**>(&delta), sizeof(T) * BH * L, st),
               "attention cudaMallocAsync");
    delta_kernel<T><<<blocks_for(BH * L, kThreads), kThreads, 0, st>>>(o, dout, delta, BH * L, Ev);
    cuda_check_launch("attention delta_kernel");
    dq_kernel<T><<<grid_for(L, BH), kThreads, 0, st>>>(q, k, v, dout, lse, delta, mask, moff, mrs,
                                                       mcs, dq, L, S, E, Ev, scale, causal);
    cuda_check_launch("attention dq_kernel");
  }
  if (S > 0) {
    dkv_kernel<T><<<grid_for(S, BH), kThreads, 0, st>>>(q, k, v, dout, lse, delta, mask, moff, mrs,
                                                        mcs, dk, dv, L, S, E, Ev, scale, causal);
    cuda_check_launch("attention dkv_kernel");
  }
  if (delta != nullptr) cuda_check(cudaFreeAsync(delta, st), "attention cudaFreeAsync");
}

template void attention_forward_cuda<float>(const float*, const float*, const float*, const float*,
                                            const int64_t*, int64_t, int64_t, float*, float*,
                                            int64_t, int64_t, int64_t, int64_t, int64_t, float,
                                            bool, std::uintptr_t);
template void attention_forward_cuda<double>(const double*, const double*, const double*,
                                             const double*, const int64_t*, int64_t, int64_t,
                                             double*, double*, int64_t, int64_t, int64_t, int64_t,
                                             int64_t, double, bool, std::uintptr_t);
template void attention_backward_cuda<float>(const float*, const float*, const float*, const float*,
                                             const float*, const float*, const float*,
                                             const int64_t*, int64_t, int64_t, float*, float*,
                                             float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                             float, bool, std::uintptr_t);
template void attention_backward_cuda<double>(const double*, const double*, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const int64_t*, int64_t, int64_t,
                                              double*, double*, double*, int64_t, int64_t, int64_t,
                                              int64_t, int64_t, double, bool, std::uintptr_t);

}  // namespace gmcore
