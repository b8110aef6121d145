// Bindings of the activation family: pointwise activations forward / backward and concat_elu
// (csrc/activation.h).  Ops are named as on the Python side.
#include "../csrc/activation.h"

#include <string>
#include <vector>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_same_dtype;

int op_code(const std::string& op, const char* fn) {
  static const char* const names[] = {"gelu", "gelu_tanh", "silu", "elu",
                                      "leaky_relu", "softplus", "mish"};
  for (int i = 0; i < gmcore::act::kNumOps; ++i)
    if (op == names[i]) return i;
  throw py::value_error(gmcore::where(fn) + "unknown activation '" + op +
                        "' (expected gelu, gelu_tanh, silu, elu, leaky_relu, softplus or mish)");
}

std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

template <typename T>
py::array forward_t(int op, const py::array& x, double a, double b) {
  py::array_t<T> y(shape_of(x));
  const T* xp = static_cast<const T*>(x.data());
  T* yp = y.mutable_data();
  const auto n = static_cast<int64_t>(x.size());
  {
    py::gil_scoped_release release;
    gmcore::activation_forward_cpu<T>(op, xp, yp, n, static_cast<T>(a), static_cast<T>(b));
  }
  return y;
}

template <typename T>
py::array backward_t(int op, const py::array& g, const py::array& x, double a, double b,
                     bool g_scalar) {
  py::array_t<T> dx(shape_of(x));
  const T* gp = static_cast<const T*>(g.data());
  const T* xp = static_cast<const T*>(x.data());
  T* dp = dx.mutable_data();
  const auto n = static_cast<int64_t>(x.size());
  {
    py::gil_scoped_release release;
    gmcore::activation_backward_cpu<T>(op, gp, xp, dp, n, static_cast<T>(a), static_cast<T>(b),
                                       g_scalar);
  }
  return dx;
}

py::array activation_forward_cpu(const std::string& op, const py::array& x, double a, double b) {
  const int code = op_code(op, "activation_forward_cpu");
  return check_float_array(x, "activation_forward_cpu", "x") == 'f'
             ? forward_t<float>(code, x, a, b)
             : forward_t<double>(code, x, a, b);
}

py::array activation_backward_cpu(const std::string& op, const py::array& g, const py::array& x,
                                  double a, double b) {
  const char* fn = "activation_backward_cpu";
  const int code = op_code(op, fn);
  const char k = check_float_array(x, fn, "x");
  check_same_dtype(g, k, fn, "grad");
  // a one-element grad is broadcast (the gradient of y.sum() arrives as a stride-0 view)
  const bool g_scalar = g.size() == 1 && x.size() != 1;
  if (g.size() != x.size() && !g_scalar)
    throw py::value_error(gmcore::where(fn) + "grad has " + std::to_string(g.size()) +
                          " elements, x has " + std::to_string(x.size()) + " (1 is broadcast)");
  return k == 'f' ? backward_t<float>(code, g, x, a, b, g_scalar)
                  : backward_t<double>(code, g, x, a, b, g_scalar);
}

// x (B, C, ...) -> (B, 2C, ...): rows = B, n = C * prod(rest).
template <typename T>
py::array concat_elu_forward_t(const py::array& x, double alpha) {
  auto shape = shape_of(x);
  const auto rows = static_cast<int64_t>(shape[0]);
  const auto n = rows ? static_cast<int64_t>(x.size()) / rows : 0;
  shape[1] *= 2;
  py::array_t<T> y(shape);
  const T* xp = static_cast<const T*>(x.data());
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::concat_elu_forward_cpu<T>(xp, yp, rows, n, static_cast<T>(alpha));
  }
  return y;
}

template <typename T>
py::array concat_elu_backward_t(const py::array& g, const py::array& x, double alpha) {
  const auto rows = static_cast<int64_t>(x.shape(0));
  const auto n = rows ? static_cast<int64_t>(x.size()) / rows : 0;
  py::array_t<T> dx(shape_of(x));
  const T* gp = static_cast<const T*>(g.data());
  const T* xp = static_cast<const T*>(x.data());
  T* dp = dx.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::concat_elu_backward_cpu<T>(gp, xp, dp, rows, n, static_cast<T>(alpha));
  }
  return dx;
}

void check_concat_shapes(const py::array& x, const char* fn) {
  if (x.ndim() < 2)
    throw py::value_error(gmcore::where(fn) + "x must have at least 2 dims (batch, channels, ...)");
}

py::array concat_elu_forward_cpu(const py::array& x, double alpha) {
  const char* fn = "concat_elu_forward_cpu";
  const char k = check_float_array(x, fn, "x");
  check_concat_shapes(x, fn);
  return k == 'f' ? concat_elu_forward_t<float>(x, alpha) : concat_elu_forward_t<double>(x, alpha);
}

py::array concat_elu_backward_cpu(const py::array& g, const py::array& x, double alpha) {
  const char* fn = "concat_elu_backward_cpu";
  const char k = check_float_array(x, fn, "x");
  check_concat_shapes(x, fn);
  check_same_dtype(g, k, fn, "grad");
  bool ok = g.ndim() == x.ndim() && g.shape(1) == 2 * x.shape(1);
  for (py::ssize_t d = 0; ok && d < x.ndim(); ++d) ok = d == 1 || g.shape(d) == x.shape(d);
  if (!ok)
    throw py::value_error(gmcore::where(fn) + "grad must have x's shape with twice the channels");
  return k == 'f' ? concat_elu_backward_t<float>(g, x, alpha)
                  : concat_elu_backward_t<double>(g, x, alpha);
}

void bind(py::module_& m) {
  m.def("activation_forward_cpu", &activation_forward_cpu, py::arg("op"), py::arg("x"),
        py::arg("a") = 0.0, py::arg("b") = 0.0,
        "y = op(x) elementwise on a C-contiguous float32/float64 array; a, b: the op's scalars "
        "(elu: alpha; leaky_relu: negative_slope; softplus: beta, threshold).");
  m.def("activation_backward_cpu", &activation_backward_cpu, py::arg("op"), py::arg("grad"),
        py::arg("x"), py::arg("a") = 0.0, py::arg("b") = 0.0,
        "dx = grad * op'(x) elementwise (grad and x C-contiguous, same dtype and size; a "
        "one-element grad is broadcast).");
  m.def("concat_elu_forward_cpu", &concat_elu_forward_cpu, py::arg("x"), py::arg("alpha") = 1.0,
        "elu(cat([x, -x], 1)) of a C-contiguous (B, C, ...) float32/float64 array.");
  m.def("concat_elu_backward_cpu", &concat_elu_backward_cpu, py::arg("grad"), py::arg("x"),
        py::arg("alpha") = 1.0, "Gradient of concat_elu: grad (B, 2C, ...), x (B, C, ...).");
}

gmcore::RegisterBindings reg("activation", &bind);

}  // namespace
