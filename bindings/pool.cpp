// Bindings of the pool family: 2-D max / average pooling on the CPU (csrc/pool_cpu.cpp).
// Arrays are (P, H, W) planes in and (P, Ho, Wo) out (the caller folds N and C into P).
#include "../csrc/pool.h"

#include <string>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_int64_array;
using gmcore::check_same_dtype;
using gmcore::where;
using gmcore::pool::Geometry;

Geometry geometry(const py::tuple& g, const char* fn) {
  if (g.size() != 8)
    throw py::value_error(where(fn) + "geometry must be (kh, kw, sh, sw, ph, pw, dh, dw)");
  Geometry r{g[0].cast<int64_t>(), g[1].cast<int64_t>(), g[2].cast<int64_t>(),
             g[3].cast<int64_t>(), g[4].cast<int64_t>(), g[5].cast<int64_t>(),
             g[6].cast<int64_t>(), g[7].cast<int64_t>()};
  if (r.kh < 1 || r.kw < 1 || r.sh < 1 || r.sw < 1 || r.dh < 1 || r.dw < 1 || r.ph < 0 || r.pw < 0)
    throw py::value_error(where(fn) + "kernel, stride and dilation must be >= 1, padding >= 0");
  return r;
}

void check_out(const py::array& y, const py::array& x, int64_t Ho, int64_t Wo, const char* fn,
               const char* name) {
  if (y.ndim() != 3 || y.shape(0) != x.shape(0) || y.shape(1) != Ho || y.shape(2) != Wo)
    throw py::value_error(where(fn) + name + " must be (P, Ho, Wo) matching the input planes");
}

// A window of output (oy, ox) must reach the input rows/cols the geometry says it does.
void check_sizes(int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g,
                 const char* fn) {
  if (H < 1 || W < 1 || Ho < 0 || Wo < 0)
    throw py::value_error(where(fn) + "empty planes (H, W >= 1 needed)");
  // every window starts inside the input or its left/top padding (pooling_output_shape)
  if ((Ho > 0 && (Ho - 1) * g.sh - g.ph >= H) || (Wo > 0 && (Wo - 1) * g.sw - g.pw >= W))
    throw py::value_error(where(fn) + "output size too large for the input and geometry");
}

template <typename T>
void max_fwd_t(const py::array& x, py::array& y, py::array& idx, const Geometry& g) {
  const int64_t P = x.shape(0), H = x.shape(1), W = x.shape(2), Ho = y.shape(1), Wo = y.shape(2);
  py::gil_scoped_release release;
  gmcore::pool::max_pool2d_forward_cpu<T>(static_cast<const T*>(x.data()),
                                          static_cast<T*>(y.mutable_data()),
                                          static_cast<int64_t*>(idx.mutable_data()), P, H, W, Ho,
                                          Wo, g);
}

void max_pool2d_forward_cpu(const py::array& x, py::array y, py::array idx, const py::tuple& geom) {
  const char* fn = "pool_max2d_forward_cpu";
  const char k = check_float_array(x, fn, "x", 3);
  check_same_dtype(y, k, fn, "y");
  check_int64_array(idx, fn, "idx");
  const Geometry g = geometry(geom, fn);
  check_out(y, x, y.shape(1), y.shape(2), fn, "y");
  check_out(idx, x, y.shape(1), y.shape(2), fn, "idx");
  check_sizes(x.shape(1), x.shape(2), y.shape(1), y.shape(2), g, fn);
  if (k == 'f') max_fwd_t<float>(x, y, idx, g); else max_fwd_t<double>(x, y, idx, g);
}

template <typename T>
void max_bwd_t(const py::array& gy, const py::array& idx, py::array& gx) {
  const int64_t P = gx.shape(0), H = gx.shape(1), W = gx.shape(2), Ho = gy.shape(1),
                Wo = gy.shape(2);
  py::gil_scoped_release release;
  gmcore::pool::max_pool2d_backward_cpu<T>(static_cast<const T*>(gy.data()),
                                           static_cast<const int64_t*>(idx.data()),
                                           static_cast<T*>(gx.mutable_data()), P, H, W, Ho, Wo);
}

// idx must come from pool_max2d_forward_cpu (every entry in [0, H*W)): it is trusted, as a
// saved tensor of the forward; a bounds check per element would cost as much as the scatter.
void max_pool2d_backward_cpu(const py::array& gy, const py::array& idx, py::array gx) {
  const char* fn = "pool_max2d_backward_cpu";
  const char k = check_float_array(gy, fn, "gy", 3);
  check_same_dtype(gx, k, fn, "gx");
  check_int64_array(idx, fn, "idx");
  if (gx.ndim() != 3 || gx.shape(0) != gy.shape(0) || idx.ndim() != 3 ||
      idx.shape(0) != gy.shape(0) || idx.shape(1) != gy.shape(1) || idx.shape(2) != gy.shape(2))
    throw py::value_error(where(fn) + "gy, idx must be (P, Ho, Wo) and gx (P, H, W)");
  if (k == 'f') max_bwd_t<float>(gy, idx, gx); else max_bwd_t<double>(gy, idx, gx);
}

