"""Layer modules (gmcore.nn): against PyTorch where installed (weights copied through
load_state_dict, so the state_dict keys are PyTorch's), and torch-free checks of shapes,
initialisation, running statistics, train/eval behaviour, errors and repr."""
import importlib.util
import math

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn as nn
from gmcore.testing import assert_close

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


# ---- torch peer -----------------------------------------------------------------------------

def _peer(ours, theirs, *arrays, train=True, steps=1, check_repr=True):
    """Copy torch's initialised state into ours, then compare outputs, input/parameter grads
    and the state after ``steps`` forward/backward passes, all in float64."""
    import torch

    theirs = theirs.double()
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict(sd)
    assert list(ours.state_dict()) == list(sd)
    if check_repr:
        assert repr(ours) == repr(theirs)
    ours.train(train)
    theirs.train(train)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        ours.zero_grad()
        theirs.zero_grad()
        xs = [gm.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
        ts = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
        y, yt = ours(*xs), theirs(*ts)
        assert tuple(y.shape) == tuple(yt.shape)
        assert_close(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10, check_dtype=False)
        w = rng.standard_normal(tuple(yt.shape))
        (y * gm.tensor(w)).sum().backward()
        (yt * torch.tensor(w)).sum().backward()
        for x, t in zip(xs, ts):
            if t.grad is not None:
                assert_close(x.grad, t.grad.numpy(), rtol=1e-9, atol=1e-10, check_dtype=False)
        tp = dict(theirs.named_parameters())
        op = dict(ours.named_parameters())
        assert list(op) == list(tp)
        for k, p in op.items():
            assert_close(p.grad, tp[k].grad.numpy(), rtol=1e-9, atol=1e-10, check_dtype=False)
    for k, v in theirs.state_dict().items():
        assert_close(ours.state_dict()[k], v.numpy(), rtol=1e-10, atol=1e-12, check_dtype=False)
    return ours, theirs


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@needs_torch
@pytest.mark.parametrize("make, shapes", [
    (lambda m: m.Linear(5, 3), [(4, 5)]),
    (lambda m: m.Linear(5, 3, bias=False), [(2, 3, 5)]),
    (lambda m: m.Bilinear(3, 4, 2), [(5, 3), (5, 4)]),
    (lambda m: m.Bilinear(3, 2, 2, bias=False), [(2, 3), (2, 2)]),
    (lambda m: m.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), [(2, 4, 9)]),
    (lambda m: m.Conv1d(3, 4, 4, padding="same", dilation=2), [(2, 3, 7)]),
    (lambda m: m.Conv1d(2, 3, 3, padding=2, padding_mode="replicate"), [(1, 2, 5)]),
    (lambda m: m.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2), [(2, 4, 7, 5)]),
    (lambda m: m.Conv2d(3, 5, 3, padding="same", padding_mode="reflect"), [(1, 3, 6, 5)]),
    (lambda m: m.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), [(1, 2, 4, 5)]),
    (lambda m: m.Conv2d(2, 3, 2, padding="valid", bias=False, dilation=2), [(2, 2, 5, 6)]),
    (lambda m: m.Conv2d(2, 4, 3, padding=1), [(2, 5, 4)]),  # unbatched (C, H, W)
    (lambda m: m.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
     [(2, 4, 5)]),
    (lambda m: m.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1), [(2, 4, 3, 4)]),
    (lambda m: m.ConvTranspose2d(2, 4, (3, 2), stride=(2, 3), dilation=2, groups=2, bias=False),
     [(1, 2, 3, 3)]),
    (lambda m: m.LayerNorm((3, 4)), [(2, 3, 4)]),
    (lambda m: m.LayerNorm(4, bias=False), [(3, 4)]),
    (lambda m: m.LayerNorm(4, eps=1e-3, elementwise_affine=False), [(3, 4)]),
    (lambda m: m.GroupNorm(2, 6), [(3, 6, 2, 2)]),
    (lambda m: m.GroupNorm(3, 6, affine=False, eps=1e-3), [(2, 6, 5)]),
    (lambda m: m.Flatten(), [(2, 3, 2, 2)]),
    (lambda m: m.Flatten(0, 1), [(2, 3, 2)]),
    (lambda m: m.Unflatten(1, (2, 3)), [(4, 6)]),
    (lambda m: m.Upsample(scale_factor=2), [(1, 2, 3, 3)]),
    (lambda m: m.Upsample(size=(5, 7), mode="bilinear", align_corners=True), [(1, 2, 3, 4)]),
    (lambda m: m.Upsample(scale_factor=3, mode="bilinear"), [(1, 1, 2, 3)]),
    (lambda m: m.PixelShuffle(2), [(1, 8, 2, 3)]),
    (lambda m: m.PixelUnshuffle(2), [(1, 2, 4, 6)]),
    (lambda m: m.MaxPool2d(2), [(1, 2, 5, 4)]),
    (lambda m: m.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), [(1, 2, 6, 5)]),
    (lambda m: m.MaxPool1d(3, stride=1, dilation=2), [(2, 2, 7)]),
    (lambda m: m.AvgPool2d(2, stride=1, padding=1, count_include_pad=False), [(1, 2, 3, 4)]),
    (lambda m: m.AvgPool2d(3, divisor_override=4), [(1, 1, 6, 6)]),
    (lambda m: m.AvgPool1d(2), [(2, 3, 7)]),
    (lambda m: m.AdaptiveAvgPool2d((2, 3)), [(1, 2, 5, 7)]),
    (lambda m: m.AdaptiveAvgPool1d(3), [(1, 2, 7)]),
])
def test_layer_matches_torch(make, shapes):
    import torch

    theirs = make(torch.nn)
    ours = make(nn).double()
    _peer(ours, theirs, *[_x(*s, seed=i) for i, s in enumerate(shapes)])


