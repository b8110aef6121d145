// Rational-quadratic spline on the CPU: OpenMP over elements, the math from spline.h.
#include "spline.h"

namespace gmcore {

template <typename T>
void spline_forward_cpu(const T* x, const T* W, const T* H, const T* D, T* y, T* ld, int64_t n,
                        const spline::Options<T>& o) {
  const int K = o.bins;
#pragma omp parallel for schedule(static) if (n > 2048)
  for (int64_t i = 0; i < n; ++i)
    spline::forward_elem(x[i], W + i * K, H + i * K, D + i * (K - 1), o, y + i, ld + i);
}

template <typename T>
void spline_backward_cpu(const T* x, const T* W, const T* H, const T* D, const T* gy,
                         const T* gl, T* gx, T* gW, T* gH, T* gD, int64_t n,
                         const spline::Options<T>& o) {
  const int K = o.bins;
#pragma omp parallel for schedule(static) if (n > 1024)
  for (int64_t i = 0; i < n; ++i)
    spline::backward_elem(x[i], W + i * K, H + i * K, D + i * (K - 1), gy[i], gl[i], o, gx + i,
                          gW + i * K, gH + i * K, gD + i * (K - 1));
}

template void spline_forward_cpu<float>(const float*, const float*, const float*, const float*,
                                        float*, float*, int64_t, const spline::Options<float>&);
template void spline_forward_cpu<double>(const double*, const double*, const double*,
                                         const double*, double*, double*, int64_t,
                                         const spline::Options<double>&);
template void spline_backward_cpu<float>(const float*, const float*, const float*, const float*,
                                         const float*, const float*, float*, float*, float*,
                                         float*, int64_t, const spline::Options<float>&);
template void spline_backward_cpu<double>(const double*, const double*, const double*,
                                          const double*, const double*, const double*, double*,
                                          double*, double*, double*, int64_t,
                                          const spline::Options<double>&);

}  // namespace gmcore