template <typename T>
void avg_fwd_t(const py::array& x, py::array& y, const Geometry& g, bool cip, int64_t div) {
  const int64_t P = x.shape(0), H = x.shape(1), W = x.shape(2), Ho = y.shape(1), Wo = y.shape(2);
  py::gil_scoped_release release;
  gmcore::pool::avg_pool2d_forward_cpu<T>(static_cast<const T*>(x.data()),
                                          static_cast<T*>(y.mutable_data()), P, H, W, Ho, Wo, g,
                                          cip, div);
}

void avg_pool2d_forward_cpu(const py::array& x, py::array y, const py::tuple& geom,
                            bool count_include_pad, int64_t divisor_override) {
  const char* fn = "pool_avg2d_forward_cpu";
  const char k = check_float_array(x, fn, "x", 3);
  check_same_dtype(y, k, fn, "y");
  const Geometry g = geometry(geom, fn);
  if (g.dh != 1 || g.dw != 1) throw py::value_error(where(fn) + "dilation must be 1");
  check_out(y, x, y.shape(1), y.shape(2), fn, "y");
  check_sizes(x.shape(1), x.shape(2), y.shape(1), y.shape(2), g, fn);
  if (k == 'f') avg_fwd_t<float>(x, y, g, count_include_pad, divisor_override);
  else avg_fwd_t<double>(x, y, g, count_include_pad, divisor_override);
}

template <typename T>
void avg_bwd_t(const py::array& gy, py::array& gx, const Geometry& g, bool cip, int64_t div) {
  const int64_t P = gx.shape(0), H = gx.shape(1), W = gx.shape(2), Ho = gy.shape(1),
                Wo = gy.shape(2);
  py::gil_scoped_release release;
  gmcore::pool::avg_pool2d_backward_cpu<T>(static_cast<const T*>(gy.data()),
                                           static_cast<T*>(gx.mutable_data()), P, H, W, Ho, Wo, g,
                                           cip, div);
}

void avg_pool2d_backward_cpu(const py::array& gy, py::array gx, const py::tuple& geom,
                             bool count_include_pad, int64_t divisor_override) {
  const char* fn = "pool_avg2d_backward_cpu";
  const char k = check_float_array(gy, fn, "gy", 3);
  check_same_dtype(gx, k, fn, "gx");
  const Geometry g = geometry(geom, fn);
  if (g.dh != 1 || g.dw != 1) throw py::value_error(where(fn) + "dilation must be 1");
  if (gx.ndim() != 3 || gx.shape(0) != gy.shape(0))
    throw py::value_error(where(fn) + "gy must be (P, Ho, Wo) and gx (P, H, W)");
  check_sizes(gx.shape(1), gx.shape(2), gy.shape(1), gy.shape(2), g, fn);
  if (k == 'f') avg_bwd_t<float>(gy, gx, g, count_include_pad, divisor_override);
  else avg_bwd_t<double>(gy, gx, g, count_include_pad, divisor_override);
}

void bind(py::module_& m) {
  m.def("pool_max2d_forward_cpu", &max_pool2d_forward_cpu, py::arg("x"), py::arg("y"),
        py::arg("idx"), py::arg("geometry"),
        "Max pooling of (P, H, W) planes into y (P, Ho, Wo) and the flat argmax idx (int64); "
        "geometry = (kh, kw, sh, sw, ph, pw, dh, dw).");
  m.def("pool_max2d_backward_cpu", &max_pool2d_backward_cpu, py::arg("gy"), py::arg("idx"),
        py::arg("gx"), "gx (P, H, W) = scatter-add of gy (P, Ho, Wo) at idx.");
  m.def("pool_avg2d_forward_cpu", &avg_pool2d_forward_cpu, py::arg("x"), py::arg("y"),
        py::arg("geometry"), py::arg("count_include_pad"), py::arg("divisor_override"),
        "Average pooling of (P, H, W) planes into y (P, Ho, Wo); divisor_override <= 0: none.");
  m.def("pool_avg2d_backward_cpu", &avg_pool2d_backward_cpu, py::arg("gy"), py::arg("gx"),
        py::arg("geometry"), py::arg("count_include_pad"), py::arg("divisor_override"),
        "The adjoint of pool_avg2d_forward_cpu: gx (P, H, W) from gy (P, Ho, Wo).");
}

gmcore::RegisterBindings reg("pool", &bind);

}  // namespace
