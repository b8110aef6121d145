"""Denoising score matching (Vincent 2011; the noise-conditional form of Song & Ermon 2019,
"Generative Modeling by Estimating Gradients of the Data Distribution", eq. 2 and 5).

Perturbing data x by Gaussian noise of scale sigma, x~ = x + sigma z, gives the noised density
q_sigma(x~) whose score is matched by regressing the network on the score of the *kernel*,
grad log q(x~ | x) = -(x~ - x) / sigma^2 = -z / sigma. Vincent's identity makes the two
regressions share their minimiser: the optimal s(x~, sigma) is grad log q_sigma(x~), the score
of the noised data. Song & Ermon weight each noise scale by lambda(sigma) = sigma^2, which makes
every scale's term the same order of magnitude:

    lambda(sigma) * 1/2 ||s(x~, sigma) + z / sigma||^2 = 1/2 ||sigma s(x~, sigma) + z||^2.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import creation as gc
from ..tensor import Tensor

__all__ = ["dsm_loss", "WEIGHTINGS"]

WEIGHTINGS = ("sigma2", "none")


def _sigma_levels(sigmas, x) -> Tensor:
    """``sigmas`` (a number, a sequence, a NumPy array or a Tensor) as a 1-D Tensor in x's dtype
    and on x's device, every level finite and positive."""
    if isinstance(sigmas, numbers.Real) and not isinstance(sigmas, bool):
        values = np.asarray([float(sigmas)])
    elif isinstance(sigmas, Tensor):
        values = sigmas.detach().cpu().numpy()
    else:
        try:
            values = np.asarray(sigmas, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"dsm_loss: sigmas must be a number, a sequence or a Tensor of noise "
                            f"scales, got {type(sigmas).__name__}") from None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"dsm_loss: sigmas must be one number or a non-empty 1-D list of noise "
                         f"scales, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"dsm_loss: every noise scale must be finite and > 0, got {values.tolist()}")
    return gc.tensor(values.astype(x.data.dtype), device=x.device)


def dsm_loss(score_fn, x, sigmas, generator=None, weighting="sigma2", indices=None, noise=None,
             reduction="mean"):
    """Noise-conditional denoising score matching loss (Song & Ermon 2019, eq. 5 and 6).

    Each example gets one noise scale sigma, drawn uniformly from the levels ``sigmas`` (or the
    level ``sigmas[indices[b]]`` when ``indices`` (B,) is given, or the one scale when ``sigmas``
    is a number), and is perturbed as ``x~ = x + sigma z`` with ``z ~ N(0, I)`` (or the given
    ``noise``, a tensor shaped like ``x``). The network's score ``score_fn(x~, sigma)``, ``sigma``
    a (B,) Tensor in x's dtype, is regressed on the kernel's score ``-(x~ - x) / sigma^2``.

    Convention (Song & Ermon's code): **sum over the dimensions of one example, mean over the
    batch**, with the factor 1/2:

    * ``weighting="sigma2"`` (Song & Ermon's lambda(sigma) = sigma^2):
      ``mean_b 1/2 ||sigma_b s(x~_b, sigma_b) + z_b||^2``;
    * ``weighting="none"`` (lambda = 1): ``mean_b 1/2 ||s(x~_b, sigma_b) + z_b / sigma_b||^2``.

    ``reduction="none"`` returns the (B,) per-example terms instead of their mean. The loss is
    differentiable w.r.t. the network's parameters (and ``x``); its minimiser over functions is
    the score of the noised data, ``grad log q_sigma``, at every scale.

    >>> import gmcore as gm
    >>> x = gm.zeros(4, 2)                              # data: a point mass at 0
    >>> exact = lambda xt, sigma: -xt / sigma.reshape(-1, 1) ** 2   # score of N(0, sigma^2 I)
    >>> float(dsm_loss(exact, x, [1.0, 0.5], generator=gm.Generator().manual_seed(0)))
    0.0
    """
    if not callable(score_fn):
        raise TypeError(f"dsm_loss: score_fn must be callable as score_fn(x_tilde, sigma), got "
                        f"{type(score_fn).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"dsm_loss: x must be a Tensor (B, ...), got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"dsm_loss: x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"dsm_loss: x must be floating point, got {x.dtype}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"dsm_loss: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"dsm_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    B = x.shape[0]
    levels = _sigma_levels(sigmas, x)
    L = levels.shape[0]
    if indices is None:
        indices = gc.randint(0, L, (B,), generator=generator, device=x.device)
    else:
        if not isinstance(indices, Tensor):
            indices = gc.tensor(np.asarray(indices, dtype=np.int64), device=x.device)
        if indices.is_floating_point() or tuple(indices.shape) != (B,):
            raise ValueError(f"dsm_loss: indices must be B = {B} integers into sigmas, got "
                             f"{indices.dtype} of shape {tuple(indices.shape)}")
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= L:
            raise ValueError(f"dsm_loss: indices must be in [0, {L - 1}] ({L} noise levels), got "
                             f"values in [{lo}, {hi}]")
        indices = indices.long()
    sigma = levels[indices]                                # (B,)
    if noise is None:
        noise = gc.randn(*x.shape, generator=generator, dtype=x.dtype, device=x.device)
    elif not isinstance(noise, Tensor) or tuple(noise.shape) != tuple(x.shape):
        raise ValueError(f"dsm_loss: noise must be a Tensor shaped like x {tuple(x.shape)}, got "
                         f"{tuple(getattr(noise, 'shape', ()))}")
    s_shape = (B,) + (1,) * (x.ndim - 1)
    sig = sigma.reshape(s_shape)
    x_tilde = x + sig * noise
    score = score_fn(x_tilde, sigma)
    if not isinstance(score, Tensor) or tuple(score.shape) != tuple(x.shape):
        raise ValueError(f"dsm_loss: score_fn must return a Tensor shaped like x {tuple(x.shape)}, "
                         f"got {tuple(getattr(score, 'shape', ())) or type(score).__name__}")
    # sigma^2 * ||s + z / sigma||^2 == ||sigma s + z||^2: the weighted form never divides by sigma
    resid = sig * score + noise if weighting == "sigma2" else score + noise / sig
    per_example = (resid * resid).reshape(B, -1).sum(1) * 0.5
    return per_example.mean() if reduction == "mean" else per_example
