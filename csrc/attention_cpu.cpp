// Fused scaled-dot-product attention on the CPU: flash-attention blocking, no BLAS.
//
// OpenMP runs over the (batch * heads) slices (split into runs of blocks when there are fewer
// slices than threads, see for_slices); each slice is processed in blocks of kBQ query rows x
// kBK keys, so the score tile, the operand panels and the accumulators stay in L1/L2 and no
// L x S matrix exists (forward keeps the per-row lse, backward recomputes the probabilities
// tile by tile; the math and its derivation are in attention.h).  The backward runs keys
// outer (dk, dv accumulate in a tile) and queries inner (dq accumulates in a slice buffer),
// flash-attention 2's order, so no two threads ever write the same gradient.
//
// Measured (2-core AMD EPYC, AVX2, one thread, CPU time, 64 slices of 256 x 256, E = 32):
// forward 11 ms, backward 20 ms, torch 2.13's CPU flash kernel ~47 ms for both.
//
// Every product is one shape, C[M x N] += sum_k A(m, k) B[k, n] with B's rows contiguous and
// N padded to the register tile: the slice's K is packed transposed (E x S) for q.k, V
// transposed for do.v, and the other operands are packed with padded rows.  The register
// tile (MR rows x two vectors) is written with GCC vector types, so it vectorises the same in
// the three builds of each slice function: baseline SSE2 (the build sets no -march), AVX2 +
// FMA and AVX-512, picked at run time by CPUID (as activation_cpu.cpp and coupling_cpu.cpp).
// float32 uses a Cephes-style polynomial exp on vectors (rel. error ~2e-7), float64 libm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")  // let the ?: selects become vector blends
// The vector helpers are always inlined into one build each: no vector crosses a call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "attention.h"

#if defined(_OPENMP)
#include <omp.h>
#else
inline int omp_get_max_threads() { return 1; }
#endif

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define GM_ATTN_MULTI_ISA 1
#define GM_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GM_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define GM_ATTN_MULTI_ISA 0
#endif
#define GM_ATTN_INLINE __attribute__((always_inline)) inline

