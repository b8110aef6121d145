"""The diffusion U-Net (gmcore/models/diffusion/unet.py): shapes, conditioning, zero init,
gradients, input errors. Its agreement with a torch transcription is checked by
benchmarks/bench_unet.py (run in tests/test_benchmarks.py)."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.diffusion.unet import UNet, timestep_embedding


def small(in_channels=1, out_channels=1, **kw):
    """A narrow U-Net that runs in milliseconds (8x8 input unless image_size says otherwise)."""
    return UNet(in_channels, out_channels, **{"channels": 8, "num_heads": 2, **kw})


def perturbed(net, seed=0, scale=0.1):
    """Lift the zero initialisation (output conv, last conv of each block, attention output) so
    every parameter can influence the output."""
    gm.manual_seed(seed)
    with gm.no_grad():
        for p in net.parameters():
            p.add_(scale * gm.randn(*p.shape))
    return net


def arr(t):
    return t.detach().numpy()


def x_of(b, c, s, seed=0):
    return gm.tensor(np.random.default_rng(seed).standard_normal((b, c, s, s)).astype(np.float32))


@pytest.mark.parametrize("cfg, side", [
    (dict(), 8),                                                                   # digits
    (dict(scale_shift_norm=True, num_classes=3), 8),
    (dict(channel_mult=(1, 2, 2), attention_resolutions=(14,), image_size=28), 28),  # MNIST
    (dict(in_channels=3, out_channels=6, channel_mult=(1, 2, 2),
          attention_resolutions=(16, 8), image_size=32), 32),                      # CIFAR
])
def test_shapes_and_zero_output_at_construction(cfg, side):
    net = small(**cfg)
    c_in, c_out = cfg.get("in_channels", 1), cfg.get("out_channels", 1)
    out = net(x_of(2, c_in, side), gm.tensor([0, 999]))
    assert tuple(out.shape) == (2, c_out, side, side)
    assert out.dtype == gm.float32
    assert float(out.abs().max()) == 0.0  # the output conv starts at zero


def test_default_digits_config_layout():
    net = UNet(1, 1)
    attn = [m for m in net.modules() if isinstance(m, gm.nn.SelfAttention2d)]
    # attention at the 4x4 level: 2 down blocks, 3 up blocks, and the middle block
    assert len(attn) == 6 and all(a.channels == 128 for a in attn)
    assert net.time_embed[0].in_features == 64 and net.time_embed[2].out_features == 256
    assert not hasattr(net, "label_embed")


def test_narrow_layers_use_a_dividing_group_count():
    net = small(channels=24, channel_mult=(1,), attention_resolutions=(8,), num_heads=3)
    norms = [m for m in net.modules() if isinstance(m, gm.nn.GroupNorm)]
    assert {n.num_groups for n in norms if n.num_channels == 24} == {12}
    assert {n.num_groups for n in norms if n.num_channels == 48} == {24}  # concatenated skips
    assert {a.num_groups for a in net.modules() if isinstance(a, gm.nn.SelfAttention2d)} == {12}
    wide = UNet(1, 1, channels=64)
    assert {n.num_groups for n in wide.modules() if isinstance(n, gm.nn.GroupNorm)} == {32}


def test_timestep_embedding_closed_form():
    t = gm.tensor([0.0, 1.5, 999.0])
    emb = timestep_embedding(t, 7).numpy()
    f = np.exp(-math.log(10000.0) * np.arange(3) / 3)
    want = np.concatenate([np.cos(t.numpy()[:, None] * f), np.sin(t.numpy()[:, None] * f),
                           np.zeros((3, 1))], 1)
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_time_conditioning_changes_the_output(scale_shift):
    net = perturbed(small(scale_shift_norm=scale_shift)).eval()
    x = x_of(3, 1, 8)
    a, b = net(x, gm.tensor([1, 2, 3])), net(x, gm.tensor([500, 2, 3]))
    d, size = arr((a - b).abs().sum((1, 2, 3))), arr(a.abs().sum((1, 2, 3)))
    # per example: only the changed t matters, and it matters (the narrow net's GroupNorms keep
    # two channels per group, so the block's per-channel time shift survives normalisation)
    assert d[0] > 0.01 * size[0] and d[1] == 0 and d[2] == 0
    # float t equal to the integers gives the same output; a scalar t is broadcast
    np.testing.assert_allclose(arr(net(x, gm.tensor([1.0, 2.0, 3.0]))), arr(a), rtol=1e-6)
    np.testing.assert_allclose(arr(net(x, 7)), arr(net(x, gm.tensor([7, 7, 7]))), rtol=1e-6)


def test_class_embedding_and_null_row():
    K = 10
    net = perturbed(small(num_classes=K)).eval()
    assert tuple(net.label_embed.weight.shape) == (K + 1, 32)
    x, t = x_of(2, 1, 8), gm.tensor([5, 5])
    a = net(x, t, gm.tensor([1, 1]))
    b = net(x, t, gm.tensor([2, 1]))
    d, size = arr((a - b).abs().sum((1, 2, 3))), arr(a.abs().sum((1, 2, 3)))
    assert d[0] > 0.01 * size[0] and d[1] == 0
    # no labels means the null row K (classifier-free guidance's unconditional branch)
    np.testing.assert_array_equal(arr(net(x, t)), arr(net(x, t, gm.tensor([K, K]))))


@pytest.mark.parametrize("scale_shift", [False, True])
def test_gradient_reaches_every_parameter(scale_shift):
    net = perturbed(small(num_classes=3, dropout=0.1, scale_shift_norm=scale_shift))
    out = net(x_of(2, 1, 8), gm.tensor([3.0, 400.0]), gm.tensor([0, 3]))
    (out ** 2).mean().backward()
    for name, p in net.named_parameters():
        if name == "label_embed.weight":  # only the looked-up rows 0 and 3
            assert float(p.grad[[0, 3]].abs().sum()) > 0 and float(p.grad[[1, 2]].abs().sum()) == 0
            continue
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_float_timesteps_are_differentiable():
    net = perturbed(small())
    t = gm.tensor([10.0, 20.0], requires_grad=True)
    net(x_of(2, 1, 8), t).sum().backward()
    assert t.grad is not None and float(t.grad.abs().sum()) > 0


@pytest.mark.parametrize("call, match", [
    (lambda n: n(x_of(2, 1, 7), gm.tensor([1, 2])), "divisible by 2"),
    (lambda n: n(x_of(2, 3, 8), gm.tensor([1, 2])), r"shape \(B, 1, H, W\)"),
    (lambda n: n(x_of(2, 1, 8), gm.tensor([1, 2, 3])), r"t must have shape \(2,\)"),
    (lambda n: n(x_of(2, 1, 8), gm.tensor([[1, 2]])), r"t must have shape \(2,\)"),
    (lambda n: n(x_of(2, 1, 8), gm.tensor([1, 2]), gm.tensor([0, 1])), "unconditional"),
])
def test_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(small())


def test_label_errors():
    net = small(num_classes=4)
    x, t = x_of(2, 1, 8), gm.tensor([1, 2])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
        net(x, t, gm.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
        net(x, t, gm.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        net(x, t, gm.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="int64"):
        net(x, t, gm.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="bool"):
        net(x, gm.tensor([True, False]))


def test_construction_errors():
    with pytest.raises(ValueError, match="none of the feature-map sizes"):
        small(attention_resolutions=(16,))
    with pytest.raises(ValueError, match="image_size 28 is not divisible"):
        small(channel_mult=(1, 2, 2, 2), image_size=28, attention_resolutions=())
    with pytest.raises(ValueError, match="channels must be an int"):
        small(channels=0)
    with pytest.raises(ValueError, match="dropout"):
        small(dropout=1.0)
