"""Reverse-mode automatic differentiation: ``Function``, the graph walk, ``backward`` and ``grad``.

An op is a ``Function`` subclass. ``forward(ctx, *args)`` receives raw NumPy/CuPy arrays in place
of tensors and returns arrays. ``backward(ctx, *grads)`` receives one gradient *tensor* per output
and returns one gradient per positional argument of ``forward``. Because backward is written with
tensor operations and ``ctx.saved_tensors`` hands back the very tensors that went into forward,
a backward run with ``create_graph=True`` is itself recorded: gradients of gradients come free.

The ctx object doubles as the graph node (PyTorch's ``grad_fn``): it holds the edges to the
inputs' nodes and the values saved for backward.
"""
import functools

import numpy as np

__all__ = ["Function", "FunctionCtx", "backward", "grad", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "once_differentiable", "queue_callback"]

_grad_enabled = True
# callbacks of the backward passes running now (innermost last): [list of fns, accumulates .grad]
_running: list = []


def queue_callback(fn) -> None:
    """Run ``fn()`` once the current backward pass is over, after every leaf's ``.grad`` is
    written (torch's ``Variable._execution_engine.queue_callback``); call it from a hook. Only a
    pass that accumulates into ``.grad`` (``backward``, not ``autograd.grad``) runs callbacks: a
    gradient taken for other uses (a penalty's input gradient) never triggers them.
    ``DistributedDataParallel`` averages the gradients this way."""
    if not _running:
        raise RuntimeError("queue_callback: no backward pass is running (call it from a hook)")
    callbacks, accumulates = _running[-1]
    if accumulates:
        callbacks.append(fn)


def is_grad_enabled():
    """True when operations are being recorded for differentiation."""
    return _grad_enabled


class set_grad_enabled:
    """Turn recording on or off, as a context manager, a decorator or a plain call.

    >>> import gmcore as gm
    >>> x = gm.ones(2, requires_grad=True)
    >>> with gm.set_grad_enabled(False):
    ...     (x * 2).requires_grad
    False
    """

    def __init__(self, mode=True):
        global _grad_enabled
        self.mode = bool(mode)
        self._prev = []
        if type(self) is set_grad_enabled:  # the plain-call form takes effect at once
            self._prev.append(_grad_enabled)
            _grad_enabled = self.mode

    def __enter__(self):
        global _grad_enabled
        if type(self) is not set_grad_enabled:
            self._prev.append(_grad_enabled)
        _grad_enabled = self.mode
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev.pop()
        return False

    def __call__(self, func):
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            global _grad_enabled
            prev, _grad_enabled = _grad_enabled, mode
            try:
                return func(*args, **kwargs)
            finally:
                _grad_enabled = prev
        return wrapper


class no_grad(set_grad_enabled):
    """Context manager and decorator that stops recording (evaluation, sampling, updates).

    >>> import gmcore as gm
    >>> x = gm.ones(2, requires_grad=True)
    >>> with gm.no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Context manager and decorator that turns recording back on inside ``no_grad``."""

    def __init__(self):
        super().__init__(True)


# ---- saved values and the graph node --------------------------------------------------------

_INPUT, _OUTPUT, _CONST = 0, 1, 2


