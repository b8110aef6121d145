"""PixelRNN's two-dimensional LSTM layers (van den Oord, Kalchbrenner & Kavukcuoglu 2016,
"Pixel Recurrent Neural Networks", Sec. 3.1-3.2): ``RowLSTM``, ``DiagonalLSTM``,
``DiagonalBiLSTM``, and the ``skew`` / ``unskew`` maps of the diagonal layers.

Both layers are an LSTM (gates i, f, g, o, as :class:`gmcore.nn.LSTMCell`) whose state is a
whole line of the image: a row for the Row LSTM, a diagonal for the Diagonal LSTM. Per step

    [i, f, g, o] = K_is (*) x_line + K_ss (*) h_previous_line,
    c = sigmoid(f) c_prev + sigmoid(i) tanh(g),   h = sigmoid(o) tanh(c),

where the input-to-state part ``K_is (*) x`` is a (masked) convolution computed for the whole
map at once, and the state-to-state part ``K_ss (*) h`` a 1-D convolution along the previous
line: width ``k`` over the row above (Row LSTM), width 2 over the previous diagonal (Diagonal
LSTM: the pixel above and the pixel to the left).

How it runs: the line-by-line loop is one fused op per layer and direction
(:class:`_LineRecurrence`, on raw arrays): per line, one (B*N, h) x (h, k*4h) matmul gives every
tap of the state-to-state convolution, added shifted, then the LSTM's array ops; its backward is
hand-written backpropagation through time, as :mod:`gmcore.nn.rnn`'s fused LSTM (and, like it,
once-differentiable). ``fused = False`` on a layer (or ``GMCORE_KERNELS=reference``) runs the
reference instead: the same step written with a ``conv1d`` per line and tensor ops,
differentiable to any order.

RGB (``groups_rgb=3``): the input-to-state convolution carries PixelCNN's channel masks
(:class:`gmcore.nn.MaskedConv2d`), and hidden unit ``u`` belongs to colour group
``u // (hidden / 3)``: its four gates come from that group's block of the convolution. The
state-to-state part reads earlier pixels only, so it needs no channel mask.
"""
from __future__ import annotations

import math


from . import functional as F
from .masked_conv import MaskedConv2d
from .module import Module
from .parameter import _param
from .rnn import _lstm_cell, _sigmoid, _use_reference
from .. import backend
from ..autograd import Function, no_grad, once_differentiable
from ..creation import zeros
from ..tensor import Tensor

__all__ = ["skew", "unskew", "RowLSTM", "DiagonalLSTM", "DiagonalBiLSTM"]


def skew(x: Tensor) -> Tensor:
    """Shift row ``r`` of a (B, C, H, W) map right by ``r``: (B, C, H, W + H - 1), zeros
    elsewhere. Pixel ``(r, j)`` lands in column ``r + j``, so a diagonal ``r + j = c`` of the
    image becomes column ``c`` (Sec. 3.2, Fig. 3), and the pixel above ``(r - 1, j)`` and the
    one to the left ``(r, j - 1)`` both lie in the previous column.

    >>> import gmcore as gm
    >>> x = gm.tensor([[1., 2.], [3., 4.], [5., 6.]]).reshape(1, 1, 3, 2)
    >>> gm.nn.skew(x)[0, 0].tolist()
    [[1.0, 2.0, 0.0, 0.0], [0.0, 3.0, 4.0, 0.0], [0.0, 0.0, 5.0, 6.0]]
    """
    _check_map("skew", x)
    B, C, H, W = x.shape
    # rows padded to width W + H and laid end to end: reading them back with width W + H - 1
    # starts each row one element earlier than the last, i.e. shifts row r right by r
    flat = F.pad(x, (0, H)).reshape(B, C, H * (W + H))
    return flat[:, :, :H * (W + H - 1)].reshape(B, C, H, W + H - 1)


