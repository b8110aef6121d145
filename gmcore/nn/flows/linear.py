"""Linear flows on vectors (B, D): an LU-parameterised invertible linear map and fixed permutations.

``LULinear`` is ``y = W x + b`` with ``W = P L (U + diag(sign_s * exp(log_s)))`` (the LU form of
Glow's 1x1 convolution, here on flat features): ``P`` a fixed permutation, ``L`` unit lower
triangular, ``U`` strictly upper; ``log|det W| = sum(log_s)``, O(D) per call instead of O(D^3).
Stacked with permutations between them it is the baseline "linear flow": a full-covariance
Gaussian density, the simplest flow a richer one must beat.

``Permutation`` / ``ReversePermutation`` reorder features along one dim (log-det 0): what
coupling and autoregressive flows put between layers so that every feature gets transformed.
"""
from __future__ import annotations

import numpy as np

from ... import creation
from .. import functional as F
from ..parameter import Parameter
from .base import Flow

__all__ = ["LULinear", "Permutation", "ReversePermutation"]


def _zeros_logdet(x):
    return creation.zeros(x.shape[0], device=x.device, dtype=x.dtype)


def _check_features(x, features, name, dim=1):
    if x.ndim < 2 or x.shape[dim] != features:
        raise ValueError(f"{name}: expected input with {features} features in dim {dim}, got "
                         f"shape {tuple(x.shape)}")


class LULinear(Flow):
    """Invertible ``y = x W^T + b`` on (B, D) with ``W`` in LU form (module docstring).

    ``permutation``: the fixed ``P``: ``None`` (identity), ``"reverse"``, ``"random"`` (drawn
    from gmcore's global generator, so ``gm.manual_seed`` fixes it) or a sequence of indices.
    Initialised to ``W = P``, ``b = 0``: log-det 0.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> lin = LULinear(3, permutation="reverse")
    >>> x = gm.randn(4, 3)
    >>> y, ld = lin(x)
    >>> y[:, 0].tolist() == x[:, 2].tolist(), ld.tolist()      # at initialisation W = P
    (True, [0.0, 0.0, 0.0, 0.0])
    >>> x2, ld2 = lin.inverse(y)
    >>> bool((x2 - x).abs().max() < 1e-5)
    True
    """

    def __init__(self, features, permutation=None, bias=True, device=None, dtype=None):
        super().__init__()
        self.features = d = int(features)
        if d < 1:
            raise ValueError(f"LULinear: features must be positive, got {features}")
        perm = _permutation_indices(permutation, d, "LULinear")
        self.register_buffer("sign_s", creation.ones(d, dtype=dtype, device=device))
        p = np.eye(d)[perm]     # (P v)[i] = v[perm[i]], as Permutation
        self.register_buffer("p", creation.tensor(p, dtype=self.sign_s.dtype, device=device))
        self.lower = Parameter(creation.zeros(d, d, dtype=dtype, device=device))
        self.upper = Parameter(creation.zeros(d, d, dtype=dtype, device=device))
        self.log_s = Parameter(creation.zeros(d, dtype=dtype, device=device))
        self.bias = Parameter(creation.zeros(d, dtype=dtype, device=device)) if bias else None

    def weight(self):
        """The (D, D) matrix W in use."""
        return F.lu_weight(self.p, self.lower, self.upper, self.sign_s, self.log_s)

    def forward(self, x, context=None):
        _check_features(x, self.features, "LULinear")
        y = x @ self.weight().t()
        if self.bias is not None:
            y = y + self.bias
        return y, self.log_s.sum().reshape(1).expand(x.shape[0])

    def inverse(self, y, context=None):
        _check_features(y, self.features, "LULinear")
        if self.bias is not None:
            y = y - self.bias
        x = y @ F.inverse(self.weight()).t()
        return x, (-self.log_s.sum()).reshape(1).expand(y.shape[0])

    def extra_repr(self):
        return f"{self.features}, bias={self.bias is not None}"


def _permutation_indices(permutation, d, name):
    """Indices of a permutation of ``0..d-1`` from None / "reverse" / "random" / a sequence."""
    if permutation is None or (isinstance(permutation, str) and permutation == "none"):
        return np.arange(d)
    if isinstance(permutation, str):
        if permutation == "reverse":
            return np.arange(d)[::-1].copy()
        if permutation == "random":
            return np.asarray(creation.randperm(d).tolist(), dtype=np.int64)
        raise ValueError(f"{name}: permutation must be None, 'reverse', 'random' or a sequence of "
                         f"indices, got {permutation!r}")
    perm = np.asarray(permutation.tolist() if hasattr(permutation, "tolist") else permutation)
    if perm.ndim != 1 or sorted(perm.tolist()) != list(range(d)):
        raise ValueError(f"{name}: permutation must hold each of 0..{d - 1} once, got "
                         f"{perm.tolist()}")
    return perm.astype(np.int64)


class Permutation(Flow):
    """``y = x[..., perm, ...]`` along ``dim`` (default 1, the features or channels); log-det 0.

    >>> import gmcore as gm
    >>> perm = Permutation([2, 0, 1])
    >>> y, ld = perm(gm.tensor([[10.0, 11.0, 12.0]]))
    >>> y.tolist(), ld.tolist(), perm.inverse(y)[0].tolist()
    ([[12.0, 10.0, 11.0]], [0.0], [[10.0, 11.0, 12.0]])
    """

    def __init__(self, permutation, dim=1, device=None):
        super().__init__()
        n = len(permutation.tolist() if hasattr(permutation, "tolist") else permutation)
        perm = _permutation_indices(permutation, n, type(self).__name__)
        self.dim = int(dim)
        self.register_buffer("perm", creation.tensor(perm, dtype="int64", device=device))
        self.register_buffer("inv_perm", creation.tensor(np.argsort(perm), dtype="int64",
                                                         device=device))

    def forward(self, x, context=None):
        _check_features(x, self.perm.shape[0], type(self).__name__, self.dim)
        return x.index_select(self.dim, self.perm), _zeros_logdet(x)

    def inverse(self, y, context=None):
        _check_features(y, self.perm.shape[0], type(self).__name__, self.dim)
        return y.index_select(self.dim, self.inv_perm), _zeros_logdet(y)

    def extra_repr(self):
        return f"{self.perm.shape[0]}, dim={self.dim}"


class ReversePermutation(Permutation):
    """Reverses the order of ``features`` along ``dim`` (MAF's and NICE's default between layers).

    >>> import gmcore as gm
    >>> ReversePermutation(3)(gm.tensor([[1.0, 2.0, 3.0]]))[0].tolist()
    [[3.0, 2.0, 1.0]]
    """

    def __init__(self, features, dim=1, device=None):
        super().__init__(np.arange(int(features))[::-1].copy(), dim=dim, device=device)