class FunctionCtx:
    """Per-call context of a ``Function``; after forward it is the graph node of the outputs."""

    # class-level defaults: a node sets only what differs (this is the engine's hot path)
    _edges = ()
    _saved = None
    _to_save = None
    _freed = False
    _non_differentiable = None
    _outputs_meta = None
    _retained = None
    _hooks = None  # {output_nr: {handle_id: fn}}: Tensor.register_hook on a non-leaf output
    _xp = np
    needs_input_grad = ()

    def __init__(self, function):
        self._function = function

    # -- what forward calls
    def save_for_backward(self, *values):
        """Keep arrays (inputs, outputs or intermediates) for backward; None is allowed."""
        self._to_save = values

    def mark_non_differentiable(self, *arrays):
        """Outputs that carry no gradient (indices, masks): they get ``requires_grad=False``."""
        self._non_differentiable = {id(a) for a in arrays}

    # -- what backward calls
    @property
    def saved_tensors(self):
        """The saved values as tensors; inputs come back as the original (graph-connected) tensors."""
        out = []
        for kind, value, version, _ in self._check_saved():
            if kind == _INPUT:
                out.append(value)
            elif kind == _OUTPUT:
                array, nr, differentiable = value
                t = _Tensor(array)
                if differentiable:
                    t._grad_fn, t._output_nr, t._requires_grad = self, nr, True
                t._version = version
                out.append(t)
            else:
                out.append(_Tensor(value) if _is_array(value) else value)
        return tuple(out)

    @property
    def saved_arrays(self):
        """The saved values as raw arrays (for once-differentiable kernels' backward)."""
        out = []
        for kind, value, _, _ in self._check_saved():
            out.append(value.data if kind == _INPUT else value[0] if kind == _OUTPUT else value)
        return tuple(out)

    def _check_saved(self):
        if self._freed:
            raise RuntimeError(
                f"Trying to backward through the graph of {self.name()} a second time (or to "
                "access its saved tensors after they were freed). Saved values are freed after "
                "the first backward; pass retain_graph=True to the first backward() or grad() "
                "call if you need to go through the graph again.")
        saved = self._saved or ()
        for kind, value, version, expected in saved:
            if version is not None and version.value != expected:
                shape = value.shape if kind == _INPUT else value[0].shape
                raise RuntimeError(
                    f"one of the tensors needed for gradient computation has been modified by "
                    f"an in-place operation: a tensor of shape {tuple(shape)} saved by "
                    f"{self.name()} is at version {version.value}; expected version {expected} "
                    "instead. Clone it before modifying it in place, or modify it before the op.")
        return saved

    def name(self):
        return self._function.__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name()}>"

    @property
    def next_functions(self):
        """The nodes this node sends gradients to: ``((node or tensor or None, output_nr), ...)``."""
        return tuple((None, 0) if e is None else (e, 0) if not isinstance(e, tuple) else e
                     for e in self._edges)


def _is_array(x):
    return type(x) is np.ndarray or (hasattr(x, "shape") and hasattr(x, "dtype")
                                     and hasattr(x, "__dlpack__"))