@needs_torch
@pytest.mark.filterwarnings("ignore:.*3D input")
@pytest.mark.parametrize("make", [
    lambda m: m.ReLU(), lambda m: m.ReLU6(), lambda m: m.LeakyReLU(0.1),
    lambda m: m.ELU(alpha=0.7), lambda m: m.GELU(), lambda m: m.GELU(approximate="tanh"),
    lambda m: m.SiLU(), lambda m: m.Mish(), lambda m: m.Sigmoid(), lambda m: m.Tanh(),
    lambda m: m.Softplus(beta=2.0, threshold=5.0), lambda m: m.Softsign(),
    lambda m: m.LogSigmoid(), lambda m: m.Hardtanh(-2.0, 0.5), lambda m: m.Softmax(dim=1),
    lambda m: m.LogSoftmax(dim=-1), lambda m: m.Identity(),
    lambda m: m.Dropout(0.3).eval(), lambda m: m.Dropout2d(0.3).eval(),
])
def test_activation_matches_torch(make):
    import torch

    x = _x(3, 4, 5) * 3
    _peer(make(nn), make(torch.nn), x, train=False)


@needs_torch
@pytest.mark.parametrize("make, shape", [
    (lambda m: m.BatchNorm1d(3), (6, 3)),
    (lambda m: m.BatchNorm1d(3, momentum=0.3, eps=1e-3), (4, 3, 5)),
    (lambda m: m.BatchNorm2d(2, momentum=None), (3, 2, 2, 3)),
    (lambda m: m.BatchNorm2d(2, affine=False), (3, 2, 2, 2)),
    (lambda m: m.BatchNorm2d(2, track_running_stats=False), (3, 2, 2, 2)),
])
def test_batchnorm_matches_torch(make, shape):
    import torch

    theirs = make(torch.nn)
    ours = make(nn).double()
    with torch.no_grad():  # non-trivial affine and statistics
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    ours, theirs = _peer(ours, theirs, _x(*shape) * 2 + 1, train=True, steps=3)
    # then evaluation with the accumulated running statistics
    _peer(ours, theirs, _x(*shape, seed=5), train=False)


