// Pointwise activations on the CPU: OpenMP over chunks, the per-element math from activation.h.
//
// One pass per direction: forward reads x and writes y; backward reads g and x and writes dx
// (the NumPy reference makes 5-15 temporaries).  float32 uses the FastF polynomials, float64
// libm.  Each chunk loop is compiled three times (baseline SSE2: the build sets no -march; AVX2 +
// FMA; AVX-512) and picked at run time by CPUID, as in coupling_cpu.cpp.  Arrays below
// kParallelMin elements run on the calling thread: waking the (passive) OpenMP team costs more
// than the work.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")  // let the ?: selects become vector blends
#endif

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "activation.h"

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define GM_ACT_MULTI_ISA 1
#define GM_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GM_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define GM_ACT_MULTI_ISA 0
#endif

namespace gmcore {

namespace {

constexpr int64_t kChunk = 8192;         // elements per OpenMP work item
constexpr int64_t kParallelMin = 65536;  // below this, one thread

template <typename T>
using Policy =
    typename std::conditional<std::is_same<T, float>::value, act::FastF, act::Libm>::type;

// ---- chunk bodies (restrict pointers: inside OpenMP's outlined body the vectoriser cannot
// prove the arrays distinct) -------------------------------------------------------------------

template <int OP, typename T>
GM_ACT_INLINE void fwd_body(const T* __restrict x, T* __restrict y, int64_t n, T a, T b) {
  for (int64_t i = 0; i < n; ++i) y[i] = act::forward<OP, T, Policy<T>>(x[i], a, b);
}

// GS: g is one value broadcast to every element (the gradient of y.sum()): no copy of it.
template <int OP, typename T, bool GS>
GM_ACT_INLINE void bwd_body(const T* __restrict g, const T* __restrict x, T* __restrict dx,
                            int64_t n, T a, T b) {
  const T g0 = g[0];
  for (int64_t i = 0; i < n; ++i)
    dx[i] = act::backward<OP, T, Policy<T>>(GS ? g0 : g[i], x[i], a, b);
}

template <typename T>
GM_ACT_INLINE void cat_fwd_body(const T* __restrict x, T* __restrict y1, T* __restrict y2,
                                int64_t n, T alpha) {
  for (int64_t i = 0; i < n; ++i) {
    T u, v;
    act::concat_elu_forward<T, Policy<T>>(x[i], alpha, &u, &v);
    y1[i] = u;
    y2[i] = v;
  }
}

template <typename T>
GM_ACT_INLINE void cat_bwd_body(const T* __restrict g1, const T* __restrict g2,
                                const T* __restrict x, T* __restrict dx, int64_t n, T alpha) {
  for (int64_t i = 0; i < n; ++i)
    dx[i] = act::concat_elu_backward<T, Policy<T>>(g1[i], g2[i], x[i], alpha);
}

// Every body behind one signature, so that one template per ISA covers them all:
// K::run(in0, in1, in2, out0, out1, n, a, b) with K naming the body and the dtype (K::T).
template <int OP, typename T_>
struct Fwd {
  using T = T_;
  static GM_ACT_INLINE void run(const T* x, const T*, const T*, T* y, T*, int64_t n, T a, T b) {
    fwd_body<OP, T>(x, y, n, a, b);
  }
};
template <int OP, typename T_, bool GS>
struct Bwd {
  using T = T_;
  static GM_ACT_INLINE void run(const T* g, const T* x, const T*, T* dx, T*, int64_t n, T a,
                                T b) {
    bwd_body<OP, T, GS>(g, x, dx, n, a, b);
  }
};
template <typename T_>
struct CatFwd {  // out0, out1: the two halves of the output row
  using T = T_;
  static GM_ACT_INLINE void run(const T* x, const T*, const T*, T* y1, T* y2, int64_t n, T alpha,
                                T) {
    cat_fwd_body<T>(x, y1, y2, n, alpha);
  }
};
template <typename T_>
struct CatBwd {  // in0, in1: the two halves of the gradient row, in2: x
  using T = T_;
  static GM_ACT_INLINE void run(const T* g1, const T* g2, const T* x, T* dx, T*, int64_t n,
                                T alpha, T) {
    cat_bwd_body<T>(g1, g2, x, dx, n, alpha);
  }
};

template <class K>
using SpanFn = void (*)(const typename K::T*, const typename K::T*, const typename K::T*,
                        typename K::T*, typename K::T*, int64_t, typename K::T, typename K::T);

template <class K>
void span_base(const typename K::T* i0, const typename K::T* i1, const typename K::T* i2,
               typename K::T* o0, typename K::T* o1, int64_t n, typename K::T a, typename K::T b) {
  K::run(i0, i1, i2, o0, o1, n, a, b);
}

#if GM_ACT_MULTI_ISA
template <class K>
GM_TARGET_AVX2 void span_avx2(const typename K::T* i0, const typename K::T* i1,
                              const typename K::T* i2, typename K::T* o0, typename K::T* o1,
                              int64_t n, typename K::T a, typename K::T b) {
  K::run(i0, i1, i2, o0, o1, n, a, b);
}

template <class K>
GM_TARGET_AVX512 void span_avx512(const typename K::T* i0, const typename K::T* i1,
                                  const typename K::T* i2, typename K::T* o0, typename K::T* o1,
                                  int64_t n, typename K::T a, typename K::T b) {
  K::run(i0, i1, i2, o0, o1, n, a, b);
}

bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  return yes;
}

bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

template <class K>
SpanFn<K> pick() {
#if GM_ACT_MULTI_ISA
  if (cpu_has_avx512()) return &span_avx512<K>;
  if (cpu_has_avx2()) return &span_avx2<K>;
#endif
  return &span_base<K>;
}

// Runs fn(lo, hi) over [0, n) in chunks, in parallel when n is large.
template <typename Fn>
void for_chunks(int64_t n, Fn fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk));
}

