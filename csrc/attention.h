// Fused scaled-dot-product attention: the per-row math, written once.
//
// Included by csrc/attention_cpu.cpp (host build: GM_HOST_DEVICE is empty) and csrc/attention.cu
// (nvcc), so the CPU tests exercise the arithmetic the GPU runs.
//
// Forward (flash-attention's online softmax): a query row i keeps a running max m, a running
// sum l = sum_j exp(s_ij - m) and an unnormalised output acc = sum_j exp(s_ij - m) v_j, with
// s_ij = scale * q_i.k_j + mask_ij.  A new block of keys with row max bm updates them as
//     m' = max(m, bm);  alpha = exp(m - m');  l' = alpha l + sum_j exp(s_ij - m');
//     acc' = alpha acc + sum_j exp(s_ij - m') v_j
// and the row ends with out_i = acc / l and lse_i = m + log(l).  The exponent shift is m' when
// finite and 0 otherwise: a row whose keys are all masked so far (m' = -inf) then gives
// exp(-inf) = 0 terms instead of exp(-inf + inf) = NaN, and ends with l = 0, out = 0 and
// lse = -inf (torch's safe softmax: all-masked rows give zero output).
//
// Backward, from the saved lse only (no L x S matrix is kept):
//     p_ij = exp(s_ij - lse_i)                     (0 where lse_i = -inf)
//     dv_j = sum_i p_ij do_i;   dp_ij = do_i.v_j;   delta_i = do_i.out_i = sum_j p_ij dp_ij
//     ds_ij = p_ij (dp_ij - delta_i)                (the gradient of the additive mask)
//     dq_i = scale sum_j ds_ij k_j;   dk_j = scale sum_i ds_ij q_i
//
// Causal masking is torch's top-left aligned lower triangle: query i sees keys j <= i (also
// when Lq != Lk).
#pragma once

#include <math.h>

#include <cstdint>

#include "host_device.h"

namespace gmcore {
namespace attn {

template <typename T>
GM_HOST_DEVICE inline T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// Float overloads picked explicitly so host and device round alike.
GM_HOST_DEVICE inline float ex(float x) { return expf(x); }
GM_HOST_DEVICE inline double ex(double x) { return exp(x); }
GM_HOST_DEVICE inline float lg(float x) { return logf(x); }
GM_HOST_DEVICE inline double lg(double x) { return log(x); }

// The exponent shift of a row whose running max is m: 0 while every score seen is -inf.
template <typename T>
GM_HOST_DEVICE inline T shift_of(T m) {
  return m == neg_inf<T>() ? T(0) : m;
}

// Whether key j takes part for query i under the (optional) causal mask.
GM_HOST_DEVICE inline bool causal_allows(bool causal, int64_t i, int64_t j) {
  return !causal || j <= i;
}

// Row end: lse = m + log(l), -inf for a row with no allowed key.
template <typename T>
GM_HOST_DEVICE inline T finish_lse(T m, T l) {
  return l > T(0) ? m + lg(l) : neg_inf<T>();
}

// 1 / l, or 0 for an all-masked row (its output is 0, as torch's).
template <typename T>
GM_HOST_DEVICE inline T inv_sum(T l) {
  return l > T(0) ? T(1) / l : T(0);
}

// Backward's probability, recomputed from the score and the saved row lse.
template <typename T>
GM_HOST_DEVICE inline T prob(T s, T lse) {
  return lse == neg_inf<T>() ? T(0) : ex(s - lse);
}

}  // namespace attn
}  // namespace gmcore

namespace gmcore {

// Host entry points (csrc/attention_cpu.cpp).  Arrays are C-contiguous: q (BH, L, E),
// k (BH, S, E), v (BH, S, Ev), o / do (BH, L, Ev), lse (BH, L).  An additive mask is optional
// (mask == nullptr): head b reads mask[moff[b] + i * mrs + j * mcs] (strides may be 0, so a
// broadcast mask is never materialised).
template <typename T>
void attention_forward_cpu(const T* q, const T* k, const T* v, const T* mask, const int64_t* moff,
                           int64_t mrs, int64_t mcs, T* o, T* lse, int64_t BH, int64_t L, int64_t S,
                           int64_t E, int64_t Ev, T scale, bool causal);

template <typename T>
void attention_backward_cpu(const T* q, const T* k, const T* v, const T* o, const T* dout,
                            const T* lse, const T* mask, const int64_t* moff, int64_t mrs,
                            int64_t mcs, T* dq, T* dk, T* dv, int64_t BH, int64_t L, int64_t S,
                            int64_t E, int64_t Ev, T scale, bool causal);

// CUDA entry points (csrc/attention.cu), same layouts, device pointers, on `stream`.
template <typename T>
void attention_forward_cuda(const T* q, const T* k, const T* v, const T* mask, const int64_t* moff,
                            int64_t mrs, int64_t mcs, T* o, T* lse, int64_t BH, int64_t L,
                            int64_t S, int64_t E, int64_t Ev, T scale, bool causal,
                            std::uintptr_t stream);

template <typename T>
void attention_backward_cuda(const T* q, const T* k, const T* v, const T* o, const T* dout,
                             const T* lse, const T* mask, const int64_t* moff, int64_t mrs,
                             int64_t mcs, T* dq, T* dk, T* dv, int64_t BH, int64_t L, int64_t S,
                             int64_t E, int64_t Ev, T scale, bool causal, std::uintptr_t stream);

}  // namespace gmcore
