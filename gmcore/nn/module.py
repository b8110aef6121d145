"""``Module``: the base class of every layer and model, with PyTorch's names and semantics.

A Module owns three ordered tables: ``_parameters`` (learnable :class:`Parameter`), ``_buffers``
(state that is saved but not learned, e.g. BatchNorm running statistics) and ``_modules``
(children). Assigning a Parameter, a Module or a :class:`Buffer` to an attribute registers it.
Everything else (traversal, ``state_dict``, ``to``) walks those tables.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Callable, Iterator

import numpy as np

from .. import backend
from ..autograd import no_grad
from ..tensor import Tensor
from .parameter import Buffer, Parameter

__all__ = ["Module", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class _RemovableHandle:
    """Returned by the hook registrations; ``remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, table):
        self._table = table
        self.id = _RemovableHandle._next_id
        _RemovableHandle._next_id += 1

    def remove(self):
        self._table.pop(self.id, None)


class Module:
    """Base class for layers and models: subclass it, build children in ``__init__``, define
    ``forward``. Calling the module runs ``forward`` (with any registered hooks).

    >>> import gmcore as gm
    >>> class MLP(gm.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1 = gm.nn.Linear(4, 8)
    ...         self.fc2 = gm.nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         return self.fc2(self.fc1(x).relu())
    >>> net = MLP()
    >>> net(gm.randn(3, 4)).shape
    gmcore.Size([3, 2])
    >>> [name for name, _ in net.named_parameters()]
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """

    training: bool

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() method")

    def __call__(self, *args, **kwargs):
        if not self._forward_pre_hooks and not self._forward_hooks:
            return self.forward(*args, **kwargs)
        for hook in list(self._forward_pre_hooks.values()):
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_pre_hook(self, hook: Callable):
        """``hook(module, args) -> None or new args`` runs before ``forward``."""
        h = _RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[h.id] = hook
        return h

    def register_forward_hook(self, hook: Callable):
        """``hook(module, args, output) -> None or new output`` runs after ``forward``."""
        h = _RemovableHandle(self._forward_hooks)
        self._forward_hooks[h.id] = hook
        return h

    # ---- registration ----------------------------------------------------------------------
    def _check_name(self, name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{kind} name must be non-empty and contain no '.', got {name!r}")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add ``param`` (or None, a declared-but-absent parameter such as a missing bias)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("call super().__init__() before assigning parameters")
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} "
                            "(wrap it in gmcore.nn.Parameter)")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute {name!r} already exists")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: state saved in ``state_dict`` (unless ``persistent=False``) and moved by
        ``to()``, but not learned."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("call super().__init__() before assigning buffers")
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r} "
                            "(a gmcore Tensor or None is required)")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute {name!r} already exists")
        if isinstance(tensor, (Buffer, Parameter)):
            tensor = Tensor(tensor.data)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if not isinstance(module, Module) and module is not None:
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute {name!r} already exists")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        params, buffers, modules = d.get("_parameters"), d.get("_buffers"), d.get("_modules")
        if modules and "parametrizations" in modules and name in modules["parametrizations"]._modules:
            # a parametrized attribute: store right_inverse(value) (PyTorch's property setter
            # takes precedence over Parameter/Module registration too)
            modules["parametrizations"][name].right_inverse_assign(value)
        elif isinstance(value, Parameter):
            if params is None:
                raise AttributeError("call super().__init__() before assigning parameters")
            self._drop(name, keep=params)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                "(gmcore.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            if modules is None:
                raise AttributeError("call super().__init__() before assigning submodules")
            self._drop(name, keep=modules)
            modules[name] = value
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r}")
            modules[name] = None
        elif isinstance(value, Buffer):
            self._drop(name, keep=buffers)
            self.register_buffer(name, value, persistent=value.persistent)
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r}")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _drop(self, name, keep):
        """Remove ``name`` from every table except ``keep`` (and from the instance dict)."""
        for table in (self.__dict__.get("_parameters"), self.__dict__.get("_buffers"),
                      self.__dict__.get("_modules")):
            if table is not None and table is not keep:
                table.pop(name, None)
        self.__dict__.pop(name, None)
        self.__dict__.get("_non_persistent", set()).discard(name)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the three tables.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            t = d.get(table)
            if t is not None and name in t:
                return t[name]
        # A parametrized tensor (gmcore.nn.utils.parametrize) is recomputed on every access.
        mods = d.get("_modules")
        if mods is not None and "parametrizations" in mods and name in mods["parametrizations"]._modules:
            return mods["parametrizations"][name]()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in ("_parameters", "_buffers", "_modules"):
            t = self.__dict__.get(table)
            if t is not None and name in t:
                del t[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- traversal -------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """Yield ``(qualified_name, module)`` for this module and all descendants (depth first)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, table, prefix, recurse, remove_duplicate=True):
        seen = set()
        mods = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                else [(prefix, self)])
        for mod_prefix, mod in mods:
            for name, value in getattr(mod, table).items():
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Yield ``(qualified_name, Parameter)``; a parameter shared by two modules appears once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> "Module":
        """The descendant at the dotted path ``target`` ("" is this module)."""
        mod = self
        for part in target.split(".") if target else []:
            child = mod._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (path {target!r})")
            mod = child
        return mod

    # ---- modes and utilities ---------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        object.__setattr__(self, "training", mode)
        for child in self.children():
            child.train(mode)  # through train() so a subclass's override runs (as PyTorch)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's ``.grad`` (to None by default, as PyTorch)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad = Tensor(p._xp().zeros_like(p.grad.data))

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call ``fn`` on every descendant, then on this module (e.g. custom initialisation)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _apply(self, array_fn: Callable) -> "Module":
        """Replace every parameter's and buffer's array (and gradient) by ``array_fn(array)``,
        keeping the Parameter objects (optimizers hold references to them)."""
        with no_grad():
            for m in self.modules():
                for p in m._parameters.values():
                    if p is None:
                        continue
                    p.data = array_fn(p.data)
                    if p.grad is not None:
                        p.grad = Tensor(array_fn(p.grad.data))
                for b in m._buffers.values():
                    if b is not None:
                        b.data = array_fn(b.data)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """``to(device)``, ``to(dtype)`` or ``to(device, dtype)``: moves parameters and buffers in
        place; a dtype applies to floating-point tensors only (integer buffers keep theirs)."""
        from .._dtype import as_dtype
        from ..tensor import _parse_to_args

        device, dtype, _ = _parse_to_args(args, kwargs)
        if dtype is not None:
            dtype = as_dtype(dtype)
            if not dtype.is_floating_point:
                raise TypeError(f"Module.to only accepts floating point dtypes, got {dtype}")
        np_dtype = None if dtype is None else dtype.np

        def convert(a):
            if np_dtype is not None and a.dtype.kind == "f" and a.dtype != np_dtype:
                a = a.astype(np_dtype)
            if device is not None:
                a = backend.to_device(a, device)
            return a

        return self._apply(convert)

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, device=None) -> "Module":
        return self.to("cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device))

    def float(self) -> "Module":
        from .. import float32
        return self.to(float32)

    def double(self) -> "Module":
        from .. import float64
        return self.to(float64)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> "OrderedDict":
        """An ordered dict of every parameter and persistent buffer by qualified name.

        Values are detached tensors sharing memory with the module (``keep_vars=True`` returns
        the Parameters themselves). Save it with ``gmcore.save``.
        """
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy parameters and buffers from ``state_dict`` (Tensors or arrays) into this module.

        Shape mismatches always raise; with ``strict=True`` missing and unexpected keys raise
        too. The error lists every problem at once. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"expected a mapping of names to tensors, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for k, target in own.items():
            if k not in state_dict:
                continue
            src = state_dict[k]
            arr = src.data if isinstance(src, Tensor) else src
            shape = tuple(getattr(arr, "shape", ()))
            if shape != tuple(target.shape):
                mismatched.append(f"{k}: checkpoint {shape} vs model {tuple(target.shape)}")
        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        with no_grad():
            for k, target in own.items():
                if k not in state_dict:
                    continue
                src = state_dict[k]
                arr = src.data if isinstance(src, Tensor) else src
                xp = backend.xp_of(target.data)
                arr = backend.to_device(xp.asarray(arr) if xp is np else arr, target.device)
                target.data[...] = arr.astype(target.data.dtype, copy=False)
                target._version.value += 1
        return IncompatibleKeys(missing, unexpected)

    # ---- printing --------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (override in layers)."""
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        head = f"{type(self).__name__}("
        if not lines and len(extra_lines) <= 1:
            return head + extra + ")"
        body = extra_lines + lines
        return head + "\n  " + "\n  ".join(body) + "\n)"
