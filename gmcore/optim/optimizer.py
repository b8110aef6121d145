"""``Optimizer``: the base of every optimizer (parameter groups, per-parameter state, state dicts).

Semantics follow ``torch.optim.Optimizer``: ``param_groups`` is a list of dicts holding
``"params"`` plus the group's hyper-parameters (defaults filled in), ``state`` maps a parameter
tensor to its dict of buffers, ``state_dict()`` refers to parameters by their position across all
groups: ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

How updates are written (why it is fast and safe): ``step()`` runs under ``no_grad`` and does
the arithmetic directly on ``p.data`` with NumPy/CuPy ufuncs and ``out=`` (in place, dtype kept,
a few ufunc calls per tensor and one reused scratch buffer). The public in-place Tensor methods
would do the same work one ufunc at a time with Python overhead and a version bump per call, so
instead each updated tensor gets *one* version bump (``_bump``) after its update: a graph that
saved the old value still raises the "modified by an in-place operation" error in backward,
exactly as when PyTorch's ``param.add_`` bumps the counter.

Differences from PyTorch, on purpose: step counts are Python ints (JSON-able), and
``state_dict()`` returns a snapshot (state buffers are copied), so saving it mid-run and
continuing to train does not change what was saved.
"""
import numpy as np

from .. import autograd
from ..tensor import Tensor

__all__ = ["Optimizer"]


class _RequiredParameter:
    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _bump(t):
    """Count one in-place modification of ``t`` (autograd's saved-tensor check reads it)."""
    t._version.value += 1


def _as_array_like(value, param, name):
    """A loaded state value as a Tensor on ``param``'s device (floating values in its dtype)."""
    data = value.data if isinstance(value, Tensor) else value
    xp = param._xp()
    if xp is np:
        arr = np.array(data.get() if hasattr(data, "get") and type(data) is not np.ndarray
                       else data)
    else:
        with param.data.device:
            arr = xp.array(data)
    if arr.dtype.kind == "f" and arr.dtype != param.data.dtype:
        arr = arr.astype(param.data.dtype)
    return Tensor(arr)


