"""Exact score matching (Hyvarinen 2005, "Estimation of Non-Normalized Statistical Models by
Score Matching"), for low dimensions.

For a score model s(x) ~ grad_x log p(x), Hyvarinen's objective, after integration by parts,

    J(theta) = E_p[ tr(grad_x s(x)) + ||s(x)||^2 / 2 ],

equals ``E_p ||s - grad log p||^2 / 2`` up to a constant that does not depend on the model. The
trace needs the Jacobian's diagonal: one backward pass per dimension (D passes, each recorded
with ``create_graph=True`` so the loss can itself be differentiated w.r.t. the parameters).
That is why it is for low dimensions (the 2-D toys, tests); sliced score matching
(:func:`gmcore.score.ssm_loss`) estimates the same trace with random projections at a cost
that does not grow with D.
"""
from __future__ import annotations

from .. import autograd
from ..tensor import Tensor

__all__ = ["exact_score_matching_loss", "EXACT_MAX_DIMS"]

# D backward passes per call: beyond this many dimensions the exact trace is the wrong tool
# (use ssm_loss or dsm_loss), so refuse rather than silently run for minutes
EXACT_MAX_DIMS = 64


def check_score_call(fn_name: str, score_fn, x):
    """Shared argument checks of the score-matching losses: ``x`` a float tensor (B, ...) with
    B >= 1, ``score_fn`` callable. Returns a fresh leaf copy of ``x`` that requires grad (the
    losses differentiate the score w.r.t. the input, never through whatever made ``x``)."""
    if not callable(score_fn):
        raise TypeError(f"{fn_name}: score_fn must be callable (x -> score of x's shape), "
                        f"got {type(score_fn).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn_name}: x must be a gmcore Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn_name}: x must be floating point, got {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{fn_name}: x must be a batch (B, ...) with B >= 1, got shape {tuple(x.shape)}")
    return x.detach().requires_grad_(True)


def score_of(fn_name: str, score_fn, x):
    """``score_fn(x)``, checked to have ``x``'s shape and to depend on ``x``."""
    s = score_fn(x)
    if not isinstance(s, Tensor) or tuple(s.shape) != tuple(x.shape):
        shape = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(f"{fn_name}: score_fn must return a tensor of x's shape {tuple(x.shape)}, "
                         f"got {shape}")
    if not s.requires_grad:
        raise ValueError(f"{fn_name}: score_fn's output does not depend on x (no graph to "
                         "differentiate; was it computed under no_grad?)")
    return s


def exact_score_matching_loss(score_fn, x, reduction: str = "mean"):
    """Hyvarinen's score-matching objective ``tr(grad_x s(x)) + ||s(x)||^2 / 2`` of ``x``
    (B, ...) with D = prod(...) <= EXACT_MAX_DIMS, its trace from D backward passes; differentiable
    w.r.t. the parameters of ``score_fn`` (double backward). ``score_fn`` must treat the
    examples independently (no batch norm): each backward pass serves the whole batch.
    ``reduction``: "mean" (a scalar, the default), "sum" or "none" (B,).

    >>> import gmcore as gm
    >>> x = gm.tensor([[1.0, -2.0], [0.5, 0.0]])
    >>> exact_score_matching_loss(lambda x: -x, x, reduction="none").tolist()  # N(0, I): -2 + |x|^2/2
    [0.5, -1.875]
    """
    fn = "exact_score_matching_loss"
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    x = check_score_call(fn, score_fn, x)
    B = x.shape[0]
    D = x.numel() // B
    if D > EXACT_MAX_DIMS:
        raise ValueError(f"{fn}: x has D = {D} dimensions per example; the exact trace costs D "
                         f"backward passes and is limited to D <= {EXACT_MAX_DIMS} (use ssm_loss or "
                         "dsm_loss in higher dimensions)")
    s = score_of(fn, score_fn, x)
    flat = s.reshape(B, D)
    trace = None
    for i in range(D):
        # row i of the Jacobian for every example at once (examples are independent):
        # d s_i / d x, of which we keep entry i
        (g,) = autograd.grad(flat[:, i].sum(), x, create_graph=True, retain_graph=True)
        term = g.reshape(B, D)[:, i]
        trace = term if trace is None else trace + term
    per_example = trace + 0.5 * (flat * flat).sum(1)
    if reduction == "none":
        return per_example
    return per_example.sum() if reduction == "sum" else per_example.mean()
