"""Tensor API, factories, dtypes and promotion, devices, conversion, DLPack, seeded randomness."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.testing import assert_close


# ---- creation and dtype inference ---------------------------------------------------------

@pytest.mark.parametrize("data, dtype", [
    (1.5, gm.float32), ([1.0, 2.0], gm.float32), (3, gm.int64), ([[1, 2]], gm.int64),
    (True, gm.bool), ([True, False], gm.bool), (np.zeros(2, np.float64), gm.float64),
    (np.zeros(2, np.int32), gm.int32), (np.zeros(2, np.float16), gm.float16),
])
def test_tensor_dtype_inference(data, dtype):
    assert gm.tensor(data).dtype == dtype


def test_tensor_copies_and_from_numpy_shares():
    a = np.arange(3.0)
    t = gm.tensor(a)
    a[0] = 9
    assert t.tolist() == [0.0, 1.0, 2.0]
    s = gm.from_numpy(a)
    a[1] = 7
    assert s.tolist() == [9.0, 7.0, 2.0]


def test_tensor_rejects_unsupported_data():
    with pytest.raises(TypeError, match="dtype <U1"):
        gm.tensor(["a"])
    with pytest.raises(TypeError, match="not supported"):
        gm.tensor(np.zeros(2, np.uint16))
    with pytest.raises(ValueError, match="can't build a tensor"):
        gm.tensor([[1, 2], [3]])


def test_factories_shapes_and_dtypes(device):
    assert gm.zeros(2, 3, device=device).shape == (2, 3)
    assert gm.ones((4,), dtype=gm.float64, device=device).dtype == gm.float64
    assert gm.full((2,), 7, device=device).dtype == gm.int64
    assert gm.full((2,), 7.0, device=device).tolist() == [7.0, 7.0]
    assert gm.empty(3, device=device).shape == (3,)
    assert gm.eye(3, device=device).tolist() == np.eye(3).tolist()
    assert gm.arange(5, device=device).dtype == gm.int64
    assert gm.arange(0, 1, 0.25, device=device).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert_close(gm.linspace(0, 1, 5, device=device), np.linspace(0, 1, 5).astype(np.float32))
    x = gm.randn(2, 5, dtype=gm.float64, device=device)
    assert gm.zeros_like(x).dtype == gm.float64 and gm.ones_like(x).shape == (2, 5)
    assert gm.randn_like(x).shape == (2, 5) and gm.rand_like(x).dtype == gm.float64
    r = gm.randint(3, 9, (1000,), device=device)
    assert r.dtype == gm.int64 and r.min().item() >= 3 and r.max().item() <= 8
    assert sorted(gm.randperm(6, device=device).tolist()) == list(range(6))


def test_factory_errors():
    with pytest.raises(ValueError, match="step must be non-zero"):
        gm.arange(0, 1, 0)
    with pytest.raises(ValueError, match="high .* must be greater than low"):
        gm.randint(5, 5, (2,))
    with pytest.raises(TypeError, match="floating dtype"):
        gm.randn(2, dtype=gm.int64)


def test_default_dtype_can_be_changed():
    gm.set_default_dtype(gm.float64)
    try:
        assert gm.tensor([1.0]).dtype == gm.float64 and gm.randn(2).dtype == gm.float64
    finally:
        gm.set_default_dtype(gm.float32)
    with pytest.raises(TypeError, match="floating"):
        gm.set_default_dtype(gm.int64)


# ---- promotion (PyTorch's rules) ----------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    (gm.float32, 2.5, gm.float32),      # a Python scalar does not up-cast
    (gm.float16, 2.5, gm.float16),
    (gm.int64, 2.5, gm.float32),        # ... except across categories, to the default float
    (gm.int32, 2, gm.int32),
    (gm.bool, 1, gm.int64),
    (gm.bool, True, gm.bool),
])
def test_promotion_with_scalars(a, b, expected):
    t = gm.ones(3, dtype=a)
    assert (t + b).dtype == expected
    assert (b * t).dtype == expected


@pytest.mark.parametrize("a, b, expected", [
    (gm.float32, gm.float64, gm.float64), (gm.int32, gm.float16, gm.float16),
    (gm.int32, gm.int64, gm.int64), (gm.uint8, gm.int8, gm.int16), (gm.bool, gm.int32, gm.int32),
])
def test_promotion_between_tensors(a, b, expected):
    assert (gm.ones(2, dtype=a) + gm.ones(2, dtype=b)).dtype == expected


def test_zero_dim_tensors_rank_below_dimensioned_ones():
    x = gm.ones(2, dtype=gm.float32)
    assert (x * gm.tensor(2.0, dtype=gm.float64)).dtype == gm.float32
    assert (gm.ones(2, dtype=gm.int64) * gm.tensor(2.0, dtype=gm.float64)).dtype == gm.float64


def test_integer_true_division_gives_float():
    assert (gm.tensor([3]) / gm.tensor([2])).tolist() == [1.5]
    assert (gm.tensor([3]) / 2).dtype == gm.float32


# ---- tensor attributes and conversion -----------------------------------------------------

def test_metadata():
    x = gm.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and x.size() == (2, 3, 4) and x.size(1) == 3
    assert x.ndim == 3 and x.dim() == 3 and x.numel() == 24 and x.element_size() == 4
    assert x.stride() == (12, 4, 1) and x.is_contiguous()
    assert str(x.device) == "cpu" and x.device == gm.device("cpu") and not x.is_cuda
    assert repr(x.shape) == "gmcore.Size([2, 3, 4])" and x.shape.numel() == 24


def test_item_tolist_numpy():
    assert gm.tensor([[2.5]]).item() == 2.5
    with pytest.raises(RuntimeError, match="3 elements cannot be converted"):
        gm.ones(3).item()
    assert gm.tensor([[1, 2]]).tolist() == [[1, 2]]
    x = gm.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\)\.numpy\(\)"):
        x.numpy()
    assert isinstance(x.detach().numpy(), np.ndarray)
    assert np.asarray(gm.ones(2)).dtype == np.float32


def test_bool_and_scalar_conversion():
    assert bool(gm.tensor([1.0])) and float(gm.tensor(2.0)) == 2.0 and int(gm.tensor([3])) == 3
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(gm.ones(2))


def test_to_dtype_and_device(device):
    x = gm.tensor([1.5, 2.5], device=device, requires_grad=True)
    y = x.to(gm.float64)
    assert y.dtype == gm.float64 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == gm.float32 and x.grad.tolist() == [3.0, 5.0]
    assert x.to(x.device) is x and x.to(gm.float32) is x
    assert x.to(device, gm.float16).dtype == gm.float16
    assert x.detach().double().dtype == gm.float64 and x.detach().long().dtype == gm.int64
    assert x.cpu().device == gm.device("cpu")
    z = gm.zeros(2, dtype=gm.float64)
    assert x.to(z).dtype == gm.float64 and x.type_as(z).dtype == gm.float64
    assert x.to(copy=True) is not x


def test_cuda_request_without_gpu_is_a_clear_error():
    if gm.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        gm.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        gm.ones(2).cuda()


def test_device_parsing():
    assert str(gm.device("cuda")) == "cuda:0" and gm.device("cuda:1").index == 1
    assert gm.device("cpu") == "cpu"
    for bad in ("gpu", "cuda:x", "cpu:1"):
        with pytest.raises(ValueError):
            gm.device(bad)


def test_clone_detach_contiguous():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    c = x.clone()
    assert c.requires_grad and c.grad_fn is not None and c.data is not x.data
    c.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    d = x.detach()
    assert d.data is x.data and not d.requires_grad
    t = gm.zeros(3, 4).T
    assert not t.is_contiguous() and t.contiguous().is_contiguous()


def test_repr():
    assert repr(gm.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(gm.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    assert "dtype=gmcore.float64" in repr(gm.tensor([1.0], dtype=gm.float64))
    assert "grad_fn=<MulBackward>" in repr(gm.tensor([1.0], requires_grad=True) * 2)


def test_dlpack_roundtrip_with_numpy():
    a = np.arange(6.0).reshape(2, 3)
    t = gm.from_dlpack(a)
    t.data[0, 0] = -1.0
    assert a[0, 0] == -1.0  # zero copy
    back = np.from_dlpack(t)
    back[1, 1] = 42.0
    assert t[1, 1].item() == 42.0
    with pytest.raises(RuntimeError, match="requires grad"):
        gm.ones(2, requires_grad=True).__dlpack__()


def test_inplace_methods():
    x = gm.zeros(3)
    x.add_(1).mul_(3).sub_(1).div_(2)
    assert x.tolist() == [1.0, 1.0, 1.0]
    x.fill_(2.5)
    assert x.tolist() == [2.5] * 3
    x.zero_()
    assert x.tolist() == [0.0] * 3
    x.copy_(gm.tensor([1.0, 2.0, 3.0]))
    assert x.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="can't be written in place"):
        x.add_(gm.ones(2, 3))


def test_new_factories():
    x = gm.ones(2, dtype=gm.float64)
    assert x.new_zeros(3).dtype == gm.float64 and x.new_ones(2, 2).shape == (2, 2)
    assert x.new_full((2,), 5.0).tolist() == [5.0, 5.0]
    assert x.new_tensor([1, 2]).dtype == gm.float64


# ---- randomness --------------------------------------------------------------------------

def test_manual_seed_reproduces(device):
    gm.manual_seed(123)
    a = gm.randn(5, device=device)
    b = gm.rand(3, device=device)
    gm.manual_seed(123)
    assert gm.randn(5, device=device).tolist() == a.tolist()
    assert gm.rand(3, device=device).tolist() == b.tolist()


def test_generator_streams_are_independent_and_reproducible():
    g1 = gm.Generator().manual_seed(5)
    g2 = gm.Generator().manual_seed(5)
    gm.randn(10)  # the default generator does not disturb g1/g2
    assert gm.randn(4, generator=g1).tolist() == gm.randn(4, generator=g2).tolist()
    state = g1.get_state()
    x = gm.rand(3, generator=g1)
    g1.set_state(state)
    assert gm.rand(3, generator=g1).tolist() == x.tolist()


def test_generator_device_mismatch():
    g = gm.Generator("cpu")
    t = gm.zeros(2)
    t.normal_(generator=g)
    with pytest.raises(RuntimeError, match="generator is on cpu but the tensor is on cuda"):
        from gmcore.random import _generator_for
        _generator_for(g, "cuda")


def test_random_distribution_moments():
    gm.manual_seed(0)
    x = gm.randn(200_000, dtype=gm.float64).numpy()
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    u = gm.rand(200_000, dtype=gm.float64).numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_augmented_assignment_is_in_place():
    w = gm.ones(2, requires_grad=True)
    (w * 3).sum().backward()
    same = w
    with gm.no_grad():
        w -= 0.5 * w.grad
        w *= 2
        w += 1
        w /= 2
    assert w is same and w.is_leaf and w.requires_grad
    assert w.tolist() == [0.0, 0.0]  # ((1 - 0.5 * 3) * 2 + 1) / 2
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w += 1


def test_inplace_fast_path_errors():
    i = gm.zeros(3, dtype=gm.int64)
    with pytest.raises(RuntimeError, match="can't be cast to the in-place output's dtype"):
        i.div_(2)
    x = gm.zeros(3)
    with pytest.raises(RuntimeError, match=r"result of shape \(2, 3\) can't be written in place"):
        x.add_(gm.ones(2, 3))
    with pytest.raises(RuntimeError, match="read-only"):
        gm.zeros(3).expand(2, 3).add_(1)
    i.add_(2)
    assert i.tolist() == [2, 2, 2]


def test_inplace_without_recording_bumps_version_and_keeps_identity():
    x = gm.ones(3)
    v0 = x._version.value
    data = x.data
    x.mul_(2).add_(gm.ones(3), alpha=3)
    assert x.data is data and x._version.value == v0 + 2
    assert x.tolist() == [5.0, 5.0, 5.0]


def test_dlpack_exchange_with_torch():
    torch = pytest.importorskip("torch")
    t = torch.arange(4, dtype=torch.float32)
    g = gm.from_dlpack(t)
    g.data[0] = 9.0
    assert t[0].item() == 9.0 and g.dtype == gm.float32  # zero copy, torch -> gmcore
    back = torch.from_dlpack(gm.ones(2, 2, dtype=gm.float64))
    assert back.dtype == torch.float64 and back.sum().item() == 4.0


def test_tensor_from_numpy_scalar_keeps_dtype():
    # torch.tensor(np.float64(x)) is float64: NumPy scalars carry their dtype like 0-d arrays
    assert gm.tensor(np.float64(1.5)).dtype == gm.float64
    assert gm.tensor(np.int32(3)).dtype == gm.int32
    assert gm.tensor(1.5).dtype == gm.float32          # Python floats take the default dtype


# ---- Tensor.register_hook (issue 11.14) --------------------------------------------------------

def test_register_hook_on_a_leaf_sees_the_summed_gradient_once():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.tolist()))
    (x * 3 + x * x).sum().backward()  # two paths into x: the hook gets their sum, once
    assert seen == [[5.0, 7.0]] and x.grad.tolist() == [5.0, 7.0]


def test_register_hook_replacement_and_remove():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    h = x.register_hook(lambda g: g * 10)
    (x * x).sum().backward()
    assert x.grad.tolist() == [20.0, 40.0]
    h.remove()
    x.grad = None
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_register_hook_on_a_non_leaf_changes_what_flows_on():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    seen = []
    y.register_hook(lambda g: seen.append(g.tolist()))
    y.register_hook(lambda g: g * 2)  # hooks run in order of registration
    (y * 3).sum().backward()
    assert seen == [[3.0, 3.0]] and x.grad.tolist() == [12.0, 24.0]


def test_register_hook_matches_torch_with_grad_and_create_graph():
    torch = pytest.importorskip("torch")
    results = []
    for lib in (gm, torch):
        x = lib.tensor([0.5, -1.5, 2.0], dtype=lib.float64, requires_grad=True)
        y = x.tanh()
        y.register_hook(lambda g: g * g + 1)
        x.register_hook(lambda g: g - 0.25)
        (g,) = lib.autograd.grad((y * y).sum(), x, create_graph=True)
        (gg,) = lib.autograd.grad(g.sum(), x)
        results.append((g.detach().numpy().copy() if lib is torch else g.detach().numpy(),
                        gg.numpy()))
    for a, b in zip(*results):
        assert_close(a, b)


def test_register_hook_errors():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        gm.ones(2).register_hook(lambda g: g)
    x = gm.ones(2, requires_grad=True)
    x.register_hook(lambda g: g.sum())
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).sum().backward()


# ---- multinomial (issue 11.14) -------------------------------------------------------------------

def test_multinomial_with_replacement_frequencies():
    w = np.array([1.0, 2.0, 0.0, 3.0, 4.0])
    s = gm.multinomial(gm.tensor(w), 20000, replacement=True,
                       generator=gm.Generator().manual_seed(3))
    assert s.dtype == gm.int64 and s.shape == (20000,)
    freq = np.bincount(s.numpy(), minlength=5) / 20000
    assert freq[2] == 0  # a zero weight is never drawn
    assert np.abs(freq - w / w.sum()).max() < 0.02  # ~5 standard errors; categories differ by 0.1


def test_multinomial_without_replacement_follows_sequential_draws():
    w = np.array([1.0, 2.0, 3.0, 4.0])
    p = w / w.sum()
    rows = 8000
    s = gm.tensor(np.tile(w, (rows, 1))).multinomial(2, generator=gm.Generator().manual_seed(5))
    s = s.numpy()
    assert s.shape == (rows, 2) and (s[:, 0] != s[:, 1]).all()
    first = np.bincount(s[:, 0], minlength=4) / rows
    # P(second = j) = sum_{i != j} p_i p_j / (1 - p_i): the renormalised second draw
    second_expected = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j)
                                for j in range(4)])
    second = np.bincount(s[:, 1], minlength=4) / rows
    assert np.abs(first - p).max() < 0.025 and np.abs(second - second_expected).max() < 0.025
    full = gm.multinomial(gm.tensor([[5.0, 0.0, 1.0, 2.0]] * 3), 3).numpy()
    assert (np.sort(full, axis=1) == [0, 2, 3]).all()  # every positive category, once


def test_multinomial_is_seeded_and_checks_its_input():
    w = gm.tensor([0.2, 0.3, 0.5])
    a = gm.multinomial(w, 5, True, generator=gm.Generator().manual_seed(9))
    b = gm.multinomial(w, 5, True, generator=gm.Generator().manual_seed(9))
    assert a.tolist() == b.tolist()
    for bad, n, repl, match in [
            (gm.tensor([1.0, -1.0]), 1, True, "element < 0"),
            (gm.tensor([1.0, float("inf")]), 1, True, "inf, nan"),
            (gm.tensor([1.0, float("nan")]), 1, True, "inf, nan"),
            (gm.tensor([[1.0, 1.0], [0.0, 0.0]]), 1, True, "sums to 0"),
            (gm.tensor([1.0, 1.0]), 3, False, "without replacement"),
            (gm.tensor([1.0, 0.0, 0.0]), 2, False, "non-zero weight"),
            (gm.tensor([1.0, 1.0]), 0, True, "n_sample <= 0"),
            (gm.ones(2, 2, 2), 1, True, "1 or 2 dim"),
            (gm.tensor([1, 2]), 1, True, "floating-point")]:
        with pytest.raises(RuntimeError, match=match):
            gm.multinomial(bad, n, repl)