def unskew(x: Tensor, width: int | None = None) -> Tensor:
    """Inverse of :func:`skew`: (B, C, H, T) -> (B, C, H, W) with ``W = T - H + 1`` (or
    ``width``), ``out[r, j] = x[r, r + j]``.

    >>> import gmcore as gm
    >>> x = gm.arange(6.).reshape(1, 1, 3, 2)
    >>> bool((gm.nn.unskew(gm.nn.skew(x)) == x).all())
    True
    """
    _check_map("unskew", x)
    B, C, H, T = x.shape
    W = T - H + 1 if width is None else int(width)
    if W < 1 or W > T - H + 1:
        raise ValueError(f"unskew: a skewed map of height {H} and width {T} holds images of width "
                         f"{T - H + 1}, got width={width}")
    # laid end to end and read back with width T + 1, row r starts r elements later
    flat = F.pad(x.reshape(B, C, H * T), (0, H))
    return flat.reshape(B, C, H, T + 1)[:, :, :, :W]


def _check_map(name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) map, got shape {tuple(x.shape)}")


class _LineRecurrence(Function):
    """An LSTM over T lines of N positions, whole lines per step, on raw arrays.

    forward(xproj (T, B, N, 4h), weight (4h, h, k), offsets, active) -> h (T, B, N, h), with
    zero initial h and c, and per step ``pre[p] = xproj[t, p] + sum_j weight[..., j] @
    h_prev[p + offsets[j]]`` (zero outside the line), gates i, f, g, o along the last axis.
    ``active``: per step the span ``(lo, hi)`` of positions computed; h and c are held at zero
    outside it (the skewed map's positions outside the image: the caller promises that no
    computed position needs them otherwise).

    The k taps are one (B*N, h) x (h, k*4h) matmul per step, ``y = h_prev @ Wcat``, whose
    slices are added shifted: ``pre[:, p] += y[:, p + o_j, j]``. Backward (BPTT), with the gate
    derivatives of :class:`gmcore.nn.rnn._Recurrence`'s LSTM giving ``dpre`` at each step (zero
    outside the span): the shifted slices go back as ``dy[:, p + o_j, j] = dpre[:, p]``, then
    ``dh_prev = dy @ Wcat^T``, and ``dWcat = sum_t h_prev_t^T dy_t`` is one matmul over all
    steps at the end.
    """

    @staticmethod
    def forward(ctx, xproj, weight, offsets, active):
        xp = backend.xp_of(xproj)
        T, B, N, G = xproj.shape
        h, k = weight.shape[1], weight.shape[2]
        dt = xproj.dtype
        wcat = xp.ascontiguousarray(weight.transpose(1, 2, 0).reshape(h, k * G))
        out = xp.zeros((T, B, N, h), dtype=dt)
        acts = xp.zeros((T, B, N, G), dtype=dt)
        cprev = xp.zeros((T, B, N, h), dtype=dt)
        tanh_c = xp.zeros((T, B, N, h), dtype=dt)
        c = xp.zeros((B, N, h), dtype=dt)
        for t in range(T):
            lo, hi = active[t]
            pre = xproj[t, :, lo:hi].copy()                    # C order (the gates arrive permuted)
            if t > 0:                                          # h is zero before the first line
                y = (out[t - 1].reshape(B * N, h) @ wcat).reshape(B, N, k, G)
                for j, (a0, a1, o) in enumerate(_spans(offsets, N, lo, hi)):
                    pre[:, a0 - lo:a1 - lo] += y[:, a0 + o:a1 + o, j]
            cprev[t] = c
            a = acts[t, :, lo:hi]
            a[...] = _sigmoid(xp, pre)
            a[..., 2 * h:3 * h] = xp.tanh(pre[..., 2 * h:3 * h])
            c = xp.zeros_like(c)
            c[:, lo:hi] = a[..., h:2 * h] * cprev[t, :, lo:hi] + a[..., :h] * a[..., 2 * h:3 * h]
            tc = tanh_c[t, :, lo:hi]
            tc[...] = xp.tanh(c[:, lo:hi])
            xp.multiply(a[..., 3 * h:], tc, out=out[t, :, lo:hi])
        ctx.save_for_backward(wcat, acts, cprev, tanh_c, out)
        ctx.offsets, ctx.active = tuple(offsets), tuple(active)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gout):
        wcat, acts, cprev, tanh_c, out = ctx.saved_arrays
        xp = backend.xp_of(gout)
        T, B, N, h = gout.shape
        G = 4 * h
        k = wcat.shape[1] // G
        dx = xp.zeros((T, B, N, G), dtype=gout.dtype)
        dy_all = xp.zeros((T, B, N, k, G), dtype=gout.dtype)
        dh = xp.zeros((B, N, h), dtype=gout.dtype)
        dc = xp.zeros_like(dh)
        for t in range(T - 1, -1, -1):
            lo, hi = ctx.active[t]
            dht = dh[:, lo:hi] + gout[t, :, lo:hi]      # h outside the span is held at zero
            a, tc = acts[t, :, lo:hi], tanh_c[t, :, lo:hi]
            i, f, g, o = a[..., :h], a[..., h:2 * h], a[..., 2 * h:3 * h], a[..., 3 * h:]
            dct = dc[:, lo:hi] + dht * o * (1 - tc * tc)
            d = dx[t, :, lo:hi]
            d[..., :h] = dct * g * i * (1 - i)
            d[..., h:2 * h] = dct * cprev[t, :, lo:hi] * f * (1 - f)
            d[..., 2 * h:3 * h] = dct * i * (1 - g * g)
            d[..., 3 * h:] = dht * tc * o * (1 - o)
            dc = xp.zeros_like(dc)
            dc[:, lo:hi] = dct * f
            if t == 0:
                break
            dy = dy_all[t]
            for j, (a0, a1, off) in enumerate(_spans(ctx.offsets, N, lo, hi)):
                dy[:, a0 + off:a1 + off, j] = dx[t, :, a0:a1]
            dh = (dy.reshape(B * N, k * G) @ wcat.T).reshape(B, N, h)
        dw = None
        if ctx.needs_input_grad[1]:
            # step t consumed h_{t-1} = out[t - 1]; step 0 consumed zeros
            dwcat = out[:-1].reshape(-1, h).T @ dy_all[1:].reshape(-1, k * G)
            dw = xp.ascontiguousarray(dwcat.reshape(h, k, G).transpose(2, 0, 1))
        return dx, dw, None, None


