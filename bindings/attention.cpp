// Bindings of the attention family: fused scaled-dot-product attention (csrc/attention.h).
#include "../csrc/attention.h"

#include <algorithm>
#include <string>
#include <utility>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_same_dtype;
using gmcore::where;

struct Dims {
  int64_t BH, L, S, E, Ev;
};

// q (BH, L, E), k (BH, S, E), v (BH, S, Ev): C-contiguous, one float dtype.
Dims check_qkv(const py::array& q, const py::array& k, const py::array& v, char kind,
               const char* fn) {
  check_same_dtype(k, kind, fn, "k");
  check_same_dtype(v, kind, fn, "v");
  if (k.ndim() != 3 || v.ndim() != 3)
    throw py::value_error(where(fn) + "k and v must be 3-D (batch*heads, seq, features)");
  Dims d{q.shape(0), q.shape(1), k.shape(1), q.shape(2), v.shape(2)};
  if (k.shape(0) != d.BH || v.shape(0) != d.BH)
    throw py::value_error(where(fn) + "q, k and v must have the same leading (batch*heads) size");
  if (k.shape(2) != d.E)
    throw py::value_error(where(fn) + "q and k must have the same feature size");
  if (v.shape(1) != d.S)
    throw py::value_error(where(fn) + "k and v must have the same sequence length");
  return d;
}

void check_shape(const py::array& a, std::initializer_list<int64_t> shape, const char* fn,
                 const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) ok = ok && a.shape(i++) == s;
  if (!ok) throw py::value_error(where(fn) + name + " has the wrong shape");
}

// The optional additive mask: a C-contiguous array of q's dtype read at
// moff[b] + i * mrs + j * mcs; every read must stay inside it.
struct Mask {
  const void* data = nullptr;
  const int64_t* moff = nullptr;
};

Mask check_mask(const py::object& mask, const py::object& moff, int64_t mrs, int64_t mcs,
                const Dims& d, char kind, const char* fn) {
  Mask m;
  if (mask.is_none()) return m;
  const auto ma = py::cast<py::array>(mask);
  const auto oa = py::cast<py::array>(moff);
  check_same_dtype(ma, kind, fn, "mask");
  gmcore::check_int64_array(oa, fn, "mask_offsets");
  if (oa.ndim() != 1 || oa.shape(0) != d.BH)
    throw py::value_error(where(fn) + "mask_offsets must have one entry per batch*head");
  if (mrs < 0 || mcs < 0) throw py::value_error(where(fn) + "mask strides must be >= 0");
  const int64_t* off = static_cast<const int64_t*>(oa.data());
  const int64_t span = (d.L > 0 ? (d.L - 1) * mrs : 0) + (d.S > 0 ? (d.S - 1) * mcs : 0);
  for (int64_t b = 0; b < d.BH; ++b)
    if (d.L > 0 && d.S > 0 && (off[b] < 0 || off[b] + span >= static_cast<int64_t>(ma.size())))
      throw py::value_error(where(fn) + "mask offsets/strides read outside the mask array");
  m.data = ma.data();
  m.moff = off;
  return m;
}

template <typename T>
py::tuple forward_t(const py::array& q, const py::array& k, const py::array& v, const Dims& d,
                    const Mask& m, int64_t mrs, int64_t mcs, double scale, bool causal) {
  py::array_t<T> o({d.BH, d.L, d.Ev});
  py::array_t<T> lse({d.BH, d.L});
  const T* qp = static_cast<const T*>(q.data());
  const T* kp = static_cast<const T*>(k.data());
  const T* vp = static_cast<const T*>(v.data());
  T* op = o.mutable_data();
  T* lp = lse.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::attention_forward_cpu<T>(qp, kp, vp, static_cast<const T*>(m.data), m.moff, mrs, mcs,
                                     op, lp, d.BH, d.L, d.S, d.E, d.Ev, static_cast<T>(scale),
                                     causal);
  }
  return py::make_tuple(o, lse);
}