class Function:
    """Base class of differentiable operations (custom ones included).

    Subclass it with static ``forward(ctx, *args)`` on arrays and ``backward(ctx, *grads)`` on
    tensors, then call ``YourFunction.apply(...)``.

    >>> import gmcore as gm
    >>> class Cube(gm.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x ** 3
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         x, = ctx.saved_tensors
    ...         return g * 3 * x ** 2
    >>> x = gm.tensor([2.0], requires_grad=True)
    >>> Cube.apply(x).sum().backward(); x.grad.tolist()
    [12.0]
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    _is_view = False  # True for ops whose outputs alias the input's memory

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = FunctionCtx(cls)
        arrays = []
        needs_grad = False
        n_tensors = 0
        foreign = False  # some tensor's data is not a NumPy array (cupy): check devices
        for a in args:
            if isinstance(a, _Tensor):
                d = a.data
                arrays.append(d)
                n_tensors += 1
                if a._requires_grad:
                    needs_grad = True
                if type(d) is not np.ndarray:
                    foreign = True
            else:
                arrays.append(a)
        if foreign and n_tensors > 1:
            _check_same_device(cls, [a for a in args if isinstance(a, _Tensor)])
        needs_grad = needs_grad and _grad_enabled
        if needs_grad:
            ctx.needs_input_grad = tuple(isinstance(a, _Tensor) and a._requires_grad
                                         for a in args)
        else:
            ctx.needs_input_grad = (False,) * len(args)

        raw = cls.forward(ctx, *arrays, **kwargs)
        raw_ids = None  # identities of what forward returned, before 0-d scalars become arrays

        if type(raw) is not tuple:
            if type(raw) is not np.ndarray and isinstance(raw, np.generic):
                raw_ids = (id(raw),)
            out = _Tensor(raw)
            if needs_grad and raw.dtype.kind == "f" and (
                    ctx._non_differentiable is None or id(raw) not in ctx._non_differentiable):
                out._grad_fn, out._requires_grad = ctx, True
            outputs = (out,)
        else:
            nondiff = ctx._non_differentiable
            outputs = []
            for nr, r in enumerate(raw):
                t = _Tensor(r)
                if needs_grad and r.dtype.kind == "f" and (nondiff is None or id(r) not in nondiff):
                    t._grad_fn, t._output_nr, t._requires_grad = ctx, nr, True
                outputs.append(t)
            outputs = tuple(outputs)

        if needs_grad:
            ctx._edges = tuple([_edge_of(a) for a in args])
            ctx._outputs_meta = tuple([(t.data.shape, t.data.dtype) for t in outputs])
            if type(outputs[0].data) is not np.ndarray:
                ctx._xp = outputs[0]._xp()
            if ctx._to_save is not None:
                if raw_ids is None and type(raw) is tuple:
                    raw_ids = tuple(id(r) for r in raw)
                ctx._saved = _resolve_saved(ctx, ctx._to_save, args, outputs, raw_ids)
                ctx._to_save = None
        if cls._is_view:
            _share_versions(args, outputs)
        return outputs[0] if type(raw) is not tuple else outputs


def _edge_of(a):
    if not isinstance(a, _Tensor) or not a._requires_grad:
        return None
    if a._grad_fn is None:
        return a  # a leaf: its gradient is accumulated into .grad
    return (a._grad_fn, a._output_nr)


def _check_same_device(cls, tensors):
    devices = [t.device for t in tensors]
    for d in devices[1:]:
        if d != devices[0]:
            raise RuntimeError(f"{cls.__name__}: expected all tensors on the same device, "
                               f"but found {devices[0]} and {d}")


def _resolve_saved(ctx, values, args, outputs, raw_ids=None):
    """Map each saved array to the tensor it came from, recording versions for the in-place check."""
    by_input = {}
    for a in args:
        if isinstance(a, _Tensor):
            by_input.setdefault(id(a.data), a)
    by_output = {id(t.data): (nr, t) for nr, t in enumerate(outputs)}
    if raw_ids is not None:  # forward returned NumPy scalars (0-d results): match those too
        by_output.update({rid: (nr, t) for nr, (rid, t) in enumerate(zip(raw_ids, outputs))})
    saved = []
    for v in values:
        key = id(v)
        if key in by_input:
            t = by_input[key]
            saved.append((_INPUT, t, t._version, t._version.value))
        elif key in by_output:
            nr, t = by_output[key]
            # not the output tensor itself: that would make a reference cycle node -> tensor -> node
            saved.append((_OUTPUT, (t.data, nr, t._grad_fn is ctx), t._version, t._version.value))
        else:
            saved.append((_CONST, v, None, None))
    return tuple(saved)


def _share_versions(args, outputs):
    """Views share their base's version counter, so in-place edits of either are seen."""
    base = next((a for a in args if isinstance(a, _Tensor)), None)
    if base is None:
        return
    for t in outputs:
        if np.may_share_memory(t.data, base.data) if type(t.data) is np.ndarray else True:
            t._version = base._version
            t._base = base._base if base._base is not None else base


# ---- once-differentiable backward ---------------------------------------------------------

