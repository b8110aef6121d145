// Rational-quadratic spline on CUDA: one thread per element (grid-stride), the math from
// spline.h.  Each thread keeps its element's knots in registers/local memory (K <= 64).
#include <cuda_runtime.h>

#include "cuda_util.h"
#include "spline.h"

namespace gmcore {

namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void spline_forward_kernel(const T* __restrict__ x, const T* __restrict__ W,
                                      const T* __restrict__ H, const T* __restrict__ D,
                                      T* __restrict__ y, T* __restrict__ ld, int64_t n,
                                      spline::Options<T> o) {
  const int K = o.bins;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    spline::forward_elem(x[i], W + i * K, H + i * K, D + i * (K - 1), o, y + i, ld + i);
}

template <typename T>
__global__ void spline_backward_kernel(const T* __restrict__ x, const T* __restrict__ W,
                                       const T* __restrict__ H, const T* __restrict__ D,
                                       const T* __restrict__ gy, const T* __restrict__ gl,
                                       T* __restrict__ gx, T* __restrict__ gW,
                                       T* __restrict__ gH, T* __restrict__ gD, int64_t n,
                                       spline::Options<T> o) {
  const int K = o.bins;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    spline::backward_elem(x[i], W + i * K, H + i * K, D + i * (K - 1), gy[i], gl[i], o, gx + i,
                          gW + i * K, gH + i * K, gD + i * (K - 1));
}

}  // namespace

template <typename T>
void spline_forward_cuda(const T* x, const T* W, const T* H, const T* D, T* y, T* ld, int64_t n,
                         const spline::Options<T>& o, std::uintptr_t stream) {
  if (n == 0) return;
  spline_forward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(
      x, W, H, D, y, ld, n, o);
  cuda_check_launch("spline_forward kernel launch");
}

template <typename T>
void spline_backward_cuda(const T* x, const T* W, const T* H, const T* D, const T* gy,
                          const T* gl, T* gx, T* gW, T* gH, T* gD, int64_t n,
                          const spline::Options<T>& o, std::uintptr_t stream) {
  if (n == 0) return;
  spline_backward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(
      x, W, H, D, gy, gl, gx, gW, gH, gD, n, o);
  cuda_check_launch("spline_backward kernel launch");
}

template void spline_forward_cuda<float>(const float*, const float*, const float*, const float*,
                                         float*, float*, int64_t, const spline::Options<float>&,
                                         std::uintptr_t);
template void spline_forward_cuda<double>(const double*, const double*, const double*,
                                          const double*, double*, double*, int64_t,
                                          const spline::Options<double>&, std::uintptr_t);
template void spline_backward_cuda<float>(const float*, const float*, const float*,
                                          const float*, const float*, const float*, float*,
                                          float*, float*, float*, int64_t,
                                          const spline::Options<float>&, std::uintptr_t);
template void spline_backward_cuda<double>(const double*, const double*, const double*,
                                           const double*, const double*, const double*, double*,
                                           double*, double*, double*, int64_t,
                                           const spline::Options<double>&, std::uintptr_t);

}  // namespace gmcore