def _spans(offsets, n, lo=0, hi=None):
    """(a0, a1, o) per tap: positions p in [a0, a1), inside [lo, hi), read p + o inside a line
    of n."""
    hi = n if hi is None else hi
    return [(max(lo, -o), min(hi, n - o), o) for o in offsets]


def _lstm_lines(gates: Tensor, weight_ss: Tensor, offsets, fused: bool, active=None) -> Tensor:
    """An LSTM over T lines of N positions: ``gates`` (T, B, N, 4h) input-to-state
    pre-activations (gates i, f, g, o along the last axis), ``weight_ss`` (4h, h, k) the
    state-to-state convolution along a line (tap j reads position p + offsets[j] of the previous
    line's h). Returns h (T, B, N, h). ``active``: the fused path computes only these spans
    (lo, hi) per line and returns zeros elsewhere; the reference computes every position (the
    same values inside the spans when nothing inside reads outside, as for the skewed map)."""
    if fused and not _use_reference():
        T, N = gates.shape[0], gates.shape[2]
        spans = tuple(active) if active is not None else ((0, N),) * T
        return _LineRecurrence.apply(gates, weight_ss, tuple(offsets), spans)
    # reference: one conv1d over the previous line per step, then the LSTMCell math
    T, B, N, G = gates.shape
    h = G // 4
    left, right = -offsets[0], offsets[-1]
    hprev = zeros(B, h, N, dtype=gates.dtype, device=gates.device)
    c = zeros(B * N, h, dtype=gates.dtype, device=gates.device)
    outs = []
    for t in range(T):
        ss = F.conv1d(F.pad(hprev, (left, right)), weight_ss)            # (B, 4h, N)
        pre = (gates[t] + ss.permute(0, 2, 1)).reshape(B * N, G)
        hn, c = _lstm_cell(pre, c)
        hn = hn.reshape(B, N, h)
        outs.append(hn)
        hprev = hn.permute(0, 2, 1)
    return F.stack(outs, 0)