def once_differentiable(backward):
    """Mark a backward as first-order only; it then works on raw arrays.

    The decorated ``backward(ctx, *grads)`` receives gradients as arrays, reads
    ``ctx.saved_arrays`` and returns arrays (or None). Differentiating its result a second time
    (``create_graph=True`` and a further backward) raises an error naming the op, as PyTorch's
    ``once_differentiable`` does; it never returns a wrong number.
    """
    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with no_grad():
            results = backward(ctx, *(g.data for g in grads))
        single = not isinstance(results, tuple)
        results = (results,) if single else results
        wrapped = []
        for r in results:
            if r is None:
                wrapped.append(None)
            elif _grad_enabled:  # create_graph=True: a further backward must fail loudly
                wrapped.append(_error_tensor(r, ctx.name()))
            else:
                wrapped.append(_Tensor(r))
        return wrapped[0] if single else tuple(wrapped)
    return wrapper


class _DelayedError(Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError(
            f"{ctx.op_name} is once-differentiable: its backward is a fused kernel that is not "
            "itself differentiable, so a second-order gradient through it is not available. "
            "Select the reference implementation (GMCORE_KERNELS=reference) for double backward.")


def _error_tensor(array, op_name):
    ctx = FunctionCtx(_DelayedError)
    ctx.op_name = op_name
    ctx._edges = (None,)
    ctx._outputs_meta = ((array.shape, array.dtype),)
    t = _Tensor(array)
    ctx._xp = t._xp()
    t._grad_fn, t._output_nr, t._requires_grad = ctx, 0, True
    return t


# ---- the graph walk ---------------------------------------------------------------------------

def _as_tuple(x):
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _root_grads(outputs, grad_outputs):
    grad_outputs = _as_tuple(grad_outputs) if grad_outputs is not None else (None,) * len(outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"got {len(grad_outputs)} gradients for {len(outputs)} outputs")
    roots = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not isinstance(out, _Tensor):
            raise TypeError(f"outputs must be tensors, got {type(out).__name__}")
        if not out._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have "
                               "a grad_fn: nothing to differentiate")
        if g is None:
            if out.data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs, but got shape "
                    f"{tuple(out.shape)}; pass gradient= (backward) or grad_outputs= (grad) "
                    "with the output's shape")
            g = _Tensor(out._xp().ones_like(out.data))
        elif not isinstance(g, _Tensor):
            g = _Tensor(out._xp().asarray(g, dtype=out.data.dtype))
        if tuple(g.shape) != tuple(out.shape):
            raise RuntimeError(f"gradient of shape {tuple(g.shape)} given for an output of "
                               f"shape {tuple(out.shape)}")
        roots.append((out, g))
    return roots


