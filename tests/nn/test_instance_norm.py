"""nn.InstanceNorm1d / InstanceNorm2d against torch (defaults, affine, running stats)."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.testing import gradcheck
from helpers import HAVE_TORCH

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


@pytest.mark.parametrize("cls,shape", [("InstanceNorm1d", (3, 4, 7)), ("InstanceNorm1d", (4, 7)),
                                       ("InstanceNorm2d", (2, 4, 3, 5)),
                                       ("InstanceNorm2d", (4, 3, 5))])
@pytest.mark.parametrize("kw", [{}, {"affine": True}, {"track_running_stats": True},
                                {"affine": True, "track_running_stats": True, "momentum": 0.3}])
@needs_torch
def test_instance_norm_matches_torch(cls, shape, kw):
    g = getattr(gm.nn, cls)(4, dtype=gm.float64, **kw)
    t = getattr(torch.nn, cls)(4, dtype=torch.float64, **kw)
    assert sorted(g.state_dict()) == sorted(t.state_dict())
    assert repr(g) == repr(t)
    rng = np.random.default_rng(0)
    if kw.get("affine"):
        w, b = rng.normal(size=4), rng.normal(size=4)
        g.load_state_dict({**g.state_dict(), "weight": gm.tensor(w), "bias": gm.tensor(b)})
        with torch.no_grad():
            t.weight.copy_(torch.tensor(w))
            t.bias.copy_(torch.tensor(b))
    for _step in range(2):
        x = rng.normal(2.0, 3.0, size=shape)
        np.testing.assert_allclose(g(gm.tensor(x)).detach().numpy(),
                                   t(torch.tensor(x)).detach().numpy(), atol=1e-12)
    if kw.get("track_running_stats"):
        np.testing.assert_allclose(g.running_mean.numpy(), t.running_mean.numpy(), atol=1e-12)
        np.testing.assert_allclose(g.running_var.numpy(), t.running_var.numpy(), atol=1e-12)
    g.eval()
    t.eval()
    x = rng.normal(size=shape)
    np.testing.assert_allclose(g(gm.tensor(x)).detach().numpy(),
                               t(torch.tensor(x)).detach().numpy(), atol=1e-12)


def test_instance_norm_grad_and_errors():
    m = gm.nn.InstanceNorm2d(2, affine=True, dtype=gm.float64)
    x = gm.tensor(np.random.default_rng(0).normal(size=(2, 2, 3, 3)), requires_grad=True)
    assert gradcheck(lambda a: m(a), [x])
    with pytest.raises(ValueError, match="expected 4D or 3D"):
        m(gm.zeros(2, 2))
    with pytest.raises(ValueError, match="expected 2 channels"):
        m(gm.zeros(1, 3, 2, 2, dtype=gm.float64))
