"""The fused WaveNet residual block (van den Oord et al., 2016) and its one-step form.

One block, for input x (N, C, T)::

    z    = dilated_causal_conv(x, conv_weight, dilation) + conv_bias (+ cond)    (N, 2G, T)
    a    = tanh(z[:, :G]) * sigmoid(z[:, G:])                                  (N, G, T)
    residual = x + res_weight @ a + res_bias                                   (N, C, T)
    skip     = skip_weight @ a + skip_bias                                     (N, S, T)

The conv is causal: output t sees x at t - dilation*(K-1-k) for taps k = 0..K-1 (tap K-1 is
t itself; earlier times are zero), i.e. PyTorch's ``conv1d(pad(x, (dilation*(K-1), 0)),
conv_weight, dilation=dilation)``.

How the fused op runs (``WaveNetResidualBlock``): the conv is one GEMM, batch joined on its
long side, on the K shifted copies of x (a (K*C, N*T) array, row k*C + c = channel c delayed by
dilation*(K-1-k)); the gate is a fused kernel that adds the bias and cond, applies tanh and
sigmoid and keeps their values ``ts`` for backward; the two 1x1 convs are one GEMM.
Backward is one pass: ga = res_weight^T g_res + skip_weight^T g_skip (GEMMs), the fused
gate-backward kernel dz = [ga s (1 - t^2), ga t s (1 - s)], then GEMMs for every weight
gradient and for dx = g_res + (the K shifted copies of conv_weight^T dz, added back).

The gate kernel (kernel family ``causal_conv``, ops ``wavenet_gate_forward`` /
``wavenet_gate_backward``) has these implementations, in preference order per device:

=========== ====== ================================================================
name        device where
=========== ====== ================================================================
cpp         cpu    ``csrc/wavenet_cpu.cpp`` via ``gmcore._C`` (OpenMP, SIMD)
numba       cpu    ``kernels/numba/wavenet.py``
reference   cpu    :func:`gate_forward_reference`, :func:`gate_backward_reference`
triton      cuda   ``kernels/triton/wavenet.py``
cuda        cuda   ``csrc/wavenet.cu`` via ``gmcore._C``
reference   cuda   the same reference functions on CuPy
=========== ====== ================================================================

When dispatch picks ``reference`` (``GMCORE_KERNELS=reference`` or ``causal_conv=reference``),
:func:`wavenet_residual_block` is composed of differentiable tensor ops instead (gradients of
gradients work); otherwise it is once-differentiable. Precision: float64 runs float64
everywhere; for float32, ``cpp`` uses vectorisable polynomial exp/tanh (~1 ulp), ``numba``
computes in float64, ``triton`` in float32 with a Kahan-corrected expm1. Measured by
``benchmarks/bench_wavenet.py`` (one thread, 2G=128, N*T=32000): the cpp gate forward takes
~1.6 ms, numba's ~60 ms (scalar libm tanh/exp), NumPy's ~6 ms; the block as a whole is
GEMM-bound (about two thirds of its time is BLAS), so it runs at torch eager's speed.
"""

from __future__ import annotations

import numpy as np

from .. import backend, dispatch
from ..autograd import Function, no_grad, once_differentiable
from ..tensor import Tensor
from .shape import pad as _pad

__all__ = ["wavenet_residual_block", "wavenet_block_step", "WaveNetResidualBlock",
           "gate_forward_reference", "gate_backward_reference"]

_FAMILY = "causal_conv"
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- the gate reference (the specification), NumPy and CuPy alike ------------------------

def _sigmoid_ref(xp, x):
    e = xp.exp(-xp.abs(x))  # never exp of a large positive number
    r = 1.0 / (1.0 + e)
    return backend.where(x >= 0, r, e * r)


