// Bindings of the norm family: layer/group norm (row layout) and batch norm (channel layout),
// forward and fused backward (csrc/norm.h).  mean / rstd / var are float64 arrays.
#include "../csrc/norm.h"

#include <optional>

#include <pybind11/stl.h>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::where;

using OptArray = std::optional<py::array>;

// An optional parameter vector (weight / bias / stat) of length n and the data dtype.
template <typename T>
const T* opt_param(const OptArray& a, char k, int64_t n, const char* fn, const char* name) {
  if (!a) return nullptr;
  gmcore::check_same_dtype(*a, k, fn, name);
  if (a->ndim() != 1 || a->shape(0) != n)
    throw py::value_error(where(fn) + name + " must have shape (" + std::to_string(n) + ",)");
  return static_cast<const T*>(a->data());
}

// A float64 statistics vector of length n.
const double* stat(const py::array& a, int64_t n, const char* fn, const char* name) {
  if (check_float_array(a, fn, name, 1) != 'd' || a.shape(0) != n)
    throw py::value_error(where(fn) + name + " must be a float64 array of shape (" +
                          std::to_string(n) + ",)");
  return static_cast<const double*>(a.data());
}

void check_sizes(int64_t R, int64_t M, int64_t G, int64_t K, int64_t S, const char* fn) {
  if (G < 1 || K < 0 || S < 0 || R % G != 0 || K * S != M)
    throw py::value_error(where(fn) + "x of shape (" + std::to_string(R) + ", " +
                          std::to_string(M) + ") does not match G=" + std::to_string(G) +
                          ", K=" + std::to_string(K) + ", S=" + std::to_string(S) +
                          " (need R % G == 0 and K * S == x.shape[1])");
}

template <typename T>
py::tuple row_forward_t(const py::array& x, const OptArray& w, const OptArray& b, int64_t G,
                        int64_t K, int64_t S, double eps, char k) {
  const char* fn = "norm_row_forward_cpu";
  const int64_t R = x.shape(0), M = x.shape(1);
  check_sizes(R, M, G, K, S, fn);
  const T* wp = opt_param<T>(w, k, G * K, fn, "weight");
  const T* bp = opt_param<T>(b, k, G * K, fn, "bias");
  py::array_t<T> y({R, M});
  py::array_t<double> mean(R), rstd(R);
  const T* xp = static_cast<const T*>(x.data());
  T* yp = y.mutable_data();
  double *mp = mean.mutable_data(), *rp = rstd.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::norm_row_forward_cpu<T>(xp, wp, bp, yp, mp, rp, R, G, K, S, eps);
  }
  return py::make_tuple(y, mean, rstd);
}

py::tuple row_forward(const py::array& x, const OptArray& w, const OptArray& b, int64_t G,
                      int64_t K, int64_t S, double eps) {
  const char k = check_float_array(x, "norm_row_forward_cpu", "x", 2);
  return k == 'f' ? row_forward_t<float>(x, w, b, G, K, S, eps, k)
                  : row_forward_t<double>(x, w, b, G, K, S, eps, k);
}

template <typename T>
py::tuple row_backward_t(const py::array& x, const py::array& dy, const OptArray& w,
                         const py::array& mean, const py::array& rstd, int64_t G, int64_t K,
                         int64_t S, bool need_dw, bool need_db, char k) {
  const char* fn = "norm_row_backward_cpu";
  const int64_t R = x.shape(0), M = x.shape(1);
  check_sizes(R, M, G, K, S, fn);
  gmcore::check_same_dtype(dy, k, fn, "dy");
  if (dy.ndim() != 2 || dy.shape(0) != R || dy.shape(1) != M)
    throw py::value_error(where(fn) + "dy must have the shape of x");
  const T* wp = opt_param<T>(w, k, G * K, fn, "weight");
  const double* mp = stat(mean, R, fn, "mean");
  const double* rp = stat(rstd, R, fn, "rstd");
  py::array_t<T> dx({R, M});
  py::object dw = py::none(), db = py::none();
  T *dwp = nullptr, *dbp = nullptr;
  if (need_dw) {
    py::array_t<T> a(G * K);
    dwp = a.mutable_data();
    dw = a;
  }
  if (need_db) {
    py::array_t<T> a(G * K);
    dbp = a.mutable_data();
    db = a;
  }
  const T* xp = static_cast<const T*>(x.data());
  const T* gp = static_cast<const T*>(dy.data());
  T* dxp = dx.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::norm_row_backward_cpu<T>(xp, gp, wp, mp, rp, dxp, dwp, dbp, R, G, K, S);
  }
  return py::make_tuple(dx, dw, db);
}

