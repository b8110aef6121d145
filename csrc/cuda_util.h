// Helpers shared by the CUDA sources (csrc/*.cu).  Host-side only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace gmcore {

// Throw std::runtime_error (pybind11 turns it into RuntimeError) naming the failed call and the
// CUDA error; clears the error first so the context stays usable.
inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("gmcore._C: ") + what + " failed: " + cudaGetErrorName(err) +
                             ": " + cudaGetErrorString(err));
  }
}

// Check a kernel launch (configuration errors surface here, execution errors on the next sync).
inline void cuda_check_launch(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Blocks for n elements at `threads` per block, capped to keep grid-stride loops efficient.
inline unsigned int blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned int>(b < cap ? b : cap);
}

int cuda_device_count();

}  // namespace gmcore
