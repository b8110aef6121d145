"""Reference-gradient checks: ``gradcheck``, ``gradgradcheck`` and ``assert_close``.

Gradients are checked in float64 against central finite differences, two ways:

* along random directions: for a random input direction ``u`` and output cotangent ``v``,
  ``<v, (f(x + eps u) - f(x - eps u)) / 2 eps>`` must equal ``<J^T v, u>`` from autodiff
  (Chainer's ``check_backward``, JAX's ``check_grads``); this scales to large inputs;
* the full Jacobian, element by element, when the inputs are small (``max_full`` elements).

>>> import gmcore as gm
>>> from gmcore.testing import gradcheck, gradgradcheck
>>> x = gm.randn(3, 4, dtype=gm.float64, requires_grad=True)
>>> gradcheck(lambda t: (t.tanh() * t).sum(1), (x,))
True
>>> gradgradcheck(lambda t: (t.tanh() * t).sum(1), (x,))
True
"""
import numpy as np

from . import autograd
from .tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck", "assert_close", "GradcheckError", "default_tolerances"]


class GradcheckError(AssertionError):
    """Raised when analytical and numerical gradients disagree."""


# (rtol, atol) per dtype, as torch.testing.assert_close
_TOLERANCES = {
    np.dtype(np.float16): (1e-3, 1e-5),
    np.dtype(np.float32): (1.3e-6, 1e-5),
    np.dtype(np.float64): (1e-7, 1e-7),
}


def default_tolerances(dtype):
    """(rtol, atol) used by ``assert_close`` for a dtype; integers and bools compare exactly."""
    npd = dtype.np if hasattr(dtype, "np") else np.dtype(dtype)
    return _TOLERANCES.get(npd, (0.0, 0.0))


def _host(x):
    if isinstance(x, Tensor):
        x = x.data
    if hasattr(x, "get") and not isinstance(x, np.ndarray):
        x = x.get()
    return np.asarray(x)


