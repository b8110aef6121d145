// im2col / col2im for plain 2-D convolutions (family `conv`), the column layout of
// gmcore/nn/functional/_conv_kernels.py: cols[c, i, j, n, oy, ox] (C*kh*kw rows of N*Ho*Wo),
// so that one (O, C*kh*kw) @ (C*kh*kw, N*Ho*Wo) GEMM is the whole convolution.
//
//   cols[c, i, j, n, oy, ox] = x[n, c, oy*sh - pt + i*dh, ox*sw - pl + j*dw]   (0 outside x)
//
// col2im is its adjoint: gx[n, c, iy, ix] = sum of the column entries that read (iy, ix).
#pragma once

#include <cstdint>

namespace gmcore {
namespace conv {

struct Geometry {
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
};

template <typename T>
void im2col_cpu(const T* x, T* cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                int64_t Wo, const Geometry& g);

// Overwrites gx (N, C, H, W).
template <typename T>
void col2im_cpu(const T* cols, T* gx, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho,
                int64_t Wo, const Geometry& g);

}  // namespace conv
}  // namespace gmcore
