// GM_HOST_DEVICE marks the per-element math in csrc/<family>.h: __host__ __device__ under nvcc,
// nothing in the host build, so the CPU build (and its tests) run the very code the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define GM_HOST_DEVICE __host__ __device__
#else
#define GM_HOST_DEVICE
#endif