def assert_close(actual, expected, *, rtol=None, atol=None, equal_nan=False, check_dtype=True,
                 msg=None):
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise, shapes equal.

    Tolerances default per dtype (see ``default_tolerances``). Works on tensors, arrays and
    numbers; on failure says how many elements differ and where the worst one is.

    >>> import gmcore as gm
    >>> from gmcore.testing import assert_close
    >>> assert_close(gm.tensor([1.0, 2.0]), gm.tensor([1.0, 2.0 + 1e-7]))
    """
    a, e = _host(actual), _host(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: actual {a.shape} vs expected {e.shape}")
    if check_dtype and isinstance(actual, Tensor) and isinstance(expected, Tensor) \
            and a.dtype != e.dtype:
        raise AssertionError(f"dtype mismatch: actual {a.dtype} vs expected {e.dtype}")
    dr, da = default_tolerances(np.result_type(a.dtype, e.dtype) if a.dtype.kind == "f" or
                                e.dtype.kind == "f" else a.dtype)
    rtol = dr if rtol is None else rtol
    atol = da if atol is None else atol
    if a.dtype.kind == "b" or e.dtype.kind == "b":
        bad = a != e
    else:
        a64, e64 = a.astype(np.float64), e.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(a64 - e64) <= atol + rtol * np.abs(e64))
        same_inf = (a64 == e64)  # equal infinities pass
        nan_ok = np.isnan(a64) & np.isnan(e64) if equal_nan else np.zeros_like(bad)
        bad &= ~(same_inf | nan_ok)
    if bad.any():
        n = int(bad.sum())
        idx = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
        detail = f"first mismatch at index {tuple(int(i) for i in idx)}: actual {a[idx]!r}, " \
                 f"expected {e[idx]!r}"
        if a.dtype.kind != "b":
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
                diff = np.where(np.isnan(diff), np.inf, diff)
            detail += f"; greatest absolute difference {np.max(diff):.3g}"
        head = f"{msg}: " if msg else ""
        raise AssertionError(f"{head}tensors are not close: {n} of {bad.size} elements differ "
                             f"(rtol={rtol}, atol={atol}); {detail}")


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _differentiable_outputs(fn, inputs):
    outs = _as_tuple(fn(*inputs))
    return [o for o in outs if isinstance(o, Tensor) and o.requires_grad]


def _eval(fn, inputs):
    """Outputs of ``fn`` as float64 host arrays (grad mode stays on: fn may itself call grad)."""
    outs = _as_tuple(fn(*inputs))
    return [_host(o).astype(np.float64) for o in outs
            if isinstance(o, Tensor) and o.data.dtype.kind == "f"]


def _perturbed(inputs, idx, delta):
    """Copies of ``inputs`` with ``delta`` (a host array) added to input ``idx``."""
    out = list(inputs)
    x = inputs[idx]
    xp = x._xp()
    t = Tensor(x.data + xp.asarray(delta, dtype=x.data.dtype))
    t.requires_grad = x.requires_grad
    out[idx] = t
    return out


def gradcheck(fn, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, n_directions=4, max_full=64,
              seed=0, raise_exception=True):
    """Check autodiff gradients of ``fn`` against central finite differences, in float64.

    ``inputs`` is a tuple of tensors; those with ``requires_grad`` are differentiated and must be
    float64. ``fn`` returns a tensor or a tuple of tensors. Runs ``n_directions`` random
    direction checks, plus the full Jacobian when the differentiated inputs hold at most
    ``max_full`` elements in total. Returns True, or raises ``GradcheckError`` naming the input,
    the mode and the worst discrepancy.
    """
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not diff_idx:
        raise ValueError("gradcheck: no input requires grad")
    for i in diff_idx:
        if inputs[i].data.dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences "
                             "need float64 inputs (use dtype=gmcore.float64)")
    rng = np.random.default_rng(seed)
    outs = _differentiable_outputs(fn, inputs)
    if not outs:
        raise GradcheckError("gradcheck: no output of fn requires grad")
    try:
        _check_directions(fn, inputs, diff_idx, outs, rng, eps, atol, rtol, n_directions)
        if sum(inputs[i].numel() for i in diff_idx) <= max_full:
            _check_full_jacobian(fn, inputs, diff_idx, eps, atol, rtol)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _vjp(fn, inputs, diff_idx, cotangents):
    outs = _differentiable_outputs(fn, inputs)
    grads = autograd.grad(outs, [inputs[i] for i in diff_idx],
                          grad_outputs=[Tensor(o._xp().asarray(c, dtype=o.data.dtype))
                                        for o, c in zip(outs, cotangents)],
                          allow_unused=True)
    return [np.zeros(inputs[i].shape) if g is None else _host(g).astype(np.float64)
            for i, g in zip(diff_idx, grads)]


def _check_directions(fn, inputs, diff_idx, outs, rng, eps, atol, rtol, n):
    for trial in range(n):
        vs = [rng.standard_normal(tuple(o.shape)) for o in outs]
        us = [rng.standard_normal(tuple(inputs[i].shape)) for i in diff_idx]
        analytic_grads = _vjp(fn, inputs, diff_idx, vs)
        for k, i in enumerate(diff_idx):
            analytic = float(np.sum(analytic_grads[k] * us[k]))
            plus = _eval(fn, _perturbed(inputs, i, eps * us[k]))
            minus = _eval(fn, _perturbed(inputs, i, -eps * us[k]))
            numeric = float(sum(np.sum(v * (p - m)) for v, p, m in zip(vs, plus, minus))
                            / (2 * eps))
            if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck: directional derivative mismatch for input {i} (trial {trial}): "
                    f"analytical {analytic:.10g} vs numerical {numeric:.10g} "
                    f"(atol={atol}, rtol={rtol})")


def _check_full_jacobian(fn, inputs, diff_idx, eps, atol, rtol):
    base = _eval(fn, inputs)
    n_out = sum(b.size for b in base)
    for k, i in enumerate(diff_idx):
        x = inputs[i]
        numeric = np.zeros((n_out, x.numel()))
        for j in range(x.numel()):
            d = np.zeros(x.numel())
            d[j] = eps
            d = d.reshape(tuple(x.shape))
            plus = _eval(fn, _perturbed(inputs, i, d))
            minus = _eval(fn, _perturbed(inputs, i, -d))
            numeric[:, j] = np.concatenate([(p - m).ravel() for p, m in zip(plus, minus)]) \
                / (2 * eps)
        analytic = np.zeros_like(numeric)
        for r in range(n_out):
            cot = np.zeros(n_out)
            cot[r] = 1.0
            parts, start = [], 0
            for b in base:
                parts.append(cot[start:start + b.size].reshape(b.shape))
                start += b.size
            analytic[r] = _vjp(fn, inputs, diff_idx, parts)[k].ravel()
        bad = ~(np.abs(analytic - numeric) <= atol + rtol * np.abs(numeric))
        if bad.any():
            r, c = np.unravel_index(int(np.argmax(np.abs(analytic - numeric))), bad.shape)
            raise GradcheckError(
                f"gradcheck: Jacobian mismatch for input {i} at (output {r}, input element "
                f"{c}): analytical {analytic[r, c]:.10g} vs numerical {numeric[r, c]:.10g}; "
                f"{int(bad.sum())} of {bad.size} entries differ")


def gradgradcheck(fn, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  n_directions=4, max_full=32, seed=0, raise_exception=True):
    """Check second-order gradients: ``gradcheck`` of the map (inputs, v) -> J(inputs)^T v.

    The backward is run with ``create_graph=True``, so this verifies that each op's backward is
    itself correctly differentiable (what WGAN-GP and score matching rely on).
    """
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _differentiable_outputs(fn, inputs)
    rng = np.random.default_rng(seed + 1)
    if grad_outputs is None:
        grad_outputs = [Tensor(o._xp().asarray(rng.standard_normal(tuple(o.shape))),
                               requires_grad=True) for o in outs]
    grad_outputs = list(_as_tuple(grad_outputs))
    n_in = len(inputs)

    def first_order(*args):
        xs, vs = args[:n_in], args[n_in:]
        out = _differentiable_outputs(fn, xs)
        grads = autograd.grad(out, [xs[i] for i in diff_idx], grad_outputs=list(vs),
                              create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None and g.requires_grad)

    return gradcheck(first_order, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol,
                     rtol=rtol, n_directions=n_directions, max_full=max_full, seed=seed,
                     raise_exception=raise_exception)
