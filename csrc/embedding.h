// Embedding backward: the gradient of a row lookup, a scatter-add of gradient rows into the
// table's shape, without atomics or np.add.at.
//
// The lookups are counting-sorted by table row (stable, so every row sums its contributions in
// lookup order: the result is deterministic and independent of the thread count); then each
// thread owns whole table rows and writes each once: zeros, or the sum of its gradient rows.
// The padding row (padding_idx >= 0) stays zero, as torch's.
#pragma once

#include <cstdint>

namespace gmcore {

// idx: n int64 lookups in [0, num); g: (n, D); gw: (num, D), fully written.
template <typename T>
void embedding_backward_cpu(const int64_t* idx, const T* g, T* gw, int64_t n, int64_t D,
                            int64_t num, int64_t padding_idx);

}  // namespace gmcore
