"""In-place variants PyTorch users reach for: ``relu_ sigmoid_ tanh_ leaky_relu_`` and
``scatter_ scatter_add_`` (also tensor methods).

They follow PyTorch's autograd rules through ``tensor._inplace``: an in-place op on a leaf that
requires grad raises (outside ``no_grad``); on a graph tensor the result is recorded and the
tensor is rebased onto it; the version counter is bumped, so a backward that saved the old
value raises instead of returning a wrong gradient.
"""
from .. import tensor as _tensor
from .indexing import scatter, scatter_add
from .pointwise import leaky_relu, relu, sigmoid, tanh

__all__ = ["relu_", "sigmoid_", "tanh_", "leaky_relu_", "scatter_", "scatter_add_"]


def relu_(input):
    """``relu`` written into ``input``; returns ``input``.

    >>> import gmcore as gm
    >>> x = gm.tensor([-1.0, 2.0])
    >>> gm.relu_(x) is x, x.tolist()
    (True, [0.0, 2.0])
    """
    return _tensor._inplace(input, relu, "relu_")


def sigmoid_(input):
    """``sigmoid`` written into ``input``; returns ``input``."""
    return _tensor._inplace(input, sigmoid, "sigmoid_")


def tanh_(input):
    """``tanh`` written into ``input``; returns ``input``."""
    return _tensor._inplace(input, tanh, "tanh_")


def leaky_relu_(input, negative_slope=0.01):
    """``leaky_relu`` written into ``input``; returns ``input``.

    >>> import gmcore as gm
    >>> gm.nn.functional.leaky_relu_(gm.tensor([-2.0, 1.0]), 0.5).tolist()
    [-1.0, 1.0]
    """
    return _tensor._inplace(input, lambda s: leaky_relu(s, negative_slope), "leaky_relu_")


def scatter_(input, dim, index, src=None, *, value=None, reduce=None):
    """In place ``input[i][index[i][j]] = src[i][j]`` (``dim=1``); ``src`` may be a number.
    ``reduce='add'`` accumulates (as ``scatter_add_``). Returns ``input``.

    >>> import gmcore as gm
    >>> x = gm.zeros(2, 3)
    >>> x.scatter_(1, gm.tensor([[2], [0]]), 5.0).tolist()
    [[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]]
    """
    if reduce is not None:
        if reduce != "add":
            raise RuntimeError(f"scatter_(): reduce={reduce!r} is not supported (use 'add' or "
                               "None)")
        src = value if src is None else src
        if not isinstance(src, _tensor.Tensor):
            src = input.new_full(tuple(index.shape), float(src) if input.is_floating_point()
                                 else src)
        return scatter_add_(input, dim, index, src)
    return _tensor._inplace(input, lambda s: scatter(s, dim, index, src, value=value),
                            "scatter_")


def scatter_add_(input, dim, index, src):
    """In place ``input[i][index[i][j]] += src[i][j]`` (``dim=1``); repeated indices all add.

    >>> import gmcore as gm
    >>> gm.zeros(3).scatter_add_(0, gm.tensor([0, 0, 2]), gm.tensor([1.0, 2.0, 3.0])).tolist()
    [3.0, 0.0, 3.0]
    """
    return _tensor._inplace(input, lambda s: scatter_add(s, dim, index, src), "scatter_add_")