namespace gmcore {

namespace {

constexpr int64_t kBQ = 64;  // query rows per block
constexpr int64_t kBK = 64;  // keys per block (a multiple of every register-tile width)
constexpr int kMR = 4;       // register tile rows

template <typename T, int V>
struct VecOf {
  typedef T type __attribute__((vector_size(V * sizeof(T))));
};
template <int V>
struct IntVecOf {
  typedef int32_t type __attribute__((vector_size(V * sizeof(int32_t))));
};

template <typename VT, typename T>
GM_ATTN_INLINE VT vload(const T* p) {
  VT v;
  std::memcpy(&v, p, sizeof(VT));
  return v;
}

template <typename VT, typename T>
GM_ATTN_INLINE void vstore(T* p, VT v) {
  std::memcpy(p, &v, sizeof(VT));
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// ---- register tile and panel product -----------------------------------------------------------

// C[MR x 2V] (+)= sum_k A(r, k) B[k, 0:2V], A(r, k) = A[r * sam + k * sak].
template <typename T, int V, int MR>
GM_ATTN_INLINE void tile(int64_t K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t ldb,
                         T* C, int64_t ldc, bool acc) {
  typedef typename VecOf<T, V>::type VT;
  VT c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    if (acc) {
      c0[r] = vload<VT>(C + r * ldc);
      c1[r] = vload<VT>(C + r * ldc + V);
    } else {
      c0[r] = VT{} ;
      c1[r] = VT{};
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const VT b0 = vload<VT>(B + k * ldb), b1 = vload<VT>(B + k * ldb + V);
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * sam + k * sak];
      c0[r] += a * b0;
      c1[r] += a * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    vstore(C + r * ldc, c0[r]);
    vstore(C + r * ldc + V, c1[r]);
  }
}

// C[M x N] (+)= A(M x K) B[K x N]; N is a multiple of 2V.
template <typename T, int V>
GM_ATTN_INLINE void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t sam, int64_t sak,
                         const T* B, int64_t ldb, T* C, int64_t ldc, bool acc) {
  for (int64_t n0 = 0; n0 < N; n0 += 2 * V) {
    int64_t m0 = 0;
    for (; m0 + kMR <= M; m0 += kMR)
      tile<T, V, kMR>(K, A + m0 * sam, sam, sak, B + n0, ldb, C + m0 * ldc + n0, ldc, acc);
    const T* a = A + m0 * sam;
    T* c = C + m0 * ldc + n0;
    switch (M - m0) {
      case 3: tile<T, V, 3>(K, a, sam, sak, B + n0, ldb, c, ldc, acc); break;
      case 2: tile<T, V, 2>(K, a, sam, sak, B + n0, ldb, c, ldc, acc); break;
      case 1: tile<T, V, 1>(K, a, sam, sak, B + n0, ldb, c, ldc, acc); break;
      default: break;
    }
  }
}

// ---- row operations ---------------------------------------------------------------------------

// exp on a float vector: n = round(x log2 e), r = x - n ln2 (two-part ln2), a degree-6
// polynomial, times 2^n built in the exponent bits.  Inputs below -87.3 give 0 (so -inf
// gives exactly 0), NaN stays NaN; inputs are <= 0 here (scores minus their row max / lse).
template <int V>
GM_ATTN_INLINE typename VecOf<float, V>::type exp_vec(typename VecOf<float, V>::type x) {
  typedef typename VecOf<float, V>::type F;
  typedef typename IntVecOf<V>::type I;
  const F hi = F{} + 88.0f, lo = F{} - 87.33654f;
  F xc = x < hi ? x : hi;
  xc = xc > lo ? xc : lo;
  const F magic = F{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const F fn = (xc * 1.44269504088896341f + magic) - magic;
  F r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const F y = p * r * r + r + 1.0f;
  const I n = __builtin_convertvector(fn, I);
  const F pow2n = (F)((n + 127) << 23);
  F res = y * pow2n;
  res = x < lo ? F{} : res;
  res = x != x ? x : res;
  return res;
}

// row[0:n] = exp(row - shift); returns the sum.  n is a multiple of 2V.
template <typename T, int V>
struct ExpRow {
  static GM_ATTN_INLINE T run(T* row, int64_t n, T shift) {
    T sum = 0;
    for (int64_t c = 0; c < n; ++c) {
      row[c] = attn::ex(row[c] - shift);
      sum += row[c];
    }
    return sum;
  }
};

template <int V>
struct ExpRow<float, V> {
  static GM_ATTN_INLINE float run(float* row, int64_t n, float shift) {
    typedef typename VecOf<float, V>::type F;
    F acc = F{};
    for (int64_t c = 0; c < n; c += V) {
      const F e = exp_vec<V>(vload<F>(row + c) - shift);
      vstore(row + c, e);
      acc += e;
    }
    float sum = 0;
    for (int l = 0; l < V; ++l) sum += acc[l];
    return sum;
  }
};

// Scores of one row of a tile: scale, add the mask, set the keys a row may not see (the
// padding, and for causal rows the tail past the diagonal) to -inf.  Returns the row max.
template <typename T, int V>
GM_ATTN_INLINE T score_row(T* row, int64_t bkp, int64_t lim, T scale, const T* mrow, int64_t mcs) {
  typedef typename VecOf<T, V>::type VT;
  for (int64_t c = 0; c < bkp; c += V) vstore(row + c, vload<VT>(row + c) * scale);
  if (mrow != nullptr)
    for (int64_t c = 0; c < lim; ++c) row[c] += mrow[c * mcs];
  for (int64_t c = std::max<int64_t>(lim, 0); c < bkp; ++c) row[c] = attn::neg_inf<T>();
  VT mx = VT{} + attn::neg_inf<T>();
  for (int64_t c = 0; c < bkp; c += V) {
    const VT x = vload<VT>(row + c);
    mx = x > mx ? x : mx;
  }
  T m = attn::neg_inf<T>();
  for (int l = 0; l < V; ++l) m = mx[l] > m ? mx[l] : m;
  return m;
}

// How many leading keys of block [j0, j0 + bk) query i may see.
GM_ATTN_INLINE int64_t visible(bool causal, int64_t i, int64_t j0, int64_t bk) {
  return causal ? std::min(bk, i - j0 + 1) : bk;
}

// Packs src (rows x cols, row-major) into dst (rows x ld), zero padded.
template <typename T>
void pack_rows(const T* src, int64_t rows, int64_t cols, T* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * ld, src + r * cols, sizeof(T) * cols);
    std::fill(dst + r * ld + cols, dst + (r + 1) * ld, T(0));
  }
}

