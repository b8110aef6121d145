"""Recurrent layers: the fused BPTT against finite differences and the tensor-op reference,
cells and multi-layer modules against PyTorch (state_dict loaded, float64), shapes and errors."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.rnn import _Recurrence
from gmcore.testing import assert_close, gradcheck, gradgradcheck

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _t(a, grad=True):
    return gm.tensor(a, dtype=gm.float64, requires_grad=grad)


def _make(cls_name, fused=True, **kw):
    if cls_name.startswith("RNN_"):
        kw["nonlinearity"] = cls_name[4:].lower()
        cls_name = "RNN"
    m = getattr(gm.nn, cls_name)(dtype=gm.float64, **kw)
    m.fused = fused
    return m


# ---- torch-free -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_recurrence_gradcheck(mode, reverse):
    """The hand-written BPTT (every input, weight and bias) against finite differences."""
    rng = np.random.default_rng(0)
    T, B, H = 4, 2, 3
    G = GATES[mode] * H
    xproj = _t(rng.normal(size=(T, B, G)))
    h0 = _t(rng.normal(size=(B, H)))
    c0 = _t(rng.normal(size=(B, H))) if mode == "LSTM" else None
    w = _t(rng.normal(size=(G, H)) * 0.5)
    b = _t(rng.normal(size=(G,))) if mode == "GRU" else None
    if mode == "RNN_RELU":  # keep pre-activations away from the kink at 0
        xproj = _t(rng.uniform(0.5, 1.5, size=(T, B, G)))
        h0 = _t(rng.uniform(0.5, 1.5, size=(B, H)))
        w = _t(rng.uniform(0.0, 0.3, size=(G, H)))

    def fn(xproj, h0, *rest):
        rest = list(rest)
        c = rest.pop(0) if mode == "LSTM" else None
        return _Recurrence.apply(mode, reverse, xproj, h0, c, rest[0],
                                 rest[1] if len(rest) > 1 else None)
    inputs = [xproj, h0] + ([c0] if c0 is not None else []) + [w] + ([b] if b is not None else [])
    assert gradcheck(fn, inputs, atol=1e-6, rtol=1e-5, n_directions=3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_matches_reference_path(mode, bidirectional):
    """Fused and tensor-op paths: same outputs, states and parameter gradients."""
    rng = np.random.default_rng(1)
    fused = _make(mode, True, input_size=3, hidden_size=4, num_layers=2,
                  bidirectional=bidirectional)
    ref = _make(mode, False, input_size=3, hidden_size=4, num_layers=2,
                bidirectional=bidirectional)
    ref.load_state_dict(fused.state_dict())
    x = rng.normal(size=(5, 2, 3))
    results = []
    for m in (fused, ref):
        xt = _t(x)
        out, state = m(xt)
        hs = state if isinstance(state, tuple) else (state,)
        loss = (out ** 2).sum() + sum((h * h.tanh()).sum() for h in hs)
        loss.backward()
        results.append([out, *hs, xt.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*results):
        assert_close(a.detach(), b.detach(), atol=1e-12, rtol=1e-10)


def test_cells_gradcheck():
    rng = np.random.default_rng(2)
    lstm = gm.nn.LSTMCell(3, 2, dtype=gm.float64)
    gru = gm.nn.GRUCell(3, 2, dtype=gm.float64)
    rnn = gm.nn.RNNCell(3, 2, dtype=gm.float64)
    x, h, c = (_t(rng.normal(size=s)) for s in [(2, 3), (2, 2), (2, 2)])
    assert gradcheck(lambda x, h, c: lstm(x, (h, c)), (x, h, c))
    assert gradcheck(lambda x, h: gru(x, h), (x, h))
    assert gradcheck(lambda x, h: rnn(x, h), (x, h))
    assert gradgradcheck(lambda x, h: gru(x, h), (x, h))


def test_reference_path_double_backward_and_fused_refuses_it():
    rng = np.random.default_rng(3)
    m = _make("LSTM", False, input_size=2, hidden_size=2)
    x = _t(rng.normal(size=(3, 1, 2)))
    assert gradgradcheck(lambda x: m(x)[0], (x,), atol=1e-5, rtol=1e-4)
    m.fused = True
    if gm.dispatch.overrides().get("*") == "reference":
        return  # GMCORE_KERNELS=reference runs the reference path everywhere
    out = m(x)[0]
    (g,) = gm.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once-differentiable"):
        g.sum().backward()


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN_TANH"])
def test_shapes_batch_first_unbatched_bidirectional(cls):
    m = _make(cls, input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
              batch_first=True)
    x = gm.randn(4, 6, 3, dtype=gm.float64)
    out, state = m(x)
    assert out.shape == (4, 6, 10)
    for s in (state if cls == "LSTM" else (state,)):
        assert s.shape == (4, 4, 5)
    # unbatched (T, F) input equals batch-of-one
    out1, state1 = m(x[0:1])
    out_u, state_u = m(x[0])
    assert out_u.shape == (6, 10)
    assert_close(out_u, out1[0])
    h_u = state_u[0] if cls == "LSTM" else state_u
    assert h_u.shape == (4, 5)


def test_state_dict_names_and_init_range():
    m = gm.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    assert names[:8] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                         "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
                         "bias_hh_l0_reverse"]
    assert m.weight_ih_l1.shape == (16, 8) and m.weight_hh_l1.shape == (16, 4)
    assert all(float(p.abs().max()) <= 0.5 for p in m.parameters())  # U(-1/sqrt(4), 1/sqrt(4))
    g = gm.nn.GRU(3, 4, bias=False)
    assert [n for n, _ in g.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert g.weight_ih_l0.shape == (12, 3)


def test_dropout_between_layers_training_only():
    m = gm.nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = gm.randn(5, 2, 3)
    m.eval()
    a, b = m(x)[0], m(x)[0]
    assert_close(a, b)
    m.train()
    gm.manual_seed(0)
    c = m(x)[0]
    gm.manual_seed(0)
    d = m(x)[0]
    assert_close(c, d)
    assert float((c - a).abs().max()) > 1e-4
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        gm.nn.GRU(3, 4, dropout=0.2)


def test_errors():
    m = gm.nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        m(gm.randn(1, 2, 3, 3))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. "
                                           "Expected 3, got 5"):
        m(gm.randn(4, 2, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(2, 2, 4\), got \[1, 2, 4\]"):
        m(gm.randn(4, 2, 3), (gm.zeros(1, 2, 4), gm.zeros(2, 2, 4)))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size"):
        m(gm.randn(4, 2, 3), (gm.zeros(2, 2, 4), gm.zeros(2, 3, 4)))
    with pytest.raises(TypeError, match="tuple"):
        m(gm.randn(4, 2, 3), gm.zeros(2, 2, 4))
    with pytest.raises(RuntimeError, match="dtype"):
        m(gm.randn(4, 2, 3, dtype=gm.float64))
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        gm.nn.GRU(3, 4)(gm.randn(4, 2, 3), gm.zeros(1, 3, 4))
    with pytest.raises(NotImplementedError, match="proj_size"):
        gm.nn.LSTM(3, 4, proj_size=2)
    cell = gm.nn.LSTMCell(3, 4)
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(gm.randn(1, 2, 3))
    with pytest.raises(RuntimeError, match="inconsistent input_size: got 5 expected 3"):
        cell(gm.randn(2, 5))
    with pytest.raises(RuntimeError, match="batch size 2 doesn't match hidden0 batch size 3"):
        cell(gm.randn(2, 3), (gm.zeros(3, 4), gm.zeros(3, 4)))
    with pytest.raises(RuntimeError, match="hidden1 has inconsistent hidden_size: got 5"):
        cell(gm.randn(2, 3), (gm.zeros(2, 4), gm.zeros(2, 5)))
    with pytest.raises(ValueError, match="nonlinearity"):
        gm.nn.RNN(3, 4, nonlinearity="sigmoid")


# ---- against PyTorch ------------------------------------------------------------------------------

def _load_from_torch(ours, theirs):
    ours.load_state_dict({k: gm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layers_match_torch(mode, bidirectional, batch_first):
    torch = pytest.importorskip("torch")
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    if mode.startswith("RNN_"):
        tm = torch.nn.RNN(3, 4, nonlinearity=mode[4:].lower(), dtype=torch.float64, **kw)
    else:
        tm = getattr(torch.nn, mode)(3, 4, dtype=torch.float64, **kw)
    ours = _make(mode, input_size=3, hidden_size=4, **kw)
    _load_from_torch(ours, tm)
    rng = np.random.default_rng(4)
    D = 2 if bidirectional else 1
    x = rng.normal(size=(2, 5, 3) if batch_first else (5, 2, 3))
    states = [rng.normal(size=(2 * D, 2, 4)) for _ in range(2 if mode == "LSTM" else 1)]
    xt, xg = torch.tensor(x, requires_grad=True), _t(x)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    sg = [_t(s) for s in states]
    ot, ht = tm(xt, tuple(st) if mode == "LSTM" else st[0])
    og, hg = ours(xg, tuple(sg) if mode == "LSTM" else sg[0])
    ht = ht if mode == "LSTM" else (ht,)
    hg = hg if mode == "LSTM" else (hg,)
    ((ot ** 2).sum() + sum((h ** 3).sum() for h in ht)).backward()
    ((og ** 2).sum() + sum((h ** 3).sum() for h in hg)).backward()
    pairs = [(ot, og), (xt.grad, xg.grad)] + list(zip(ht, hg)) + \
        [(a.grad, b.grad) for a, b in zip(st, sg)]
    ours_p = dict(ours.named_parameters())
    pairs += [(p.grad, ours_p[n].grad) for n, p in tm.named_parameters()]
    for a, b in pairs:
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10,
                                   atol=1e-10)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch(name, batched):
    torch = pytest.importorskip("torch")
    tm = getattr(torch.nn, name)(3, 4, dtype=torch.float64)
    ours = getattr(gm.nn, name)(3, 4, dtype=gm.float64)
    _load_from_torch(ours, tm)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3) if batched else (3,))
    hs = [rng.normal(size=(2, 4) if batched else (4,)) for _ in range(2 if name == "LSTMCell"
                                                                       else 1)]
    xt, xg = torch.tensor(x, requires_grad=True), _t(x)
    ht = [torch.tensor(h) for h in hs]
    hg = [_t(h, False) for h in hs]
    rt = tm(xt, tuple(ht) if name == "LSTMCell" else ht[0])
    rg = ours(xg, tuple(hg) if name == "LSTMCell" else hg[0])
    rt = rt if isinstance(rt, tuple) else (rt,)
    rg = rg if isinstance(rg, tuple) else (rg,)
    sum((r ** 2).sum() for r in rt).backward()
    sum((r ** 2).sum() for r in rg).backward()
    ours_p = dict(ours.named_parameters())
    pairs = list(zip(rt, rg)) + [(xt.grad, xg.grad)] + \
        [(p.grad, ours_p[n].grad) for n, p in tm.named_parameters()]
    for a, b in pairs:
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10,
                                   atol=1e-10)
    # default (zero) hidden state
    np.testing.assert_allclose(ours(xg)[0].detach().numpy() if name == "LSTMCell"
                               else ours(xg).detach().numpy(),
                               (tm(xt)[0] if name == "LSTMCell" else tm(xt)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
