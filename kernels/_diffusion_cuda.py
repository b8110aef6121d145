"""Array-level launchers over the ``gmcore._C.diffusion_*_cuda`` entry points (CuPy arrays in,
new CuPy arrays out, on the current stream); same signatures as the other implementations."""

from __future__ import annotations


def launcher(_C, op):
    """The ``cuda`` implementation of ``op`` (see ``gmcore.functional.diffusion.OPS``)."""
    import cupy as cp

    def stream():
        return cp.cuda.get_current_stream().ptr

    def ptr(a):
        return a.data.ptr

    def q_sample(x0, noise, t, tab):
        B, N = x0.shape
        with x0.device:
            out = cp.empty_like(x0)
            _C.diffusion_q_sample_cuda(ptr(x0), ptr(noise), ptr(t), ptr(tab), tab.shape[1], ptr(out),
                                       B, N, x0.dtype.name, stream())
        return out

    def predict_x0(xt, eps, t, tab, clip):
        B, N = xt.shape
        with xt.device:
            out = cp.empty_like(xt)
            _C.diffusion_predict_x0_cuda(ptr(xt), ptr(eps), ptr(t), ptr(tab), tab.shape[1], bool(clip),
                                         ptr(out), B, N, xt.dtype.name, stream())
        return out

    def ddpm_step(xt, model_out, noise, t, tab, var_code, clip):
        B, N = xt.shape
        with xt.device:
            out = cp.empty_like(xt)
            _C.diffusion_ddpm_step_cuda(ptr(xt), ptr(model_out), ptr(noise), ptr(t), ptr(tab),
                                        tab.shape[1], int(var_code), bool(clip), ptr(out), B, N,
                                        xt.dtype.name, stream())
        return out

    def ddim_step(xt, eps, noise, t, t_prev, tab, eta, clip):
        B, N = xt.shape
        with xt.device:
            out = cp.empty_like(xt)
            _C.diffusion_ddim_step_cuda(ptr(xt), ptr(eps), ptr(noise), ptr(t), ptr(t_prev), ptr(tab),
                                        tab.shape[1], float(eta), bool(clip), ptr(out), B, N,
                                        xt.dtype.name, stream())
        return out

    def eps_loss_fwd(pred, noise, t, w):
        B, N = pred.shape
        with pred.device:
            out = cp.empty(B, dtype=pred.dtype)
            _C.diffusion_eps_loss_fwd_cuda(ptr(pred), ptr(noise), ptr(t), ptr(w), ptr(out), B, N,
                                           pred.dtype.name, stream())
        return out

    def eps_loss_bwd(pred, noise, t, w, g):
        B, N = pred.shape
        with pred.device:
            out = cp.empty_like(pred)
            _C.diffusion_eps_loss_bwd_cuda(ptr(pred), ptr(noise), ptr(t), ptr(w), ptr(g), ptr(out), B,
                                           N, pred.dtype.name, stream())
        return out

    def hybrid_fwd(model_out, x0, xt, noise, t, tab, w, vb_weight):
        B, N = x0.shape
        with x0.device:
            out = cp.empty(B, dtype=x0.dtype)
            _C.diffusion_hybrid_fwd_cuda(ptr(model_out), ptr(x0), ptr(xt), ptr(noise), ptr(t), ptr(tab),
                                         tab.shape[1], ptr(w), float(vb_weight), ptr(out), B, N,
                                         x0.dtype.name, stream())
        return out

    def hybrid_bwd(model_out, x0, xt, noise, t, tab, w, vb_weight, g):
        B, N = x0.shape
        with x0.device:
            out = cp.empty_like(model_out)
            _C.diffusion_hybrid_bwd_cuda(ptr(model_out), ptr(x0), ptr(xt), ptr(noise), ptr(t), ptr(tab),
                                         tab.shape[1], ptr(w), float(vb_weight), ptr(g), ptr(out), B, N,
                                         x0.dtype.name, stream())
        return out

    return locals()[op]