// Packs src (rows x cols) transposed into dst (cols x ld), zero padded.
template <typename T>
void pack_transposed(const T* src, int64_t rows, int64_t cols, T* dst, int64_t ld) {
  std::fill(dst, dst + cols * ld, T(0));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ld + r] = src[r * cols + c];
}

template <typename T>
struct Slice {
  const T *q, *k, *v, *o, *dout, *lse, *mask;
  T *out, *out_lse, *dq, *dk, *dv;
  int64_t mrs, mcs, L, S, E, Ev;
  int64_t lo, hi;  // the part of the slice one work item does: query rows (forward), keys (backward)
  T scale;
  bool causal;
};

// ---- forward of one (batch, head) slice --------------------------------------------------------

template <typename T, int V>
GM_ATTN_INLINE void forward_slice(const Slice<T>& a) {
  const int64_t NR = 2 * V, S = a.S, E = a.E, Ev = a.Ev;
  const int64_t Sp = round_up(S, NR), Evp = round_up(Ev, NR);
  std::vector<T> kt(E * Sp), vp(S * Evp), st(kBQ * kBK), acc(kBQ * Evp);
  pack_transposed(a.k, S, E, kt.data(), Sp);
  pack_rows(a.v, S, Ev, vp.data(), Evp);
  T m[kBQ], l[kBQ];
  for (int64_t i0 = a.lo; i0 < a.hi; i0 += kBQ) {
    const int64_t bq = std::min(kBQ, a.hi - i0);
    std::fill(m, m + bq, attn::neg_inf<T>());
    std::fill(l, l + bq, T(0));
    std::fill(acc.begin(), acc.end(), T(0));
    const int64_t jend = a.causal ? std::min(S, i0 + bq) : S;  // later keys: masked for all rows
    for (int64_t j0 = 0; j0 < jend; j0 += kBK) {
      const int64_t bk = std::min(kBK, S - j0), bkp = round_up(bk, NR);
      gemm<T, V>(bq, bkp, E, a.q + i0 * E, E, 1, kt.data() + j0, Sp, st.data(), kBK, false);
      for (int64_t r = 0; r < bq; ++r) {
        const int64_t i = i0 + r;
        T* row = st.data() + r * kBK;
        const T* mrow = a.mask ? a.mask + i * a.mrs + j0 * a.mcs : nullptr;
        const T bm = score_row<T, V>(row, bkp, visible(a.causal, i, j0, bk), a.scale, mrow, a.mcs);
        const T mnew = bm > m[r] ? bm : m[r];
        const T shift = attn::shift_of(mnew);
        const T alpha = attn::ex(m[r] - shift);
        l[r] = l[r] * alpha + ExpRow<T, V>::run(row, bkp, shift);
        m[r] = mnew;
        if (alpha != T(1)) {
          T* arow = acc.data() + r * Evp;
          for (int64_t c = 0; c < Evp; ++c) arow[c] *= alpha;
        }
      }
      gemm<T, V>(bq, Evp, bk, st.data(), kBK, 1, vp.data() + j0 * Evp, Evp, acc.data(), Evp, true);
    }
    for (int64_t r = 0; r < bq; ++r) {
      const T inv = attn::inv_sum(l[r]);
      const T* arow = acc.data() + r * Evp;
      T* orow = a.out + (i0 + r) * Ev;
      for (int64_t c = 0; c < Ev; ++c) orow[c] = arow[c] * inv;
      a.out_lse[i0 + r] = attn::finish_lse(m[r], l[r]);
    }
  }
}