py::tuple attention_forward_cpu(const py::array& q, const py::array& k, const py::array& v,
                                const py::object& mask, const py::object& moff, int64_t mrs,
                                int64_t mcs, double scale, bool causal) {
  const char* fn = "attention_forward_cpu";
  const char kind = check_float_array(q, fn, "q", 3);
  const Dims d = check_qkv(q, k, v, kind, fn);
  const Mask m = check_mask(mask, moff, mrs, mcs, d, kind, fn);
  return kind == 'f' ? forward_t<float>(q, k, v, d, m, mrs, mcs, scale, causal)
                     : forward_t<double>(q, k, v, d, m, mrs, mcs, scale, causal);
}

template <typename T>
py::tuple backward_t(const py::array& q, const py::array& k, const py::array& v,
                     const py::array& o, const py::array& dout, const py::array& lse,
                     const Dims& d, const Mask& m, int64_t mrs, int64_t mcs, double scale,
                     bool causal) {
  py::array_t<T> dq({d.BH, d.L, d.E}), dk({d.BH, d.S, d.E}), dv({d.BH, d.S, d.Ev});
  auto c = [](const py::array& a) { return static_cast<const T*>(a.data()); };
  const T *qp = c(q), *kp = c(k), *vp = c(v), *op = c(o), *gp = c(dout), *lp = c(lse);
  T *dqp = dq.mutable_data(), *dkp = dk.mutable_data(), *dvp = dv.mutable_data();
  {
    py::gil_scoped_release release;
    gmcore::attention_backward_cpu<T>(qp, kp, vp, op, gp, lp, static_cast<const T*>(m.data), m.moff,
                                      mrs, mcs, dqp, dkp, dvp, d.BH, d.L, d.S, d.E, d.Ev,
                                      static_cast<T>(scale), causal);
  }
  return py::make_tuple(dq, dk, dv);
}

py::tuple attention_backward_cpu(const py::array& q, const py::array& k, const py::array& v,
                                 const py::array& o, const py::array& dout, const py::array& lse,
                                 const py::object& mask, const py::object& moff, int64_t mrs,
                                 int64_t mcs, double scale, bool causal) {
  const char* fn = "attention_backward_cpu";
  const char kind = check_float_array(q, fn, "q", 3);
  const Dims d = check_qkv(q, k, v, kind, fn);
  check_same_dtype(o, kind, fn, "o");
  check_same_dtype(dout, kind, fn, "dout");
  check_same_dtype(lse, kind, fn, "lse");
  check_shape(o, {d.BH, d.L, d.Ev}, fn, "o");
  check_shape(dout, {d.BH, d.L, d.Ev}, fn, "dout");
  check_shape(lse, {d.BH, d.L}, fn, "lse");
  const Mask m = check_mask(mask, moff, mrs, mcs, d, kind, fn);
  return kind == 'f' ? backward_t<float>(q, k, v, o, dout, lse, d, m, mrs, mcs, scale, causal)
                     : backward_t<double>(q, k, v, o, dout, lse, d, m, mrs, mcs, scale, causal);
}

#if defined(GMCORE_WITH_CUDA)
void attention_forward_cuda(std::uintptr_t q, std::uintptr_t k, std::uintptr_t v,
                            std::uintptr_t mask, std::uintptr_t moff, int64_t mrs, int64_t mcs,
                            std::uintptr_t o, std::uintptr_t lse, int64_t BH, int64_t L, int64_t S,
                            int64_t E, int64_t Ev, double scale, bool causal,
                            const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "attention_forward_cuda";
  const char kind = gmcore::check_dtype_str(dtype, fn);
  for (auto p : {std::make_pair(BH, "BH"), std::make_pair(L, "L"), std::make_pair(S, "S"),
                 std::make_pair(E, "E"), std::make_pair(Ev, "Ev")})
    gmcore::check_nonnegative(p.first, fn, p.second);
  py::gil_scoped_release release;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    gmcore::attention_forward_cuda<T>(
        reinterpret_cast<const T*>(q), reinterpret_cast<const T*>(k), reinterpret_cast<const T*>(v),
        reinterpret_cast<const T*>(mask), reinterpret_cast<const int64_t*>(moff), mrs, mcs,
        reinterpret_cast<T*>(o), reinterpret_cast<T*>(lse), BH, L, S, E, Ev, static_cast<T>(scale),
        causal, stream);
  };
  if (kind == 'f') run(float{}); else run(double{});
}

