// Embedding backward on the CPU (the method is in embedding.h): a counting sort of the
// lookups by row, then OpenMP over table rows, an `omp simd` add per gradient row.
#include "embedding.h"

#include <algorithm>
#include <vector>

namespace gmcore {

template <typename T>
void embedding_backward_cpu(const int64_t* idx, const T* g, T* gw, int64_t n, int64_t D,
                            int64_t num, int64_t padding_idx) {
  // start[r] .. start[r + 1]: the positions in `order` of the lookups of row r
  std::vector<int64_t> start(num + 1, 0), order(n);
  for (int64_t i = 0; i < n; ++i) ++start[idx[i] + 1];
  for (int64_t r = 0; r < num; ++r) start[r + 1] += start[r];
  {
    std::vector<int64_t> pos(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[pos[idx[i]]++] = i;
  }
#pragma omp parallel for schedule(static) if ((num + n) * D > 32768)
  for (int64_t r = 0; r < num; ++r) {
    T* __restrict__ row = gw + r * D;
    std::fill(row, row + D, T(0));
    if (r == padding_idx) continue;
    for (int64_t k = start[r]; k < start[r + 1]; ++k) {
      const T* __restrict__ src = g + order[k] * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) row[d] += src[d];
    }
  }
}

template void embedding_backward_cpu<float>(const int64_t*, const float*, float*, int64_t, int64_t,
                                            int64_t, int64_t);
template void embedding_backward_cpu<double>(const int64_t*, const double*, double*, int64_t,
                                             int64_t, int64_t, int64_t);

}  // namespace gmcore
