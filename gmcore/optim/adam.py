"""Adam and AdamW (torch.optim.Adam / AdamW), with amsgrad, maximize and bias correction."""
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as PyTorch computes it.

    Per step ``t``: ``g = grad`` (negated when ``maximize``; ``+ weight_decay * p`` for Adam's L2
    form, while AdamW first scales ``p *= 1 - lr * weight_decay``), ``m = lerp(m, g, 1 - beta1)``,
    ``v = beta2 v + (1 - beta2) g^2``, ``v_max = max(v_max, v)`` with ``amsgrad``, and
    ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.

    State per parameter: ``step`` (a Python int), ``exp_avg``, ``exp_avg_sq``
    (``max_exp_avg_sq`` with ``amsgrad``).

    >>> import gmcore as gm
    >>> w = gm.tensor([1.0, -1.0], requires_grad=True)
    >>> opt = gm.optim.Adam([w], lr=0.1)
    >>> (w * gm.tensor([3.0, -5.0])).sum().backward()
    >>> opt.step()
    >>> [round(x, 6) for x in w.tolist()]  # the first step moves each weight by ~lr
    [0.9, -0.9]
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, g):
        self._check_nonnegative(g, "lr", "eps")
        betas = g["betas"]
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas}")
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b}")
        if not g["weight_decay"] >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {g['weight_decay']}")
        g["betas"] = tuple(betas)

    def _update(self, p, grad, group, state):
        xp = p._xp()
        w = p.data
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = self._zeros_like(p)
            state["exp_avg_sq"] = self._zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = self._zeros_like(p)
        m, v = state["exp_avg"].data, state["exp_avg_sq"].data
        g = grad
        if group["maximize"]:
            g = xp.negative(g, out=self._scratch(w, 0))
        if wd != 0:
            if self._decoupled:
                w *= 1 - lr * wd
            else:
                s = self._scratch(w, 1)
                xp.multiply(w, wd, out=s)
                s += g
                g = s
        state["step"] += 1
        step = state["step"]
        t = self._scratch(w, 2)
        # m <- m + (1 - beta1) (g - m): PyTorch's lerp form
        xp.subtract(g, m, out=t)
        t *= 1 - beta1
        m += t
        # v <- beta2 v + (1 - beta2) g g
        v *= beta2
        xp.multiply(g, 1 - beta2, out=t)
        t *= g
        v += t
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        step_size = lr / bias_correction1
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"].data
            xp.maximum(vmax, v, out=vmax)
            v = vmax
        xp.sqrt(v, out=t)
        t /= bias_correction2_sqrt
        t += eps
        u = self._scratch(w, 3)
        xp.multiply(m, -step_size, out=u)
        u /= t
        w += u


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``p *= 1 - lr * wd`` first.

    Defaults as PyTorch's (``weight_decay=1e-2``); see ``Adam`` for the rest of the math.

    >>> import gmcore as gm
    >>> w = gm.tensor([2.0], requires_grad=True)
    >>> opt = gm.optim.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = gm.zeros(1)
    >>> opt.step()
    >>> round(w.item(), 6)  # zero gradient: only the decay acts, 2 * (1 - 0.1 * 0.5)
    1.9
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