@needs_torch
def test_embedding_matches_torch():
    import torch

    idx = np.array([[1, 2, 2], [0, 9, 4]])
    _peer(nn.Embedding(10, 4, padding_idx=2).double(), torch.nn.Embedding(10, 4, padding_idx=2),
          idx)
    _peer(nn.Embedding(10, 4, padding_idx=-1).double(), torch.nn.Embedding(10, 4, padding_idx=-1),
          idx)
    # max_norm renormalises the looked-up rows in place before the lookup
    theirs = torch.nn.Embedding(10, 4, max_norm=1.0)
    ours, theirs = _peer(nn.Embedding(10, 4, max_norm=1.0).double(), theirs, idx)
    assert_close(ours.weight, theirs.weight.detach().numpy(), rtol=1e-10, atol=1e-12,
                 check_dtype=False)
    e = nn.Embedding.from_pretrained(gm.tensor(np.eye(3)))
    et = torch.nn.Embedding.from_pretrained(torch.tensor(np.eye(3)))
    assert repr(e) == repr(et) and not e.weight.requires_grad


@needs_torch
def test_conv_transpose_output_size_matches_torch():
    import torch

    for size in [(7, 9), (8, 10)]:
        ours = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
        theirs = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        x = _x(1, 3, 4, 5)
        y = ours(gm.tensor(x), output_size=size)
        yt = theirs(torch.tensor(x), output_size=list(size))
        assert_close(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12, check_dtype=False)
    with pytest.raises(ValueError, match="valid sizes range"):
        ours(gm.tensor(x), output_size=(12, 12))


@needs_torch
def test_default_init_distributions_match_torch():
    """Same formulas as torch's reset_parameters: empirical bounds and moments agree."""
    import torch

    torch.manual_seed(0)
    gm.manual_seed(0)
    # (constructor, U(-b, b) bound of every parameter: 1/sqrt(fan_in))
    for make, bound in [(lambda m: m.Linear(400, 300), 1 / 20),
                        (lambda m: m.Conv2d(16, 32, 5), 1 / 20),
                        (lambda m: m.ConvTranspose2d(16, 32, 5, groups=2), 1 / 20),
                        (lambda m: m.Bilinear(25, 20, 50), 1 / 5),
                        (lambda m: m.Conv1d(40, 60, 3), 1 / math.sqrt(120))]:
        ours, theirs = make(nn), make(torch.nn)
        for (k, p), (kt, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert k == kt and tuple(p.shape) == tuple(pt.shape) and p.dtype == gm.float32
            for arr in (p.detach().numpy(), pt.detach().numpy()):
                arr = arr.astype(np.float64)
                assert np.abs(arr).max() <= bound
                if arr.size >= 1000:  # uniform: max near the bound, std = bound / sqrt(3)
                    assert np.abs(arr).max() > 0.98 * bound
                    assert abs(arr.std() - bound / math.sqrt(3)) < 0.05 * bound
    e, et = nn.Embedding(300, 100), torch.nn.Embedding(300, 100)
    assert abs(e.weight.std().item() - et.weight.std().item()) < 0.02


# ---- torch-free checks ----------------------------------------------------------------------

def test_linear_shapes_init_and_errors():
    gm.manual_seed(0)
    fc = nn.Linear(50, 7)
    assert tuple(fc.weight.shape) == (7, 50) and tuple(fc.bias.shape) == (7,)
    bound = 1 / math.sqrt(50)
    assert fc.weight.abs().max().item() <= bound and fc.bias.abs().max().item() <= bound
    assert fc(gm.randn(2, 3, 50)).shape == (2, 3, 7)
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]
    assert repr(nn.Linear(3, 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"
    with pytest.warns(UserWarning, match="zero-element"):
        lin0 = nn.Linear(0, 3)
    y = lin0(gm.zeros(2, 0))  # fan_in 0: bias 0, output is the bias
    assert y.shape == (2, 3)
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 3)
    m = nn.Linear(3, 2, dtype=gm.float64)
    assert m.weight.dtype == gm.float64 and m(gm.randn(1, 3, dtype=gm.float64)).dtype == gm.float64


def test_linear_forward_backward_by_hand():
    fc = nn.Linear(3, 2).double()
    x = gm.randn(4, 3, dtype=gm.float64, requires_grad=True)
    y = fc(x)
    expected = x.detach().numpy() @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
    assert_close(y, expected)
    y.sum().backward()
    assert_close(fc.bias.grad, np.full(2, 4.0))
    assert_close(fc.weight.grad, np.tile(x.detach().numpy().sum(0), (2, 1)))
    assert gm.testing.gradcheck(lambda w, b, x: nn.functional.linear(x, w, b),
                                (fc.weight, fc.bias, x))


def test_conv_shapes_and_errors():
    c = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    assert tuple(c.weight.shape) == (8, 2, 3, 3)
    assert c(gm.randn(2, 4, 9, 7)).shape == (2, 8, 5, 4)
    assert nn.Conv2d(3, 6, (2, 4), padding="same")(gm.randn(1, 3, 5, 6)).shape == (1, 6, 5, 6)
    assert nn.Conv1d(3, 6, 4, padding="valid")(gm.randn(1, 3, 9)).shape == (1, 6, 6)
    t = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    assert tuple(t.weight.shape) == (4, 3, 3, 3)
    assert t(gm.randn(1, 4, 3, 3)).shape == (1, 6, 7, 7)
    assert t(gm.randn(1, 4, 3, 3), output_size=(8, 8)).shape == (1, 6, 8, 8)
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 6, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="Invalid padding string"):
        nn.Conv1d(3, 6, 3, padding="full")
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 6, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match='Only "zeros"'):
        nn.ConvTranspose2d(3, 6, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 6, (3, 3, 3))
    with pytest.raises(RuntimeError, match="channels"):
        nn.Conv2d(3, 6, 3)(gm.randn(1, 4, 5, 5))
    assert repr(nn.Conv2d(2, 4, 3, padding="same", bias=False)) == \
        "Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=same, bias=False)"
    assert repr(nn.ConvTranspose1d(2, 4, 3, stride=2, output_padding=1, groups=2, dilation=2)) == \
        ("ConvTranspose1d(2, 4, kernel_size=(3,), stride=(2,), dilation=(2,), "
         "output_padding=(1,), groups=2)")