class Optimizer:
    """Base class: holds parameter groups and per-parameter state; subclasses implement ``step``.

    ``params`` is an iterable of tensors or of dicts (``{"params": [...], "lr": ...}``) that
    override ``defaults`` per group.

    >>> import gmcore as gm
    >>> w = gm.zeros(3, requires_grad=True)
    >>> b = gm.zeros(1, requires_grad=True)
    >>> opt = gm.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1)
    >>> [g["lr"] for g in opt.param_groups]
    [0.1, 0.5]
    >>> opt.state_dict()["param_groups"][1]["params"]
    [1]
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        self._scratch_cache = {}
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got a Tensor")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def __repr__(self):
        lines = [self.__class__.__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {g[k]}" for k in sorted(g) if k != "params"]
        return "\n".join(lines) + "\n)"

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_scratch_cache"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._scratch_cache = {}

    # ---- groups -----------------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group (a dict with ``"params"``); missing hyper-parameters come from defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("a parameter group needs a 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs; "
                            "use a list instead")
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but parameter {i} of the "
                                f"group is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (parameter {i} of the group)")
            if p.data.dtype.kind != "f":
                raise TypeError(f"optimizer can only optimize floating point tensors, but "
                                f"parameter {i} has dtype {p.dtype}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group contains the same parameter more than once")
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Validate a group's hyper-parameters (subclasses raise ValueError naming the value)."""

    _LABELS = {"lr": "learning rate", "eps": "epsilon value", "momentum": "momentum value",
               "weight_decay": "weight_decay value", "alpha": "alpha value"}

    @classmethod
    def _check_nonnegative(cls, group, *keys):
        for key in keys:
            if not group[key] >= 0.0:  # written so that NaN fails too
                raise ValueError(f"Invalid {cls._LABELS[key]}: {group[key]}")

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's ``.grad``: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad = p.grad.detach()
                    p.grad.data[...] = 0
                    _bump(p.grad)

    # ---- stepping ---------------------------------------------------------------------------
    def step(self, closure=None):
        """Update the parameters once; ``closure`` (re-evaluates and returns the loss) is optional."""
        loss = None
        if closure is not None:
            with autograd.enable_grad():
                loss = closure()
        with autograd.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.data
                    if g.shape != p.data.shape or g.dtype != p.data.dtype or type(g) is not type(p.data):
                        raise RuntimeError(
                            f"{type(self).__name__}: gradient ({tuple(g.shape)}, {g.dtype}, "
                            f"{p.grad.device}) does not match its parameter ({tuple(p.data.shape)}, "
                            f"{p.data.dtype}, {p.device}); a .grad must have the parameter's shape, "
                            "dtype and device")
                    self._update(p, g, group, self.state.setdefault(p, {}))
                    _bump(p)
        return loss

    def _update(self, p, grad, group, state):
        raise NotImplementedError

    def _scratch(self, like, slot=0):
        """A reusable work array shaped and typed like ``like`` (never part of the state).

        One flat buffer per (slot, dtype, device) grows to the largest parameter, so a step over
        hundreds of tensors allocates nothing after the first.
        """
        key = (slot, like.dtype, type(like), getattr(getattr(like, "device", None), "id", None))
        buf = self._scratch_cache.get(key)
        if buf is None or buf.size < like.size:
            xp = np if type(like) is np.ndarray else __import__("cupy")
            buf = self._scratch_cache[key] = xp.empty(like.size, dtype=like.dtype)
        return buf[:like.size].reshape(like.shape)

    @staticmethod
    def _zeros_like(p):
        xp = p._xp()
        return Tensor(xp.zeros_like(p.data))

    # ---- state dicts ------------------------------------------------------------------------
    def state_dict(self):
        """``{"state": {index: {name: Tensor or number}}, "param_groups": [...]}`` (a snapshot).

        Parameters are numbered in the order of ``param_groups``; tensors are copies.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if id(p) in index and s:
                state[index[id(p)]] = {k: (Tensor(v.data.copy()) if isinstance(v, Tensor) else v)
                                       for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a ``state_dict()``; checks group count, group sizes and state shapes first.

        State tensors are copied onto each parameter's device (floating ones in its dtype);
        integer-like keys given as strings (e.g. after JSON) are accepted.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict \
                or "state" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             f"'param_groups', got {type(state_dict).__name__}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: loaded state dict has "
                             f"{len(saved_groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for i, (g, sg) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} has "
                                 f"{len(sg['params'])} parameters in the loaded state dict but "
                                 f"{len(g['params'])} in the optimizer")
        id_map = {}
        for g, sg in zip(self.param_groups, saved_groups):
            for idx, p in zip(sg["params"], g["params"]):
                id_map[int(idx)] = p
        new_state = {}
        for key, values in state_dict["state"].items():
            p = id_map.get(int(key))
            if p is None:
                raise ValueError(f"{name}.load_state_dict: state entry {key!r} refers to no "
                                 "parameter of the loaded parameter groups")
            entry = {}
            for k, v in values.items():
                if v is None or isinstance(v, (bool, int, float)):
                    entry[k] = v
                elif k == "step":  # a count saved as a tensor (e.g. by PyTorch): a number again
                    step = float(v.item())
                    entry[k] = int(step) if step.is_integer() else step
                else:
                    t = _as_array_like(v, p, name)
                    if tuple(t.shape) != tuple(p.data.shape):
                        raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter "
                                         f"{key} has shape {tuple(t.shape)} but the parameter "
                                         f"has shape {tuple(p.data.shape)}")
                    entry[k] = t
            new_state[p] = entry
        groups = []
        for g, sg in zip(self.param_groups, saved_groups):
            new = {k: v for k, v in sg.items() if k != "params"}
            for k, v in g.items():  # keys the saved dict lacks (an older format) keep their value
                new.setdefault(k, v)
            new["params"] = g["params"]
            groups.append(new)
        self.param_groups = groups
        self.state = new_state
