// Bindings of the diffusion family (csrc/diffusion.h): q_sample, x0 prediction, DDPM/DDIM steps,
// eps-MSE and hybrid losses (forward and backward).
//
// CPU entry points take C-contiguous NumPy arrays: data (B, N) (the learned-range model output
// (B, 2N)), int64 timesteps (B,), the (11, T) coefficient table and the (T,) weights in the data
// dtype; they check shapes, dtypes and the timestep range (tables are indexed with t) and
// return new arrays.  CUDA entry points take device pointers, sizes, a dtype string and a
// stream; the caller has range-checked the timesteps.
#include "../csrc/diffusion.h"

#include <string>

#include "common.h"
#include "registry.h"

namespace {
namespace py = pybind11;
using gmcore::check_float_array;
using gmcore::check_int64_array;
using gmcore::check_same_dtype;
using gmcore::where;

struct Dims {
  int64_t B, N;
};

Dims data_dims(const py::array& x, const char* fn, const char* name, char* kind) {
  *kind = check_float_array(x, fn, name, 2);
  return Dims{static_cast<int64_t>(x.shape(0)), static_cast<int64_t>(x.shape(1))};
}

void check_shape(const py::array& a, char k, int64_t rows, int64_t cols, const char* fn,
                 const char* name) {
  check_same_dtype(a, k, fn, name);
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
    throw py::value_error(where(fn) + name + " must have shape (" + std::to_string(rows) + ", " +
                          std::to_string(cols) + ")");
}

void check_vec(const py::array& a, char k, int64_t n, const char* fn, const char* name) {
  check_same_dtype(a, k, fn, name);
  if (a.ndim() != 1 || (n >= 0 && a.shape(0) != n))
    throw py::value_error(where(fn) + name + " must be 1-D" +
                          (n >= 0 ? " of length " + std::to_string(n) : std::string()));
}

// int64 (B,) timesteps in [low, n)
void check_steps(const py::array& t, int64_t B, int64_t n, int64_t low, const char* fn,
                 const char* name) {
  check_int64_array(t, fn, name);
  if (t.ndim() != 1 || t.shape(0) != B)
    throw py::value_error(where(fn) + name + " must have shape (" + std::to_string(B) + ",)");
  const int64_t* p = static_cast<const int64_t*>(t.data());
  for (int64_t i = 0; i < B; ++i)
    if (p[i] < low || p[i] >= n)
      throw py::value_error(where(fn) + name + " values must lie in [" + std::to_string(low) + ", " +
                            std::to_string(n - 1) + "], got " + std::to_string(p[i]));
}

int64_t check_table(const py::array& tab, char k, const char* fn) {
  check_same_dtype(tab, k, fn, "tab");
  if (tab.ndim() != 2 || tab.shape(0) != gmcore::diff::kRows || tab.shape(1) < 1)
    throw py::value_error(where(fn) + "tab must have shape (" + std::to_string(gmcore::diff::kRows) +
                          ", T) (NoiseSchedule.table)");
  return static_cast<int64_t>(tab.shape(1));
}

template <typename T>
const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}
const int64_t* iptr(const py::array& a) { return static_cast<const int64_t*>(a.data()); }

template <typename T>
py::array new_like(int64_t B, int64_t N) {
  return py::array_t<T>({B, N});
}

// Each entry point: checks, then the typed body with the GIL released.
#define GM_DISPATCH(kind, ...) \
  if ((kind) == 'f') {         \
    using T = float;           \
    __VA_ARGS__                \
  } else {                     \
    using T = double;          \
    __VA_ARGS__                \
  }

py::array q_sample_cpu(const py::array& x0, const py::array& noise, const py::array& t,
                       const py::array& tab) {
  const char* fn = "diffusion_q_sample_cpu";
  char k;
  const Dims d = data_dims(x0, fn, "x0", &k);
  check_shape(noise, k, d.B, d.N, fn, "noise");
  const int64_t nT = check_table(tab, k, fn);
  check_steps(t, d.B, nT, 0, fn, "t");
  py::array out;
  GM_DISPATCH(k, {
    out = new_like<T>(d.B, d.N);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_q_sample_cpu<T>(cptr<T>(x0), cptr<T>(noise), iptr(t), cptr<T>(tab), nT, o, d.B, d.N);
  })
  return out;
}

