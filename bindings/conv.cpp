// Bindings of the conv family: im2col / col2im for plain 2-D convolutions (csrc/conv_cpu.cpp).
#include "../csrc/conv.h"

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_same_dtype;
using gmcore::where;
using gmcore::conv::Geometry;

Geometry geometry(const py::tuple& t, const char* fn) {
  if (t.size() != 8)
    throw py::value_error(where(fn) + "geometry must be (kh, kw, sh, sw, pad_top, pad_left, dh, dw)");
  Geometry g{t[0].cast<int64_t>(), t[1].cast<int64_t>(), t[2].cast<int64_t>(),
             t[3].cast<int64_t>(), t[4].cast<int64_t>(), t[5].cast<int64_t>(),
             t[6].cast<int64_t>(), t[7].cast<int64_t>()};
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0)
    throw py::value_error(where(fn) + "kernel, stride and dilation must be >= 1, padding >= 0");
  return g;
}

// x/gx (N, C, H, W) and cols (C*kh*kw, N*Ho*Wo) agree on sizes.
void check_shapes(const py::array& img, const py::array& cols, int64_t Ho, int64_t Wo,
                  const Geometry& g, const char* fn) {
  if (Ho < 0 || Wo < 0) throw py::value_error(where(fn) + "output size must be >= 0");
  const int64_t rows = img.shape(1) * g.kh * g.kw, len = img.shape(0) * Ho * Wo;
  if (cols.ndim() != 2 || cols.shape(0) != rows || cols.shape(1) != len)
    throw py::value_error(where(fn) + "cols must be (C*kh*kw, N*Ho*Wo) = (" +
                          std::to_string(rows) + ", " + std::to_string(len) + ")");
}

template <typename T>
void run_im2col(const py::array& x, py::array& cols, int64_t Ho, int64_t Wo, const Geometry& g) {
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  py::gil_scoped_release release;
  gmcore::conv::im2col_cpu<T>(static_cast<const T*>(x.data()), static_cast<T*>(cols.mutable_data()),
                              N, C, H, W, Ho, Wo, g);
}

void im2col(const py::array& x, py::array cols, int64_t Ho, int64_t Wo, const py::tuple& geom) {
  const char* fn = "conv_im2col_cpu";
  const char k = check_float_array(x, fn, "x", 4);
  check_same_dtype(cols, k, fn, "cols");
  const Geometry g = geometry(geom, fn);
  check_shapes(x, cols, Ho, Wo, g, fn);
  if (k == 'f') run_im2col<float>(x, cols, Ho, Wo, g); else run_im2col<double>(x, cols, Ho, Wo, g);
}

template <typename T>
void run_col2im(const py::array& cols, py::array& gx, int64_t Ho, int64_t Wo, const Geometry& g) {
  const int64_t N = gx.shape(0), C = gx.shape(1), H = gx.shape(2), W = gx.shape(3);
  py::gil_scoped_release release;
  gmcore::conv::col2im_cpu<T>(static_cast<const T*>(cols.data()), static_cast<T*>(gx.mutable_data()),
                              N, C, H, W, Ho, Wo, g);
}

void col2im(const py::array& cols, py::array gx, int64_t Ho, int64_t Wo, const py::tuple& geom) {
  const char* fn = "conv_col2im_cpu";
  const char k = check_float_array(cols, fn, "cols", 2);
  check_same_dtype(gx, k, fn, "gx");
  if (gx.ndim() != 4) throw py::value_error(where(fn) + "gx must be 4-D (N, C, H, W)");
  const Geometry g = geometry(geom, fn);
  check_shapes(gx, cols, Ho, Wo, g, fn);
  if (k == 'f') run_col2im<float>(cols, gx, Ho, Wo, g); else run_col2im<double>(cols, gx, Ho, Wo, g);
}

void bind(py::module_& m) {
  m.def("conv_im2col_cpu", &im2col, py::arg("x"), py::arg("cols"), py::arg("Ho"), py::arg("Wo"),
        py::arg("geometry"),
        "Fill cols (C*kh*kw, N*Ho*Wo) from x (N, C, H, W); geometry = (kh, kw, sh, sw, pad_top, "
        "pad_left, dh, dw); taps outside x read 0.");
  m.def("conv_col2im_cpu", &col2im, py::arg("cols"), py::arg("gx"), py::arg("Ho"), py::arg("Wo"),
        py::arg("geometry"), "The adjoint of conv_im2col_cpu: overwrite gx (N, C, H, W).");
}

gmcore::RegisterBindings reg("conv", &bind);

}  // namespace
