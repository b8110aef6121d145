"""gmcore.nn.utils.spectral_norm (torch's hook form) against torch.nn.utils.spectral_norm: the
same weight and the same u, v give the same normalised weight, the same updated u and v after a
training forward, none in eval, the same gradient, and torch's state_dict keys."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.utils import remove_spectral_norm, spectral_norm

torch = pytest.importorskip("torch")

CASES = [  # (gmcore layer, torch layer, input shape)
    (lambda: gm.nn.Linear(7, 5), lambda: torch.nn.Linear(7, 5), (3, 7)),
    (lambda: gm.nn.Conv2d(3, 4, 3, padding=1), lambda: torch.nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5)),
    (lambda: gm.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),       # dim 1: the output channels
     lambda: torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), (2, 4, 3, 3)),
]


def _pair(case, n_power_iterations=1):
    make_gm, make_torch, shape = case
    torch.manual_seed(0)
    t = torch.nn.utils.spectral_norm(make_torch().double(), n_power_iterations=n_power_iterations)
    g = spectral_norm(make_gm().double(), n_power_iterations=n_power_iterations)
    sd = {k: v.detach().numpy().copy() for k, v in t.state_dict().items()}
    g.load_state_dict({k: gm.tensor(v) for k, v in sd.items()})     # torch's weight, u and v
    x = np.random.default_rng(1).normal(size=shape)
    return g, t, x


def _close(a, b):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=["linear", "conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("iters", [1, 3])
def test_training_forward_matches_torch_weight_u_v_and_gradient(case, iters):
    g, t, x = _pair(case, iters)
    for _ in range(2):   # two steps: the second starts from the updated u
        yg, yt = g(gm.tensor(x)), t(torch.tensor(x))
        _close(yg, yt)
        _close(g.weight, t.weight)
        _close(g.weight_u, t.weight_u)
        _close(g.weight_v, t.weight_v)
    (yg ** 2).sum().backward()
    (yt ** 2).sum().backward()
    _close(g.weight_orig.grad, t.weight_orig.grad)


@pytest.mark.parametrize("case", CASES, ids=["linear", "conv2d", "conv_transpose2d"])
def test_eval_forward_reuses_u_and_v(case):
    g, t, x = _pair(case)
    g(gm.tensor(x)), t(torch.tensor(x))      # one training step moves u and v
    g.eval(), t.eval()
    u, v = g.weight_u.numpy().copy(), g.weight_v.numpy().copy()
    for _ in range(2):
        _close(g(gm.tensor(x)), t(torch.tensor(x)))
        _close(g.weight, t.weight)
    np.testing.assert_array_equal(g.weight_u.numpy(), u)
    np.testing.assert_array_equal(g.weight_v.numpy(), v)


def test_state_dict_keys_are_torchs_and_weight_is_not_a_parameter():
    torch.manual_seed(0)
    t = torch.nn.utils.spectral_norm(torch.nn.Conv2d(2, 3, 3))
    g = spectral_norm(gm.nn.Conv2d(2, 3, 3))
    assert sorted(g.state_dict()) == sorted(t.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    assert sorted(n for n, _ in g.named_parameters()) == ["bias", "weight_orig"]
    assert [n for n, _ in g.named_buffers()] == ["weight_u", "weight_v"]
    assert g.weight_u.shape == (3,) and g.weight_v.shape == (18,)
    assert abs(float((g.weight_u ** 2).sum().item()) - 1.0) < 1e-6


def test_power_iteration_converges_to_the_largest_singular_value():
    gm.manual_seed(0)
    m = spectral_norm(gm.nn.Linear(6, 4))
    w0 = m.weight_orig.detach().numpy().copy()
    for _ in range(60):
        m(gm.randn(1, 6))
    sigma = np.linalg.svd(w0, compute_uv=False)[0]
    np.testing.assert_allclose(m.weight.detach().numpy(), w0 / sigma, rtol=1e-4)


def test_remove_restores_a_plain_parameter_and_errors_are_named():
    gm.manual_seed(0)
    m = spectral_norm(gm.nn.Linear(3, 2))
    m(gm.randn(1, 3))
    m.eval()
    m(gm.randn(1, 3))
    w = m.weight.detach().numpy().copy()
    remove_spectral_norm(m)
    assert sorted(m.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(m.weight.detach().numpy(), w, rtol=1e-6)
    with pytest.raises(ValueError, match="not found"):
        remove_spectral_norm(m)
    with pytest.raises(RuntimeError, match="two spectral_norm hooks"):
        spectral_norm(spectral_norm(gm.nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="no parameter 'kernel'"):
        spectral_norm(gm.nn.Linear(3, 2), name="kernel")
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_norm(gm.nn.Linear(3, 2), n_power_iterations=0)
