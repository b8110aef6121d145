// Row-wise logsumexp / softmax on the CPU: OpenMP over rows, the math from logsumexp.h.
#include "logsumexp.h"

namespace gmcore {

namespace {
template <typename T>
inline T row_lse(const T* row, int64_t cols) {
  lse::State<T> st = lse::init<T>();
  for (int64_t j = 0; j < cols; ++j) st = lse::push(st, row[j]);
  return lse::finalize(st);
}
}  // namespace

template <typename T>
void logsumexp_rows_cpu(const T* x, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t i = 0; i < rows; ++i) out[i] = row_lse(x + i * cols, cols);
}

template <typename T>
void softmax_rows_cpu(const T* x, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = x + i * cols;
    T* orow = out + i * cols;
    const T l = row_lse(row, cols);
    for (int64_t j = 0; j < cols; ++j) orow[j] = lse::softmax_elem(row[j], l);
  }
}

template void logsumexp_rows_cpu<float>(const float*, float*, int64_t, int64_t);
template void logsumexp_rows_cpu<double>(const double*, double*, int64_t, int64_t);
template void softmax_rows_cpu<float>(const float*, float*, int64_t, int64_t);
template void softmax_rows_cpu<double>(const double*, double*, int64_t, int64_t);

}  // namespace gmcore
