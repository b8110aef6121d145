// Device queries for gmcore._C.
#include "cuda_util.h"

namespace gmcore {

int cuda_device_count() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return 0;  // no driver / no device: report none, never raise
  }
  return n;
}

}  // namespace gmcore