py::tuple row_backward(const py::array& x, const py::array& dy, const OptArray& w,
                       const py::array& mean, const py::array& rstd, int64_t G, int64_t K,
                       int64_t S, bool need_dw, bool need_db) {
  const char k = check_float_array(x, "norm_row_backward_cpu", "x", 2);
  return k == 'f' ? row_backward_t<float>(x, dy, w, mean, rstd, G, K, S, need_dw, need_db, k)
                  : row_backward_t<double>(x, dy, w, mean, rstd, G, K, S, need_dw, need_db, k);
}

template <typename T>
py::tuple chan_forward_t(const py::array& x, const OptArray& w, const OptArray& b,
                         const OptArray& mean_in, const OptArray& rstd_in, double eps, bool train,
                         char k) {
  const char* fn = "norm_chan_forward_cpu";
  const int64_t N = x.shape(0), C = x.shape(1), S = x.shape(2);
  const T* wp = opt_param<T>(w, k, C, fn, "weight");
  const T* bp = opt_param<T>(b, k, C, fn, "bias");
  py::array_t<T> y({N, C, S});
  py::array_t<double> mean, var, rstd;
  double *mp, *vp = nullptr, *rp;
  if (train) {
    mean = py::array_t<double>(C);
    var = py::array_t<double>(C);
    rstd = py::array_t<double>(C);
    mp = mean.mutable_data();
    vp = var.mutable_data();
    rp = rstd.mutable_data();
  } else {
    if (!mean_in || !rstd_in)
      throw py::value_error(where(fn) + "mean and rstd are needed when train=False");
    mp = const_cast<double*>(stat(*mean_in, C, fn, "mean"));  // read only (train=False)
    rp = const_cast<double*>(stat(*rstd_in, C, fn, "rstd"));
  }
  const T* xp = static_cast<const T*>(x.data());
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::norm_chan_forward_cpu<T>(xp, wp, bp, yp, mp, vp, rp, N, C, S, eps, train);
  }
  if (train) return py::make_tuple(y, mean, var, rstd);
  return py::make_tuple(y, *mean_in, py::none(), *rstd_in);
}

py::tuple chan_forward(const py::array& x, const OptArray& w, const OptArray& b,
                       const OptArray& mean, const OptArray& rstd, double eps, bool train) {
  const char k = check_float_array(x, "norm_chan_forward_cpu", "x", 3);
  return k == 'f' ? chan_forward_t<float>(x, w, b, mean, rstd, eps, train, k)
                  : chan_forward_t<double>(x, w, b, mean, rstd, eps, train, k);
}

template <typename T>
py::tuple chan_backward_t(const py::array& x, const py::array& dy, const OptArray& w,
                          const py::array& mean, const py::array& rstd, bool train, bool need_dx,
                          bool need_dw, bool need_db, char k) {
  const char* fn = "norm_chan_backward_cpu";
  const int64_t N = x.shape(0), C = x.shape(1), S = x.shape(2);
  gmcore::check_same_dtype(dy, k, fn, "dy");
  if (dy.ndim() != 3 || dy.shape(0) != N || dy.shape(1) != C || dy.shape(2) != S)
    throw py::value_error(where(fn) + "dy must have the shape of x");
  const T* wp = opt_param<T>(w, k, C, fn, "weight");
  const double* mp = stat(mean, C, fn, "mean");
  const double* rp = stat(rstd, C, fn, "rstd");
  py::object dx = py::none(), dw = py::none(), db = py::none();
  T *dxp = nullptr, *dwp = nullptr, *dbp = nullptr;
  if (need_dx) {
    py::array_t<T> a({N, C, S});
    dxp = a.mutable_data();
    dx = a;
  }
  if (need_dw) {
    py::array_t<T> a(C);
    dwp = a.mutable_data();
    dw = a;
  }
  if (need_db) {
    py::array_t<T> a(C);
    dbp = a.mutable_data();
    db = a;
  }
  const T* xp = static_cast<const T*>(x.data());
  const T* gp = static_cast<const T*>(dy.data());
  {
    py::gil_scoped_release release;
    gmcore::norm_chan_backward_cpu<T>(xp, gp, wp, mp, rp, dxp, dwp, dbp, N, C, S, train);
  }
  return py::make_tuple(dx, dw, db);
}

