"""Gradient clipping by hand (the torch comparison lives in test_optim_torch.py)."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.utils import clip_grad_norm_, clip_grad_value_


def _with_grads(*grads):
    ps = []
    for g in grads:
        p = gm.zeros(np.shape(g), dtype=gm.float64, requires_grad=True)
        p.grad = gm.tensor(np.asarray(g, dtype=np.float64))
        ps.append(p)
    return ps


def test_norm_and_scaling():
    ps = _with_grads([3.0, 0.0], [[4.0]])
    total = clip_grad_norm_(ps, max_norm=2.5)
    assert total.item() == 5.0
    coef = 2.5 / (5.0 + 1e-6)
    np.testing.assert_allclose(ps[0].grad.numpy(), [3 * coef, 0.0], rtol=1e-15)
    np.testing.assert_allclose(ps[1].grad.numpy(), [[4 * coef]], rtol=1e-15)


def test_no_scaling_below_max_and_inf_norm():
    ps = _with_grads([0.1, -0.2], [0.05])
    assert clip_grad_norm_(ps, 10.0, norm_type="inf").item() == pytest.approx(0.2)
    assert ps[0].grad.tolist() == [0.1, -0.2]
    assert clip_grad_norm_(ps, 1.0, norm_type=1).item() == pytest.approx(0.35)


def test_nonfinite_and_empty():
    ps = _with_grads([math.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    assert clip_grad_norm_([gm.zeros(2, requires_grad=True)], 1.0).item() == 0.0
    one = _with_grads([6.0, 8.0])[0]
    assert clip_grad_norm_(one, 1.0).item() == 10.0  # a single tensor is accepted


def test_clip_value():
    ps = _with_grads([-3.0, 0.5, 2.0])
    clip_grad_value_(ps, 1.0)
    assert ps[0].grad.tolist() == [-1.0, 0.5, 1.0]
