"""Shared fixtures of the optimizer tests."""
import types

import numpy as np
import pytest

SHAPES = [(5, 3), (3,), (), (2, 1, 4)]


def init_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.normal(size=s)) for s in SHAPES]


def grad_of(arrays, step, seed=1):
    """Gradient of sum(a (p - t)^2 + 0.1 p^4 + sin(p)) with a step-dependent twist; the third
    tensor gets no gradient on step 3 (an optimizer must skip it)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, p in enumerate(arrays):
        a = rng.uniform(0.5, 2.0, size=np.shape(p))
        t = rng.normal(size=np.shape(p))
        g = 2 * a * (p - t) + 0.4 * p ** 3 + np.cos(p) * (1 + 0.1 * step)
        out.append(None if (i == 2 and step == 3) else np.asarray(g))
    return out


@pytest.fixture
def problem():
    """``init_arrays(seed)`` and ``grad_of(arrays, step)`` (see the module docstring)."""
    return types.SimpleNamespace(init_arrays=init_arrays, grad_of=grad_of)