// ---- backward of one slice: keys outer (dk, dv stay in a tile), queries inner --------------------

template <typename T, int V>
GM_ATTN_INLINE void backward_slice(const Slice<T>& a) {
  const int64_t NR = 2 * V, L = a.L, S = a.S, E = a.E, Ev = a.Ev;
  const int64_t Sp = round_up(S, NR), Ep = round_up(E, NR), Evp = round_up(Ev, NR);
  std::vector<T> kt(E * Sp), vt(Ev * Sp), kp(S * Ep), qp(L * Ep), dop(L * Evp), dq(L * Ep, T(0));
  std::vector<T> pt(kBQ * kBK), dst(kBQ * kBK), dk(kBK * Ep), dv(kBK * Evp), delta(L);
  pack_transposed(a.k, S, E, kt.data(), Sp);
  pack_transposed(a.v, S, Ev, vt.data(), Sp);
  pack_rows(a.k, S, E, kp.data(), Ep);
  pack_rows(a.q, L, E, qp.data(), Ep);
  pack_rows(a.dout, L, Ev, dop.data(), Evp);
  for (int64_t i = 0; i < L; ++i) {
    T d = 0;
    for (int64_t c = 0; c < Ev; ++c) d += a.dout[i * Ev + c] * a.o[i * Ev + c];
    delta[i] = d;
  }
  for (int64_t j0 = a.lo; j0 < a.hi; j0 += kBK) {
    const int64_t bk = std::min(kBK, a.hi - j0), bkp = round_up(bk, NR);
    std::fill(dk.begin(), dk.end(), T(0));
    std::fill(dv.begin(), dv.end(), T(0));
    const int64_t istart = a.causal ? std::min(L, j0) / kBQ * kBQ : 0;  // earlier rows see none
    for (int64_t i0 = istart; i0 < L; i0 += kBQ) {
      const int64_t bq = std::min(kBQ, L - i0);
      gemm<T, V>(bq, bkp, E, qp.data() + i0 * Ep, Ep, 1, kt.data() + j0, Sp, pt.data(), kBK, false);
      for (int64_t r = 0; r < bq; ++r) {
        const int64_t i = i0 + r;
        T* row = pt.data() + r * kBK;
        const T* mrow = a.mask ? a.mask + i * a.mrs + j0 * a.mcs : nullptr;
        score_row<T, V>(row, bkp, visible(a.causal, i, j0, bk), a.scale, mrow, a.mcs);
        const T lse = a.lse[i];
        if (lse == attn::neg_inf<T>())
          std::fill(row, row + bkp, T(0));
        else
          ExpRow<T, V>::run(row, bkp, lse);
      }
      // dv += p^T do
      gemm<T, V>(bk, Evp, bq, pt.data(), 1, kBK, dop.data() + i0 * Evp, Evp, dv.data(), Evp, true);
      // dp = do v^T, then ds = p (dp - delta)
      gemm<T, V>(bq, bkp, Ev, dop.data() + i0 * Evp, Evp, 1, vt.data() + j0, Sp, dst.data(), kBK,
                 false);
      for (int64_t r = 0; r < bq; ++r) {
        const T d = delta[i0 + r];
        const T* prow = pt.data() + r * kBK;
        T* drow = dst.data() + r * kBK;
        for (int64_t c = 0; c < bkp; ++c) drow[c] = prow[c] * (drow[c] - d);
      }
      // dq += ds k;  dk += ds^T q  (both scaled at the end)
      gemm<T, V>(bq, Ep, bk, dst.data(), kBK, 1, kp.data() + j0 * Ep, Ep, dq.data() + i0 * Ep, Ep,
                 true);
      gemm<T, V>(bk, Ep, bq, dst.data(), 1, kBK, qp.data() + i0 * Ep, Ep, dk.data(), Ep, true);
    }
    for (int64_t r = 0; r < bk; ++r) {
      for (int64_t c = 0; c < E; ++c) a.dk[(j0 + r) * E + c] = dk[r * Ep + c] * a.scale;
      for (int64_t c = 0; c < Ev; ++c) a.dv[(j0 + r) * Ev + c] = dv[r * Evp + c];
    }
  }
  for (int64_t i = 0; i < L; ++i)
    for (int64_t c = 0; c < E; ++c) a.dq[i * E + c] = dq[i * Ep + c] * a.scale;
}

