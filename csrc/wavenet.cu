// WaveNet gated activation on CUDA: one thread per (example, channel, time) element of the
// gate output, the per-element math from wavenet.h.
//
// Consecutive threads take consecutive time steps of one (n, g) row, so the loads of the two
// halves of z (and of cond) and the stores of a and ts are coalesced; the bias index is the
// row's channel.  Grid-stride loops with int64 indices (sizes may pass 2^31).
#include <cuda_runtime.h>

#include "cuda_util.h"
#include "wavenet.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void gate_forward_kernel(const T* __restrict__ z, const T* __restrict__ bias,
                                    const T* __restrict__ cond, T* __restrict__ a,
                                    T* __restrict__ ts, int64_t N, int64_t G, int64_t L) {
  const int64_t total = N * G * L;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / L, i = idx - row * L;
    const int64_t n = row / G, g = row - n * G;
    const int64_t o1 = (n * 2 * G + g) * L + i, o2 = o1 + G * L;
    T z1 = z[o1] + bias[g], z2 = z[o2] + bias[G + g];
    if (cond) {
      z1 += cond[o1];
      z2 += cond[o2];
    }
    T t, s, v;
    wavenet::gate_forward_elem<T, wavenet::Libm>(z1, z2, t, s, v);
    ts[o1] = t;
    ts[o2] = s;
    a[idx] = v;
  }
}

template <typename T>
__global__ void gate_backward_kernel(const T* __restrict__ ts, const T* __restrict__ ga,
                                     T* __restrict__ dz, int64_t N, int64_t G, int64_t L) {
  const int64_t total = N * G * L;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / L, i = idx - row * L;
    const int64_t n = row / G, g = row - n * G;
    const int64_t o1 = (n * 2 * G + g) * L + i, o2 = o1 + G * L;
    T d1, d2;
    wavenet::gate_backward_elem<T>(ts[o1], ts[o2], ga[idx], d1, d2);
    dz[o1] = d1;
    dz[o2] = d2;
  }
}

}  // namespace

template <typename T>
void wavenet_gate_forward_cuda(const T* z, const T* bias, const T* cond, T* a, T* ts, int64_t N,
                               int64_t G, int64_t L, std::uintptr_t stream) {
  const int64_t total = N * G * L;
  if (total == 0) return;
  gate_forward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, as_stream(stream)>>>(
      z, bias, cond, a, ts, N, G, L);
  cuda_check_launch("wavenet_gate_forward kernel launch");
}

template <typename T>
void wavenet_gate_backward_cuda(const T* ts, const T* ga, T* dz, int64_t N, int64_t G, int64_t L,
                                std::uintptr_t stream) {
  const int64_t total = N * G * L;
  if (total == 0) return;
  gate_backward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, as_stream(stream)>>>(
      ts, ga, dz, N, G, L);
  cuda_check_launch("wavenet_gate_backward kernel launch");
}

template void wavenet_gate_forward_cuda<float>(const float*, const float*, const float*, float*,
                                               float*, int64_t, int64_t, int64_t, std::uintptr_t);
template void wavenet_gate_forward_cuda<double>(const double*, const double*, const double*,
                                                double*, double*, int64_t, int64_t, int64_t,
                                                std::uintptr_t);
template void wavenet_gate_backward_cuda<float>(const float*, const float*, float*, int64_t,
                                                int64_t, int64_t, std::uintptr_t);
template void wavenet_gate_backward_cuda<double>(const double*, const double*, double*, int64_t,
                                                 int64_t, int64_t, std::uintptr_t);

}  // namespace gmcore