def test_conv_padding_mode_by_hand():
    """'circular' padding equals padding the input by wrap-around, then a valid convolution."""
    c = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False).double()
    x = gm.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=gm.float64)
    w = c.weight.detach().numpy()[0, 0]
    xp = np.array([4.0, 1.0, 2.0, 3.0, 4.0, 1.0])
    expected = np.array([xp[i:i + 3] @ w for i in range(4)])
    assert_close(c(x)[0, 0], expected)


def test_embedding_behaviour():
    gm.manual_seed(0)
    e = nn.Embedding(5, 3, padding_idx=1)
    assert e.weight[1].tolist() == [0.0, 0.0, 0.0]
    idx = gm.tensor([[1, 3], [3, 0]])
    out = e(idx)
    assert out.shape == (2, 2, 3)
    out.sum().backward()
    g = e.weight.grad.numpy()
    assert_close(g[1], np.zeros(3))
    assert_close(g[3], np.full(3, 2.0))
    assert_close(g[0], np.ones(3))
    assert nn.Embedding(5, 3, padding_idx=-2).padding_idx == 3
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 3, padding_idx=5)
    with pytest.raises(NotImplementedError, match="sparse"):
        nn.Embedding(5, 3, sparse=True)
    # max_norm: rows used are scaled to norm <= max_norm, the others untouched
    e = nn.Embedding.from_pretrained(gm.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]]),
                                     max_norm=1.0)
    e(gm.tensor([0, 1]))
    w = e.weight.numpy()
    assert np.linalg.norm(w[0]) == pytest.approx(1.0, abs=1e-6)
    assert_close(w[1], np.array([0.3, 0.4], dtype=np.float32))
    assert_close(w[2], np.array([6.0, 8.0], dtype=np.float32))
    assert repr(nn.Embedding(5, 3, padding_idx=1, max_norm=2.0)) == \
        "Embedding(5, 3, padding_idx=1, max_norm=2.0)"
    frozen = nn.Embedding.from_pretrained(gm.ones(2, 2), freeze=False)
    assert frozen.weight.requires_grad