// ---- one build per instruction set ------------------------------------------------------------

template <typename T>
using SliceFn = void (*)(const Slice<T>&);

template <typename T>
void forward_base(const Slice<T>& a) { forward_slice<T, 16 / sizeof(T)>(a); }
template <typename T>
void backward_base(const Slice<T>& a) { backward_slice<T, 16 / sizeof(T)>(a); }

#if GM_ATTN_MULTI_ISA
template <typename T>
GM_TARGET_AVX2 void forward_avx2(const Slice<T>& a) { forward_slice<T, 32 / sizeof(T)>(a); }
template <typename T>
GM_TARGET_AVX2 void backward_avx2(const Slice<T>& a) { backward_slice<T, 32 / sizeof(T)>(a); }
template <typename T>
GM_TARGET_AVX512 void forward_avx512(const Slice<T>& a) { forward_slice<T, 64 / sizeof(T)>(a); }
template <typename T>
GM_TARGET_AVX512 void backward_avx512(const Slice<T>& a) { backward_slice<T, 64 / sizeof(T)>(a); }

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  return yes;
}
bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

template <typename T>
SliceFn<T> pick(bool backward) {
#if GM_ATTN_MULTI_ISA
  if (has_avx512()) return backward ? &backward_avx512<T> : &forward_avx512<T>;
  if (has_avx2()) return backward ? &backward_avx2<T> : &forward_avx2<T>;
#endif
  return backward ? &backward_base<T> : &forward_base<T>;
}

