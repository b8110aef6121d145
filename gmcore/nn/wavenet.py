"""WaveNet layers (van den Oord et al., 2016) and fast incremental generation (Paine et al., 2016).

* :class:`WaveNetBlock`: one gated residual block (parameters + the fused
  :func:`gmcore.nn.functional.wavenet_residual_block`), with optional projections of local
  (N, F, T) and global (N, D) conditioning features into the gate's pre-activation.
* :class:`WaveNetStack`: blocks with dilations 1, 2, ..., 2^(layers-1), repeated ``stacks``
  times; returns the last residual stream and the sum of the skip outputs.
* :class:`CausalEmbedding`: the causal input layer on integer codes: output t is
  ``bias + sum_j E_j[code_{t-j}]``, j = 1..K, i.e. a causal conv of kernel K on the one-hot codes
  shifted right by one (so output t never sees code t), computed as K table lookups instead of a
  (Q x C) GEMM; codes before the start read a learned start row (index Q).
* :class:`WaveNetGenerationState`: one queue per block of that block's past inputs (a ring
  buffer of d*(K-1) time slots in an xp array), so a new sample costs O(layers) matrix-vector
  products instead of a pass over the receptive field.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..autograd import no_grad
from ..functional.indexing import embedding
from ..functional.wavenet import (_gate_impls, block_step_arrays, prepare_step_weights,
                                  wavenet_residual_block)
from ..tensor import Tensor
from . import init
from .container import ModuleList
from .module import Module
from .parameter import _param

__all__ = ["WaveNetBlock", "WaveNetStack", "CausalEmbedding", "WaveNetGenerationState"]


def _positive(cls, **values):
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")


def _fan_in_uniform_(t, fan_in):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    init.uniform_(t, -bound, bound)


class WaveNetBlock(Module):
    """A gated residual block: (N, C, T) -> (residual (N, C, T), skip (N, S, T)).

    Parameters (PyTorch-style fan-in uniform initialisation): ``conv_weight`` (2G, C, K),
    ``conv_bias`` (2G,), ``res_weight`` (C, G), ``res_bias`` (C,), ``skip_weight`` (S, G),
    ``skip_bias`` (S,); with ``local_channels`` F > 0 a ``local_weight`` (2G, F) projecting
    local features (N, F, T); with ``global_channels`` D > 0 a ``global_weight`` (2G, D)
    projecting a global vector (N, D). Both projections are added before the gate.

    >>> import gmcore as gm
    >>> blk = gm.nn.WaveNetBlock(4, 6, 8, dilation=2)
    >>> res, skip = blk(gm.randn(3, 4, 10))
    >>> tuple(res.shape), tuple(skip.shape), blk
    ((3, 4, 10), (3, 8, 10), WaveNetBlock(4, gate=6, skip=8, kernel_size=2, dilation=2))
    """

    def __init__(self, residual_channels, gate_channels, skip_channels, kernel_size=2, dilation=1,
                 local_channels=0, global_channels=0, device=None, dtype=None):
        super().__init__()
        _positive("WaveNetBlock", residual_channels=residual_channels, gate_channels=gate_channels,
                  skip_channels=skip_channels, kernel_size=kernel_size, dilation=dilation)
        for name, v in (("local_channels", local_channels), ("global_channels", global_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"WaveNetBlock: {name} must be an int >= 0, got {v!r}")
        C, G, S, K = residual_channels, gate_channels, skip_channels, kernel_size
        self.residual_channels, self.gate_channels, self.skip_channels = C, G, S
        self.kernel_size, self.dilation = K, dilation
        self.local_channels, self.global_channels = local_channels, global_channels
        self.conv_weight = _param((2 * G, C, K), device, dtype)
        self.conv_bias = _param((2 * G,), device, dtype)
        self.res_weight = _param((C, G), device, dtype)
        self.res_bias = _param((C,), device, dtype)
        self.skip_weight = _param((S, G), device, dtype)
        self.skip_bias = _param((S,), device, dtype)
        self.local_weight = _param((2 * G, local_channels), device, dtype) if local_channels else None
        self.global_weight = _param((2 * G, global_channels), device, dtype) if global_channels else None
        self.reset_parameters()

    def reset_parameters(self):
        C, G, K = self.residual_channels, self.gate_channels, self.kernel_size
        for w, b, fan in ((self.conv_weight, self.conv_bias, C * K), (self.res_weight, self.res_bias, G),
                          (self.skip_weight, self.skip_bias, G)):
            _fan_in_uniform_(w, fan)
            _fan_in_uniform_(b, fan)
        if self.local_weight is not None:
            _fan_in_uniform_(self.local_weight, self.local_channels)
        if self.global_weight is not None:
            _fan_in_uniform_(self.global_weight, self.global_channels)

    def _cond(self, local, glob):
        cond = None
        if local is not None:
            if self.local_weight is None:
                raise ValueError("WaveNetBlock: got local features but local_channels=0")
            cond = self.local_weight.matmul(local)                          # (N, 2G, T)
        if glob is not None:
            if self.global_weight is None:
                raise ValueError("WaveNetBlock: got a global vector but global_channels=0")
            g = glob.matmul(self.global_weight.mT).unsqueeze(-1)            # (N, 2G, 1)
            cond = g if cond is None else cond + g
        return cond

    def forward(self, input, local=None, glob=None):
        """``local`` (N, F, T) features at the sample rate, ``glob`` (N, D): optional."""
        return wavenet_residual_block(input, self.conv_weight, self.conv_bias, self.res_weight,
                                      self.res_bias, self.skip_weight, self.skip_bias,
                                      self.dilation, self._cond(local, glob))

    def extra_repr(self):
        s = (f"{self.residual_channels}, gate={self.gate_channels}, skip={self.skip_channels}, "
             f"kernel_size={self.kernel_size}, dilation={self.dilation}")
        if self.local_channels:
            s += f", local_channels={self.local_channels}"
        if self.global_channels:
            s += f", global_channels={self.global_channels}"
        return s


class WaveNetStack(Module):
    """``stacks`` x ``layers`` blocks, dilations 1, 2, ..., 2^(layers-1) in each stack.

    ``forward(x, local=None, glob=None) -> (residual, skip_sum)``. The receptive field is
    ``stacks * (K-1) * (2^layers - 1) + 1`` samples (:attr:`receptive_field`).

    >>> import gmcore as gm
    >>> st = gm.nn.WaveNetStack(4, 4, 8, layers=3, stacks=2)
    >>> _, skip = st(gm.randn(2, 4, 20))
    >>> tuple(skip.shape), st.receptive_field
    ((2, 8, 20), 15)
    """

    def __init__(self, residual_channels, gate_channels, skip_channels, layers, stacks=1,
                 kernel_size=2, local_channels=0, global_channels=0, device=None, dtype=None):
        super().__init__()
        _positive("WaveNetStack", layers=layers, stacks=stacks)
        self.blocks = ModuleList([
            WaveNetBlock(residual_channels, gate_channels, skip_channels, kernel_size, 2 ** i,
                         local_channels, global_channels, device=device, dtype=dtype)
            for _ in range(stacks) for i in range(layers)])

    @property
    def receptive_field(self):
        return 1 + sum(b.dilation * (b.kernel_size - 1) for b in self.blocks)

    def forward(self, input, local=None, glob=None):
        x, skip_sum = input, None
        for blk in self.blocks:
            x, skip = blk(x, local, glob)
            skip_sum = skip if skip_sum is None else skip_sum + skip
        return x, skip_sum

    def generation_state(self, batch_size, glob=None):
        """A :class:`WaveNetGenerationState` for ``batch_size`` sequences (``glob`` (N, D))."""
        return WaveNetGenerationState(self, batch_size, glob)


class CausalEmbedding(Module):
    """Causal input layer on integer codes (B, T) in 0..Q-1 -> (B, C, T).

    ``y[:, :, t] = bias + sum_{j=1..K} weight[j-1, code[t-j]]`` with code[t-j] = Q (a learned
    start row) before the start: the same function as a causal conv of kernel K on the one-hot
    codes shifted right by one step, so output t depends on codes < t only. ``weight``
    (K, Q+1, C) starts N(0, 1/K), ``bias`` (C,) at zero.

    >>> import gmcore as gm
    >>> emb = gm.nn.CausalEmbedding(256, 8, kernel_size=2)
    >>> emb(gm.tensor([[1, 2, 3]])).shape
    gmcore.Size([1, 8, 3])
    """

    def __init__(self, num_codes, channels, kernel_size=2, device=None, dtype=None):
        super().__init__()
        _positive("CausalEmbedding", num_codes=num_codes, channels=channels, kernel_size=kernel_size)
        self.num_codes, self.channels, self.kernel_size = num_codes, channels, kernel_size
        self.weight = _param((kernel_size, num_codes + 1, channels), device, dtype)
        self.bias = _param((channels,), device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight, 0.0, 1.0 / math.sqrt(self.kernel_size))
        init.zeros_(self.bias)

    def _indices(self, codes):
        """(B, T, K) rows of the flattened table read at each position (raw int64 array)."""
        c = codes.data
        xp = backend.xp_of(c)
        if c.ndim != 2 or c.dtype.kind not in "iu":
            raise ValueError(f"CausalEmbedding: codes must be (B, T) integers, got {c.dtype} "
                             f"of shape {tuple(c.shape)}")
        Q, K = self.num_codes, self.kernel_size
        if c.size and (int(c.min()) < 0 or int(c.max()) >= Q):
            raise ValueError(f"CausalEmbedding: codes must lie in 0..{Q - 1}, got "
                             f"{int(c.min())}..{int(c.max())}")
        B, T = c.shape
        padded = xp.full((B, T + K), Q, dtype=np.int64)
        padded[:, K:] = c
        taps = [padded[:, K - j:K - j + T] + (j - 1) * (Q + 1) for j in range(1, K + 1)]
        return xp.stack(taps, axis=-1)

    def forward(self, codes):
        table = self.weight.reshape(self.kernel_size * (self.num_codes + 1), self.channels)
        h = embedding(Tensor(self._indices(codes)), table).sum(2)        # (B, T, C)
        return (h + self.bias).transpose(1, 2)

    def step_arrays(self, history):
        """Raw (N, C) output for the next step from ``history`` (N, K) raw int64: the last K
        codes, oldest first (Q where before the start)."""
        K = self.kernel_size
        w = self.weight.data
        out = self.bias.data + w[K - 1, history[:, 0]]
        for j in range(1, K):                       # history[:, K-j] is code t-j
            out = out + w[j - 1, history[:, K - j]]
        return out

    def extra_repr(self):
        return f"{self.num_codes}, {self.channels}, kernel_size={self.kernel_size}"


class WaveNetGenerationState:
    """Queues for sample-by-sample generation through a :class:`WaveNetStack` (Fast WaveNet).

    Block l with dilation d and kernel K needs its own inputs at t - d, ..., t - d(K-1). They
    live in a ring buffer ``(d(K-1), N, C)`` (one xp array per block): the input at time
    t - d j sits in slot ``(t - d j) mod d(K-1)``; slot ``t mod d(K-1)`` holds the oldest tap,
    t - d(K-1), until step t has read it and stores the new input there. A step is one (N, K*C) x (K*C, 2G) product, the
    gate kernel and one (N, G) x (G, C+S) product per block: O(layers) work per sample,
    independent of the receptive field. The weights are snapshotted (prepared once) when the
    state is made; the state is not differentiable.

    >>> import gmcore as gm
    >>> st = gm.nn.WaveNetStack(4, 4, 8, layers=3)
    >>> x = gm.randn(2, 4, 12)
    >>> _, skip = st(x)
    >>> state = st.generation_state(2)
    >>> steps = [state.step(x.data[:, :, t]) for t in range(12)]
    >>> bool(abs(steps[11] - skip.data[:, :, 11]).max() < 1e-5), state.t
    (True, 12)
    """

    def __init__(self, stack, batch_size, glob=None):
        blocks = list(stack.blocks)
        if not blocks:
            raise ValueError("WaveNetGenerationState: the stack has no blocks")
        p = blocks[0].conv_weight
        self.xp = xp = backend.xp_of(p.data)
        self.device, dtype = p.device, p.data.dtype
        self.batch_size, self.t = int(batch_size), 0
        _, self.gate_fwd, _ = _gate_impls(self.device.type, dtype)
        self.blocks = blocks
        self.prepared, self.buffers, self.global_cond = [], [], []
        raw = lambda t: None if t is None else t.data  # noqa: E731
        with no_grad(), backend.device_context(self.device):
            g = None if glob is None else (glob.data if isinstance(glob, Tensor) else glob)
            for blk in blocks:
                self.prepared.append(prepare_step_weights(
                    blk.conv_weight.data, raw(blk.conv_bias), blk.res_weight.data,
                    raw(blk.res_bias), blk.skip_weight.data, raw(blk.skip_bias)))
                span = blk.dilation * (blk.kernel_size - 1)
                self.buffers.append(xp.zeros((span, self.batch_size, blk.residual_channels),
                                             dtype=dtype) if span else None)
                if g is not None:
                    if blk.global_weight is None:
                        raise ValueError("WaveNetGenerationState: got a global vector but the "
                                         "blocks have global_channels=0")
                    self.global_cond.append(g @ blk.global_weight.data.T)
                else:
                    self.global_cond.append(None)

    def step(self, x_t, local_t=None):
        """Feed the stack's input at the current time, x_t raw (N, C) (``local_t`` raw (N, F)
        local features of this step, or None); returns the skip sum (N, S) raw and advances."""
        xp, t = self.xp, self.t
        C = self.blocks[0].residual_channels
        if getattr(x_t, "shape", None) != (self.batch_size, C):
            raise ValueError(f"WaveNetGenerationState.step: x_t must be a raw ({self.batch_size}, "
                             f"{C}) array, got {getattr(x_t, 'shape', type(x_t).__name__)}")
        skip_sum = None
        for blk, prep, buf, gc in zip(self.blocks, self.prepared, self.buffers, self.global_cond):
            K, d = blk.kernel_size, blk.dilation
            if buf is None:
                cols = x_t
            else:
                span = buf.shape[0]
                if K == 2:
                    cols = xp.concatenate([buf[t % span], x_t], axis=1)
                else:
                    idx = [(t - d * (K - 1 - k)) % span for k in range(K - 1)]
                    past = buf[idx].transpose(1, 0, 2).reshape(x_t.shape[0], -1)
                    cols = xp.concatenate([past, x_t], axis=1)
                buf[t % span] = x_t          # that slot held time t - d(K-1): already read
            cond = gc
            if local_t is not None:
                lc = local_t @ blk.local_weight.data.T
                cond = lc if cond is None else cond + lc
            x_t, skip = block_step_arrays(x_t, cols, prep, self.gate_fwd, cond)
            skip_sum = skip if skip_sum is None else skip_sum + skip
        self.t = t + 1
        return skip_sum

    def reset(self):
        """Back to t = 0 with empty (zero) queues."""
        self.t = 0
        for buf in self.buffers:
            if buf is not None:
                buf[...] = 0