def gate_forward_reference(z, bias, cond=None):
    """z (N, 2G, L), bias (2G,), cond (N, 2G, L) or None -> (a (N, G, L), ts (N, 2G, L)).

    With z1 = z[:, :G] + bias[:G] (+ cond), z2 = z[:, G:] + bias[G:] (+ cond):
    ``a = tanh(z1) * sigmoid(z2)``; ``ts`` holds [tanh(z1) | sigmoid(z2)] for the backward.
    Raw arrays of one float dtype, computed in that dtype.
    """
    xp = backend.xp_of(z)
    G = z.shape[1] // 2
    zz = z + bias[:, None]
    if cond is not None:
        zz = zz + cond
    t = xp.tanh(zz[:, :G])
    s = _sigmoid_ref(xp, zz[:, G:])
    return t * s, xp.concatenate([t, s], axis=1)


def gate_backward_reference(ts, ga):
    """ts (N, 2G, L) from :func:`gate_forward_reference`, ga (N, G, L) = dL/da -> dz (N, 2G, L).

    ``dz = [ga s (1 - t^2) | ga t s (1 - s)]`` (d tanh = 1 - t^2, d sigmoid = s (1 - s)).
    """
    xp = backend.xp_of(ts)
    G = ts.shape[1] // 2
    t, s = ts[:, :G], ts[:, G:]
    gs = ga * s
    return xp.concatenate([gs * (1 - t * t), gs * t * (1 - s)], axis=1)


# ---- implementations and their registration -----------------------------------------------

def _load_numba(op):
    def load():
        try:
            from gmcore.kernels.numba import wavenet as k
        except ImportError as exc:
            raise ImportError(f"numba kernels unavailable ({exc})") from None
        return getattr(k, op)
    return load


def _load_cpp(op):
    def load():
        _C = dispatch.require_C()
        name = f"wavenet_{op}_cpu"
        if not hasattr(_C, name):
            raise RuntimeError("gmcore._C was built without the wavenet kernels (rebuild it)")
        return getattr(_C, name)
    return load


def _load_triton(op):
    def load():
        dispatch.require_cupy()
        try:
            from gmcore.kernels.triton import wavenet as k
        except ImportError as exc:
            raise ImportError(f"triton kernels unavailable ({exc})") from None
        return getattr(k, op)
    return load


