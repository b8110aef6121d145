"""Weight reparametrizations (``torch.nn.utils.parametrizations``): ``weight_norm`` and
``spectral_norm``, registered through :mod:`gmcore.nn.utils.parametrize` with PyTorch's
state_dict keys."""
from __future__ import annotations

from ... import backend, creation
from ...autograd import no_grad
from ...tensor import Tensor
from ..module import Module
from . import parametrize

__all__ = ["weight_norm", "spectral_norm"]


def _norm_except_dim(v, dim):
    """The 2-norm of ``v`` over every dim but ``dim`` (kept as size-1 dims); ``dim=-1`` is the
    norm of the whole tensor (PyTorch's ``norm_except_dim`` convention)."""
    if dim == -1:
        return (v * v).sum().sqrt()
    d = dim % v.ndim
    dims = tuple(i for i in range(v.ndim) if i != d)
    if not dims:
        return v.abs()
    return (v * v).sum(dims, keepdim=True).sqrt()


class _WeightNorm(Module):
    """``weight = g * v / ||v||`` with the norm over all dims but ``dim`` (Salimans & Kingma
    2016); originals are ``(g, v)``."""

    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight):
        return _norm_except_dim(weight, self.dim), weight

    def extra_repr(self):
        return f"dim={self.dim}"


def weight_norm(module, name="weight", dim=0):
    """Reparametrize ``module.<name>`` as ``g * v / ||v||``; ``g`` is
    ``module.parametrizations.<name>.original0`` (norm over all dims but ``dim``; ``dim=None``
    for the whole tensor) and ``v`` is ``original1``. Returns ``module``.

    >>> import gmcore as gm
    >>> from gmcore.nn.utils.parametrizations import weight_norm
    >>> m = weight_norm(gm.nn.Linear(4, 3))
    >>> tuple(m.parametrizations.weight.original0.shape), tuple(m.parametrizations.weight.original1.shape)
    ((3, 1), (3, 4))
    """
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


def _normalize(a, eps):
    """``a / max(||a||, eps)`` on a raw 1-D array (stays on its device)."""
    xp = backend.xp_of(a)
    return a / xp.maximum(xp.sqrt((a * a).sum()), eps)


class _SpectralNorm(Module):
    """``weight / sigma`` with ``sigma`` the largest singular value of the weight (as a
    matrix with ``dim`` first), estimated by power iteration (Miyato et al. 2018).

    ``_u`` and ``_v`` (buffers) carry the singular-vector estimates between calls; each forward
    in training mode runs ``n_power_iterations`` steps first, evaluation reuses them.
    """

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError("Dimension out of range (expected to be in range of "
                             f"[-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            w = self._reshape_weight_to_matrix(weight.detach())
            h, wd = w.shape
            u = creation.randn(h, dtype=weight.dtype, device=weight.device)
            v = creation.randn(wd, dtype=weight.dtype, device=weight.device)
            self.register_buffer("_u", Tensor(_normalize(u.data, eps)))
            self.register_buffer("_v", Tensor(_normalize(v.data, eps)))
            self._power_method(w, 15)

    def _reshape_weight_to_matrix(self, weight):
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.ndim) if d != self.dim))
        return weight.flatten(1)

    def _power_method(self, weight_mat, n_power_iterations):
        # in place on the buffers' arrays: u <- W v / |W v|, v <- W^T u / |W^T u|
        w = weight_mat.data
        u, v = self._u.data, self._v.data
        for _ in range(n_power_iterations):
            u[...] = _normalize(w @ v, self.eps)
            v[...] = _normalize(w.T @ u, self.eps)
        self._u._version.value += 1
        self._v._version.value += 1

    def forward(self, weight):
        if weight.ndim == 1:
            return weight / _norm_except_dim(weight, -1).clamp(min=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            with no_grad():
                self._power_method(weight_mat, self.n_power_iterations)
        # u, v are constants of the graph: the gradient flows through W only (u^T W v)
        u = Tensor(self._u.data.copy())
        v = Tensor(self._v.data.copy())
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def right_inverse(self, value):
        # any W is its own pre-image up to scale; keep the value (as PyTorch)
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide ``module.<name>`` by its spectral norm, estimated by power iteration (SN-GAN).

    ``dim`` (default 0, or 1 for transposed convolutions) is the output dim, moved first
    before the weight is flattened to a matrix. The singular vectors are buffers
    ``module.parametrizations.<name>[0]._u`` / ``._v``, updated in training mode only.

    >>> import gmcore as gm
    >>> from gmcore.nn.utils.parametrizations import spectral_norm
    >>> _ = gm.manual_seed(0)
    >>> m = spectral_norm(gm.nn.Linear(6, 4))
    >>> for _ in range(30):
    ...     w = m.weight
    >>> s = gm.tensor(__import__("numpy").linalg.svd(w.detach().numpy(), compute_uv=False))
    >>> round(s.max().item(), 4)
    1.0
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{type(module).__name__}' has no parameter or buffer with "
                         f"name '{name}'")
    if dim is None:
        from ..conv import ConvTranspose1d, ConvTranspose2d
        dim = 1 if isinstance(module, (ConvTranspose1d, ConvTranspose2d)) else 0
    parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module

