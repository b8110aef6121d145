"""``gumbel_softmax``: a differentiable relaxation of sampling from a categorical
(Jang et al. 2017, Maddison et al. 2017), with the straight-through ``hard`` variant."""
import numpy as np

from ...functional.activation import softmax
from ...random import _generator_for
from ...tensor import Tensor
from ._util import check_float

__all__ = ["gumbel_softmax"]


def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1, *, generator=None):
    """``softmax((logits + g) / tau, dim)`` with ``g`` i.i.d. Gumbel(0, 1) noise: the argmax of
    ``logits + g`` is a sample of ``Categorical(logits=logits)``. With ``hard=True`` the result
    is the one-hot of that argmax in the forward pass, with the soft sample's gradient
    (straight-through: ``y_hard - y_soft.detach() + y_soft``). ``eps`` is unused (PyTorch
    deprecated it too).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> y = F.gumbel_softmax(gm.zeros(2, 5), tau=0.5, hard=True, generator=gm.Generator().manual_seed(0))
    >>> y.sum(-1).tolist(), sorted(set(y.flatten().tolist()))
    ([1.0, 1.0], [0.0, 1.0])
    """
    op = "gumbel_softmax"
    check_float(logits, "logits", op)
    if not tau > 0:
        raise ValueError(f"{op}: tau must be positive, got {tau!r}")
    dt = logits.data.dtype
    u = _generator_for(generator, logits.device).uniform(tuple(logits.shape), 0.0, 1.0,
                                                         np.float64)
    xp = logits._xp()
    # -log(E) with E ~ Exponential(1) = -log1p(-U); E is kept away from 0 so g stays finite
    e = xp.maximum(-xp.log1p(-xp.asarray(u)), np.finfo(np.float64).tiny)
    gumbels = Tensor((-xp.log(e)).astype(dt))
    y_soft = softmax((logits + gumbels) / tau, dim)
    if not hard:
        return y_soft
    d = dim % y_soft.ndim if y_soft.ndim else 0
    index = xp.expand_dims(y_soft.data.argmax(axis=d), d)
    pos = xp.arange(y_soft.shape[d]).reshape((-1,) + (1,) * (y_soft.ndim - d - 1))
    y_hard = (pos == index).astype(dt)
    return Tensor(y_hard) - y_soft.detach() + y_soft