class _LineLSTM(Module):
    """What both layers share: the masked input-to-state convolution to 4h gates, the
    state-to-state kernel (4h, h, k), the colour-group reordering of the gates."""

    fused = True

    def __init__(self, in_channels, hidden, is_kernel, ss_width, mask_type, groups_rgb):
        super().__init__()
        name = type(self).__name__
        for what, v in (("in_channels", in_channels), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        if hidden % groups_rgb:
            raise ValueError(f"{name}: hidden={hidden} must be divisible by groups_rgb={groups_rgb} "
                             "(each colour owns hidden / groups_rgb units)")
        self.hidden, self.groups_rgb = hidden, groups_rgb
        self.input_to_state = MaskedConv2d(in_channels, 4 * hidden, is_kernel, mask_type=mask_type,
                                           groups_rgb=groups_rgb)
        self.weight_ss = _param((4 * hidden, hidden, ss_width))
        with no_grad():   # as a Conv1d(hidden, 4 hidden, ss_width): U(+-1/sqrt(fan_in))
            self.weight_ss.uniform_(-1 / math.sqrt(hidden * ss_width), 1 / math.sqrt(hidden * ss_width))

    def _gates(self, x: Tensor) -> Tensor:
        """(B, 4, h, H, W): the input-to-state pre-activations, gate-major, unit u of colour
        group u // (h / groups). MaskedConv2d's output blocks are per colour: (group, gate, unit)."""
        _check_map(type(self).__name__, x)
        if x.shape[1] != self.input_to_state.in_channels:
            raise ValueError(f"{type(self).__name__}: expected {self.input_to_state.in_channels} input "
                             f"channels, got shape {tuple(x.shape)}")
        B, _, H, W = x.shape
        g, h = self.groups_rgb, self.hidden
        y = self.input_to_state(x).reshape(B, g, 4, h // g, H, W).permute(0, 2, 1, 3, 4, 5)
        return y.reshape(B, 4, h, H, W)

    def extra_repr(self):
        s = f"{self.input_to_state.in_channels}, {self.hidden}"
        return s + (f", groups_rgb={self.groups_rgb}" if self.groups_rgb != 1 else "")


class RowLSTM(_LineLSTM):
    """Row LSTM (Sec. 3.1): the rows are computed top to bottom, a whole row per step. Input to
    state: a ``1 x kernel_size`` masked convolution along the row (mask B: the pixel and the ones
    to its left); state to state: a width-``kernel_size`` convolution over the row above's h.
    The context is a triangle above the pixel (plus the row's left part through the input).

    ``(B, in_channels, H, W) -> (B, hidden, H, W)``; row ``i`` of the output depends on rows
    ``<= i`` of the input, and on row ``i`` at columns ``<= j`` (``< j`` with mask A).

    >>> import gmcore as gm
    >>> layer = gm.nn.RowLSTM(6, 4)
    >>> layer(gm.randn(2, 6, 5, 7)).shape
    gmcore.Size([2, 4, 5, 7])
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3, mask_type: str = "B",
                 groups_rgb: int = 1):
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
                or kernel_size % 2 == 0:
            raise ValueError(f"RowLSTM: kernel_size must be an odd positive int, got {kernel_size!r}")
        super().__init__(in_channels, hidden, (1, kernel_size), kernel_size, mask_type, groups_rgb)
        p = kernel_size // 2
        self.offsets = tuple(range(-p, p + 1))

    def forward(self, x: Tensor) -> Tensor:
        g = self._gates(x)
        B, _, _, H, W = g.shape
        gates = g.reshape(B, 4 * self.hidden, H, W).permute(2, 0, 3, 1)       # (H, B, W, 4h)
        h = _lstm_lines(gates, self.weight_ss, self.offsets, self.fused)
        return h.permute(1, 3, 0, 2)                                          # (B, h, H, W)


class DiagonalLSTM(_LineLSTM):
    """One direction of the Diagonal BiLSTM (Sec. 3.2): the image is skewed so that its
    diagonals become columns, and the LSTM runs over the H + W - 1 columns; input to state is a
    1x1 (masked) convolution, state to state a 2x1 convolution over the previous column, which
    holds the pixel above ``(r - 1, j)`` and the one to the left ``(r, j - 1)``. The context is
    the whole quadrant above and to the left.

    ``(B, in_channels, H, W) -> (B, hidden, H, W)``.

    >>> import gmcore as gm
    >>> gm.nn.DiagonalLSTM(6, 4)(gm.randn(2, 6, 5, 7)).shape
    gmcore.Size([2, 4, 5, 7])
    """

    offsets = (-1, 0)    # the state-to-state taps read rows r - 1 and r of the previous column

    def __init__(self, in_channels: int, hidden: int, mask_type: str = "B", groups_rgb: int = 1):
        super().__init__(in_channels, hidden, 1, 2, mask_type, groups_rgb)

    def forward(self, x: Tensor) -> Tensor:
        g = self._gates(x)
        B, _, _, H, W = g.shape
        # skew the 1x1 convolution's output: same as skewing the input, but the positions
        # outside the image get zero pre-activations rather than the bias, which keeps the
        # state there exactly zero on the left (a zero boundary, as at the top)
        g = skew(g.reshape(B, 4 * self.hidden, H, W)).permute(3, 0, 2, 1)   # (T, B, H, 4h)
        # column t holds image rows r with 0 <= t - r < W; rows below (r > t) stay exactly
        # zero and rows above (t - r >= W) are never read by the image's positions: skip both
        active = [(max(0, t - W + 1), min(H, t + 1)) for t in range(H + W - 1)]
        h = _lstm_lines(g, self.weight_ss, self.offsets, self.fused, active)   # (T, B, H, h)
        return unskew(h.permute(1, 3, 2, 0), W)


class DiagonalBiLSTM(Module):
    """Diagonal BiLSTM (Sec. 3.2): a :class:`DiagonalLSTM` from the top left, plus one from the
    top right (the same layer on the horizontally mirrored map, mirrored back), whose output is
    shifted down by one row before the two are added: the right-to-left state at ``(r, j)`` has
    seen ``(r, j + 1)``, a later pixel, so pixel ``(r, j)`` takes the one at ``(r - 1, j)``
    instead (the paper's fix for causality). Every earlier pixel is then in the context: no
    blind spot.

    ``(B, in_channels, H, W) -> (B, hidden, H, W)``.

    >>> import gmcore as gm
    >>> gm.nn.DiagonalBiLSTM(6, 4)(gm.randn(2, 6, 5, 7)).shape
    gmcore.Size([2, 4, 5, 7])
    """

    def __init__(self, in_channels: int, hidden: int, mask_type: str = "B", groups_rgb: int = 1):
        super().__init__()
        self.forward_dir = DiagonalLSTM(in_channels, hidden, mask_type, groups_rgb)
        self.backward_dir = DiagonalLSTM(in_channels, hidden, mask_type, groups_rgb)

    @property
    def fused(self) -> bool:
        """False runs both directions' reference path (any-order gradients)."""
        return self.forward_dir.fused and self.backward_dir.fused

    @fused.setter
    def fused(self, on: bool):
        self.forward_dir.fused = self.backward_dir.fused = bool(on)

    def forward(self, x: Tensor) -> Tensor:
        left = self.forward_dir(x)
        right = self.backward_dir(x.flip(3)).flip(3)
        return left + F.pad(right, (0, 0, 1, -1))     # down one row: row 0 gets zeros