void attention_backward_cuda(std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t o,
                             std::uintptr_t dout, std::uintptr_t lse, std::uintptr_t mask,
                             std::uintptr_t moff, int64_t mrs, int64_t mcs, std::uintptr_t dq,
                             std::uintptr_t dk, std::uintptr_t dv, int64_t BH, int64_t L, int64_t S,
                             int64_t E, int64_t Ev, double scale, bool causal,
                             const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "attention_backward_cuda";
  const char kind = gmcore::check_dtype_str(dtype, fn);
  for (auto p : {std::make_pair(BH, "BH"), std::make_pair(L, "L"), std::make_pair(S, "S"),
                 std::make_pair(E, "E"), std::make_pair(Ev, "Ev")})
    gmcore::check_nonnegative(p.first, fn, p.second);
  py::gil_scoped_release release;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    auto c = [](std::uintptr_t p) { return reinterpret_cast<const T*>(p); };
    auto w = [](std::uintptr_t p) { return reinterpret_cast<T*>(p); };
    gmcore::attention_backward_cuda<T>(c(q), c(k), c(v), c(o), c(dout), c(lse), c(mask),
                                       reinterpret_cast<const int64_t*>(moff), mrs, mcs, w(dq),
                                       w(dk), w(dv), BH, L, S, E, Ev, static_cast<T>(scale), causal,
                                       stream);
  };
  if (kind == 'f') run(float{}); else run(double{});
}
#endif

void bind(py::module_& m) {
  m.def("attention_forward_cpu", &attention_forward_cpu, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("mask"), py::arg("mask_offsets"), py::arg("mask_row_stride"),
        py::arg("mask_col_stride"), py::arg("scale"), py::arg("causal"),
        "Fused attention forward on C-contiguous (BH, L, E), (BH, S, E), (BH, S, Ev) arrays -> "
        "(out (BH, L, Ev), lse (BH, L)). mask: None or an additive array read at "
        "mask_offsets[b] + i * mask_row_stride + j * mask_col_stride.");
  m.def("attention_backward_cpu", &attention_backward_cpu, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("out"), py::arg("dout"), py::arg("lse"), py::arg("mask"),
        py::arg("mask_offsets"), py::arg("mask_row_stride"), py::arg("mask_col_stride"),
        py::arg("scale"), py::arg("causal"),
        "Fused attention backward from the saved lse -> (dq, dk, dv).");
#if defined(GMCORE_WITH_CUDA)
  m.def("attention_forward_cuda", &attention_forward_cuda, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("mask"), py::arg("mask_offsets"), py::arg("mask_row_stride"),
        py::arg("mask_col_stride"), py::arg("out"), py::arg("lse"), py::arg("BH"), py::arg("L"),
        py::arg("S"), py::arg("E"), py::arg("Ev"), py::arg("scale"), py::arg("causal"),
        py::arg("dtype"), py::arg("stream") = 0,
        "Device pointers (mask 0 = none): fused attention forward into out and lse.");
  m.def("attention_backward_cuda", &attention_backward_cuda, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("out"), py::arg("dout"), py::arg("lse"), py::arg("mask"),
        py::arg("mask_offsets"), py::arg("mask_row_stride"), py::arg("mask_col_stride"),
        py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("BH"), py::arg("L"), py::arg("S"),
        py::arg("E"), py::arg("Ev"), py::arg("scale"), py::arg("causal"), py::arg("dtype"),
        py::arg("stream") = 0, "Device pointers: fused attention backward into dq, dk, dv.");
#endif
}

gmcore::RegisterBindings reg("attention", &bind);

}  // namespace
