"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch.optim.SGD)."""
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD as PyTorch defines it.

    With ``g = grad (+ weight_decay * p)`` (negated first when ``maximize``), the momentum buffer is
    ``b = g`` on the first step, then ``b = momentum * b + (1 - dampening) * g``; the update is
    ``p -= lr * (g + momentum * b)`` with ``nesterov`` and ``p -= lr * b`` without (``p -= lr * g``
    when ``momentum == 0``).

    >>> import gmcore as gm
    >>> w = gm.tensor([1.0, -2.0], dtype=gm.float64, requires_grad=True)
    >>> opt = gm.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> (w ** 2).sum().backward()
    >>> opt.step()
    >>> w.tolist()
    [0.8, -1.6]
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, g):
        self._check_nonnegative(g, "lr", "momentum", "weight_decay")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, p, grad, group, state):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        w = p.data
        d = grad
        if group["maximize"]:
            d = p._xp().negative(d, out=self._scratch(w, 0))
        if wd != 0:
            s = self._scratch(w, 1)
            p._xp().multiply(w, wd, out=s)
            s += d
            d = s
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = self._zeros_like(p)
                buf.data[...] = d
            else:
                b = buf.data
                b *= momentum
                if group["dampening"] == 0:
                    b += d
                else:
                    s = self._scratch(w, 2)
                    p._xp().multiply(d, 1 - group["dampening"], out=s)
                    b += s
            if group["nesterov"]:
                s = self._scratch(w, 2)
                p._xp().multiply(buf.data, momentum, out=s)
                s += d
                d = s
            else:
                d = buf.data
        s = self._scratch(w, 3)
        p._xp().multiply(d, -lr, out=s)
        w += s
