"""The frozen WaveNet teacher as a density over *continuous* signals, for Parallel WaveNet's
distillation.

The teacher (``wavenet --output dlml``) models mu-law codes c in 0..Q-1 placed on the axis
y = 2c/(Q-1) - 1 in [-1, 1], with a mixture of discretized logistics per step. The student draws
continuous y, and the distillation needs d/dy of the teacher's log-density, through both its
output distribution at y_t and its inputs y_{<t}. Two relaxations, each equal to the teacher on
the code grid:

* input: the teacher's causal input layer is a table lookup E_j[c_{t-j}]
  (:class:`gmcore.nn.CausalEmbedding`); at a continuous position u = (y+1)(Q-1)/2 it reads the
  linear interpolation of the two neighbouring rows (:func:`continuous_outputs`);
* output: the mixture's continuous logistic density (:func:`mixture_log_density`), with the
  same log-scale clamp at -7 as the discretized likelihood; its log, plus log(2/(Q-1)) (the bin
  width), approximates the log-probability of an interior bin.
"""
from __future__ import annotations

from ... import creation as gc
from ... import functional as gf
from ..._dtype import int64
from ...nn import functional as F
from ...tensor import Tensor

__all__ = ["continuous_input", "continuous_outputs", "mixture_log_density", "to_axis", "to_codes"]


def to_axis(codes: Tensor, levels: int, dtype=None) -> Tensor:
    """Codes (B, T) in 0..Q-1 -> values 2c/(Q-1) - 1 on [-1, 1]."""
    return codes.to(dtype) * (2.0 / (levels - 1)) - 1.0


def to_codes(y: Tensor, levels: int) -> Tensor:
    """Continuous values -> the nearest code (int64), clamped to 0..Q-1 (the discretized
    logistic's edge bins reach to +-infinity)."""
    top = levels - 1
    return ((y.detach() + 1.0) * (0.5 * top)).round().clamp(0, top).long()


def continuous_input(inp, y: Tensor) -> Tensor:
    """The teacher's input layer (a :class:`gmcore.nn.CausalEmbedding` over Q codes) at
    continuous values y (B, T) -> (B, C, T): rows interpolated linearly between neighbouring codes
    (equal to ``inp(codes)`` on the grid), before the start the learned start row."""
    Q, K = inp.num_codes, inp.kernel_size
    B, T = y.shape
    u = ((y + 1.0) * (0.5 * (Q - 1))).clamp(0, Q - 1)
    lo = u.detach().floor().clamp(0, Q - 2)
    frac = (u - lo).unsqueeze(-1)                                     # (B, T, 1), carries the gradient
    lo = lo.to(int64)
    out = None
    for j in range(1, K + 1):                                          # tap j reads position t - j
        table = inp.weight[j - 1]                                      # (Q + 1, C)
        start = gc.full((B, min(j, T)), Q, dtype=int64, device=y.device)
        lo_j = gf.cat([start, lo[:, :T - j]], 1) if j < T else start
        f_j = gf.cat([gc.zeros(B, min(j, T), 1, dtype=y.dtype, device=y.device), frac[:, :T - j]], 1) \
            if j < T else gc.zeros(B, T, 1, dtype=y.dtype, device=y.device)
        hi_j = (lo_j + 1).clamp(max=Q)        # the start row (index Q) has weight 1 - 0 on itself
        rows = F.embedding(lo_j, table) * (1.0 - f_j) + F.embedding(hi_j, table) * f_j
        out = rows if out is None else out + rows
    return (out + inp.bias).transpose(1, 2)


def continuous_outputs(teacher, y: Tensor) -> Tensor:
    """The teacher's output parameters (B, 3K, T) at continuous inputs y (B, T); column t sees
    y_{<t}. The gradient reaches y through the interpolated input layer."""
    _, skip = teacher.stack(continuous_input(teacher.inp, y))
    return teacher._head(skip)


def mixture_log_density(params: Tensor, y: Tensor) -> Tensor:
    """log p_T(y) of the continuous logistic mixture: ``params`` (B, 3K, T) laid out as the
    discretized mixture's (logits, means, log-scales clamped below at -7), ``y`` (B, T) or
    (B, M, T) (M draws per step); returns y's shape."""
    K = params.shape[1] // 3
    logits, means, log_s = params[:, :K], params[:, K:2 * K], params[:, 2 * K:].clamp(min=-7.0)
    log_w = logits.log_softmax(1)
    if y.ndim == 3:                                   # (B, M, T) -> components on axis 2
        log_w, means, log_s = log_w.unsqueeze(1), means.unsqueeze(1), log_s.unsqueeze(1)
        z = (y.unsqueeze(2) - means) * (-log_s).exp()
        axis = 2
    else:
        z = (y.unsqueeze(1) - means) * (-log_s).exp()
        axis = 1
    comp = -z - 2.0 * F.softplus(-z) - log_s
    return (log_w + comp).logsumexp(axis)