def test_batchnorm_running_stats_by_hand():
    bn = nn.BatchNorm1d(2, momentum=0.25).double()
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)) * 3 + 1
    rm, rv = np.zeros(2), np.ones(2)
    for x in (x1, x2):
        y = bn(gm.tensor(x))
        rm = 0.75 * rm + 0.25 * x.mean(0)
        rv = 0.75 * rv + 0.25 * x.var(0, ddof=1)
        assert_close(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5))
    assert_close(bn.running_mean, rm)
    assert_close(bn.running_var, rv)
    assert bn.num_batches_tracked.dtype == gm.int64 and int(bn.num_batches_tracked) == 2
    assert tuple(bn.num_batches_tracked.shape) == ()
    # evaluation: running statistics, no update
    bn.eval()
    x3 = rng.standard_normal((4, 2))
    assert_close(bn(gm.tensor(x3)), (x3 - rm) / np.sqrt(rv + 1e-5))
    assert_close(bn.running_mean, rm)
    assert int(bn.num_batches_tracked) == 2


def test_batchnorm_cumulative_average():
    """momentum=None: the running stats are the plain average of the batch statistics."""
    bn = nn.BatchNorm2d(3, momentum=None).double()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 3, 2, 2)) * (i + 1) + i for i in range(4)]
    for x in xs:
        bn(gm.tensor(x))
    means = [x.mean((0, 2, 3)) for x in xs]
    vars_ = [x.var((0, 2, 3), ddof=1) for x in xs]
    assert_close(bn.running_mean, np.mean(means, 0))
    assert_close(bn.running_var, np.mean(vars_, 0))
    assert int(bn.num_batches_tracked) == 4


def test_batchnorm_modes_and_errors():
    x = gm.randn(4, 3, 2, 2) * 2 + 1
    bn = nn.BatchNorm2d(3, track_running_stats=False)
    assert bn.running_mean is None and list(bn.state_dict()) == ["weight", "bias"]
    y_train = bn(x)
    y_eval = bn.eval()(x)  # no running stats: batch statistics in eval too
    assert_close(y_train, y_eval)
    bn = nn.BatchNorm2d(3, affine=False)
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    bn.eval()
    assert_close(bn(x), x.numpy() / np.sqrt(1 + 1e-5), rtol=1e-6)  # fresh stats: (x-0)/sqrt(1+eps)
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(gm.randn(4, 3))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(gm.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(gm.randn(1, 3))
    bn = nn.BatchNorm1d(3)
    bn(gm.randn(4, 3))
    bn.reset_running_stats()
    assert bn.running_mean.tolist() == [0.0] * 3 and int(bn.num_batches_tracked) == 0


def test_norm_layers_by_hand():
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    ln = nn.LayerNorm((4, 3)).double()
    mu = x.mean((1, 2), keepdims=True)
    assert_close(ln(gm.tensor(x)), (x - mu) / np.sqrt(x.var((1, 2), keepdims=True) + 1e-5))
    assert tuple(ln.weight.shape) == (4, 3) and ln.weight.detach().numpy().min() == 1
    gn = nn.GroupNorm(2, 4).double()
    g = x.reshape(2, 2, 6)
    ref = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5))
    assert_close(gn(gm.tensor(x)), ref.reshape(x.shape))
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == ["weight"]