py::array predict_x0_cpu(const py::array& xt, const py::array& eps, const py::array& t,
                         const py::array& tab, bool clip) {
  const char* fn = "diffusion_predict_x0_cpu";
  char k;
  const Dims d = data_dims(xt, fn, "xt", &k);
  check_shape(eps, k, d.B, d.N, fn, "eps");
  const int64_t nT = check_table(tab, k, fn);
  check_steps(t, d.B, nT, 0, fn, "t");
  py::array out;
  GM_DISPATCH(k, {
    out = new_like<T>(d.B, d.N);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_predict_x0_cpu<T>(cptr<T>(xt), cptr<T>(eps), iptr(t), cptr<T>(tab), nT, clip, o,
                                        d.B, d.N);
  })
  return out;
}

py::array ddpm_step_cpu(const py::array& xt, const py::array& model_out, const py::array& noise,
                        const py::array& t, const py::array& tab, int var_code, bool clip) {
  const char* fn = "diffusion_ddpm_step_cpu";
  if (var_code < 0 || var_code > 2)
    throw py::value_error(where(fn) + "var_code must be 0 (fixed_small), 1 (fixed_large) or 2 (learned_range)");
  char k;
  const Dims d = data_dims(xt, fn, "xt", &k);
  check_shape(model_out, k, d.B, var_code == 2 ? 2 * d.N : d.N, fn, "model_out");
  check_shape(noise, k, d.B, d.N, fn, "noise");
  const int64_t nT = check_table(tab, k, fn);
  check_steps(t, d.B, nT, 0, fn, "t");
  py::array out;
  GM_DISPATCH(k, {
    out = new_like<T>(d.B, d.N);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_ddpm_step_cpu<T>(cptr<T>(xt), cptr<T>(model_out), cptr<T>(noise), iptr(t),
                                       cptr<T>(tab), nT, var_code, clip, o, d.B, d.N);
  })
  return out;
}

py::array ddim_step_cpu(const py::array& xt, const py::array& eps, const py::array& noise,
                        const py::array& t, const py::array& t_prev, const py::array& tab, double eta,
                        bool clip) {
  const char* fn = "diffusion_ddim_step_cpu";
  char k;
  const Dims d = data_dims(xt, fn, "xt", &k);
  check_shape(eps, k, d.B, d.N, fn, "eps");
  check_shape(noise, k, d.B, d.N, fn, "noise");
  const int64_t nT = check_table(tab, k, fn);
  check_steps(t, d.B, nT, 0, fn, "t");
  check_steps(t_prev, d.B, nT, -1, fn, "t_prev");
  py::array out;
  GM_DISPATCH(k, {
    out = new_like<T>(d.B, d.N);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_ddim_step_cpu<T>(cptr<T>(xt), cptr<T>(eps), cptr<T>(noise), iptr(t), iptr(t_prev),
                                       cptr<T>(tab), nT, static_cast<T>(eta), clip, o, d.B, d.N);
  })
  return out;
}

py::array eps_loss_fwd_cpu(const py::array& pred, const py::array& noise, const py::array& t,
                           const py::array& w) {
  const char* fn = "diffusion_eps_loss_fwd_cpu";
  char k;
  const Dims d = data_dims(pred, fn, "pred", &k);
  check_shape(noise, k, d.B, d.N, fn, "noise");
  check_vec(w, k, -1, fn, "w");
  check_steps(t, d.B, static_cast<int64_t>(w.shape(0)), 0, fn, "t");
  py::array out;
  GM_DISPATCH(k, {
    out = py::array_t<T>(d.B);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_eps_loss_fwd_cpu<T>(cptr<T>(pred), cptr<T>(noise), iptr(t), cptr<T>(w), o, d.B, d.N);
  })
  return out;
}

py::array eps_loss_bwd_cpu(const py::array& pred, const py::array& noise, const py::array& t,
                           const py::array& w, const py::array& g) {
  const char* fn = "diffusion_eps_loss_bwd_cpu";
  char k;
  const Dims d = data_dims(pred, fn, "pred", &k);
  check_shape(noise, k, d.B, d.N, fn, "noise");
  check_vec(w, k, -1, fn, "w");
  check_vec(g, k, d.B, fn, "g");
  check_steps(t, d.B, static_cast<int64_t>(w.shape(0)), 0, fn, "t");
  py::array out;
  GM_DISPATCH(k, {
    out = new_like<T>(d.B, d.N);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_eps_loss_bwd_cpu<T>(cptr<T>(pred), cptr<T>(noise), iptr(t), cptr<T>(w), cptr<T>(g),
                                          o, d.B, d.N);
  })
  return out;
}