def _run(roots, retain_graph, create_graph, inputs=None, allow_unused=False):
    """Walk the graph from ``roots`` [(tensor, grad)]; accumulate into .grad or collect for inputs."""
    global _grad_enabled

    # dependency counts: how many edges from other nodes reach each node
    deps = {}
    stack = [out._grad_fn for out, _ in roots if out._grad_fn is not None]
    seen = set(id(n) for n in stack)
    nodes = list(stack)
    while stack:
        node = stack.pop()
        for e in node._edges:
            if type(e) is tuple:
                child = e[0]
                deps[id(child)] = deps.get(id(child), 0) + 1
                if id(child) not in seen:
                    seen.add(id(child))
                    nodes.append(child)
                    stack.append(child)

    # where the caller wants gradients (grad()) instead of .grad accumulation (backward())
    targets = None
    results = None
    if inputs is not None:
        targets = {}
        for i, t in enumerate(inputs):
            if not isinstance(t, _Tensor):
                raise TypeError(f"inputs must be tensors, got {type(t).__name__}")
            if not t._requires_grad:
                raise RuntimeError(f"input {i} does not require grad: cannot differentiate "
                                   "with respect to it")
            key = id(t) if t._grad_fn is None else (id(t._grad_fn), t._output_nr)
            targets.setdefault(key, []).append(i)
        results = [None] * len(inputs)

    buffers = {}      # id(node) -> list of gradient tensors, one per output
    hooked_leaves = {}  # id(leaf) -> (leaf, summed gradient) for leaves with hooks
    # arrays that must not be stored in a .grad without a copy: the caller's root gradients
    # and any array already stored in another leaf's .grad
    handed_out = {id(g.data) for _, g in roots}

    def send(edge, g):
        if type(edge) is tuple:
            node, nr = edge
            buf = buffers.get(id(node))
            if buf is None:
                buf = buffers[id(node)] = [None] * len(node._outputs_meta)
            buf[nr] = g if buf[nr] is None else buf[nr] + g
        elif edge._hooks:  # a hooked leaf: its hooks see the summed gradient, once
            prev = hooked_leaves.get(id(edge))
            hooked_leaves[id(edge)] = (edge, g if prev is None else prev[1] + g)
        else:
            leaf_grad(edge, g)

    def leaf_grad(leaf, g):
        if targets is not None:
            for i in targets.get(id(leaf), ()):
                results[i] = g if results[i] is None else results[i] + g
            return
        _accumulate_leaf(leaf, g, create_graph, handed_out)

    prev_mode = _grad_enabled
    _grad_enabled = create_graph
    callbacks = []
    _running.append((callbacks, targets is None))
    # backward formulas evaluate both sides of true selects (where); the unselected side may
    # overflow or divide by zero harmlessly, so NumPy's warnings are noise here
    with np.errstate(all="ignore"):
        try:
            for out, g in roots:
                if out._grad_fn is None:
                    send(out, g)
                else:
                    send((out._grad_fn, out._output_nr), g)
            ready = [n for n in nodes if deps.get(id(n), 0) == 0]
            while ready:
                node = ready.pop()
                grads = buffers.pop(id(node), None)
                if grads is None:
                    grads = [None] * len(node._outputs_meta)
                if node._hooks:  # before capture and retain_grad, as torch
                    for nr, hooks in node._hooks.items():
                        if grads[nr] is not None:
                            grads[nr] = _run_hooks(hooks, grads[nr])
                if targets is not None:
                    for nr, g in enumerate(grads):
                        for i in targets.get((id(node), nr), ()):
                            results[i] = g if results[i] is None else results[i] + g
                if node._retained:
                    for nr, ref in node._retained:
                        t = ref()
                        if t is not None and grads[nr] is not None:
                            t.grad = grads[nr] if create_graph else grads[nr].detach()
                if any(g is not None for g in grads):
                    _call_backward(node, grads, send)
                if not retain_graph:
                    node._saved = None
                    node._freed = True
                for e in node._edges:
                    if type(e) is tuple:
                        k = id(e[0])
                        deps[k] -= 1
                        if deps[k] == 0:
                            ready.append(e[0])
            for leaf, g in hooked_leaves.values():
                leaf_grad(leaf, _run_hooks(leaf._hooks, g))
        finally:
            _grad_enabled = prev_mode
            _running.pop()
    for fn in callbacks:
        fn()

    if results is not None:
        for i, r in enumerate(results):
            if r is None and not allow_unused:
                raise RuntimeError(f"input {i} was not used to compute the outputs; pass "
                                   "allow_unused=True to get None for it")
            if r is not None and not create_graph:
                results[i] = r.detach()
        return tuple(results)
    return None


def _run_hooks(hooks, g):
    """Call each hook on the gradient in registration order; a returned tensor replaces it."""
    for fn in list(hooks.values()):
        r = fn(g)
        if r is not None:
            if not isinstance(r, _Tensor):
                raise TypeError(f"a gradient hook returned a {type(r).__name__}; expected a "
                                "tensor or None")
            if tuple(r.shape) != tuple(g.shape):
                raise RuntimeError(f"a gradient hook changed the gradient's shape from "
                                   f"{tuple(g.shape)} to {tuple(r.shape)}")
            g = r
    return g


