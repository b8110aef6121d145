// im2col / col2im on the CPU for gmcore.nn.functional's convolutions (layout in conv.h).
//
// Why compiled: NumPy builds the columns with one strided slice copy per tap and scatters them
// back with one strided += per tap over a padded (C, N, H, W) buffer, then transposes and
// crops it: several passes over arrays 16x the input for a 4x4 kernel. Here each (n, c) plane
// is copied once into a small zero-bordered scratch plane (in L1) and every column row is
// written once from it, with no bounds checks; col2im gathers each plane's taps in the same
// scratch and copies its interior out: no large padded buffer, no transpose.
//
// SERIAL on purpose, as csrc/masked_conv_cpu.cpp explains: these run between OpenBLAS GEMMs,
// whose spinning worker threads stall an OpenMP region started right after them.
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace gmcore {
namespace conv {
namespace {

// A zero-bordered copy of one (H, W) plane covering every position the taps read, so that the
// loops below need no bounds checks: with the small planes of strided layers (Wo = 4..16) the
// per-row range checks and edge fills cost more than the copies themselves.
struct PaddedPlane {
  int64_t Hp, Wp;
  std::vector<char> buf;  // raw bytes: T is the caller's

  PaddedPlane(int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g, size_t item)
      : Hp(std::max(g.pt + H, (Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1)),
        Wp(std::max(g.pl + W, (Wo - 1) * g.sw + (g.kw - 1) * g.dw + 1)),
        buf(static_cast<size_t>(Hp * Wp) * item, 0) {}

  template <typename T>
  T* data() {
    return reinterpret_cast<T*>(buf.data());
  }
};

}  // namespace

template <typename T>
void im2col_cpu(const T* x, T* cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                int64_t Wo, const Geometry& g) {
  const int64_t L = Ho * Wo;
  if (N * C * L == 0) return;
  PaddedPlane pad(H, W, Ho, Wo, g, sizeof(T));
  T* plane = pad.data<T>();
  const int64_t Wp = pad.Wp;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = 0; n < N; ++n) {
      // the interior only: the border stays zero from the allocation
      const T* src = x + (n * C + c) * H * W;
      for (int64_t iy = 0; iy < H; ++iy)
        std::memcpy(plane + (iy + g.pt) * Wp + g.pl, src + iy * W, sizeof(T) * W);
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t j = 0; j < g.kw; ++j) {
          T* dst = cols + ((c * g.kh + i) * g.kw + j) * N * L + n * L;
          const T* base = plane + i * g.dh * Wp + j * g.dw;
          for (int64_t oy = 0; oy < Ho; ++oy, dst += Wo) {
            const T* s = base + oy * g.sh * Wp;
            if (g.sw == 1)
              std::memcpy(dst, s, sizeof(T) * Wo);
            else
              for (int64_t ox = 0; ox < Wo; ++ox) dst[ox] = s[ox * g.sw];
          }
        }
    }
}

template <typename T>
void col2im_cpu(const T* cols, T* gx, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                int64_t Wo, const Geometry& g) {
  const int64_t L = Ho * Wo;
  if (L == 0) {
    std::fill(gx, gx + N * C * H * W, T(0));
    return;
  }
  PaddedPlane pad(H, W, Ho, Wo, g, sizeof(T));
  T* plane = pad.data<T>();
  const int64_t Wp = pad.Wp, Hp = pad.Hp;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      // each (n, c) plane gathers all its taps in the small padded scratch (it stays in L1),
      // then its interior is the gradient; what fell on the border is dropped
      std::fill(plane, plane + Hp * Wp, T(0));
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t j = 0; j < g.kw; ++j) {
          const T* src = cols + ((c * g.kh + i) * g.kw + j) * N * L + n * L;
          T* base = plane + i * g.dh * Wp + j * g.dw;
          for (int64_t oy = 0; oy < Ho; ++oy, src += Wo) {
            T* d = base + oy * g.sh * Wp;
            if (g.sw == 1) {
#pragma omp simd
              for (int64_t ox = 0; ox < Wo; ++ox) d[ox] += src[ox];
            } else {
              // one tap never reads a position twice: a plain += is the scatter-add
              for (int64_t ox = 0; ox < Wo; ++ox) d[ox * g.sw] += src[ox];
            }
          }
        }
      T* out = gx + (n * C + c) * H * W;
      for (int64_t iy = 0; iy < H; ++iy)
        std::memcpy(out + iy * W, plane + (iy + g.pt) * Wp + g.pl, sizeof(T) * W);
    }
}

template void im2col_cpu<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t, const Geometry&);
template void im2col_cpu<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, int64_t, const Geometry&);
template void col2im_cpu<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t, const Geometry&);
template void col2im_cpu<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, int64_t, const Geometry&);

}  // namespace conv
}  // namespace gmcore
