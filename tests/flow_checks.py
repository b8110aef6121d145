"""Checks every flow transform must pass (used by tests/nn/test_flow_*.py and the flow models).

``check_invertible(flow, x)``: ``inverse(forward(x))`` returns ``x`` and the two log-determinants
are opposite. ``check_logdet(flow, x)``: the forward log-determinant equals ``slogdet`` of the
Jacobian that autodiff computes, example by example (float64, small inputs).
``perturb(module, scale, seed)`` moves zero-initialised layers off the identity first.
"""
import numpy as np

import gmcore as gm


def perturb(module, scale=0.3, seed=0):
    """Add ``scale`` x standard-normal noise (NumPy's generator, ``seed``) to every parameter, so
    checks do not run at the identity that zero-initialised last layers give; returns ``module``."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = p.data + scale * rng.standard_normal(p.shape).astype(p.data.dtype)
    return module


def check_invertible(flow, x, context=None, atol=1e-5):
    """``inverse(forward(x)) == x`` to ``atol`` and logdet_inverse == -logdet_forward."""
    with gm.no_grad():
        z, ld = flow(x, context)
        x2, ld_inv = flow.inverse(z, context)
    assert tuple(ld.shape) == (x.shape[0],), f"forward logdet has shape {tuple(ld.shape)}"
    assert tuple(ld_inv.shape) == (x.shape[0],), f"inverse logdet has shape {tuple(ld_inv.shape)}"
    np.testing.assert_allclose(x2.numpy(), x.numpy(), atol=atol, rtol=0)
    scale = max(1.0, float(ld.abs().max()))
    np.testing.assert_allclose(ld_inv.numpy(), -ld.numpy(), atol=atol * scale, rtol=0)


def jacobian_logdets(flow, x, context=None):
    """log|det J| of ``forward`` at each example of ``x`` (float64), from autodiff Jacobians:
    one backward pass per output coordinate of one example at a time."""
    out = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1].detach().clone().requires_grad_(True)
        z, _ = flow(xb, None if context is None else context[b:b + 1])
        z = z.reshape(-1)
        rows = []
        for i in range(z.shape[0]):
            (g,) = gm.autograd.grad(z[i], [xb], retain_graph=True)
            rows.append(g.reshape(-1).numpy())
        sign, logabs = np.linalg.slogdet(np.stack(rows))
        assert sign != 0, f"example {b}: singular Jacobian"
        out.append(logabs)
    return np.array(out)


def check_logdet(flow, x, context=None, atol=1e-8):
    """The forward logdet equals log|det| of the autodiff Jacobian (use float64 inputs)."""
    with gm.no_grad():
        _, ld = flow(x, context)
    np.testing.assert_allclose(ld.numpy(), jacobian_logdets(flow, x, context), atol=atol, rtol=1e-7)
