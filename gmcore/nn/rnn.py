"""Recurrent layers with PyTorch's names, shapes, gate orders and semantics: ``RNNCell``,
``LSTMCell``, ``GRUCell``, ``RNN``, ``LSTM``, ``GRU``.

A PyTorch ``state_dict`` loads into these modules unchanged (``weight_ih_l{k}[_reverse]``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``; LSTM gates ``i, f, g, o``; GRU gates
``r, z, n`` with the reset gate applied to ``W_hn h + b_hn``).

How a multi-step layer runs (the speed matters: char-RNNs train on it):

* the input projection of every time step is one matmul per layer and direction
  (``linear(x, W_ih, b_ih [+ b_hh])`` over the whole (T, B, F) sequence);
* the time loop is one fused op per layer and direction, :class:`_Recurrence`, working on raw
  arrays: one (B, H) x (H, G*H) matmul and a handful of array ops per step, all gates from the
  fused (4H / 3H) projection. Its backward is hand-written backpropagation through time: one
  matmul per step, then a single matmul for ``dW_hh`` over all steps. It is once-differentiable
  (a second-order gradient raises an error naming the op).
* ``module.fused = False`` (or ``GMCORE_KERNELS=reference``) selects the reference twin: the
  same cell math written with tensor ops, step by step, differentiated by autograd (any order).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import backend, dispatch
from .. import functional as _F
from ..autograd import Function, no_grad, once_differentiable
from ..creation import zeros
from ..tensor import Tensor
from .functional.linear import linear
from .module import Module
from .parameter import _param

__all__ = ["RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "RNNBase", "RNN", "LSTM", "GRU"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ---- cell math on tensors (the reference; differentiable to any order) ---------------------------

def _lstm_cell(gates, c):
    """``gates`` (B, 4H) = W_ih x + b_ih + W_hh h + b_hh, in torch's order i, f, g, o."""
    i, f, g, o = gates.chunk(4, 1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def _gru_cell(gi, gh, h):
    """``gi`` = W_ih x + b_ih, ``gh`` = W_hh h + b_hh, both (B, 3H) in torch's order r, z, n."""
    ir, iz, in_ = gi.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r = (ir + hr).sigmoid()
    z = (iz + hz).sigmoid()
    n = (in_ + r * hn).tanh()  # the reset gate scales W_hn h + b_hn (torch's form, not cuDNN v1)
    return n + z * (h - n)     # (1 - z) * n + z * h


def _rnn_cell(pre, mode):
    return pre.tanh() if mode == "RNN_TANH" else pre.relu()


# ---- the fused layer: whole sequence, one direction, on raw arrays ------------------------------

def _sigmoid(xp, x):
    # 0.5 tanh(x / 2) + 0.5: exact sigmoid identity that cannot overflow for large |x|
    return 0.5 * xp.tanh(0.5 * x) + 0.5


class _Recurrence(Function):
    """One layer in one direction over a whole sequence.

    forward(mode, reverse, xproj (T, B, G*H), h0 (B, H), c0 (B, H) or None, w_hh (G*H, H),
    b_hh (G*H,) or None) -> (out (T, B, H), h_n (B, H)[, c_n (B, H) for LSTM]).

    ``xproj`` already holds ``W_ih x_t + b_ih`` (plus ``b_hh`` for LSTM / RNN, whose ``b_hh`` only
    ever adds to it; GRU keeps ``b_hh`` apart because the reset gate multiplies ``W_hn h + b_hn``).

    Backward (BPTT), with ``s = sigmoid``' = s (1 - s), ``tanh``' = 1 - tanh^2 and ``dh`` the
    gradient reaching ``h_t`` (from ``out[t]`` and from step t+1):

    * LSTM: ``dc += dh o (1 - tanh(c)^2)``; ``d[i, f, g, o]_pre = [dc g, dc c_prev, dc i,
      dh tanh(c)]`` times the activation derivatives; ``dc_prev = dc f``;
      ``dh_prev = dgates_pre @ W_hh``.
    * GRU (``h' = n + z (h - n)``, ``n = tanh(x_n + r hn)``, ``hn = W_hn h + b_hn``):
      ``dn_pre = dh (1 - z)(1 - n^2)``, ``dz_pre = dh (h - n) z (1 - z)``,
      ``dr_pre = dn_pre hn r (1 - r)``; the x side gets ``[dr, dz, dn]_pre``, the h side
      ``[dr, dz, dn_pre r]_pre`` and ``dh_prev = dh z + dgh @ W_hh``.
    * RNN: ``dpre = dh (1 - h^2)`` (tanh) or ``dh [h > 0]`` (relu); ``dh_prev = dpre @ W_hh``.

    ``dW_hh = sum_t dgh_t^T h_{t-1}`` is one matmul over all steps at the end.
    """

    @staticmethod
    def forward(ctx, mode, reverse, xproj, h0, c0, w_hh, b_hh):
        xp = backend.xp_of(xproj)
        T, B, G = xproj.shape
        H = h0.shape[-1]
        dt = xproj.dtype
        wt = xp.ascontiguousarray(w_hh.T)  # (H, G): h @ wt is the hidden projection
        out = xp.empty((T, B, H), dtype=dt)
        hprev = xp.empty((T, B, H), dtype=dt)   # the h each step consumed (for dW_hh, GRU)
        steps = range(T - 1, -1, -1) if reverse else range(T)
        h = h0
        if mode == "LSTM":
            acts = xp.empty((T, B, G), dtype=dt)
            cprev = xp.empty((T, B, H), dtype=dt)
            tanh_c = xp.empty((T, B, H), dtype=dt)
            c = c0
            for t in steps:
                hprev[t] = h
                cprev[t] = c
                gates = h @ wt
                gates += xproj[t]
                a = acts[t]
                a[...] = _sigmoid(xp, gates)
                a[:, 2 * H:3 * H] = xp.tanh(gates[:, 2 * H:3 * H])
                c = a[:, H:2 * H] * c + a[:, :H] * a[:, 2 * H:3 * H]
                tc = tanh_c[t]
                tc[...] = xp.tanh(c)
                h = out[t]
                xp.multiply(a[:, 3 * H:], tc, out=h)
            ctx.save_for_backward(w_hh, acts, cprev, tanh_c, hprev)
            ctx.mode, ctx.reverse = mode, reverse
            return out, h.copy(), c  # c is a fresh array (not a view of a saved one)
        if mode == "GRU":
            rz_all = xp.empty((T, B, 2 * H), dtype=dt)
            n_all = xp.empty((T, B, H), dtype=dt)
            hn_all = xp.empty((T, B, H), dtype=dt)
            for t in steps:
                hprev[t] = h
                gh = h @ wt
                if b_hh is not None:
                    gh += b_hh
                x_t = xproj[t]
                rz = rz_all[t]
                rz[...] = _sigmoid(xp, x_t[:, :2 * H] + gh[:, :2 * H])
                hn_all[t] = hn = gh[:, 2 * H:]
                n = n_all[t]
                n[...] = xp.tanh(x_t[:, 2 * H:] + rz[:, :H] * hn)
                hnew = out[t]
                xp.subtract(h, n, out=hnew)
                hnew *= rz[:, H:]
                hnew += n
                h = hnew
            ctx.save_for_backward(w_hh, rz_all, n_all, hn_all, hprev)
            ctx.mode, ctx.reverse, ctx.has_bias = mode, reverse, b_hh is not None
            return out, h.copy()
        # plain RNN
        for t in steps:
            hprev[t] = h
            pre = h @ wt
            pre += xproj[t]
            h = out[t]
            if mode == "RNN_TANH":
                xp.tanh(pre, out=h)
            else:
                xp.maximum(pre, 0, out=h)
        ctx.save_for_backward(w_hh, out, hprev)
        ctx.mode, ctx.reverse = mode, reverse
        return out, h.copy()

    @staticmethod
    @once_differentiable
    def backward(ctx, gout, gh_n, gc_n=None):
        mode = ctx.mode
        saved = ctx.saved_arrays
        w_hh, hprev = saved[0], saved[-1]
        xp = backend.xp_of(gout)
        T, B, H = gout.shape
        G = w_hh.shape[0]
        steps = range(T) if ctx.reverse else range(T - 1, -1, -1)
        dh = gh_n
        dx = xp.empty((T, B, G), dtype=gout.dtype)  # gradient of xproj
        dgh = dx                                   # gradient of the hidden projection
        if mode == "LSTM":
            _, acts, cprev, tanh_c, _ = saved
            dc = gc_n
            for t in steps:
                dh = dh + gout[t]
                a, tc = acts[t], tanh_c[t]
                i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
                dc = dc + dh * o * (1 - tc * tc)
                d = dx[t]
                d[:, :H] = dc * g * i * (1 - i)
                d[:, H:2 * H] = dc * cprev[t] * f * (1 - f)
                d[:, 2 * H:3 * H] = dc * i * (1 - g * g)
                d[:, 3 * H:] = dh * tc * o * (1 - o)
                dc = dc * f
                dh = d @ w_hh
            extra = (dc,)
        elif mode == "GRU":
            _, rz_all, n_all, hn_all, _ = saved
            dgh = xp.empty_like(dx)
            for t in steps:
                dh = dh + gout[t]
                rz, n, hn = rz_all[t], n_all[t], hn_all[t]
                r, z = rz[:, :H], rz[:, H:]
                dn_pre = dh * (1 - z) * (1 - n * n)
                d, e = dx[t], dgh[t]
                d[:, H:2 * H] = e[:, H:2 * H] = dh * (hprev[t] - n) * z * (1 - z)
                d[:, :H] = e[:, :H] = dn_pre * hn * r * (1 - r)
                d[:, 2 * H:] = dn_pre
                e[:, 2 * H:] = dn_pre * r
                dh = dh * z + e @ w_hh
            extra = (None,)
        else:
            _, out, _ = saved
            for t in steps:
                dh = dh + gout[t]
                h = out[t]
                d = dx[t]
                if mode == "RNN_TANH":
                    xp.multiply(dh, 1 - h * h, out=d)
                else:
                    d[...] = backend.where(h > 0, dh, xp.zeros_like(dh))
                dh = d @ w_hh
            extra = (None,)
        need = ctx.needs_input_grad
        dw = db = None
        if need[5]:
            dw = dgh.reshape(-1, G).T @ hprev.reshape(-1, H)
        if mode == "GRU" and ctx.has_bias and need[6]:
            db = dgh.reshape(-1, G).sum(0)
        return (None, None, dx if need[2] else None, dh if need[3] else None,
                extra[0] if need[4] else None, dw, db)


def _reference_layer(mode, reverse, xproj, h0, c0, w_hh, b_hh):
    """The same layer as :class:`_Recurrence`, step by step with tensor ops (any-order grads)."""
    xs = xproj.unbind(0)
    order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    wt = w_hh.t()
    h, c = h0, c0
    outs = [None] * len(xs)
    for t in order:
        if mode == "LSTM":
            h, c = _lstm_cell(xs[t] + h @ wt, c)
        elif mode == "GRU":
            gh = h @ wt if b_hh is None else linear(h, w_hh, b_hh)
            h = _gru_cell(xs[t], gh, h)
        else:
            h = _rnn_cell(xs[t] + h @ wt, mode)
        outs[t] = h
    out = _F.stack(outs, 0)
    return (out, h, c) if mode == "LSTM" else (out, h)


def _use_reference():
    return dispatch.overrides().get("*") == "reference"


# ---- helpers shared by cells and layers -----------------------------------------------------------

def _reset_uniform(module, hidden_size):
    """torch's RNN init: every weight and bias ~ U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    k = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    with no_grad():
        for p in module.parameters():
            p.uniform_(-k, k)


def _check_sizes(input_size, hidden_size, name):
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}: {what} must be a non-negative int, got {v!r}")
    if hidden_size == 0:
        raise ValueError(f"{name}: hidden_size must be greater than zero")


def _check_input_tensor(x, name, what, weight):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")
    if x.dtype != weight.dtype:
        raise RuntimeError(f"{name}: {what} dtype {x.dtype} does not match the parameters' dtype "
                           f"{weight.dtype} (convert the input or call .to(dtype) on the module)")
    if x.device != weight.device:
        raise RuntimeError(f"{name}: {what} is on {x.device} but the parameters are on "
                           f"{weight.device}")


# ---- cells -----------------------------------------------------------------------------------------

class RNNCellBase(Module):
    """Shared parameters of the cells: ``weight_ih`` (G*H, in), ``weight_hh`` (G*H, H),
    ``bias_ih``/``bias_hh`` (G*H,), with G gates."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        _check_sizes(input_size, hidden_size, type(self).__name__)
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        g = num_chunks * self.hidden_size
        self.weight_ih = _param((g, self.input_size), device, dtype)
        self.weight_hh = _param((g, self.hidden_size), device, dtype)
        if bias:
            self.bias_ih = _param((g,), device, dtype)
            self.bias_hh = _param((g,), device, dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self, self.hidden_size)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s

    def _prepare(self, input, hx, n_states):
        """Validate, add the batch dim to 1-D input; return (input, states, batched)."""
        name = type(self).__name__
        _check_input_tensor(input, name, "input", self.weight_ih)
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input has inconsistent input_size: got "
                               f"{input.shape[-1]} expected {self.input_size}")
        batched = input.ndim == 2
        if not batched:
            input = input.unsqueeze(0)
        B = input.shape[0]
        if hx is None:
            z = zeros(B, self.hidden_size, dtype=input.dtype, device=input.device)
            return input, (z,) * n_states, batched
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        if len(states) != n_states:
            raise TypeError(f"{name}: expected {'(h, c)' if n_states == 2 else 'a hidden tensor'}"
                            f" as hx, got {len(states)} tensor(s)")
        out = []
        for k, s in enumerate(states):
            _check_input_tensor(s, name, f"hidden{k}", self.weight_ih)
            if s.ndim != (2 if batched else 1):
                dims = "2D" if batched else "1D"
                raise RuntimeError(f"{name}: Expected hidden{k} to be {dims} for {dims} input, "
                                   f"got {s.ndim}D instead")
            if not batched:
                s = s.unsqueeze(0)
            if s.shape[0] != B:
                raise RuntimeError(f"{name}: Input batch size {B} doesn't match hidden{k} batch "
                                   f"size {s.shape[0]}")
            if s.shape[1] != self.hidden_size:
                raise RuntimeError(f"{name}: hidden{k} has inconsistent hidden_size: got "
                                   f"{s.shape[1]}, expected {self.hidden_size}")
            out.append(s)
        return input, tuple(out), batched


