"""Spectral normalisation in ``torch.nn.utils.spectral_norm``'s hook form (Miyato et al. 2018,
"Spectral Normalization for Generative Adversarial Networks").

``spectral_norm(module)`` replaces the parameter ``weight`` by ``weight_orig`` (the learned
parameter) and two buffers ``weight_u``, ``weight_v`` (the singular-vector estimates); a forward
pre-hook sets the plain attribute ``module.weight = weight_orig / sigma`` before each forward,
``sigma = u^T W v`` with W the weight as a matrix (output dim first). In training mode the hook
first runs ``n_power_iterations`` steps ``v <- W^T u / |W^T u|``, ``u <- W v / |W v|`` in place on
the buffers (torch's order: v, then u); in eval mode it reuses them. The state_dict keys are
torch's (``weight_orig``, ``weight_u``, ``weight_v``), so torch's u can be copied in.

:func:`gmcore.nn.utils.parametrizations.spectral_norm` is the parametrization form (the same
estimate, its buffers under ``parametrizations.weight``); this file reuses its normalisation and
its weight-to-matrix reshape.
"""
from __future__ import annotations

from ... import backend, creation
from ...autograd import no_grad
from ...tensor import Tensor
from ..parameter import Parameter
from .parametrizations import _normalize, _SpectralNorm

__all__ = ["spectral_norm", "remove_spectral_norm", "SpectralNorm"]


class SpectralNorm:
    """The forward pre-hook of :func:`spectral_norm` (torch's ``SpectralNorm``): holds ``name``,
    ``dim``, ``eps`` and ``n_power_iterations``; ``compute_weight(module, do_power_iteration)``."""

    def __init__(self, name="weight", n_power_iterations=1, dim=0, eps=1e-12):
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.name, self.n_power_iterations, self.dim, self.eps = name, n_power_iterations, dim, eps

    # the parametrization form's reshape reads only self.dim: one definition of "W as a matrix"
    reshape_weight_to_matrix = _SpectralNorm._reshape_weight_to_matrix

    def compute_weight(self, module, do_power_iteration: bool) -> Tensor:
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        if do_power_iteration:
            with no_grad():
                w, ua, va = self.reshape_weight_to_matrix(weight.detach()).data, u.data, v.data
                for _ in range(self.n_power_iterations):
                    va[...] = _normalize(w.T @ ua, self.eps)
                    ua[...] = _normalize(w @ va, self.eps)
                u._version.value += 1
                v._version.value += 1
        # sigma = u^T W v = sum(W * u v^T), with u v^T laid out as the weight: u and v are
        # constants of the graph (as torch's), and the gradient reaches W through sigma and
        # through W itself in three recorded ops (the matrix form takes five or six)
        xp = backend.xp_of(weight.data)
        outer = u.data[:, None] * v.data[None, :]
        rest = [d for i, d in enumerate(weight.shape) if i != self.dim]
        outer = xp.moveaxis(outer.reshape(weight.shape[self.dim], *rest), 0, self.dim)
        sigma = (weight * Tensor(xp.ascontiguousarray(outer))).sum()
        return weight / sigma

    def __call__(self, module, inputs):
        object.__setattr__(module, self.name, self.compute_weight(module, do_power_iteration=module.training))

    def remove(self, module) -> None:
        with no_grad():
            weight = self.compute_weight(module, do_power_iteration=False)
        module.__dict__.pop(self.name, None)
        for suffix in ("_u", "_v", "_orig"):
            delattr(module, self.name + suffix)
        module.register_parameter(self.name, Parameter(weight.detach()))


def spectral_norm(module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12, dim=None):
    """Apply spectral normalisation to ``module.<name>`` (torch's hook form: ``<name>_orig``
    learned, ``<name>_u`` / ``<name>_v`` buffers, one power iteration per training forward, none
    in eval). ``dim``: the output dim (default 0, 1 for transposed convolutions). Returns
    ``module``.

    >>> import gmcore as gm
    >>> from gmcore.nn.utils import spectral_norm
    >>> _ = gm.manual_seed(0)
    >>> m = spectral_norm(gm.nn.Linear(6, 4))
    >>> sorted(m.state_dict())
    ['bias', 'weight_orig', 'weight_u', 'weight_v']
    >>> for _ in range(50):
    ...     _ = m(gm.randn(2, 6))
    >>> s = __import__("numpy").linalg.svd(m.weight.detach().numpy(), compute_uv=False)
    >>> round(float(s.max()), 4)
    1.0
    """
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, SpectralNorm) and hook.name == name:
            raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
    weight = module._parameters.get(name)
    if not isinstance(weight, Parameter):
        raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter {name!r}")
    if dim is None:
        from ..conv import ConvTranspose1d, ConvTranspose2d
        dim = 1 if isinstance(module, (ConvTranspose1d, ConvTranspose2d)) else 0
    if not -weight.ndim <= dim < weight.ndim:
        raise IndexError(f"spectral_norm: dim {dim} out of range for a {weight.ndim}-D weight")
    fn = SpectralNorm(name, n_power_iterations, dim % weight.ndim, eps)
    h, w = fn.reshape_weight_to_matrix(weight.detach()).shape
    # random unit starting vectors (torch: normal draws, normalised; no warm-up iterations)
    u = _normalize(creation.randn(h, dtype=weight.dtype, device=weight.device).data, eps)
    v = _normalize(creation.randn(w, dtype=weight.dtype, device=weight.device).data, eps)
    del module._parameters[name]
    module.register_parameter(name + "_orig", weight)
    object.__setattr__(module, name, weight.detach())   # the plain attribute the hook refreshes
    module.register_buffer(name + "_u", Tensor(u))
    module.register_buffer(name + "_v", Tensor(v))
    module.register_forward_pre_hook(fn)
    return module


def remove_spectral_norm(module, name: str = "weight"):
    """Undo :func:`spectral_norm`: ``module.<name>`` becomes a parameter again, holding the
    normalised weight (``weight_orig / sigma`` with the current u, v). Returns ``module``."""
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, SpectralNorm) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"spectral_norm of {name!r} not found in {type(module).__name__}")
