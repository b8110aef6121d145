// Bindings of the embedding family: the backward of a row lookup (csrc/embedding.h).
#include "../csrc/embedding.h"

#include <string>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::where;

template <typename T>
py::array backward_t(const py::array& idx, const py::array& g, int64_t num, int64_t padding_idx) {
  const int64_t n = static_cast<int64_t>(g.shape(0)), D = static_cast<int64_t>(g.shape(1));
  py::array_t<T> gw({num, D});
  const int64_t* ip = static_cast<const int64_t*>(idx.data());
  const T* gp = static_cast<const T*>(g.data());
  T* wp = gw.mutable_data();
  py::gil_scoped_release release;
  gmcore::embedding_backward_cpu<T>(ip, gp, wp, n, D, num, padding_idx);
  return gw;
}

py::array embedding_backward_cpu(const py::array& idx, const py::array& g, int64_t num_weights,
                                 int64_t padding_idx) {
  const char* fn = "embedding_backward_cpu";
  const char k = gmcore::check_float_array(g, fn, "grad", 2);
  gmcore::check_int64_array(idx, fn, "indices");
  gmcore::check_nonnegative(num_weights, fn, "num_weights");
  if (idx.size() != g.shape(0))
    throw py::value_error(where(fn) + "indices must have one entry per gradient row");
  const int64_t* ip = static_cast<const int64_t*>(idx.data());
  for (py::ssize_t i = 0; i < idx.size(); ++i)  // an out-of-range index would write outside
    if (ip[i] < 0 || ip[i] >= num_weights)
      throw py::index_error(where(fn) + "index " + std::to_string(ip[i]) + " is out of range [0, " +
                            std::to_string(num_weights) + ")");
  return k == 'f' ? backward_t<float>(idx, g, num_weights, padding_idx)
                  : backward_t<double>(idx, g, num_weights, padding_idx);
}

void bind(py::module_& m) {
  m.def("embedding_backward_cpu", &embedding_backward_cpu, py::arg("indices"), py::arg("grad"),
        py::arg("num_weights"), py::arg("padding_idx") = -1,
        "gradient of a row lookup: (num_weights, D) sums of the grad rows (n, D) per int64 index; "
        "the padding_idx row (>= 0) stays zero");
}

gmcore::RegisterBindings reg("embedding", &bind);

}  // namespace