class RNNCell(RNNCellBase):
    """Elman cell ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu), as ``torch.nn.RNNCell``.

    >>> import gmcore as gm
    >>> cell = gm.nn.RNNCell(3, 5)
    >>> cell(gm.randn(2, 3)).shape
    gmcore.Size([2, 5])
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: Unknown nonlinearity {nonlinearity!r} (expected 'tanh' "
                             "or 'relu')")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, (h,), batched = self._prepare(input, hx, 1)
        pre = linear(x, self.weight_ih, self.bias_ih) + linear(h, self.weight_hh, self.bias_hh)
        h = _rnn_cell(pre, "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU")
        return h if batched else h.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step, as ``torch.nn.LSTMCell``: returns ``(h', c')``; gates i, f, g, o.

    ``hx`` is ``(h, c)``, each (B, hidden_size) (zeros when omitted); 1-D input means no batch.

    >>> import gmcore as gm
    >>> cell = gm.nn.LSTMCell(3, 5)
    >>> h, c = cell(gm.randn(2, 3))
    >>> h.shape, c.shape
    (gmcore.Size([2, 5]), gmcore.Size([2, 5]))
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        x, (h, c), batched = self._prepare(input, hx, 2)
        gates = linear(x, self.weight_ih, self.bias_ih) + linear(h, self.weight_hh, self.bias_hh)
        h, c = _lstm_cell(gates, c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step, as ``torch.nn.GRUCell``: gates r, z, n with
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and ``h' = (1 - z) * n + z * h``.

    >>> import gmcore as gm
    >>> cell = gm.nn.GRUCell(3, 5)
    >>> cell(gm.randn(2, 3), gm.zeros(2, 5)).shape
    gmcore.Size([2, 5])
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        x, (h,), batched = self._prepare(input, hx, 1)
        h = _gru_cell(linear(x, self.weight_ih, self.bias_ih),
                      linear(h, self.weight_hh, self.bias_hh), h)
        return h if batched else h.squeeze(0)


# ---- multi-layer, multi-step modules ----------------------------------------------------------------

class RNNBase(Module):
    """Stack of recurrent layers over a whole sequence (shared by ``RNN``, ``LSTM``, ``GRU``).

    Set ``fused = False`` on an instance to run the reference (tensor-op) path, e.g. for
    gradients of gradients; the default fused path is once-differentiable.
    """

    fused = True

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(input_size, hidden_size, name)
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) \
                or num_layers < 1:
            raise ValueError(f"{name}: num_layers must be an int >= 1, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing "
                             f"the probability of an element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout option adds dropout after all but last recurrent "
                          f"layer, so non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", UserWarning,
                          stacklevel=3)
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size > 0 (LSTM with projections) is not "
                                      "implemented in gmcore")
        self.mode = mode
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bias = int(num_layers), bool(bias)
        self.batch_first, self.dropout = bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size = bool(bidirectional), 0
        g = _GATES[mode] * self.hidden_size
        ndir = 2 if bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.hidden_size * ndir
            for d in range(ndir):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, "weight_ih" + sfx, _param((g, in_size), device, dtype))
                setattr(self, "weight_hh" + sfx, _param((g, self.hidden_size), device, dtype))
                if bias:
                    setattr(self, "bias_ih" + sfx, _param((g,), device, dtype))
                    setattr(self, "bias_hh" + sfx, _param((g,), device, dtype))
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self, self.hidden_size)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False)):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        return s

    def _weights(self, layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        p = self._parameters
        return (p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx),
                p.get("bias_hh" + sfx))

    def _check_hidden(self, h, k, expected, batched):
        name = type(self).__name__
        _check_input_tensor(h, name, f"hx[{k}]" if self.mode == "LSTM" else "hx",
                            self.weight_ih_l0)
        want = expected if batched else (expected[0], expected[2])
        if tuple(h.shape) != want:
            what = f"hidden[{k}]" if self.mode == "LSTM" else "hidden"
            raise RuntimeError(f"{name}: Expected {what} size {want}, got {list(h.shape)}")
        return h if batched else h.unsqueeze(1)

    def forward(self, input, hx=None):
        name = type(self).__name__
        w0 = self.weight_ih_l0
        _check_input_tensor(input, name, "input", w0)
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1)
        if self.batch_first and batched:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {x.shape[-1]}")
        if T == 0:
            raise RuntimeError(f"{name}: Expected sequence length to be larger than 0")
        ndir = 2 if self.bidirectional else 1
        expected = (self.num_layers * ndir, B, self.hidden_size)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            h0 = zeros(*expected, dtype=x.dtype, device=x.device)
            c0 = h0 if is_lstm else None
        elif is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            h0 = self._check_hidden(hx[0], 0, expected, batched)
            c0 = self._check_hidden(hx[1], 1, expected, batched)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{name}: hx must be a Tensor, got {type(hx).__name__}")
            h0 = self._check_hidden(hx, 0, expected, batched)
            c0 = None

        fused = self.fused and not _use_reference()
        h_n, c_n = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(ndir):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                if self.mode == "GRU" or b_ih is None:
                    b_x, b_h = b_ih, b_hh
                else:  # LSTM / RNN: b_hh only ever adds to the pre-activation: fold it in
                    b_x, b_h = b_ih + b_hh, None
                xproj = linear(layer_in, w_ih, b_x)  # all time steps in one matmul
                k = layer * ndir + d
                args = (self.mode, d == 1, xproj, h0[k], c0[k] if is_lstm else None, w_hh, b_h)
                res = _Recurrence.apply(*args) if fused else _reference_layer(*args)
                outs.append(res[0])
                h_n.append(res[1])
                if is_lstm:
                    c_n.append(res[2])
            layer_in = outs[0] if ndir == 1 else _F.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = _F.dropout(layer_in, self.dropout, True)
        out = layer_in
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        h_n = _F.stack(h_n, 0)
        c_n = _F.stack(c_n, 0) if is_lstm else None
        if not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if is_lstm else None
        return (out, (h_n, c_n)) if is_lstm else (out, h_n)


class RNN(RNNBase):
    """Multi-layer Elman RNN, as ``torch.nn.RNN``: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1}
    + b_hh)`` (or relu). Returns ``(output, h_n)``.

    >>> import gmcore as gm
    >>> rnn = gm.nn.RNN(4, 6, num_layers=2)
    >>> out, h_n = rnn(gm.randn(5, 3, 4))
    >>> out.shape, h_n.shape
    (gmcore.Size([5, 3, 6]), gmcore.Size([2, 3, 6]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: Unknown nonlinearity {nonlinearity!r} (expected 'tanh' or "
                             "'relu')")
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Multi-layer LSTM, as ``torch.nn.LSTM`` (gates i, f, g, o).

    ``input`` is (T, B, input_size) ((B, T, input_size) with ``batch_first``; (T, input_size)
    unbatched); ``hx = (h_0, c_0)`` each (num_layers * num_directions, B, hidden_size), zeros
    when omitted. Returns ``(output, (h_n, c_n))`` with ``output`` (T, B, D * hidden_size).
    ``dropout`` applies to the outputs of every layer but the last, in training mode only.

    >>> import gmcore as gm
    >>> lstm = gm.nn.LSTM(4, 6, num_layers=2, batch_first=True)
    >>> out, (h_n, c_n) = lstm(gm.randn(3, 5, 4))
    >>> out.shape, h_n.shape, c_n.shape
    (gmcore.Size([3, 5, 6]), gmcore.Size([2, 3, 6]), gmcore.Size([2, 3, 6]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """Multi-layer GRU, as ``torch.nn.GRU`` (gates r, z, n; the reset gate scales
    ``W_hn h + b_hn``). Returns ``(output, h_n)``.

    >>> import gmcore as gm
    >>> gru = gm.nn.GRU(4, 6, bidirectional=True)
    >>> out, h_n = gru(gm.randn(5, 3, 4))
    >>> out.shape, h_n.shape
    (gmcore.Size([5, 3, 12]), gmcore.Size([2, 3, 6]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