// shared checks of the hybrid entry points; returns (dims, nT)
std::pair<Dims, int64_t> hybrid_checks(const py::array& model_out, const py::array& x0,
                                       const py::array& xt, const py::array& noise, const py::array& t,
                                       const py::array& tab, const py::array& w, const char* fn, char* k) {
  const Dims d = data_dims(x0, fn, "x0", k);
  check_shape(model_out, *k, d.B, 2 * d.N, fn, "model_out");
  check_shape(xt, *k, d.B, d.N, fn, "xt");
  check_shape(noise, *k, d.B, d.N, fn, "noise");
  const int64_t nT = check_table(tab, *k, fn);
  check_vec(w, *k, nT, fn, "w");
  check_steps(t, d.B, nT, 0, fn, "t");
  return {d, nT};
}

py::array hybrid_fwd_cpu(const py::array& model_out, const py::array& x0, const py::array& xt,
                         const py::array& noise, const py::array& t, const py::array& tab,
                         const py::array& w, double vb_weight) {
  const char* fn = "diffusion_hybrid_fwd_cpu";
  char k;
  const auto [d, nT] = hybrid_checks(model_out, x0, xt, noise, t, tab, w, fn, &k);
  py::array out;
  GM_DISPATCH(k, {
    out = py::array_t<T>(d.B);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_hybrid_fwd_cpu<T>(cptr<T>(model_out), cptr<T>(x0), cptr<T>(xt), cptr<T>(noise),
                                        iptr(t), cptr<T>(tab), nT, cptr<T>(w), vb_weight, o, d.B, d.N);
  })
  return out;
}

py::array hybrid_bwd_cpu(const py::array& model_out, const py::array& x0, const py::array& xt,
                         const py::array& noise, const py::array& t, const py::array& tab,
                         const py::array& w, double vb_weight, const py::array& g) {
  const char* fn = "diffusion_hybrid_bwd_cpu";
  char k;
  const auto [d, nT] = hybrid_checks(model_out, x0, xt, noise, t, tab, w, fn, &k);
  check_vec(g, k, d.B, fn, "g");
  py::array out;
  GM_DISPATCH(k, {
    out = new_like<T>(d.B, 2 * d.N);
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    gmcore::diffusion_hybrid_bwd_cpu<T>(cptr<T>(model_out), cptr<T>(x0), cptr<T>(xt), cptr<T>(noise),
                                        iptr(t), cptr<T>(tab), nT, cptr<T>(w), vb_weight, cptr<T>(g), o,
                                        d.B, d.N);
  })
  return out;
}

#if defined(GMCORE_WITH_CUDA)
using P = std::uintptr_t;
template <typename T>
const T* dp(P p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* mp(P p) {
  return reinterpret_cast<T*>(p);
}
const int64_t* ip(P p) { return reinterpret_cast<const int64_t*>(p); }

char cuda_prelude(const std::string& dtype, int64_t B, int64_t N, const char* fn) {
  const char k = gmcore::check_dtype_str(dtype, fn);
  gmcore::check_nonnegative(B, fn, "B");
  gmcore::check_nonnegative(N, fn, "N");
  return k;
}

void q_sample_cuda(P x0, P noise, P t, P tab, int64_t nT, P out, int64_t B, int64_t N,
                   const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_q_sample_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_q_sample_cuda<T>(dp<T>(x0), dp<T>(noise), ip(t), dp<T>(tab), nT, mp<T>(out), B, N, stream); })
}

void predict_x0_cuda(P xt, P eps, P t, P tab, int64_t nT, bool clip, P out, int64_t B, int64_t N,
                     const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_predict_x0_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_predict_x0_cuda<T>(dp<T>(xt), dp<T>(eps), ip(t), dp<T>(tab), nT, clip, mp<T>(out), B, N, stream); })
}

