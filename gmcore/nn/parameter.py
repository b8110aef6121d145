"""``Parameter``: a Tensor that a Module registers as learnable."""
from __future__ import annotations

from ..tensor import Tensor

__all__ = ["Parameter", "Buffer"]


def _param(shape, device=None, dtype=None):
    """An uninitialised Parameter of ``shape``; the layer's ``reset_parameters`` fills it."""
    from ..creation import empty
    return Parameter(empty(*shape, dtype=dtype, device=device))


class Parameter(Tensor):
    """A leaf Tensor that requires grad and is registered when assigned to a Module attribute.

    ``Parameter(tensor)`` shares the tensor's data (no copy), as in PyTorch.

    >>> import gmcore as gm
    >>> w = gm.nn.Parameter(gm.zeros(2, 3))
    >>> w.requires_grad, w.is_leaf, w.shape
    (True, True, gmcore.Size([2, 3]))
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            from ..creation import empty
            data = empty(0)
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        p = Parameter(self.data.copy(), requires_grad=self.requires_grad)
        if self.grad is not None:
            p.grad = Tensor(self.grad.data.copy())
        memo[id(self)] = p
        return p


class Buffer(Tensor):
    """Marks a tensor assigned to a Module attribute as a buffer (``torch.nn.Buffer``).

    ``module.x = Buffer(t)`` is ``module.register_buffer("x", t)``; pass ``persistent=False`` to keep
    it out of ``state_dict``.
    """

    __slots__ = ("persistent",)

    def __init__(self, data, persistent=True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data)
        self.persistent = persistent