class RemovableHandle:
    """What ``Tensor.register_hook`` returns: ``handle.remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _call_backward(node, grads, send):
    filled = []
    for g, (shape, dtype) in zip(grads, node._outputs_meta):
        if g is None:  # an output that received no gradient: materialise zeros
            g = _Tensor(node._xp.zeros(shape, dtype=dtype))
        filled.append(g)
    fn = node._function
    result = fn.backward(node, *filled)
    if not isinstance(result, (tuple, list)):
        result = (result,)
    edges = node._edges
    if len(result) != len(edges):
        raise RuntimeError(f"{fn.__name__}.backward returned {len(result)} gradients but forward "
                           f"took {len(edges)} positional arguments")
    for i, (e, g) in enumerate(zip(edges, result)):
        if e is None or g is None:
            continue
        if not isinstance(g, _Tensor):
            raise TypeError(f"{fn.__name__}.backward returned a {type(g).__name__} for input {i}; "
                            "expected a tensor or None")
        expected_shape = e.data.shape if not isinstance(e, tuple) else e[0]._outputs_meta[e[1]][0]
        if g.data.shape != expected_shape:
            raise RuntimeError(f"{fn.__name__}.backward returned a gradient of shape "
                               f"{tuple(g.shape)} for input {i} of shape {tuple(expected_shape)}")
        expected_dtype = e.data.dtype if not isinstance(e, tuple) else e[0]._outputs_meta[e[1]][1]
        if g.data.dtype != expected_dtype:
            g = g.to(expected_dtype)
        send(e, g)


def _accumulate_leaf(leaf, g, create_graph, seen):
    """Add ``g`` into ``leaf.grad``.

    Gradient arrays flow through the graph shared (add, clone and sum pass theirs on unchanged),
    so an array stored in one ``.grad`` may still be waiting in another node's buffer, or be the
    caller's own gradient. ``seen`` holds the ids of such arrays: the first one stored is copied
    if it was already seen, and accumulation adds in place only into an array the engine made.
    """
    if create_graph:
        leaf.grad = g if leaf.grad is None else leaf.grad + g
        return
    arr = g.data
    if leaf.grad is None:
        if id(arr) in seen or not arr.flags.owndata or not arr.flags.c_contiguous:
            arr = arr.copy()
        seen.add(id(arr))
        leaf.grad = _owned(arr)
    elif getattr(leaf.grad, "_engine_owned", False):
        leaf.grad.data += arr  # in place, as PyTorch accumulates
    else:  # a .grad the user set: don't write into their array
        leaf.grad = _owned(leaf.grad.data + arr)


def _owned(array):
    t = _Tensor(array)
    t._engine_owned = True  # the engine may accumulate into this array in place
    return t


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate gradients of ``tensors`` into the ``.grad`` of the leaves that produced them.

    ``gmcore.autograd.backward(loss)`` is ``loss.backward()``; several outputs may be given with
    one gradient each.
    """
    outputs = _as_tuple(tensors)
    roots = _root_grads(outputs, grad_tensors)
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is not None:
        inputs = _as_tuple(inputs)
        grads = _run(roots, retain_graph, create_graph, inputs=inputs, allow_unused=True)
        seen = {id(g.data) for _, g in roots}  # the caller's gradients: never store them as-is
        for t, g in zip(inputs, grads):
            if g is not None:
                _accumulate_leaf(t, g, create_graph, seen)
        return None
    _run(roots, retain_graph, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, returned (not accumulated).

    With ``create_graph=True`` the result is itself differentiable (WGAN-GP, score matching).

    >>> import gmcore as gm
    >>> x = gm.tensor([1.0, 2.0], requires_grad=True)
    >>> (g,) = gm.autograd.grad((x ** 3).sum(), x, create_graph=True)
    >>> g.tolist()
    [3.0, 12.0]
    >>> gm.autograd.grad(g.sum(), x)[0].tolist()
    [6.0, 12.0]
    """
    outputs = _as_tuple(outputs)
    inputs = _as_tuple(inputs)
    roots = _root_grads(outputs, grad_outputs)
    if retain_graph is None:
        retain_graph = create_graph
    return _run(roots, retain_graph, create_graph, inputs=inputs, allow_unused=allow_unused)


_Tensor = None  # set by gmcore.tensor once Tensor exists (tensor.py imports this module first)