void ddpm_step_cuda(P xt, P model_out, P noise, P t, P tab, int64_t nT, int var_code, bool clip, P out,
                    int64_t B, int64_t N, const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_ddpm_step_cuda");
  if (var_code < 0 || var_code > 2) throw py::value_error("gmcore._C.diffusion_ddpm_step_cuda: bad var_code");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_ddpm_step_cuda<T>(dp<T>(xt), dp<T>(model_out), dp<T>(noise), ip(t), dp<T>(tab), nT, var_code, clip, mp<T>(out), B, N, stream); })
}

void ddim_step_cuda(P xt, P eps, P noise, P t, P t_prev, P tab, int64_t nT, double eta, bool clip, P out,
                    int64_t B, int64_t N, const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_ddim_step_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_ddim_step_cuda<T>(dp<T>(xt), dp<T>(eps), dp<T>(noise), ip(t), ip(t_prev), dp<T>(tab), nT, static_cast<T>(eta), clip, mp<T>(out), B, N, stream); })
}

void eps_loss_fwd_cuda(P pred, P noise, P t, P w, P out, int64_t B, int64_t N, const std::string& dtype,
                       P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_eps_loss_fwd_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_eps_loss_fwd_cuda<T>(dp<T>(pred), dp<T>(noise), ip(t), dp<T>(w), mp<T>(out), B, N, stream); })
}

void eps_loss_bwd_cuda(P pred, P noise, P t, P w, P g, P grad, int64_t B, int64_t N,
                       const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_eps_loss_bwd_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_eps_loss_bwd_cuda<T>(dp<T>(pred), dp<T>(noise), ip(t), dp<T>(w), dp<T>(g), mp<T>(grad), B, N, stream); })
}

void hybrid_fwd_cuda(P model_out, P x0, P xt, P noise, P t, P tab, int64_t nT, P w, double vb_weight,
                     P out, int64_t B, int64_t N, const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_hybrid_fwd_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_hybrid_fwd_cuda<T>(dp<T>(model_out), dp<T>(x0), dp<T>(xt), dp<T>(noise), ip(t), dp<T>(tab), nT, dp<T>(w), vb_weight, mp<T>(out), B, N, stream); })
}

void hybrid_bwd_cuda(P model_out, P x0, P xt, P noise, P t, P tab, int64_t nT, P w, double vb_weight,
                     P g, P grad, int64_t B, int64_t N, const std::string& dtype, P stream) {
  const char k = cuda_prelude(dtype, B, N, "diffusion_hybrid_bwd_cuda");
  py::gil_scoped_release release;
  GM_DISPATCH(k, { gmcore::diffusion_hybrid_bwd_cuda<T>(dp<T>(model_out), dp<T>(x0), dp<T>(xt), dp<T>(noise), ip(t), dp<T>(tab), nT, dp<T>(w), vb_weight, dp<T>(g), mp<T>(grad), B, N, stream); })
}
#endif

#undef GM_DISPATCH

