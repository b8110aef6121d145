// Tap convolution on the CPU: the two data-movement kernels around the BLAS GEMMs.
//
// The GEMMs themselves run through NumPy's matmul (kernels/_tap_conv_cpu.py): this
// file only packs the columns of the ACTIVE taps (im2col restricted to them, so a PixelCNN
// mask's zero taps cost nothing) and scatters column gradients back onto the input (col2im).
//
// Column layout, for a chunk of nb images: cols[(t*C + c) * (nb*L) + n*L + oy*Wo + ox] with
// L = Ho*Wo: one row per (tap, channel), the batch folded into the GEMM's long side, so one
// (O, T*C) @ (T*C, nb*L) product serves the whole chunk and every packed row is a contiguous
// run of Wo values (a memcpy plus zero edges at stride 1).
//
// col2im: each (n, c) input plane in turn receives all taps' column rows (the plane stays in
// L1/L2 while the taps stream by; a parallel version needs no atomics, one plane per thread).
// Along a row the valid output range of a tap is computed once, so the inner loop is a
// branch-free contiguous add at stride 1.
//
// Both kernels are SERIAL on purpose. They alternate with multi-threaded OpenBLAS GEMMs, whose
// worker threads keep spinning for a while after each call; an OpenMP region started then
// shares its cores with the spinners and waits at its barrier. Measured on the 2-core CI
// machine (PixelCNN 3x3 mask B, N=32, 64 -> 64, 32x32, forward + backward): 2600 ms with
// OpenMP packing vs 306 ms serial (torch CPU: 304 ms). Packing is memory-bound and small next
// to the GEMMs (~10 ms of a ~270 ms 7x7 step), so one thread loses little.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "masked_conv.h"

namespace gmcore {
namespace tapconv {
namespace {

inline int64_t ceil_div_pos(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Output columns [lo, hi) whose input column ox*stride + off lies inside [0, size).
inline void valid_outputs(int64_t out, int64_t size, int64_t stride, int64_t off, int64_t& lo,
                          int64_t& hi) {
  lo = off >= 0 ? 0 : ceil_div_pos(-off, stride);
  hi = size - 1 - off < 0 ? 0 : (size - 1 - off) / stride + 1;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
}

}  // namespace

template <typename T>
void pack_cpu(const T* x, T* cols, const int64_t* taps, int64_t ntaps, int64_t N, int64_t C,
              int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g) {
  const int64_t L = Ho * Wo, row_len = N * L;
  for (int64_t t = 0; t < ntaps; ++t)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
        const int64_t off = kx * g.dw - g.pad_left;
        int64_t lo, hi;
        valid_outputs(Wo, W, g.sw, off, lo, hi);
        const T* plane = x + (n * C + c) * H * W;
        T* dst = cols + (t * C + c) * row_len + n * L;
        for (int64_t oy = 0; oy < Ho; ++oy, dst += Wo) {
          const int64_t iy = input_coord(oy, ky, g.sh, g.pad_top, g.dh);
          if (!inside(iy, H)) {
            std::fill(dst, dst + Wo, T(0));
            continue;
          }
          const T* src = plane + iy * W + off;
          std::fill(dst, dst + lo, T(0));
          if (g.sw == 1) {
            std::memcpy(dst + lo, src + lo, sizeof(T) * (hi - lo));
          } else {
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] = src[ox * g.sw];
          }
          std::fill(dst + hi, dst + Wo, T(0));
        }
      }
}

template <typename T>
void unpack_cpu(const T* gcols, T* gx, const int64_t* taps, int64_t ntaps, int64_t N, int64_t C,
                int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g) {
  const int64_t L = Ho * Wo, row_len = N * L;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      T* plane = gx + (n * C + c) * H * W;
      std::fill(plane, plane + H * W, T(0));
      for (int64_t t = 0; t < ntaps; ++t) {
        const int64_t ky = taps[2 * t], kx = taps[2 * t + 1];
        const int64_t off = kx * g.dw - g.pad_left;
        int64_t lo, hi;
        valid_outputs(Wo, W, g.sw, off, lo, hi);
        const T* src = gcols + (t * C + c) * row_len + n * L;
        for (int64_t oy = 0; oy < Ho; ++oy, src += Wo) {
          const int64_t iy = input_coord(oy, ky, g.sh, g.pad_top, g.dh);
          if (!inside(iy, H)) continue;
          T* dst = plane + iy * W + off;
          if (g.sw == 1) {
#pragma omp simd
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] += src[ox];
          } else {
            // one tap never hits an input position twice: a plain += is the scatter-add
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox * g.sw] += src[ox];
          }
        }
      }
    }
}

template void pack_cpu<float>(const float*, float*, const int64_t*, int64_t, int64_t, int64_t,
                              int64_t, int64_t, int64_t, int64_t, const Geometry&);
template void pack_cpu<double>(const double*, double*, const int64_t*, int64_t, int64_t, int64_t,
                               int64_t, int64_t, int64_t, int64_t, const Geometry&);
template void unpack_cpu<float>(const float*, float*, const int64_t*, int64_t, int64_t, int64_t,
                                int64_t, int64_t, int64_t, int64_t, const Geometry&);
template void unpack_cpu<double>(const double*, double*, const int64_t*, int64_t, int64_t,
                                 int64_t, int64_t, int64_t, int64_t, int64_t, const Geometry&);

}  // namespace tapconv
}  // namespace gmcore
