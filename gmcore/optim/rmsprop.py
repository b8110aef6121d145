"""RMSprop (torch.optim.RMSprop): alpha, eps, centered, momentum, weight_decay, maximize."""
from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e; Graves 2013 for ``centered``) as PyTorch computes it.

    ``g = grad (+ weight_decay * p)``; ``s = alpha s + (1 - alpha) g^2``; with ``centered``
    ``a = lerp(a, g, 1 - alpha)`` and ``avg = sqrt(s - a^2) + eps``, else ``avg = sqrt(s) + eps``;
    with momentum ``b = momentum b + g / avg; p -= lr b``, else ``p -= lr g / avg``.

    >>> import gmcore as gm
    >>> w = gm.tensor([1.0], requires_grad=True)
    >>> opt = gm.optim.RMSprop([w], lr=0.01, alpha=0.99)
    >>> (w * 4.0).sum().backward()
    >>> opt.step()
    >>> round(w.item(), 4)  # first step: g / sqrt(0.01 g^2) = 10, so w moves by 0.1
    0.9
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, g):
        self._check_nonnegative(g, "lr", "eps", "momentum", "weight_decay", "alpha")

    def _update(self, p, grad, group, state):
        xp = p._xp()
        w = p.data
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        momentum, wd = group["momentum"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["square_avg"] = self._zeros_like(p)
            if momentum > 0:
                state["momentum_buffer"] = self._zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = self._zeros_like(p)
        state["step"] += 1
        g = grad
        if group["maximize"]:
            g = xp.negative(g, out=self._scratch(w, 0))
        if wd != 0:
            s = self._scratch(w, 1)
            xp.multiply(w, wd, out=s)
            s += g
            g = s
        sq = state["square_avg"].data
        t = self._scratch(w, 2)
        sq *= alpha
        xp.multiply(g, 1 - alpha, out=t)
        t *= g
        sq += t
        if group["centered"]:
            ga = state["grad_avg"].data
            xp.subtract(g, ga, out=t)
            t *= 1 - alpha
            ga += t
            xp.multiply(ga, ga, out=t)
            xp.subtract(sq, t, out=t)
            xp.sqrt(t, out=t)
        else:
            xp.sqrt(sq, out=t)
        t += eps
        u = self._scratch(w, 3)
        if momentum > 0:
            buf = state["momentum_buffer"].data
            buf *= momentum
            xp.divide(g, t, out=u)
            buf += u
            xp.multiply(buf, -lr, out=u)
        else:
            xp.multiply(g, -lr, out=u)
            u /= t
        w += u