void bind(py::module_& m) {
  m.def("diffusion_q_sample_cpu", &q_sample_cpu, py::arg("x0"), py::arg("noise"), py::arg("t"),
        py::arg("tab"), "x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise per example; (B, N) arrays");
  m.def("diffusion_predict_x0_cpu", &predict_x0_cpu, py::arg("xt"), py::arg("eps"), py::arg("t"),
        py::arg("tab"), py::arg("clip"), "x0 prediction from (x_t, eps), clamped to [-1, 1] if clip");
  m.def("diffusion_ddpm_step_cpu", &ddpm_step_cpu, py::arg("xt"), py::arg("model_out"), py::arg("noise"),
        py::arg("t"), py::arg("tab"), py::arg("var_code"), py::arg("clip"),
        "one DDPM step; var_code 0 fixed_small, 1 fixed_large, 2 learned_range (model_out (B, 2N))");
  m.def("diffusion_ddim_step_cpu", &ddim_step_cpu, py::arg("xt"), py::arg("eps"), py::arg("noise"),
        py::arg("t"), py::arg("t_prev"), py::arg("tab"), py::arg("eta"), py::arg("clip"),
        "one DDIM step from t to t_prev (-1: the final step to x0)");
  m.def("diffusion_eps_loss_fwd_cpu", &eps_loss_fwd_cpu, py::arg("pred"), py::arg("noise"), py::arg("t"),
        py::arg("w"), "per-example w[t] mean (pred - noise)^2 -> (B,)");
  m.def("diffusion_eps_loss_bwd_cpu", &eps_loss_bwd_cpu, py::arg("pred"), py::arg("noise"), py::arg("t"),
        py::arg("w"), py::arg("g"), "gradient of eps_loss_fwd w.r.t. pred for cotangent g (B,)");
  m.def("diffusion_hybrid_fwd_cpu", &hybrid_fwd_cpu, py::arg("model_out"), py::arg("x0"), py::arg("xt"),
        py::arg("noise"), py::arg("t"), py::arg("tab"), py::arg("w"), py::arg("vb_weight"),
        "per-example improved-DDPM hybrid loss w[t] (mse + vb_weight vb_bits) -> (B,)");
  m.def("diffusion_hybrid_bwd_cpu", &hybrid_bwd_cpu, py::arg("model_out"), py::arg("x0"), py::arg("xt"),
        py::arg("noise"), py::arg("t"), py::arg("tab"), py::arg("w"), py::arg("vb_weight"), py::arg("g"),
        "gradient of hybrid_fwd w.r.t. model_out (B, 2N) for cotangent g (B,)");
#if defined(GMCORE_WITH_CUDA)
  m.def("diffusion_q_sample_cuda", &q_sample_cuda, py::arg("x0"), py::arg("noise"), py::arg("t"),
        py::arg("tab"), py::arg("nT"), py::arg("out"), py::arg("B"), py::arg("N"), py::arg("dtype"),
        py::arg("stream") = 0, "device pointers: see diffusion_q_sample_cpu");
  m.def("diffusion_predict_x0_cuda", &predict_x0_cuda, py::arg("xt"), py::arg("eps"), py::arg("t"),
        py::arg("tab"), py::arg("nT"), py::arg("clip"), py::arg("out"), py::arg("B"), py::arg("N"),
        py::arg("dtype"), py::arg("stream") = 0, "device pointers: see diffusion_predict_x0_cpu");
  m.def("diffusion_ddpm_step_cuda", &ddpm_step_cuda, py::arg("xt"), py::arg("model_out"), py::arg("noise"),
        py::arg("t"), py::arg("tab"), py::arg("nT"), py::arg("var_code"), py::arg("clip"), py::arg("out"),
        py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("stream") = 0,
        "device pointers: see diffusion_ddpm_step_cpu");
  m.def("diffusion_ddim_step_cuda", &ddim_step_cuda, py::arg("xt"), py::arg("eps"), py::arg("noise"),
        py::arg("t"), py::arg("t_prev"), py::arg("tab"), py::arg("nT"), py::arg("eta"), py::arg("clip"),
        py::arg("out"), py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("stream") = 0,
        "device pointers: see diffusion_ddim_step_cpu");
  m.def("diffusion_eps_loss_fwd_cuda", &eps_loss_fwd_cuda, py::arg("pred"), py::arg("noise"), py::arg("t"),
        py::arg("w"), py::arg("out"), py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("stream") = 0,
        "device pointers: see diffusion_eps_loss_fwd_cpu");
  m.def("diffusion_eps_loss_bwd_cuda", &eps_loss_bwd_cuda, py::arg("pred"), py::arg("noise"), py::arg("t"),
        py::arg("w"), py::arg("g"), py::arg("grad"), py::arg("B"), py::arg("N"), py::arg("dtype"),
        py::arg("stream") = 0, "device pointers: see diffusion_eps_loss_bwd_cpu");
  m.def("diffusion_hybrid_fwd_cuda", &hybrid_fwd_cuda, py::arg("model_out"), py::arg("x0"), py::arg("xt"),
        py::arg("noise"), py::arg("t"), py::arg("tab"), py::arg("nT"), py::arg("w"), py::arg("vb_weight"),
        py::arg("out"), py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("stream") = 0,
        "device pointers: see diffusion_hybrid_fwd_cpu");
  m.def("diffusion_hybrid_bwd_cuda", &hybrid_bwd_cuda, py::arg("model_out"), py::arg("x0"), py::arg("xt"),
        py::arg("noise"), py::arg("t"), py::arg("tab"), py::arg("nT"), py::arg("w"), py::arg("vb_weight"),
        py::arg("g"), py::arg("grad"), py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("stream") = 0,
        "device pointers: see diffusion_hybrid_bwd_cpu");
#endif
}

gmcore::RegisterBindings reg("diffusion", &bind);

}  // namespace
