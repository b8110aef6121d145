// Row-wise logsumexp / softmax on CUDA: one block per row, the math from logsumexp.h.
//
// Each thread folds a strided slice of the row into an (m, s) summary with lse::push,
// the warp combines summaries with shuffles, warp leaders meet in shared memory.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "logsumexp.h"

namespace gmcore {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state
    throw std::runtime_error(std::string("gmcore._C: ") + what + " failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
}

template <typename T>
__device__ lse::State<T> block_reduce(lse::State<T> st) {
  __shared__ T sm_m[kWarps];
  __shared__ T sm_s[kWarps];
  __shared__ T total_m, total_s;
  for (int off = 16; off > 0; off >>= 1) {
    lse::State<T> o{__shfl_down_sync(0xffffffffu, st.m, off),
                    __shfl_down_sync(0xffffffffu, st.s, off)};
    st = lse::combine(st, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm_m[warp] = st.m;
    sm_s[warp] = st.s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    lse::State<T> acc{sm_m[0], sm_s[0]};
    for (int w = 1; w < kWarps; ++w) acc = lse::combine(acc, lse::State<T>{sm_m[w], sm_s[w]});
    total_m = acc.m;
    total_s = acc.s;
  }
  __syncthreads();
  return lse::State<T>{total_m, total_s};
}

template <typename T>
__global__ void lse_rows_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t cols,
                                bool softmax) {
  const int64_t row = blockIdx.x;  // int64 offsets: rows * cols may pass 2^31
  const T* xr = x + row * cols;
  lse::State<T> st = lse::init<T>();
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) st = lse::push(st, xr[j]);
  st = block_reduce(st);
  const T l = lse::finalize(st);
  if (!softmax) {
    if (threadIdx.x == 0) out[row] = l;
    return;
  }
  T* orow = out + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) orow[j] = lse::softmax_elem(xr[j], l);
}

template <typename T>
void launch(const T* x, T* out, int64_t rows, int64_t cols, std::uintptr_t stream, bool softmax) {
  if (rows == 0) return;
  if (rows > 2147483647LL) throw std::invalid_argument("gmcore._C: too many rows for one grid");
  auto s = reinterpret_cast<cudaStream_t>(stream);
  lse_rows_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, out, cols, softmax);
  check(cudaGetLastError(), softmax ? "softmax_rows kernel launch" : "logsumexp_rows kernel launch");
}

}  // namespace

template <typename T>
void logsumexp_rows_cuda(const T* x, T* out, int64_t rows, int64_t cols, std::uintptr_t stream) {
  launch(x, out, rows, cols, stream, false);
}

template <typename T>
void softmax_rows_cuda(const T* x, T* out, int64_t rows, int64_t cols, std::uintptr_t stream) {
  launch(x, out, rows, cols, stream, true);
}

template void logsumexp_rows_cuda<float>(const float*, float*, int64_t, int64_t, std::uintptr_t);
template void logsumexp_rows_cuda<double>(const double*, double*, int64_t, int64_t, std::uintptr_t);
template void softmax_rows_cuda<float>(const float*, float*, int64_t, int64_t, std::uintptr_t);
template void softmax_rows_cuda<double>(const double*, double*, int64_t, int64_t, std::uintptr_t);

}  // namespace gmcore