py::tuple chan_backward(const py::array& x, const py::array& dy, const OptArray& w,
                        const py::array& mean, const py::array& rstd, bool train, bool need_dx,
                        bool need_dw, bool need_db) {
  const char k = check_float_array(x, "norm_chan_backward_cpu", "x", 3);
  return k == 'f' ? chan_backward_t<float>(x, dy, w, mean, rstd, train, need_dx, need_dw, need_db, k)
                  : chan_backward_t<double>(x, dy, w, mean, rstd, train, need_dx, need_dw, need_db, k);
}

#if defined(GMCORE_WITH_CUDA)
template <typename T>
inline const T* cp(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
inline T* mp(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void row_forward_cuda(std::uintptr_t x, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y,
                      std::uintptr_t mean, std::uintptr_t rstd, int64_t R, int64_t G, int64_t K,
                      int64_t S, double eps, const std::string& dtype, std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "norm_row_forward_cuda");
  check_sizes(R, K * S, G, K, S, "norm_row_forward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::norm_row_forward_cuda<float>(cp<float>(x), cp<float>(w), cp<float>(b), mp<float>(y),
                                         mp<double>(mean), mp<double>(rstd), R, G, K, S, eps, stream);
  else
    gmcore::norm_row_forward_cuda<double>(cp<double>(x), cp<double>(w), cp<double>(b), mp<double>(y),
                                          mp<double>(mean), mp<double>(rstd), R, G, K, S, eps, stream);
}

void row_backward_cuda(std::uintptr_t x, std::uintptr_t dy, std::uintptr_t w, std::uintptr_t mean,
                       std::uintptr_t rstd, std::uintptr_t dx, std::uintptr_t dw, std::uintptr_t db,
                       int64_t R, int64_t G, int64_t K, int64_t S, const std::string& dtype,
                       std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "norm_row_backward_cuda");
  check_sizes(R, K * S, G, K, S, "norm_row_backward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::norm_row_backward_cuda<float>(cp<float>(x), cp<float>(dy), cp<float>(w), cp<double>(mean),
                                          cp<double>(rstd), mp<float>(dx), mp<float>(dw), mp<float>(db),
                                          R, G, K, S, stream);
  else
    gmcore::norm_row_backward_cuda<double>(cp<double>(x), cp<double>(dy), cp<double>(w),
                                           cp<double>(mean), cp<double>(rstd), mp<double>(dx),
                                           mp<double>(dw), mp<double>(db), R, G, K, S, stream);
}

void chan_forward_cuda(std::uintptr_t x, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y,
                       std::uintptr_t mean, std::uintptr_t var, std::uintptr_t rstd, int64_t N,
                       int64_t C, int64_t S, double eps, bool train, const std::string& dtype,
                       std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "norm_chan_forward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::norm_chan_forward_cuda<float>(cp<float>(x), cp<float>(w), cp<float>(b), mp<float>(y),
                                          mp<double>(mean), mp<double>(var), mp<double>(rstd), N, C,
                                          S, eps, train, stream);
  else
    gmcore::norm_chan_forward_cuda<double>(cp<double>(x), cp<double>(w), cp<double>(b), mp<double>(y),
                                           mp<double>(mean), mp<double>(var), mp<double>(rstd), N,
                                           C, S, eps, train, stream);
}