def _load_cuda(op):
    def load():
        cp = dispatch.require_cupy()
        _C = dispatch.require_C(cuda=True)
        if not hasattr(_C, "wavenet_gate_forward_cuda"):
            raise RuntimeError("gmcore._C was built without the wavenet kernels (rebuild it)")

        def gate_forward(z, bias, cond=None):
            N, G2, L = z.shape
            with z.device:
                z = cp.ascontiguousarray(z)
                bias = cp.ascontiguousarray(bias)
                cond = None if cond is None else cp.ascontiguousarray(cond)
                a = cp.empty((N, G2 // 2, L), dtype=z.dtype)
                ts = cp.empty_like(z)
                _C.wavenet_gate_forward_cuda(z.data.ptr, bias.data.ptr,
                                             0 if cond is None else cond.data.ptr, a.data.ptr,
                                             ts.data.ptr, N, G2 // 2, L, z.dtype.name,
                                             cp.cuda.get_current_stream().ptr)
            return a, ts

        def gate_backward(ts, ga):
            N, G2, L = ts.shape
            with ts.device:
                ts = cp.ascontiguousarray(ts)
                ga = cp.ascontiguousarray(ga)
                dz = cp.empty_like(ts)
                _C.wavenet_gate_backward_cuda(ts.data.ptr, ga.data.ptr, dz.data.ptr, N, G2 // 2, L,
                                              ts.dtype.name, cp.cuda.get_current_stream().ptr)
            return dz

        return gate_forward if op == "gate_forward" else gate_backward
    return load


def _load_reference_cuda(fn):
    def load():
        dispatch.require_cupy()
        return fn
    return load


# Preference order = registration order (measured by benchmarks/bench_wavenet.py: cpp first).
for _op, _ref in (("gate_forward", gate_forward_reference),
                  ("gate_backward", gate_backward_reference)):
    _name = f"wavenet_{_op}"
    dispatch.register(_FAMILY, _name, "cpu", "cpp", _load_cpp(_op))
    dispatch.register(_FAMILY, _name, "cpu", "numba", _load_numba(_op))
    dispatch.register(_FAMILY, _name, "cpu", "reference", (lambda f: lambda: f)(_ref))
    dispatch.register(_FAMILY, _name, "cuda", "triton", _load_triton(_op))
    dispatch.register(_FAMILY, _name, "cuda", "cuda", _load_cuda(_op))
    dispatch.register(_FAMILY, _name, "cuda", "reference", _load_reference_cuda(_ref))
del _op, _ref, _name


def _gate_impls(device_type, dtype):
    """(name, forward, backward) of the gate kernels for a device and dtype."""
    if np.dtype(dtype) not in _KERNEL_DTYPES:  # kernels cover float32/float64
        return "reference", gate_forward_reference, gate_backward_reference
    name, fwd = dispatch.choose(_FAMILY, "wavenet_gate_forward", device_type)
    if name == "reference":
        return name, fwd, gate_backward_reference
    return name, fwd, dispatch.get(_FAMILY, "wavenet_gate_backward", device_type)


# ---- array helpers: the K shifted copies and their adjoint --------------------------------
#
# The fused op works in a channels-major layout, (channels, N, T) flattened to (channels, N*T):
# every product is then ONE large GEMM with the batch joined on its long side (N per-example
# GEMMs, or NumPy's broadcast matmul, were 2-5x slower at WaveNet sizes), and every row of the
# gate's input is one contiguous run of N*T values. Entering and leaving that layout costs one
# transposing copy of the input and of each output.

def _shifted_columns(xp, x, K, dilation):
    """x (N, C, T) -> (K*C, N*T): row k*C + c holds x[:, c] delayed by dilation*(K-1-k) (zeros
    before the start of each example), in the channels-major layout."""
    N, C, T = x.shape
    xt = x.transpose(1, 0, 2)                                   # a view (C, N, T)
    cols = xp.empty((K, C, N, T), dtype=x.dtype)
    for k in range(K):
        s = dilation * (K - 1 - k)
        if s >= T:
            cols[k] = 0
            continue
        if s:
            cols[k, :, :, :s] = 0
        cols[k, :, :, s:] = xt[:, :, :T - s]
    return cols.reshape(K * C, N * T)


def _add_shifted_back(dxt, dcols, K, dilation):
    """dxt (C, N, T) += the adjoint of :func:`_shifted_columns` applied to dcols (K*C, N*T)."""
    C, N, T = dxt.shape
    d4 = dcols.reshape(K, C, N, T)
    for k in range(K):
        s = dilation * (K - 1 - k)
        if s < T:
            dxt[:, :, :T - s] += d4[k, :, :, s:]


def _to_channels_major(xp, a):
    """(N, C, T) -> contiguous (C, N*T)."""
    N, C, T = a.shape
    return xp.ascontiguousarray(a.transpose(1, 0, 2)).reshape(C, N * T)


def _from_channels_major(xp, a, N, T, add=None):
    """(C, N*T) -> contiguous (N, C, T), plus ``add`` (N, C, T) or a (C,) bias, fused into
    the copy."""
    C = a.shape[0]
    view = a.reshape(C, N, T).transpose(1, 0, 2)
    out = xp.empty((N, C, T), dtype=a.dtype)
    if add is None:
        out[...] = view
    elif add.ndim == 1:
        xp.add(view, add[:, None], out=out)
    else:
        xp.add(view, add, out=out)
    return out


def _conv_matrix(w):
    """conv_weight (2G, C, K) -> (2G, K*C), column k*C + c (matches :func:`_shifted_columns`)."""
    G2, C, K = w.shape
    return backend.xp_of(w).ascontiguousarray(w.transpose(0, 2, 1).reshape(G2, K * C))


# ---- the fused op -------------------------------------------------------------------------

class WaveNetResidualBlock(Function):
    """(residual, skip) of one WaveNet block; first-order only (see the module docstring).

    Saves x and the weights (inputs, no copies), the gate output a and the gate's (tanh,
    sigmoid) values ts (both channels-major); backward recomputes the shifted copies of x for
    the conv weight's gradient (one memory pass, cheaper than keeping K copies of every
    block's input alive).
    """

    @staticmethod
    def forward(ctx, x, w, b, wr, br, ws, bs, cond, *, dilation, gate_fwd, gate_bwd):
        xp = backend.xp_of(x)
        N, C, T = x.shape
        G2, _, K = w.shape
        G = G2 // 2
        S = ws.shape[0]
        z = _conv_matrix(w) @ _shifted_columns(xp, x, K, dilation)            # (2G, N*T)
        bias = b if b is not None else xp.zeros(G2, dtype=x.dtype)
        c = None if cond is None else _to_channels_major(xp, cond).reshape(1, G2, N * T)
        a, ts = gate_fwd(z.reshape(1, G2, N * T), xp.ascontiguousarray(bias), c)
        del z, c
        a = a.reshape(G, N * T)
        out = xp.concatenate([wr.reshape(C, G), ws.reshape(S, G)], axis=0) @ a  # (C+S, N*T)
        res = _from_channels_major(xp, out[:C], N, T, x)
        if br is not None:
            res += br[:, None]
        skip = _from_channels_major(xp, out[C:], N, T, bs)
        ctx.dilation, ctx.gate_bwd = dilation, gate_bwd
        ctx.has_bias = (b is not None, br is not None, bs is not None)
        ctx.save_for_backward(x, w, wr, ws, a, ts)
        return res, skip

    @staticmethod
    @once_differentiable
    def backward(ctx, g_res, g_skip):
        x, w, wr, ws, a, ts = ctx.saved_arrays
        with backend.device_context(backend.device_of(x)):   # the graph walk sets no device
            return WaveNetResidualBlock._backward(ctx, x, w, wr, ws, a, ts, g_res, g_skip)

    @staticmethod
    def _backward(ctx, x, w, wr, ws, a, ts, g_res, g_skip):
        xp = backend.xp_of(x)
        need = ctx.needs_input_grad
        N, C, T = x.shape
        G2, _, K = w.shape
        G = G2 // 2
        S = ws.shape[0]
        M = N * T
        # both output gradients, channels-major, in one (C+S, N, T) array (they may arrive
        # broadcast, with zero strides: the copy makes them contiguous)
        gcat = xp.empty((C + S, N, T), dtype=x.dtype)
        gcat[:C] = g_res.transpose(1, 0, 2)
        gcat[C:] = g_skip.transpose(1, 0, 2)
        gcat = gcat.reshape(C + S, M)
        w_out = xp.concatenate([wr.reshape(C, G), ws.reshape(S, G)], axis=0)   # (C+S, G)
        ga = w_out.T @ gcat                                                     # (G, M)
        dz = ctx.gate_bwd(ts, ga.reshape(1, G, M)).reshape(G2, M)
        del ga
        dx = dw = db = dwr = dbr = dws = dbs = dcond = None
        if need[3] or need[5]:
            dw_out = gcat @ a.T                                                 # (C+S, G)
            dwr = xp.ascontiguousarray(dw_out[:C]).reshape(wr.shape) if need[3] else None
            dws = xp.ascontiguousarray(dw_out[C:]).reshape(ws.shape) if need[5] else None
        if (need[4] and ctx.has_bias[1]) or (need[6] and ctx.has_bias[2]):
            gsum = gcat.sum(axis=1)
            dbr = gsum[:C] if need[4] and ctx.has_bias[1] else None
            dbs = gsum[C:] if need[6] and ctx.has_bias[2] else None
        if need[2] and ctx.has_bias[0]:
            db = dz.sum(axis=1)
        if need[1]:
            dw2 = dz @ _shifted_columns(xp, x, K, ctx.dilation).T                 # (2G, K*C)
            dw = xp.ascontiguousarray(dw2.reshape(G2, K, C).transpose(0, 2, 1))
        if need[0]:
            dxt = gcat[:C].reshape(C, N, T).copy()
            _add_shifted_back(dxt, _conv_matrix(w).T @ dz, K, ctx.dilation)
            dx = _from_channels_major(xp, dxt.reshape(C, M), N, T)
        if need[7]:
            dcond = _from_channels_major(xp, dz, N, T)
        return dx, dw, db, dwr, dbr, dws, dbs, dcond


def _block_reference(x, w, b, wr, br, ws, bs, dilation, cond):
    """The block composed of differentiable tensor ops (the reference path; double backward)."""
    N, C, T = x.shape
    G2, _, K = w.shape
    G = G2 // 2
    p = dilation * (K - 1)
    xpad = _pad(x, (p, 0)) if p else x
    z = None
    for k in range(K):
        term = w[:, :, k].matmul(xpad[:, :, k * dilation:k * dilation + T])
        z = term if z is None else z + term
    if b is not None:
        z = z + b.reshape(G2, 1)
    if cond is not None:
        z = z + cond
    a = z[:, :G].tanh() * z[:, G:].sigmoid()
    res = x + wr.reshape(C, G).matmul(a)
    if br is not None:
        res = res + br.reshape(C, 1)
    skip = ws.reshape(ws.shape[0], G).matmul(a)
    if bs is not None:
        skip = skip + bs.reshape(-1, 1)
    return res, skip


# ---- argument checks ----------------------------------------------------------------------

def _check_block_args(op, x, w, b, wr, br, ws, bs, dilation, cond, step=False):
    """Validate shapes, dtypes and devices; return (N, C, G, K, S)."""
    named = [("input" if not step else "x_t", x), ("conv_weight", w), ("conv_bias", b),
             ("res_weight", wr), ("res_bias", br), ("skip_weight", ws), ("skip_bias", bs),
             ("cond" if not step else "cond_t", cond)]
    tensors = []
    for name, t in named:
        if t is None:
            if name in ("input", "x_t", "conv_weight", "res_weight", "skip_weight"):
                raise TypeError(f"{op}: {name} is required, got None")
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")
        tensors.append((name, t))
    for name, t in tensors[1:]:
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but input has {x.dtype} "
                            "(all arguments must share one dtype)")
        if t.device != x.device:
            raise RuntimeError(f"{op}: {name} is on {t.device} but input is on {x.device}")
    if w.ndim != 3 or w.shape[0] == 0 or w.shape[0] % 2 or w.shape[2] == 0:
        raise ValueError(f"{op}: conv_weight must be (2G, C, K) with an even, non-zero 2G and "
                         f"K >= 1, got shape {tuple(w.shape)}")
    G2, C, K = w.shape
    G = G2 // 2
    if step:
        if x.ndim != 2 or x.shape[1] != C:
            raise ValueError(f"{op}: x_t must be (N, C) = (N, {C}) for conv_weight of shape "
                             f"{tuple(w.shape)}, got {tuple(x.shape)}")
    elif x.ndim != 3 or x.shape[1] != C:
        raise ValueError(f"{op}: input must be (N, C, T) with C = {C} (conv_weight's in-channels), "
                         f"got shape {tuple(x.shape)}")
    N = x.shape[0]
    if b is not None and tuple(b.shape) != (G2,):
        raise ValueError(f"{op}: conv_bias must be ({G2},), got {tuple(b.shape)}")
    for name, m, mb, rows in (("res", wr, br, C), ("skip", ws, bs, None)):
        if m.ndim not in (2, 3) or (m.ndim == 3 and m.shape[2] != 1) or m.shape[1] != G \
                or (rows is not None and m.shape[0] != rows):
            want = f"({rows if rows is not None else 'S'}, {G}) or (..., 1)"
            raise ValueError(f"{op}: {name}_weight must be {want} for G = {G} gate channels"
                             f"{' and C = %d' % C if rows else ''}, got {tuple(m.shape)}")
        if mb is not None and tuple(mb.shape) != (m.shape[0],):
            raise ValueError(f"{op}: {name}_bias must be ({m.shape[0]},), got {tuple(mb.shape)}")
    if not step:
        if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 1:
            raise ValueError(f"{op}: dilation must be an int >= 1, got {dilation!r}")
        if cond is not None and (cond.ndim != 3 or cond.shape[0] != N or cond.shape[1] != G2
                                 or cond.shape[2] not in (1, x.shape[2])):
            raise ValueError(f"{op}: cond must be (N, 2G, T) = ({N}, {G2}, {x.shape[2]}) or "
                             f"(N, 2G, 1) (broadcast over time), got {tuple(cond.shape)}")
    elif cond is not None and tuple(cond.shape) != (N, G2):
        raise ValueError(f"{op}: cond_t must be (N, 2G) = ({N}, {G2}), got {tuple(cond.shape)}")
    return N, C, G, K, ws.shape[0]


def wavenet_residual_block(input, conv_weight, conv_bias, res_weight, res_bias, skip_weight,
                           skip_bias, dilation=1, cond=None):
    """One gated WaveNet residual block: ``(residual, skip)``.

    ``input`` (N, C, T); ``conv_weight`` (2G, C, K) and ``conv_bias`` (2G,) of the dilated
    causal conv (output as long as the input: time t sees t - dilation*(K-1-k), k = 0..K-1);
    ``cond`` (N, 2G, T), or (N, 2G, 1) broadcast over time, is added before the gate (the
    projected local and global conditioning). With ``a = tanh(z[:, :G]) * sigmoid(z[:, G:])``:
    ``residual = input + res_weight @ a + res_bias`` (N, C, T) and
    ``skip = skip_weight @ a + skip_bias`` (N, S, T). ``res_weight`` is (C, G) or, as a 1x1
    conv's weight, (C, G, 1); likewise ``skip_weight`` (S, G) or (S, G, 1). Biases may be
    None. All arguments share one float dtype and device.

    Runs the fused kernels (once-differentiable) unless dispatch picks ``reference``
    (``GMCORE_KERNELS=causal_conv=reference``): then it is composed of tensor ops and
    gradients of gradients work.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> g = gm.Generator().manual_seed(0)
    >>> x = gm.randn(2, 4, 10, generator=g)
    >>> w, wr, ws = gm.randn(6, 4, 2, generator=g), gm.randn(4, 3, generator=g), gm.randn(5, 3, generator=g)
    >>> res, skip = F.wavenet_residual_block(x, w, None, wr, None, ws, None, dilation=2)
    >>> tuple(res.shape), tuple(skip.shape)
    ((2, 4, 10), (2, 5, 10))
    """
    op = "wavenet_residual_block"
    N, C, G, K, S = _check_block_args(op, input, conv_weight, conv_bias, res_weight, res_bias,
                                      skip_weight, skip_bias, dilation, cond)
    dilation = int(dilation)
    if cond is not None and cond.shape[2] != input.shape[2]:
        cond = cond.expand(N, 2 * G, input.shape[2])
    name, fwd, bwd = _gate_impls(input.device.type, input.data.dtype)
    if name == "reference":
        return _block_reference(input, conv_weight, conv_bias, res_weight, res_bias, skip_weight,
                                skip_bias, dilation, cond)
    with backend.device_context(input.device):
        return WaveNetResidualBlock.apply(input, conv_weight, conv_bias, res_weight, res_bias,
                                          skip_weight, skip_bias, cond, dilation=dilation,
                                          gate_fwd=fwd, gate_bwd=bwd)


# ---- one step (generation) ----------------------------------------------------------------

def prepare_step_weights(w, b, wr, br, ws, bs):
    """Raw weight arrays -> the matrices :func:`block_step_arrays` multiplies by (made once per
    generation, not once per sample): (conv (K*C, 2G), conv bias (2G,), [res | skip] 1x1
    weights (G, C+S), their bias (C+S,))."""
    xp = backend.xp_of(w)
    G2 = w.shape[0]
    C, S = wr.shape[0], ws.shape[0]
    G = G2 // 2
    w2t = xp.ascontiguousarray(_conv_matrix(w).T)
    bias = xp.zeros(G2, dtype=w.dtype) if b is None else xp.ascontiguousarray(b)
    out_w = xp.ascontiguousarray(xp.concatenate([wr.reshape(C, G), ws.reshape(S, G)], axis=0).T)
    zc = xp.zeros(C, dtype=w.dtype) if br is None else br
    zs = xp.zeros(S, dtype=w.dtype) if bs is None else bs
    return w2t, bias, out_w, xp.concatenate([zc, zs])


def block_step_arrays(x_t, cols, prepared, gate_fwd, cond_t=None):
    """One time step on raw arrays: x_t (N, C), cols (N, K*C) = [x at t - d(K-1), ..., x at
    t - d, x_t] flattened tap-major, prepared = :func:`prepare_step_weights`, cond_t (N, 2G) or
    None -> (residual_t (N, C), skip_t (N, S)). Matrix-vector work only."""
    w2t, bias, out_w, out_b = prepared
    N, C = x_t.shape
    G2 = w2t.shape[1]
    z = (cols @ w2t).reshape(N, G2, 1)
    a, _ = gate_fwd(z, bias, None if cond_t is None else cond_t.reshape(N, G2, 1))
    out = a.reshape(N, G2 // 2) @ out_w
    out += out_b
    return out[:, :C] + x_t, out[:, C:]


def wavenet_block_step(x_t, x_past, conv_weight, conv_bias, res_weight, res_bias, skip_weight,
                       skip_bias, cond_t=None):
    """One time step of :func:`wavenet_residual_block`, for sample-by-sample generation.

    ``x_t`` (N, C) is the block's input now; ``x_past`` (N, C, K-1) its inputs at
    t - dilation*(K-1), ..., t - dilation (oldest first; zeros before the start), as a
    generation queue holds them; ``cond_t`` (N, 2G) or None. Returns ``(residual_t (N, C),
    skip_t (N, S))``, equal to column t of the full block's outputs. Uses the same gate kernel
    as the block; no autograd (the results carry no gradient).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> g = gm.Generator().manual_seed(0)
    >>> x = gm.randn(1, 4, 9, generator=g)
    >>> w, wr, ws = gm.randn(6, 4, 2, generator=g), gm.randn(4, 3, generator=g), gm.randn(5, 3, generator=g)
    >>> res, skip = F.wavenet_residual_block(x, w, None, wr, None, ws, None, dilation=3)
    >>> r8, s8 = F.wavenet_block_step(x[:, :, 8], x[:, :, 5:6], w, None, wr, None, ws, None)
    >>> bool((r8 - res[:, :, 8]).abs().max() < 1e-5), bool((s8 - skip[:, :, 8]).abs().max() < 1e-5)
    (True, True)
    """
    op = "wavenet_block_step"
    N, C, G, K, S = _check_block_args(op, x_t, conv_weight, conv_bias, res_weight, res_bias,
                                      skip_weight, skip_bias, 1, cond_t, step=True)
    if not isinstance(x_past, Tensor):
        raise TypeError(f"{op}: x_past must be a Tensor, got {type(x_past).__name__}")
    if tuple(x_past.shape) != (N, C, K - 1):
        raise ValueError(f"{op}: x_past must be (N, C, K-1) = ({N}, {C}, {K - 1}), got "
                         f"{tuple(x_past.shape)}")
    if x_past.dtype != x_t.dtype or x_past.device != x_t.device:
        raise TypeError(f"{op}: x_past must match x_t's dtype and device")
    raw = lambda t: None if t is None else t.data  # noqa: E731
    xt = x_t.data
    xp = backend.xp_of(xt)
    _, fwd, _ = _gate_impls(x_t.device.type, xt.dtype)
    with no_grad(), backend.device_context(x_t.device):
        prepared = prepare_step_weights(conv_weight.data, raw(conv_bias), res_weight.data,
                                        raw(res_bias), skip_weight.data, raw(skip_bias))
        cols = xp.concatenate([x_past.data.transpose(0, 2, 1).reshape(N, (K - 1) * C), xt], axis=1)
        res, skip = block_step_arrays(xt, cols, prepared, fwd, raw(cond_t))
    return Tensor(res), Tensor(xp.ascontiguousarray(skip))
