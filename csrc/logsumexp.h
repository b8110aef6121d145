// Row-wise logsumexp / softmax: the per-element math, written once.
//
// Included by csrc/logsumexp_cpu.cpp (host build: GM_HOST_DEVICE is empty) and by
// csrc/logsumexp.cu (nvcc: __host__ __device__), so the CPU tests exercise the same
// arithmetic the GPU runs.
//
// Online form: a row is summarised by a pair (m, s) with s = sum_i exp(x_i - m) and
// m = max_i x_i.  Two summaries combine as
//     m = max(m1, m2),  s = s1 * exp(m1 - m) + s2 * exp(m2 - m)
// and the row's value is m + log(s).  Special values follow the reference
//     m = max(x);  m_safe = m if finite else 0;  m_safe + log(sum(exp(x - m_safe)))
// (the guard is what scipy and torch do):
//   * all entries -inf  -> (m=-inf, s=0)  -> -inf
//   * any entry +inf    -> (m=+inf, s=1)  -> +inf
//   * any entry NaN     -> (m=NaN)        -> NaN   (NaN wins over +inf)
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "gm_math.h"
#include "host_device.h"

namespace gmcore {
namespace lse {

using math::gm_exp;  // float overloads named explicitly: host and device round alike
using math::gm_log;

template <typename T>
struct State {
  T m;  // running max (or NaN once a NaN was seen)
  T s;  // sum of exp(x - m)
};

template <typename T>
GM_HOST_DEVICE inline T neg_inf() {
  return -static_cast<T>(INFINITY);  // the C macro works on host and device alike
}

template <typename T>
GM_HOST_DEVICE inline State<T> init() {
  return State<T>{neg_inf<T>(), T(0)};
}

// Combine two summaries.  True selects only: no blends that leak inf/NaN.
template <typename T>
GM_HOST_DEVICE inline State<T> combine(State<T> a, State<T> b) {
  if (a.m != a.m) return a;  // NaN propagates
  if (b.m != b.m) return b;
  T m = a.m > b.m ? a.m : b.m;
  if (m == neg_inf<T>()) return State<T>{m, T(0)};   // both empty / all -inf
  if (m == -neg_inf<T>()) return State<T>{m, T(1)};  // +inf present: result +inf
  T s = a.s * gm_exp(a.m - m) + b.s * gm_exp(b.m - m);  // exp(-inf) == 0: empty sides add 0
  return State<T>{m, s};
}

// Push one element (the hot loop): one exp per element.
template <typename T>
GM_HOST_DEVICE inline State<T> push(State<T> st, T x) {
  if (st.m != st.m) return st;
  if (x != x) return State<T>{x, T(0)};
  if (x > st.m) {
    if (x == -neg_inf<T>()) return State<T>{x, T(1)};
    // st.m may be -inf here: exp(-inf) == 0 and st.s == 0, fine.
    return State<T>{x, st.s * gm_exp(st.m - x) + T(1)};
  }
  if (st.m == -neg_inf<T>() || x == neg_inf<T>()) return st;  // +inf row, or a zero term
  return State<T>{st.m, st.s + gm_exp(x - st.m)};
}

// Row value from a summary.  -inf + log(0) = -inf; inf + log(1) = inf; NaN stays NaN.
template <typename T>
GM_HOST_DEVICE inline T finalize(State<T> st) {
  if (st.m == neg_inf<T>()) return st.m;
  return st.m + gm_log(st.s);
}

// softmax element from the row's logsumexp.
template <typename T>
GM_HOST_DEVICE inline T softmax_elem(T x, T lse_row) {
  return gm_exp(x - lse_row);
}

}  // namespace lse

// Launchers (host functions).  CPU: csrc/logsumexp_cpu.cpp.  CUDA: csrc/logsumexp.cu.
// Arrays are contiguous (rows, cols); out_lse has `rows` entries, out_softmax rows*cols.
template <typename T>
void logsumexp_rows_cpu(const T* x, T* out, int64_t rows, int64_t cols);
template <typename T>
void softmax_rows_cpu(const T* x, T* out, int64_t rows, int64_t cols);

#if defined(GMCORE_WITH_CUDA)
// Device pointers; `stream` is a cudaStream_t passed as an integer.  Throw
// std::runtime_error naming the CUDA error on failure.
template <typename T>
void logsumexp_rows_cuda(const T* x, T* out, int64_t rows, int64_t cols, std::uintptr_t stream);
template <typename T>
void softmax_rows_cuda(const T* x, T* out, int64_t rows, int64_t cols, std::uintptr_t stream);
#endif

}  // namespace gmcore