def test_dropout_train_eval():
    gm.manual_seed(0)
    d = nn.Dropout(0.25)
    y = d(gm.ones(20000)).numpy()
    assert set(np.unique(y).tolist()) <= {0.0, float(np.float32(1 / 0.75))}
    assert abs((y == 0).mean() - 0.25) < 0.02
    d.eval()
    x = gm.randn(5)
    assert d(x) is x or (d(x) == x).all()
    d2 = nn.Dropout2d(0.5)
    y = d2(gm.ones(8, 16, 3, 3)).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))
    assert 0.3 < (per_channel[..., 0] == 0).mean() < 0.7
    with pytest.warns(UserWarning, match="3D input"):
        d2(gm.ones(2, 3, 4))
    y = nn.Dropout1d(0.5)(gm.ones(3, 5)).numpy()  # unbatched (C, L)
    assert np.all((y == 0).all(-1) | (y == 2).all(-1))
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1, inplace=False)"
    assert nn.Dropout(1.0)(gm.ones(3)).tolist() == [0.0, 0.0, 0.0]


def test_activation_modules_by_hand():
    x = gm.tensor([-2.0, -0.5, 0.0, 1.5, 30.0], dtype=gm.float64)
    a = x.numpy()
    cases = [
        (nn.ReLU(), np.maximum(a, 0)),
        (nn.LeakyReLU(0.2), np.where(a > 0, a, 0.2 * a)),
        (nn.ELU(0.5), np.where(a > 0, a, 0.5 * np.expm1(a))),
        (nn.SiLU(), a / (1 + np.exp(-a))),
        (nn.Mish(), a * np.tanh(np.log1p(np.exp(a)))),
        (nn.Sigmoid(), 1 / (1 + np.exp(-a))),
        (nn.Tanh(), np.tanh(a)),
        (nn.Softplus(), np.where(a > 20, a, np.log1p(np.exp(a)))),
        (nn.Hardtanh(-1.0, 1.0), np.clip(a, -1, 1)),
        (nn.Softmax(dim=0), np.exp(a - a.max()) / np.exp(a - a.max()).sum()),
        (nn.ReLU6(), np.clip(a, 0, 6)),
    ]
    for mod, expected in cases:
        assert_close(mod(x), expected, rtol=1e-12, atol=1e-12)
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    assert repr(nn.Softmax(dim=-1)) == "Softmax(dim=-1)"
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("erf")
    assert gm.testing.gradcheck(nn.Mish(), (gm.randn(6, dtype=gm.float64, requires_grad=True),))


def test_shape_and_pool_modules():
    assert nn.Flatten()(gm.zeros(2, 3, 4)).shape == (2, 12)
    assert nn.Unflatten(-1, (2, -1))(gm.zeros(3, 8)).shape == (3, 2, 4)
    assert nn.Upsample(size=(4, 6))(gm.zeros(1, 1, 2, 3)).shape == (1, 1, 4, 6)
    assert nn.PixelUnshuffle(2)(nn.PixelShuffle(2)(gm.arange(32.0).reshape(1, 8, 2, 2))).tolist() \
        == gm.arange(32.0).reshape(1, 8, 2, 2).tolist()
    mp = nn.MaxPool2d(2, return_indices=True)
    out, idx = mp(gm.arange(16.0).reshape(1, 1, 4, 4))
    assert out.shape == idx.shape == (1, 1, 2, 2)
    assert repr(nn.MaxPool2d(2)) == \
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool2d(3, 1)) == "AvgPool2d(kernel_size=3, stride=1, padding=0)"
    assert repr(nn.Upsample(size=4, mode="bilinear")) == "Upsample(size=4, mode='bilinear')"


def test_module_in_sequential_trains():
    """A small conv net: every parameter gets a gradient, a few SGD steps lower the loss."""
    gm.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, 3))
    x = gm.randn(8, 1, 4, 4)
    target = gm.randint(0, 3, (8,))
    losses = []
    for _ in range(5):
        net.zero_grad()
        loss = nn.functional.cross_entropy(net(x), target)
        loss.backward()
        losses.append(loss.item())
        with gm.no_grad():
            for p in net.parameters():
                assert p.grad is not None and p.grad.shape == p.shape
                p -= 0.1 * p.grad
    assert losses[-1] < losses[0]
