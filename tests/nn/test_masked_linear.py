"""nn.MaskedLinear: forward against float64 NumPy, exact zero gradients through masked weights,
init like Linear, mask buffer in state_dict, clear errors."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.testing import gradcheck


def _layer(in_f, out_f, seed=0, bias=True, density=0.5, device="cpu"):
    gm.manual_seed(seed)
    fc = gm.nn.MaskedLinear(in_f, out_f, bias=bias).double().to(device)
    mask = np.random.default_rng(seed).random((out_f, in_f)) < density
    fc.set_mask(mask)
    return fc, mask


@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_float64_numpy(device, bias):
    fc, mask = _layer(7, 5, bias=bias, device=device)
    x = gm.randn(3, 2, 7, dtype=gm.float64, device=device)
    w, xs = fc.weight.detach().cpu().numpy(), x.cpu().numpy()
    want = xs @ (w * mask).T + (fc.bias.detach().cpu().numpy() if bias else 0.0)
    np.testing.assert_allclose(fc(x).detach().cpu().numpy(), want, rtol=1e-12, atol=1e-12)


def test_masked_paths_get_exactly_zero_gradient():
    fc, mask = _layer(9, 6, seed=3)
    x = gm.randn(4, 9, dtype=gm.float64, requires_grad=True)
    for o in range(6):
        x.grad = None
        fc.zero_grad()
        fc(x)[:, o].sum().backward()
        blocked = ~mask[o]
        assert np.all(x.grad.numpy()[:, blocked] == 0.0)             # exactly zero
        assert np.all(x.grad.numpy()[:, ~blocked] != 0.0)
        assert np.all(fc.weight.grad.numpy()[~mask] == 0.0)          # masked weights: no update


def test_gradients_against_finite_differences():
    fc, _ = _layer(4, 3, seed=1)
    x = gm.randn(2, 4, dtype=gm.float64, requires_grad=True)
    assert gradcheck(lambda x, w: gm.nn.functional.linear(x, w * fc.mask, fc.bias), (x, fc.weight))
    assert gradcheck(lambda x: fc(x), (x,))


def test_against_torch():
    torch = pytest.importorskip("torch")
    fc, mask = _layer(6, 4, seed=2)
    x = np.random.default_rng(0).standard_normal((5, 6))
    w, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    want = torch.nn.functional.linear(torch.tensor(x), torch.tensor(w) * torch.tensor(mask), torch.tensor(b))
    np.testing.assert_allclose(fc(gm.tensor(x)).detach().numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


def test_default_is_a_plain_linear_with_torch_init():
    gm.manual_seed(0)
    fc = gm.nn.MaskedLinear(50, 40)
    assert fc.mask.shape == (40, 50) and float(fc.mask.min()) == 1.0
    bound = 1 / math.sqrt(50)
    w = fc.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(fc.bias.detach().numpy()).max() <= bound
    x = gm.randn(3, 50)
    np.testing.assert_allclose(fc(x).detach().numpy(), gm.nn.functional.linear(x, fc.weight, fc.bias)
                               .detach().numpy(), rtol=1e-6)


def test_mask_is_a_buffer_in_state_dict():
    fc, mask = _layer(5, 3)
    assert "mask" in fc.state_dict() and "mask" not in dict(fc.named_parameters())
    other = gm.nn.MaskedLinear(5, 3).double()
    other.load_state_dict(fc.state_dict())
    np.testing.assert_array_equal(other.mask.numpy(), mask.astype(np.float64))
    fc.set_mask(gm.ones(3, 5))                 # Tensors and lists are accepted too
    fc.set_mask([[1, 0, 0, 0, 0]] * 3)
    assert int(fc.mask.sum().item()) == 3 and "connections=3" in repr(fc)


def test_set_mask_errors():
    fc = gm.nn.MaskedLinear(4, 2)
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        fc.set_mask(np.ones((4, 2)))
    with pytest.raises(ValueError, match="0 or 1"):
        fc.set_mask(np.full((2, 4), 0.5))
