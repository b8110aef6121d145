"""Parametrizations (``torch.nn.utils.parametrize``): a module attribute computed on access.

``register_parametrization(module, "weight", P)`` moves ``module.weight`` into
``module.parametrizations.weight.original`` (a :class:`ParametrizationList`, a ModuleList of
the parametrization modules) and from then on ``module.weight`` returns ``P(original)``,
recomputed at every access (``Module.__getattr__`` calls the list). Assigning
``module.weight = X`` stores ``P.right_inverse(X)`` in ``original`` (``Module.__setattr__``
calls :meth:`ParametrizationList.right_inverse_assign`). Optimizers should hold
``original`` (it is what ``module.parameters()`` yields). The ``state_dict`` keys are
PyTorch's: ``parametrizations.weight.original`` (or ``original0``, ``original1`` ... when
``right_inverse`` returns several tensors).

>>> import gmcore as gm
>>> from gmcore.nn.utils import parametrize
>>> class Symmetric(gm.nn.Module):
...     def forward(self, X):
...         return X.triu() + X.triu(1).T
>>> layer = gm.nn.Linear(3, 3)
>>> _ = parametrize.register_parametrization(layer, "weight", Symmetric())
>>> bool((layer.weight == layer.weight.T).all()), parametrize.is_parametrized(layer)
(True, True)
>>> [k for k in layer.state_dict()]
['bias', 'parametrizations.weight.original']
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

from ...autograd import no_grad
from ...tensor import Tensor
from ..container import ModuleDict, ModuleList
from ..module import Module
from ..parameter import Parameter

__all__ = ["ParametrizationList", "register_parametrization", "remove_parametrizations",
           "is_parametrized", "cached", "type_before_parametrizations"]

_cache_depth = 0
_cache = {}


@contextmanager
def cached():
    """Within this context each parametrized tensor is computed once (on first access) and
    reused, e.g. a recurrent weight used at every time step.

    >>> import gmcore as gm
    >>> from gmcore.nn.utils import parametrize
    >>> m = gm.nn.Linear(2, 2)
    >>> _ = parametrize.register_parametrization(m, "weight", gm.nn.Tanh())
    >>> with parametrize.cached():
    ...     same = m.weight is m.weight
    >>> same, m.weight is m.weight
    (True, False)
    """
    global _cache_depth
    _cache_depth += 1
    try:
        yield
    finally:
        _cache_depth -= 1
        if not _cache_depth:
            _cache.clear()


def _register_parameter_or_buffer(module, name, value):
    if isinstance(value, Parameter):
        module.register_parameter(name, value)
    else:
        module.register_buffer(name, value)


def _set_(target, value):
    """Give ``target`` (a Parameter or buffer, kept as the same object so optimizers still hold
    it) the values and shape of ``value``."""
    if target is value:
        return
    arr = value.data
    if type(arr) is not type(target.data):
        raise RuntimeError(f"cannot assign a tensor on {value.device} to one on {target.device}")
    target.data = arr.copy()
    target._version.value += 1


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor and its unconstrained ``original`` value(s).

    ``self()`` returns ``P_n(...P_1(P_0(original)))``; modules are stored as "0", "1", ...
    """

    def __init__(self, modules, original, unsafe=False):
        if len(modules) == 0:
            raise ValueError("ParametrizationList requires one or more modules.")
        super().__init__(modules)
        self.unsafe = unsafe
        shape, dtype = tuple(original.shape), original.dtype
        # store right_inverse(original), so that reading the attribute back gives the value
        # it had before the parametrization was registered
        with no_grad():
            new = original
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    try:
                        new = module.right_inverse(new)
                    except NotImplementedError:
                        pass
        self.is_tensor = isinstance(new, Tensor)
        self.ntensors = 1 if self.is_tensor else len(new)
        if self.is_tensor:
            if original.dtype != new.dtype:
                raise ValueError("When `right_inverse` outputs one tensor, it may not change the "
                                 f"dtype.\noriginal.dtype: {original.dtype}\n"
                                 f"right_inverse(original).dtype: {new.dtype}")
            with no_grad():
                _set_(original, new)
            _register_parameter_or_buffer(self, "original", original)
        else:
            for i, orig_i in enumerate(new):
                if not isinstance(orig_i, Tensor):
                    raise ValueError("'right_inverse' must return a Tensor or a Sequence of "
                                     f"tensors (list, tuple...). Got element {i} of the "
                                     f"sequence with type {type(orig_i).__name__}.")
                if isinstance(original, Parameter):
                    orig_i = Parameter(orig_i.detach(), original.requires_grad)
                else:
                    orig_i = orig_i.detach()
                _register_parameter_or_buffer(self, f"original{i}", orig_i)
        if not self.unsafe:
            z = self()
            if not isinstance(z, Tensor):
                raise ValueError(f"A parametrization must return a tensor. Got "
                                 f"{type(z).__name__}.")
            if z.dtype != dtype:
                raise ValueError("Registering a parametrization may not change the dtype of the "
                                 f"tensor, unless `unsafe` flag is enabled.\nunparametrized "
                                 f"dtype: {dtype}\nparametrized dtype: {z.dtype}")
            if tuple(z.shape) != shape:
                raise ValueError("Registering a parametrization may not change the shape of the "
                                 f"tensor, unless `unsafe` flag is enabled.\nunparametrized "
                                 f"shape: {shape}\nparametrized shape: {tuple(z.shape)}")

    def right_inverse(self, value):
        """Set the original(s) so that the parametrized tensor equals ``value``: each
        parametrization's ``right_inverse``, last to first (what ``module.weight = value``
        runs)."""
        with no_grad():
            for module in reversed(list(self)):
                if not hasattr(module, "right_inverse"):
                    raise RuntimeError(f"parametrization {type(module).__name__} does not "
                                       "implement right_inverse.")
                value = module.right_inverse(value)
            if self.is_tensor:
                if not isinstance(value, Tensor):
                    raise ValueError(f"`right_inverse` should return a tensor. Got "
                                     f"{type(value).__name__}")
                if value.dtype != self.original.dtype:
                    raise ValueError(f"The tensor returned by `right_inverse` has dtype "
                                     f"{value.dtype} while `original` has dtype "
                                     f"{self.original.dtype}")
                _set_(self.original, value)
            else:
                if not isinstance(value, Sequence):
                    raise ValueError("'right_inverse' must return a sequence of tensors. Got "
                                     f"{type(value).__name__}.")
                if len(value) != self.ntensors:
                    raise ValueError("'right_inverse' must return a sequence of tensors of "
                                     f"length {self.ntensors}. Got a sequence of length "
                                     f"{len(value)}.")
                for i, t in enumerate(value):
                    orig_i = getattr(self, f"original{i}")
                    if not isinstance(t, Tensor):
                        raise ValueError(f"`right_inverse` must return a sequence of tensors. "
                                         f"Got element {i} of type {type(t).__name__}")
                    if orig_i.dtype != t.dtype:
                        raise ValueError(f"Tensor {i} returned by `right_inverse` has dtype "
                                         f"{t.dtype} while `original{i}` has dtype "
                                         f"{orig_i.dtype}")
                    _set_(orig_i, t)

    right_inverse_assign = right_inverse  # the name Module.__setattr__ calls

    def forward(self):
        if self.is_tensor:
            x = self[0](self.original)
        else:
            x = self[0](*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for module in list(self)[1:]:
            x = module(x)
        return x

    def __call__(self, *args, **kwargs):
        if _cache_depth and not args and not kwargs:
            hit = _cache.get(id(self))
            if hit is None:
                hit = _cache[id(self)] = super().__call__()
            return hit
        return super().__call__(*args, **kwargs)


def is_parametrized(module, tensor_name=None):
    """Whether ``module`` has any parametrization, or one on ``tensor_name``."""
    parametrizations = module._modules.get("parametrizations") if isinstance(module, Module) \
        else None
    if not isinstance(parametrizations, ModuleDict):
        return False
    if tensor_name is None:
        return len(parametrizations) > 0
    return tensor_name in parametrizations


def type_before_parametrizations(module):
    """The module's class (parametrizing does not change it here, unlike PyTorch)."""
    return type(module)


def register_parametrization(module, tensor_name, parametrization, *, unsafe=False):
    """Make ``module.<tensor_name>`` be ``parametrization(original)``; returns ``module``.

    ``parametrization`` is a Module whose ``forward`` maps the original tensor(s) to the
    parametrized one; an optional ``right_inverse(X)`` maps a value back to the original(s)
    (several tensors when it returns a tuple). Registering on an already parametrized name
    appends to its list. ``unsafe=True`` skips the dtype/shape consistency checks.
    """
    if not isinstance(parametrization, Module):
        raise TypeError(f"parametrization must be a gmcore.nn.Module, got "
                        f"{type(parametrization).__name__}")
    if is_parametrized(module, tensor_name):
        if not unsafe:
            y = getattr(module, tensor_name)
            x = parametrization(y)
            if not isinstance(x, Tensor):
                raise ValueError(f"A parametrization must return a tensor. Got "
                                 f"{type(x).__name__}.")
            if x.dtype != y.dtype or tuple(x.shape) != tuple(y.shape):
                raise ValueError("Registering a parametrization may not change the dtype or "
                                 "shape of the tensor, unless the `unsafe` flag is enabled.\n"
                                 f"unparametrized: {y.dtype} {tuple(y.shape)}\n"
                                 f"parametrized: {x.dtype} {tuple(x.shape)}")
            if hasattr(parametrization, "right_inverse"):
                try:
                    z = parametrization.right_inverse(x)
                except NotImplementedError:
                    pass
                else:
                    if not isinstance(z, Tensor):
                        raise ValueError(f"parametrization.right_inverse must return a tensor. "
                                         f"Got: {type(z).__name__}")
                    if z.dtype != y.dtype or tuple(z.shape) != tuple(y.shape):
                        raise ValueError("The tensor returned by parametrization.right_inverse "
                                         "must have the same dtype and shape as "
                                         f"module.{tensor_name}")
        plist = module.parametrizations[tensor_name]
        plist.append(parametrization)
        plist.unsafe |= unsafe
        return module
    if tensor_name in module._parameters or tensor_name in module._buffers:
        original = getattr(module, tensor_name)
        if original is None:
            raise ValueError(f"Module '{type(module).__name__}' has {tensor_name} = None; "
                             "there is nothing to parametrize")
        plist = ParametrizationList([parametrization], original, unsafe=unsafe)
        delattr(module, tensor_name)
        if not is_parametrized(module):
            module.parametrizations = ModuleDict()
        module.parametrizations[tensor_name] = plist
        return module
    raise ValueError(f"Module '{type(module).__name__}' does not have a parameter, a buffer, or "
                     f"a parametrized element with name '{tensor_name}'")


def remove_parametrizations(module, tensor_name, leave_parametrized=True):
    """Undo ``register_parametrization`` on ``tensor_name``; returns ``module``.

    ``leave_parametrized=True`` keeps the current parametrized value (in the same Parameter
    object when there is a single original, so optimizers need no update); ``False`` restores
    the unconstrained original (single-original parametrizations only).
    """
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"Module {type(module).__name__} does not have a parametrization on "
                         f"{tensor_name}")
    plist = module.parametrizations[tensor_name]
    if plist.is_tensor:
        original = plist.original
        if leave_parametrized:
            with no_grad():
                t = getattr(module, tensor_name)
                _set_(original, t)
    else:
        if not leave_parametrized:
            raise ValueError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor "
                             "that is parametrized in terms of a sequence of tensors.")
        t = getattr(module, tensor_name)
        original = Parameter(t.detach().clone(), t.requires_grad) if t.requires_grad \
            else t.detach().clone()
    del module.parametrizations[tensor_name]
    _register_parameter_or_buffer(module, tensor_name, original)
    if not is_parametrized(module):
        delattr(module, "parametrizations")
    return module