// Work items: each (batch*head) slice, split into `parts` runs of blocks (query blocks for the
// forward, key blocks for the backward) when there are too few slices to keep every thread
// busy.  A backward part writes its share of dq (a sum over keys) to a scratch copy; the copies
// are added up afterwards.  One thread when the whole job is small (waking the team costs more).
template <typename T>
void for_slices(SliceFn<T> fn, const Slice<T>& base, const int64_t* moff, int64_t BH,
                bool backward) {
  const int64_t L = base.L, S = base.S, E = base.E, Ev = base.Ev;
  if (BH == 0 || L == 0 || S == 0) {  // no products: zero outputs; rows without keys get lse -inf
    if (!backward) {
      std::fill(base.out, base.out + BH * L * Ev, T(0));
      std::fill(base.out_lse, base.out_lse + BH * L, attn::neg_inf<T>());
    } else {
      std::fill(base.dq, base.dq + BH * L * E, T(0));
      std::fill(base.dk, base.dk + BH * S * E, T(0));
      std::fill(base.dv, base.dv + BH * S * Ev, T(0));
    }
    return;
  }
  const double work = static_cast<double>(BH) * L * S * (E + Ev);
  const bool parallel = work > 2e5;
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  const int64_t len = backward ? S : L, blk = backward ? kBK : kBQ;
  const int64_t blocks = (len + blk - 1) / blk;
  const int64_t want = BH >= 2 * threads ? 1 : (2 * threads + BH - 1) / BH;
  const int64_t parts = std::max<int64_t>(1, std::min(blocks, want));
  const int64_t per = (blocks + parts - 1) / parts * blk;  // rows or keys per part
  std::vector<T> dq_parts(backward && parts > 1 ? BH * parts * L * E : 0);
#pragma omp parallel for schedule(dynamic, 1) if (parallel && BH * parts > 1)
  for (int64_t item = 0; item < BH * parts; ++item) {
    const int64_t b = item / parts, part = item % parts;
    Slice<T> s = base;
    s.lo = std::min(len, part * per);
    s.hi = std::min(len, s.lo + per);
    s.q = base.q + b * L * E;
    s.k = base.k + b * S * E;
    s.v = base.v + b * S * Ev;
    if (base.mask) s.mask = base.mask + moff[b];
    if (!backward) {
      s.out = base.out + b * L * Ev;
      s.out_lse = base.out_lse + b * L;
    } else {
      s.o = base.o + b * L * Ev;
      s.dout = base.dout + b * L * Ev;
      s.lse = base.lse + b * L;
      s.dq = parts > 1 ? dq_parts.data() + item * L * E : base.dq + b * L * E;
      s.dk = base.dk + b * S * E;
      s.dv = base.dv + b * S * Ev;
    }
    if (s.lo < s.hi) fn(s);
  }
  if (!dq_parts.empty()) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t b = 0; b < BH; ++b) {
      T* dst = base.dq + b * L * E;
      const T* src = dq_parts.data() + b * parts * L * E;
      for (int64_t i = 0; i < L * E; ++i) {
        T acc = 0;
        for (int64_t p = 0; p < parts; ++p)
          if (p * per < len) acc += src[p * L * E + i];
        dst[i] = acc;
      }
    }
  }
}

}  // namespace

template <typename T>
void attention_forward_cpu(const T* q, const T* k, const T* v, const T* mask, const int64_t* moff,
                           int64_t mrs, int64_t mcs, T* o, T* lse, int64_t BH, int64_t L, int64_t S,
                           int64_t E, int64_t Ev, T scale, bool causal) {
  Slice<T> s{};
  s.q = q, s.k = k, s.v = v, s.mask = mask, s.out = o, s.out_lse = lse;
  s.mrs = mrs, s.mcs = mcs, s.L = L, s.S = S, s.E = E, s.Ev = Ev, s.scale = scale, s.causal = causal;
  for_slices<T>(pick<T>(false), s, moff, BH, false);
}

template <typename T>
void attention_backward_cpu(const T* q, const T* k, const T* v, const T* o, const T* dout,
                            const T* lse, const T* mask, const int64_t* moff, int64_t mrs,
                            int64_t mcs, T* dq, T* dk, T* dv, int64_t BH, int64_t L, int64_t S,
                            int64_t E, int64_t Ev, T scale, bool causal) {
  Slice<T> s{};
  s.q = q, s.k = k, s.v = v, s.o = o, s.dout = dout, s.lse = lse, s.mask = mask;
  s.dq = dq, s.dk = dk, s.dv = dv;
  s.mrs = mrs, s.mcs = mcs, s.L = L, s.S = S, s.E = E, s.Ev = Ev, s.scale = scale, s.causal = causal;
  for_slices<T>(pick<T>(true), s, moff, BH, true);
}

#define GM_ATTN_INSTANTIATE(T)                                                                    \
  template void attention_forward_cpu<T>(const T*, const T*, const T*, const T*, const int64_t*, \
                                         int64_t, int64_t, T*, T*, int64_t, int64_t, int64_t,     \
                                         int64_t, int64_t, T, bool);                              \
  template void attention_backward_cpu<T>(const T*, const T*, const T*, const T*, const T*,       \
                                          const T*, const T*, const int64_t*, int64_t, int64_t,   \
                                          T*, T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                          T, bool);
GM_ATTN_INSTANTIATE(float)
GM_ATTN_INSTANTIATE(double)

}  // namespace gmcore
