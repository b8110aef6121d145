"""Sliced score matching (Song, Garg, Shi & Ermon 2019, "Sliced Score Matching: A Scalable
Approach to Density and Score Estimation").

Hyvarinen's objective ``E_p[tr(grad_x s) + ||s||^2 / 2]`` (:mod:`.exact`) needs the Jacobian's
trace, D backward passes. Projecting onto random directions v with ``E[v v^T] = I`` gives

    J(theta) = E_p E_v[ v^T (grad_x s) v + (v^T s)^2 / 2 ],

whose expectation over v is the exact objective because ``E_v[v^T A v] = tr(A)`` for any
matrix A (Hutchinson's estimator). ``v^T (grad_x s) v`` costs one vector-Jacobian product:
``g = grad_x (v . s(x))`` (recorded with ``create_graph=True`` so the loss is differentiable
w.r.t. the parameters, double backward), then ``g . v``.

The *variance-reduced* form (SSM-VR, the paper's eq. 8) replaces ``(v^T s)^2 / 2`` by its
expectation over v, ``s^T E[v v^T] s / 2 = ||s||^2 / 2``. That expectation holds for every
projection distribution with ``E[v v^T] = I``: the standard Gaussian and the Rademacher
(independent +-1 entries) alike, so the variance-reduced form is unbiased for both. The
projections differ in the trace term's variance: for a Jacobian A, Gaussian v gives
``Var(v^T A v) = ||A + A^T||_F^2 / 2`` while Rademacher v drops the diagonal
(``v_i^2 = 1`` exactly): ``||A + A^T||_F^2 / 2 - 2 sum_i A_ii^2``, never more. Rademacher is
the default here for that reason.

Each of the ``n_projections`` draws costs one backward pass through the score network; the
network itself runs once (its output s is shared by the projections), so a noise-conditional
``score_fn`` sees exactly the batch it is given.
"""
from __future__ import annotations

from .. import autograd
from .. import creation as gc
from .exact import check_score_call, score_of

__all__ = ["ssm_loss", "PROJECTIONS"]

PROJECTIONS = ("rademacher", "gaussian")


def _projection(kind: str, like, generator):
    if kind == "gaussian":
        return gc.randn(*like.shape, dtype=like.dtype, device=like.device, generator=generator)
    u = gc.rand(*like.shape, dtype=like.dtype, device=like.device, generator=generator)
    return (u < 0.5).to(like.dtype) * 2.0 - 1.0


def ssm_loss(score_fn, x, n_projections: int = 1, projection: str = "rademacher",
             variance_reduced: bool = True, generator=None, reduction: str = "mean"):
    """The sliced score-matching objective of ``score_fn`` at ``x`` (B, ...), averaged over
    ``n_projections`` random directions per example (``projection`` "rademacher" or
    "gaussian", drawn from ``generator``): ``v^T (grad_x s) v + ||s||^2 / 2`` when
    ``variance_reduced`` (SSM-VR), else ``v^T (grad_x s) v + (v^T s)^2 / 2``. Differentiable
    w.r.t. the parameters of ``score_fn`` (double backward); in expectation over v it equals
    :func:`gmcore.score.exact_score_matching_loss`. ``score_fn`` must treat the examples of
    the batch independently (no batch norm): the directional derivative is taken for the batch
    at once. ``reduction``: "mean" (a scalar, the default), "sum" or "none" (B,).

    >>> import gmcore as gm
    >>> x = gm.tensor([[1.0, -2.0], [0.5, 0.0]])
    >>> # s(x) = -x: its Jacobian is -I, so v^T J v = -|v|^2 = -2 for every Rademacher v
    >>> ssm_loss(lambda x: -x, x, n_projections=3, reduction="none").tolist()
    [0.5, -1.875]
    """
    fn = "ssm_loss"
    if projection not in PROJECTIONS:
        raise ValueError(f"{fn}: projection must be one of {PROJECTIONS}, got {projection!r}")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"{fn}: n_projections must be an int >= 1, got {n_projections!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    x = check_score_call(fn, score_fn, x)
    B = x.shape[0]
    s = score_of(fn, score_fn, x)
    flat_s = s.reshape(B, -1)
    total = None
    for _ in range(n_projections):
        v = _projection(projection, x, generator)
        # the vector-Jacobian product v^T (grad_x s), one backward pass, kept differentiable
        (vjp,) = autograd.grad((s * v).sum(), x, create_graph=True, retain_graph=True)
        term = (vjp * v).reshape(B, -1).sum(1)
        if not variance_reduced:
            proj = (flat_s * v.reshape(B, -1)).sum(1)
            term = term + 0.5 * proj * proj
        total = term if total is None else total + term
    per_example = total / float(n_projections)
    if variance_reduced:
        per_example = per_example + 0.5 * (flat_s * flat_s).sum(1)
    if reduction == "none":
        return per_example
    return per_example.sum() if reduction == "sum" else per_example.mean()
