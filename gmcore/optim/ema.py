"""``EMA``: an exponential moving average of parameters, swapped in for evaluation and sampling.

Diffusion models, GANs and VAEs are usually evaluated with averaged weights
(``shadow = decay * shadow + (1 - decay) * param`` after each optimizer step).
"""
import contextlib

from .. import autograd
from ..tensor import Tensor
from .optimizer import _as_array_like, _bump

__all__ = ["EMA"]


class EMA:
    """Keep ``shadow = decay * shadow + (1 - decay) * param`` for a module's or a list's parameters.

    ``parameters_or_module``: an iterable of tensors, or a Module. With a module, its buffers
    (e.g. BatchNorm running statistics) are *copied* at each ``update()`` rather than averaged,
    and swapped in together with the averaged parameters. Non-floating tensors are copied too.

    ``warmup=True`` uses ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th update (counting from
    0), so early averages do not remember the random initialisation for thousands of steps.

    >>> import gmcore as gm
    >>> w = gm.tensor([0.0], requires_grad=True)
    >>> ema = gm.optim.EMA([w], decay=0.5)
    >>> with gm.no_grad():
    ...     w += 4.0
    >>> ema.update()
    >>> with ema.average_parameters():
    ...     w.item()
    2.0
    >>> w.item()
    4.0
    """

    def __init__(self, parameters_or_module, decay=0.999, warmup=False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        obj = parameters_or_module
        self._module = None
        if hasattr(obj, "named_buffers") and hasattr(obj, "parameters"):
            self._module = obj
            params = list(obj.parameters())
            buffers = _buffers_of(obj)
        else:
            if isinstance(obj, Tensor):
                raise TypeError("EMA expects an iterable of tensors or a Module, got a Tensor")
            params, buffers = list(obj), []
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"EMA can only track Tensors, but item {i} is a "
                                f"{type(p).__name__}")
        self.decay = decay
        self.warmup = bool(warmup)
        self.num_updates = 0
        self._params = params
        self.shadow_params = [Tensor(p.data.copy()) for p in params]
        self.shadow_buffers = [Tensor(b.data.copy()) for b in buffers]
        self._stored = None

    @property
    def _buffers(self):
        # looked up each time: a module may rebind a buffer attribute instead of writing into it
        return _buffers_of(self._module) if self._module is not None else []

    def get_decay(self):
        """The decay the next ``update()`` will use."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1 + n) / (10 + n))
        return self.decay

    def update(self):
        """Fold the current parameters into the averages (call after ``optimizer.step()``)."""
        d = self.get_decay()
        with autograd.no_grad():
            for s, p in zip(self.shadow_params, self._params):
                sd, pd = s.data, p.data
                if sd.dtype.kind != "f":
                    sd[...] = pd
                    continue
                xp = s._xp()
                t = xp.subtract(pd, sd)
                t *= 1 - d
                sd += t  # shadow + (1 - d) (param - shadow) = d shadow + (1 - d) param
            for s, b in zip(self.shadow_buffers, self._buffers):
                s.data[...] = b.data
        self.num_updates += 1

    def copy_to(self, parameters_or_module=None):
        """Write the averages into the tracked tensors (or into another model's, same order)."""
        params, buffers = self._targets(parameters_or_module)
        with autograd.no_grad():
            for dst, src in zip(params, self.shadow_params):
                dst.data[...] = src.data
                _bump(dst)
            for dst, src in zip(buffers, self.shadow_buffers):
                dst.data[...] = src.data
                _bump(dst)

    def _targets(self, obj):
        if obj is None:
            return self._params, self._buffers
        if hasattr(obj, "named_buffers") and hasattr(obj, "parameters"):
            params, buffers = list(obj.parameters()), _buffers_of(obj)
        else:
            params, buffers = list(obj), []
        if len(params) != len(self.shadow_params) or (
                buffers and len(buffers) != len(self.shadow_buffers)):
            raise ValueError(f"EMA tracks {len(self.shadow_params)} parameters and "
                             f"{len(self.shadow_buffers)} buffers, the target has {len(params)} "
                             f"and {len(buffers)}")
        for i, (p, s) in enumerate(zip(params, self.shadow_params)):
            if tuple(p.shape) != tuple(s.shape):
                raise ValueError(f"EMA parameter {i} has shape {tuple(s.shape)}, the target's "
                                 f"has shape {tuple(p.shape)}")
        return params, buffers

    def store(self):
        """Save copies of the current parameters and buffers (for ``restore()``)."""
        self._stored = ([p.data.copy() for p in self._params],
                        [b.data.copy() for b in self._buffers])

    def restore(self):
        """Put back what ``store()`` saved."""
        if self._stored is None:
            raise RuntimeError("EMA.restore() called without a preceding store()")
        params, buffers = self._stored
        with autograd.no_grad():
            for p, a in zip(self._params, params):
                p.data[...] = a
                _bump(p)
            for b, a in zip(self._buffers, buffers):
                b.data[...] = a
                _bump(b)
        self._stored = None

    @contextlib.contextmanager
    def average_parameters(self):
        """Within the block the tracked tensors hold the averages; the originals come back after."""
        self.store()
        self.copy_to()
        try:
            yield self
        finally:
            self.restore()

    def state_dict(self):
        """``{"decay", "warmup", "num_updates", "shadow_params": [...], "shadow_buffers": [...]}``."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow_params": [Tensor(s.data.copy()) for s in self.shadow_params],
                "shadow_buffers": [Tensor(s.data.copy()) for s in self.shadow_buffers]}

    def load_state_dict(self, state_dict):
        for key, mine, targets in (("shadow_params", self.shadow_params, self._params),
                                   ("shadow_buffers", self.shadow_buffers, self._buffers)):
            saved = state_dict.get(key, [])
            if len(saved) != len(mine):
                raise ValueError(f"EMA.load_state_dict: {key} has {len(saved)} entries, this EMA "
                                 f"tracks {len(mine)}")
            for i, (v, p) in enumerate(zip(saved, targets)):
                t = _as_array_like(v, p, "EMA")
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"EMA.load_state_dict: {key}[{i}] has shape "
                                     f"{tuple(t.shape)}, expected {tuple(p.shape)}")
        self.shadow_params = [_as_array_like(v, p, "EMA")
                              for v, p in zip(state_dict["shadow_params"], self._params)]
        self.shadow_buffers = [_as_array_like(v, b, "EMA")
                               for v, b in zip(state_dict.get("shadow_buffers", []),
                                               self._buffers)]
        self.decay = state_dict.get("decay", self.decay)
        self.warmup = bool(state_dict.get("warmup", self.warmup))
        self.num_updates = int(state_dict.get("num_updates", self.num_updates))


def _buffers_of(module):
    return [b for _, b in module.named_buffers() if b is not None]
