// Bindings of the vq family: nearest codebook row and EMA cluster statistics (csrc/vq.h).
#include "../csrc/vq.h"

#include <string>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::where;

template <typename T>
py::array nearest_cpu_t(const py::array& z, const py::array& codebook) {
  const auto n = static_cast<int64_t>(z.shape(0)), d = static_cast<int64_t>(z.shape(1));
  const auto k = static_cast<int64_t>(codebook.shape(0));
  py::array_t<int64_t> out(n);
  const T* zp = static_cast<const T*>(z.data());
  const T* cp = static_cast<const T*>(codebook.data());
  int64_t* op = out.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::vq_nearest_cpu<T>(zp, cp, op, n, k, d);
  }
  return out;
}

py::array vq_nearest_cpu(const py::array& z, const py::array& codebook) {
  const char kz = check_float_array(z, "vq_nearest_cpu", "z", 2);
  check_float_array(codebook, "vq_nearest_cpu", "codebook", 2);
  gmcore::check_same_dtype(codebook, kz, "vq_nearest_cpu", "codebook");
  if (codebook.shape(1) != z.shape(1))
    throw py::value_error(where("vq_nearest_cpu") + "z has D=" + std::to_string(z.shape(1)) +
                          " but codebook has D=" + std::to_string(codebook.shape(1)));
  if (codebook.shape(0) == 0) throw py::value_error(where("vq_nearest_cpu") + "the codebook is empty");
  return kz == 'f' ? nearest_cpu_t<float>(z, codebook) : nearest_cpu_t<double>(z, codebook);
}

template <typename T>
py::tuple ema_stats_cpu_t(const py::array& z, const py::array& indices, int64_t k) {
  const auto n = static_cast<int64_t>(z.shape(0)), d = static_cast<int64_t>(z.shape(1));
  py::array_t<T> counts(k);
  py::array_t<T> sums({k, d});
  const T* zp = static_cast<const T*>(z.data());
  const auto* ip = static_cast<const int64_t*>(indices.data());
  T* cp = counts.mutable_data();
  T* sp = sums.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::vq_ema_stats_cpu<T>(zp, ip, cp, sp, n, k, d);
  }
  return py::make_tuple(counts, sums);
}

py::tuple vq_ema_stats_cpu(const py::array& z, const py::array& indices, int64_t k) {
  const char kz = check_float_array(z, "vq_ema_stats_cpu", "z", 2);
  gmcore::check_int64_array(indices, "vq_ema_stats_cpu", "indices");
  if (indices.ndim() != 1 || indices.shape(0) != z.shape(0))
    throw py::value_error(where("vq_ema_stats_cpu") + "indices must be 1-D with one entry per row of z");
  gmcore::check_nonnegative(k, "vq_ema_stats_cpu", "num_codes");
  // an out-of-range index would write outside sums: refuse it (O(N), negligible)
  const auto* ip = static_cast<const int64_t*>(indices.data());
  for (py::ssize_t i = 0; i < indices.shape(0); ++i)
    if (ip[i] < 0 || ip[i] >= k)
      throw py::value_error(where("vq_ema_stats_cpu") + "index " + std::to_string(ip[i]) + " at row " +
                            std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
  return kz == 'f' ? ema_stats_cpu_t<float>(z, indices, k) : ema_stats_cpu_t<double>(z, indices, k);
}

#if defined(GMCORE_WITH_CUDA)
void vq_nearest_cuda(std::uintptr_t z, std::uintptr_t codebook, std::uintptr_t cnorm,
                     std::uintptr_t indices, int64_t n, int64_t k, int64_t d, const std::string& dtype,
                     std::uintptr_t stream) {
  const char kd = gmcore::check_dtype_str(dtype, "vq_nearest_cuda");
  gmcore::check_nonnegative(n, "vq_nearest_cuda", "n");
  gmcore::check_nonnegative(d, "vq_nearest_cuda", "d");
  if (k <= 0) throw py::value_error(where("vq_nearest_cuda") + "the codebook is empty");
  py::gil_scoped_release release;
  auto* ip = reinterpret_cast<int64_t*>(indices);
  if (kd == 'f')
    gmcore::vq_nearest_cuda<float>(reinterpret_cast<const float*>(z), reinterpret_cast<const float*>(codebook),
                                   reinterpret_cast<float*>(cnorm), ip, n, k, d, stream);
  else
    gmcore::vq_nearest_cuda<double>(reinterpret_cast<const double*>(z),
                                    reinterpret_cast<const double*>(codebook),
                                    reinterpret_cast<double*>(cnorm), ip, n, k, d, stream);
}

void vq_ema_stats_cuda(std::uintptr_t z, std::uintptr_t indices, std::uintptr_t counts, std::uintptr_t sums,
                       int64_t n, int64_t k, int64_t d, const std::string& dtype, std::uintptr_t stream) {
  const char kd = gmcore::check_dtype_str(dtype, "vq_ema_stats_cuda");
  gmcore::check_nonnegative(n, "vq_ema_stats_cuda", "n");
  gmcore::check_nonnegative(k, "vq_ema_stats_cuda", "k");
  gmcore::check_nonnegative(d, "vq_ema_stats_cuda", "d");
  py::gil_scoped_release release;
  const auto* ip = reinterpret_cast<const int64_t*>(indices);
  if (kd == 'f')
    gmcore::vq_ema_stats_cuda<float>(reinterpret_cast<const float*>(z), ip, reinterpret_cast<float*>(counts),
                                     reinterpret_cast<float*>(sums), n, k, d, stream);
  else
    gmcore::vq_ema_stats_cuda<double>(reinterpret_cast<const double*>(z), ip,
                                      reinterpret_cast<double*>(counts), reinterpret_cast<double*>(sums),
                                      n, k, d, stream);
}
#endif

void bind(py::module_& m) {
  m.def("vq_nearest_cpu", &vq_nearest_cpu, py::arg("z"), py::arg("codebook"),
        "Index (int64, shape (N,)) of the nearest codebook row (squared Euclidean, ties to the lowest "
        "index) for each row of the C-contiguous float32/float64 z (N, D); codebook (K, D), same dtype. "
        "-1 for a row with a NaN or inf, or with no finite code; codes with a NaN or inf are never chosen.");
  m.def("vq_ema_stats_cpu", &vq_ema_stats_cpu, py::arg("z"), py::arg("indices"), py::arg("num_codes"),
        "(counts (K,), sums (K, D)) of the rows of z (N, D) grouped by the int64 indices (N,), in z's dtype.");
#if defined(GMCORE_WITH_CUDA)
  m.def("vq_nearest_cuda", &vq_nearest_cuda, py::arg("z_ptr"), py::arg("codebook_ptr"), py::arg("cnorm_ptr"),
        py::arg("indices_ptr"), py::arg("n"), py::arg("k"), py::arg("d"), py::arg("dtype"),
        py::arg("stream") = 0,
        "Device pointers: indices[n] (int64) = nearest row of codebook[k, d] for each row of z[n, d] "
        "(-1: a row with a NaN or inf, or no finite code); cnorm_ptr is scratch of k entries of the dtype.");
  m.def("vq_ema_stats_cuda", &vq_ema_stats_cuda, py::arg("z_ptr"), py::arg("indices_ptr"), py::arg("counts_ptr"),
        py::arg("sums_ptr"), py::arg("n"), py::arg("k"), py::arg("d"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers: counts[k], sums[k, d] (overwritten) of the rows of z[n, d] grouped by indices[n].");
#endif
}

gmcore::RegisterBindings reg("vq", &bind);

}  // namespace