template <int OP, typename T>
void forward_op(const T* x, T* y, int64_t n, T a, T b) {
  const auto span = pick<Fwd<OP, T>>();
  for_chunks(n, [&](int64_t lo, int64_t hi) {
    span(x + lo, nullptr, nullptr, y + lo, nullptr, hi - lo, a, b);
  });
}

template <int OP, typename T>
void backward_op(const T* g, const T* x, T* dx, int64_t n, T a, T b, bool g_scalar) {
  if (g_scalar) {
    const auto span = pick<Bwd<OP, T, true>>();
    for_chunks(n, [&](int64_t lo, int64_t hi) {
      span(g, x + lo, nullptr, dx + lo, nullptr, hi - lo, a, b);
    });
    return;
  }
  const auto span = pick<Bwd<OP, T, false>>();
  for_chunks(n, [&](int64_t lo, int64_t hi) {
    span(g + lo, x + lo, nullptr, dx + lo, nullptr, hi - lo, a, b);
  });
}

[[noreturn]] void bad_op(int op) {
  throw std::invalid_argument("activation: unknown op code " + std::to_string(op));
}

}  // namespace

template <typename T>
void activation_forward_cpu(int op, const T* x, T* y, int64_t n, T a, T b) {
  switch (op) {
    case act::kGelu: return forward_op<act::kGelu, T>(x, y, n, a, b);
    case act::kGeluTanh: return forward_op<act::kGeluTanh, T>(x, y, n, a, b);
    case act::kSilu: return forward_op<act::kSilu, T>(x, y, n, a, b);
    case act::kElu: return forward_op<act::kElu, T>(x, y, n, a, b);
    case act::kLeakyRelu: return forward_op<act::kLeakyRelu, T>(x, y, n, a, b);
    case act::kSoftplus: return forward_op<act::kSoftplus, T>(x, y, n, a, b);
    case act::kMish: return forward_op<act::kMish, T>(x, y, n, a, b);
    default: bad_op(op);
  }
}

template <typename T>
void activation_backward_cpu(int op, const T* g, const T* x, T* dx, int64_t n, T a, T b,
                             bool g_scalar) {
  switch (op) {
    case act::kGelu: return backward_op<act::kGelu, T>(g, x, dx, n, a, b, g_scalar);
    case act::kGeluTanh: return backward_op<act::kGeluTanh, T>(g, x, dx, n, a, b, g_scalar);
    case act::kSilu: return backward_op<act::kSilu, T>(g, x, dx, n, a, b, g_scalar);
    case act::kElu: return backward_op<act::kElu, T>(g, x, dx, n, a, b, g_scalar);
    case act::kLeakyRelu: return backward_op<act::kLeakyRelu, T>(g, x, dx, n, a, b, g_scalar);
    case act::kSoftplus: return backward_op<act::kSoftplus, T>(g, x, dx, n, a, b, g_scalar);
    case act::kMish: return backward_op<act::kMish, T>(g, x, dx, n, a, b, g_scalar);
    default: bad_op(op);
  }
}

// concat_elu: (row, chunk) work items so that a few long rows, or many short ones, use every core.
template <typename T>
void concat_elu_forward_cpu(const T* x, T* y, int64_t rows, int64_t n, T alpha) {
  if (rows == 0 || n == 0) return;
  const auto span = pick<CatFwd<T>>();
  const int64_t nch = (n + kChunk - 1) / kChunk, tasks = rows * nch;
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t r = task / nch, lo = (task - r * nch) * kChunk, hi = std::min(n, lo + kChunk);
    T* yr = y + r * 2 * n;
    span(x + r * n + lo, nullptr, nullptr, yr + lo, yr + n + lo, hi - lo, alpha, T(0));
  }
}

template <typename T>
void concat_elu_backward_cpu(const T* g, const T* x, T* dx, int64_t rows, int64_t n, T alpha) {
  if (rows == 0 || n == 0) return;
  const auto span = pick<CatBwd<T>>();
  const int64_t nch = (n + kChunk - 1) / kChunk, tasks = rows * nch;
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t r = task / nch, lo = (task - r * nch) * kChunk, hi = std::min(n, lo + kChunk);
    const T* gr = g + r * 2 * n;
    span(gr + lo, gr + n + lo, x + r * n + lo, dx + r * n + lo, nullptr, hi - lo, alpha, T(0));
  }
}

#define GM_ACT_INSTANTIATE(T)                                                                  \
  template void activation_forward_cpu<T>(int, const T*, T*, int64_t, T, T);                   \
  template void activation_backward_cpu<T>(int, const T*, const T*, T*, int64_t, T, T, bool);  \
  template void concat_elu_forward_cpu<T>(const T*, T*, int64_t, int64_t, T);                  \
  template void concat_elu_backward_cpu<T>(const T*, const T*, T*, int64_t, int64_t, T);
GM_ACT_INSTANTIATE(float)
GM_ACT_INSTANTIATE(double)
#undef GM_ACT_INSTANTIATE

}  // namespace gmcore