void chan_backward_cuda(std::uintptr_t x, std::uintptr_t dy, std::uintptr_t w, std::uintptr_t mean,
                        std::uintptr_t rstd, std::uintptr_t dx, std::uintptr_t dw, std::uintptr_t db,
                        int64_t N, int64_t C, int64_t S, bool train, const std::string& dtype,
                        std::uintptr_t stream) {
  const char k = gmcore::check_dtype_str(dtype, "norm_chan_backward_cuda");
  py::gil_scoped_release release;
  if (k == 'f')
    gmcore::norm_chan_backward_cuda<float>(cp<float>(x), cp<float>(dy), cp<float>(w), cp<double>(mean),
                                           cp<double>(rstd), mp<float>(dx), mp<float>(dw),
                                           mp<float>(db), N, C, S, train, stream);
  else
    gmcore::norm_chan_backward_cuda<double>(cp<double>(x), cp<double>(dy), cp<double>(w),
                                            cp<double>(mean), cp<double>(rstd), mp<double>(dx),
                                            mp<double>(dw), mp<double>(db), N, C, S, train, stream);
}
#endif

void bind(py::module_& m) {
  m.def("norm_row_forward_cpu", &row_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("G"), py::arg("K"), py::arg("S"), py::arg("eps"),
        "Layer/group norm forward of a C-contiguous (R, K*S) array; weight/bias (G*K,) or None. "
        "Returns (y, mean, rstd), the statistics as float64 (R,).");
  m.def("norm_row_backward_cpu", &row_backward, py::arg("x"), py::arg("dy"), py::arg("weight"),
        py::arg("mean"), py::arg("rstd"), py::arg("G"), py::arg("K"), py::arg("S"),
        py::arg("need_dweight"), py::arg("need_dbias"),
        "Fused backward of norm_row_forward_cpu: (dx, dweight or None, dbias or None).");
  m.def("norm_chan_forward_cpu", &chan_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("mean"), py::arg("rstd"), py::arg("eps"), py::arg("train"),
        "Batch norm forward of a C-contiguous (N, C, S) array. train: batch statistics, returns "
        "(y, mean, var, rstd) (float64 (C,), var biased); else normalises with the given mean "
        "and rstd and returns (y, mean, None, rstd).");
  m.def("norm_chan_backward_cpu", &chan_backward, py::arg("x"), py::arg("dy"), py::arg("weight"),
        py::arg("mean"), py::arg("rstd"), py::arg("train"), py::arg("need_dx"),
        py::arg("need_dweight"), py::arg("need_dbias"),
        "Fused backward of norm_chan_forward_cpu: (dx, dweight, dbias), None where not needed.");
#if defined(GMCORE_WITH_CUDA)
  m.def("norm_row_forward_cuda", &row_forward_cuda, py::arg("x_ptr"), py::arg("w_ptr"),
        py::arg("b_ptr"), py::arg("y_ptr"), py::arg("mean_ptr"), py::arg("rstd_ptr"), py::arg("R"),
        py::arg("G"), py::arg("K"), py::arg("S"), py::arg("eps"), py::arg("dtype"),
        py::arg("stream") = 0, "Device pointers (0 for no weight/bias): norm_row_forward_cpu.");
  m.def("norm_row_backward_cuda", &row_backward_cuda, py::arg("x_ptr"), py::arg("dy_ptr"),
        py::arg("w_ptr"), py::arg("mean_ptr"), py::arg("rstd_ptr"), py::arg("dx_ptr"),
        py::arg("dw_ptr"), py::arg("db_ptr"), py::arg("R"), py::arg("G"), py::arg("K"),
        py::arg("S"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers (0 where not wanted): norm_row_backward_cpu.");
  m.def("norm_chan_forward_cuda", &chan_forward_cuda, py::arg("x_ptr"), py::arg("w_ptr"),
        py::arg("b_ptr"), py::arg("y_ptr"), py::arg("mean_ptr"), py::arg("var_ptr"),
        py::arg("rstd_ptr"), py::arg("N"), py::arg("C"), py::arg("S"), py::arg("eps"),
        py::arg("train"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers: norm_chan_forward_cpu (train writes mean/var/rstd, eval reads them).");
  m.def("norm_chan_backward_cuda", &chan_backward_cuda, py::arg("x_ptr"), py::arg("dy_ptr"),
        py::arg("w_ptr"), py::arg("mean_ptr"), py::arg("rstd_ptr"), py::arg("dx_ptr"),
        py::arg("dw_ptr"), py::arg("db_ptr"), py::arg("N"), py::arg("C"), py::arg("S"),
        py::arg("train"), py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers (0 where not wanted): norm_chan_backward_cpu.");
#endif
}

gmcore::RegisterBindings reg("norm", &bind);

}  // namespace
