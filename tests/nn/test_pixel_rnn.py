"""PixelRNN's layers (gmcore.nn.pixel_rnn): skew/unskew values and round trip, the banded
Row LSTM and Diagonal LSTM against a pixel-by-pixel NumPy LSTM
and against LSTMCell on one-line images, fused against reference (values and gradients),
the causal context of each layer, RGB unit groups, and clear errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
from gmcore.nn.pixel_rnn import _lstm_lines
from gmcore.testing import gradcheck, gradgradcheck


def _np(t):
    return t.detach().numpy()


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


# ---- skew / unskew -------------------------------------------------------------------------

def test_skew_values():
    x = gm.tensor(np.arange(1, 7, dtype=np.float64).reshape(1, 1, 3, 2))
    np.testing.assert_array_equal(_np(gm.nn.skew(x))[0, 0],
                                  [[1, 2, 0, 0], [0, 3, 4, 0], [0, 0, 5, 6]])


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
def test_skew_round_trip_and_positions(B, C, H, W):
    a = np.random.default_rng(H * 7 + W).standard_normal((B, C, H, W))
    s = _np(gm.nn.skew(gm.tensor(a)))
    assert s.shape == (B, C, H, H + W - 1)
    want = np.zeros_like(s)
    for r in range(H):
        want[:, :, r, r:r + W] = a[:, :, r]
    np.testing.assert_array_equal(s, want)
    np.testing.assert_array_equal(_np(gm.nn.unskew(gm.tensor(s))), a)


def test_skew_gradient_is_unskew():
    x = gm.randn(2, 3, 4, 5, dtype=gm.float64).requires_grad_(True)
    g = gm.randn(2, 3, 4, 8, dtype=gm.float64)
    (gx,) = gm.autograd.grad((gm.nn.skew(x) * g).sum(), [x])
    np.testing.assert_array_equal(_np(gx), _np(gm.nn.unskew(g)))


def test_skew_errors():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gm.nn.skew(gm.randn(3, 4, 5))
    with pytest.raises(ValueError, match="width"):
        gm.nn.unskew(gm.randn(1, 1, 3, 4), width=3)
    with pytest.raises(TypeError, match="Tensor"):
        gm.nn.unskew(np.zeros((1, 1, 2, 2)))


# ---- the LSTMs against pixel-by-pixel NumPy ---------------------------------------------------

def _cell(pre, c_prev):
    i, f, g, o = np.split(pre, 4, axis=-1)
    c = _sig(f) * c_prev + _sig(i) * np.tanh(g)
    return _sig(o) * np.tanh(c), c


def _row_lstm_numpy(layer, x):
    """Pixel loop: gates(r, j) = masked 1 x k conv of row r + width-k conv of h(r - 1, .)."""
    B, C, H, W = x.shape
    h_ = layer.hidden
    wis = _np(layer.input_to_state.weight)[:, :, 0] * layer.input_to_state.mask[:, :, 0]
    bis, wss = _np(layer.input_to_state.bias), _np(layer.weight_ss)
    k = wss.shape[2]
    p = k // 2
    hs, cs = np.zeros((B, H + 1, W + 2 * p, h_)), np.zeros((B, H + 1, W, h_))
    xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (p, p)))
    for r in range(H):
        for j in range(W):
            pre = bis + sum(xp[:, :, r, j + t] @ wis[:, :, t].T + hs[:, r, j + t] @ wss[:, :, t].T
                            for t in range(k))
            hs[:, r + 1, j + p], cs[:, r + 1, j] = _cell(pre, cs[:, r, j])
    return hs[:, 1:, p:p + W].transpose(0, 3, 1, 2)


def _diagonal_lstm_numpy(layer, x):
    """Pixel loop: gates(r, j) = 1x1 conv + K0 h(r - 1, j) + K1 h(r, j - 1); c from (r, j - 1)."""
    B, C, H, W = x.shape
    h_ = layer.hidden
    wis, bis = _np(layer.input_to_state.weight)[:, :, 0, 0], _np(layer.input_to_state.bias)
    wss = _np(layer.weight_ss)
    hs, cs = np.zeros((B, H + 1, W + 1, h_)), np.zeros((B, H + 1, W + 1, h_))
    for r in range(H):
        for j in range(W):
            pre = x[:, :, r, j] @ wis.T + bis + hs[:, r, j + 1] @ wss[:, :, 0].T \
                + hs[:, r + 1, j] @ wss[:, :, 1].T
            hs[:, r + 1, j + 1], cs[:, r + 1, j + 1] = _cell(pre, cs[:, r + 1, j])
    return hs[:, 1:, 1:].transpose(0, 3, 1, 2)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_row_lstm_matches_pixel_loop(fused, kernel):
    gm.manual_seed(0)
    layer = gm.nn.RowLSTM(3, 4, kernel).double()
    layer.fused = fused
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 6))
    np.testing.assert_allclose(_np(layer(gm.tensor(x))), _row_lstm_numpy(layer, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_diagonal_lstm_matches_pixel_loop(fused):
    gm.manual_seed(0)
    layer = gm.nn.DiagonalLSTM(3, 4).double()
    layer.fused = fused
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4))
    np.testing.assert_allclose(_np(layer(gm.tensor(x))), _diagonal_lstm_numpy(layer, x), rtol=1e-10,
                               atol=1e-12)


def test_diagonal_bilstm_is_two_directions_with_a_row_shift():
    gm.manual_seed(0)
    layer = gm.nn.DiagonalBiLSTM(3, 4).double()
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5))
    left = _diagonal_lstm_numpy(layer.forward_dir, x)
    right = _diagonal_lstm_numpy(layer.backward_dir, x[..., ::-1])[..., ::-1]
    want = left.copy()
    want[:, :, 1:] += right[:, :, :-1]
    np.testing.assert_allclose(_np(layer(gm.tensor(x))), want, rtol=1e-10, atol=1e-12)


def test_one_line_images_are_an_lstm_cell_scan():
    """On a one-column image the Row LSTM is an LSTM down the rows; on a one-row image the
    Diagonal LSTM is an LSTM along the row: both against gm.nn.LSTMCell with the centre taps."""
    gm.manual_seed(0)
    x = gm.tensor(np.random.default_rng(4).standard_normal((3, 2, 5, 1)))
    for layer, xin, tap in ((gm.nn.RowLSTM(2, 4, 3).double(), x, 1),
                            (gm.nn.DiagonalLSTM(2, 4).double(), x.permute(0, 1, 3, 2), 1)):
        cell = gm.nn.LSTMCell(2, 4).double()
        conv = layer.input_to_state
        k = conv.weight.shape[3] // 2
        cell.weight_ih.data[...] = conv.weight.data[:, :, 0, k]
        cell.bias_ih.data[...] = conv.bias.data
        cell.weight_hh.data[...] = layer.weight_ss.data[:, :, tap]
        cell.bias_hh.data[...] = 0.0
        seq = xin.reshape(3, 2, 5).permute(2, 0, 1)               # (T, B, C)
        state, want = None, []
        for t in range(5):
            state = cell(seq[t], state)
            want.append(_np(state[0]))
        got = _np(layer(xin)).reshape(3, 4, 5).transpose(2, 0, 1)
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [gm.nn.RowLSTM, gm.nn.DiagonalBiLSTM])
def test_fused_gradients_match_the_reference(cls):
    gm.manual_seed(0)
    layer = cls(3, 6, groups_rgb=3).double()
    x = gm.tensor(np.random.default_rng(5).standard_normal((2, 3, 4, 5)))
    r = gm.tensor(np.random.default_rng(6).standard_normal((2, 6, 4, 5)))
    grads = []
    for fused in (True, False):
        layer.fused = fused
        xr = x.detach().requires_grad_(True)
        params = list(layer.parameters())
        grads.append([_np(g) for g in gm.autograd.grad((layer(xr) * r).sum(), [xr, *params])])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("offsets", [(-1, 0), (-1, 0, 1)])
def test_line_recurrence_gradients(offsets):
    """The fused recurrence's hand-written BPTT against finite differences; the reference
    recurrence (tensor ops) also has second-order gradients."""
    rng = np.random.default_rng(9)
    gates = gm.tensor(rng.standard_normal((3, 2, 3, 8))).requires_grad_(True)     # T, B, N, 4h
    w = gm.tensor(rng.standard_normal((8, 2, len(offsets)))).requires_grad_(True)
    assert gradcheck(lambda g, k: _lstm_lines(g, k, offsets, True), (gates, w))
    assert gradgradcheck(lambda g, k: _lstm_lines(g, k, offsets, False), (gates, w))


# ---- causal context --------------------------------------------------------------------------

def _context(layer, H, W, i, j):
    x = gm.tensor(np.random.default_rng(i * 17 + j).standard_normal((1, 2, H, W))).requires_grad_(True)
    (g,) = gm.autograd.grad(layer(x)[:, :, i, j].sum(), [x])
    return np.abs(_np(g)).sum((0, 1)) > 0


def test_contexts_of_the_three_layers():
    gm.manual_seed(0)
    H, W = 5, 6
    rows, cols = np.indices((H, W))
    row = gm.nn.RowLSTM(2, 3, 3).double()
    diag = gm.nn.DiagonalLSTM(2, 3).double()
    bi = gm.nn.DiagonalBiLSTM(2, 3).double()
    for i, j in [(0, 0), (2, 3), (4, 5), (4, 0), (3, 1)]:
        # Row LSTM: a triangle, row i - d from column j - d - 1 to j + d (mask B: row i is j - 1, j)
        want = (rows <= i) & (cols >= j - (i - rows) - 1) & (cols <= j + (i - rows))
        np.testing.assert_array_equal(_context(row, H, W, i, j), want)
        # Diagonal LSTM: the quadrant above and to the left, the pixel itself included
        np.testing.assert_array_equal(_context(diag, H, W, i, j), (rows <= i) & (cols <= j))
        # BiLSTM: that quadrant, plus every row above (the right-to-left half, shifted down)
        np.testing.assert_array_equal(_context(bi, H, W, i, j), (rows < i) | (rows == i) & (cols <= j))


def test_rgb_units_see_their_colour_group_only_at_the_pixel():
    """Mask B with 3 colour groups: unit u (group u // (h/3)) sees input group <= its own at
    its own pixel, every group at earlier pixels."""
    gm.manual_seed(0)
    for layer in (gm.nn.RowLSTM(6, 6, groups_rgb=3).double(), gm.nn.DiagonalBiLSTM(6, 6, groups_rgb=3).double()):
        x = gm.tensor(np.random.default_rng(8).standard_normal((1, 6, 3, 4)))
        for u in range(6):
            xr = x.detach().requires_grad_(True)
            (g,) = gm.autograd.grad(layer(xr)[:, u, 1, 2].sum(), [xr])
            at_pixel = np.abs(_np(g)[0, :, 1, 2]).reshape(3, 2).sum(1) > 0   # per input group
            np.testing.assert_array_equal(at_pixel, np.arange(3) <= u // 2)
            assert np.all(np.abs(_np(g)[0, :, 1, 1]) > 0)                      # the pixel to the left


def test_layer_errors():
    with pytest.raises(ValueError, match="odd"):
        gm.nn.RowLSTM(3, 4, kernel_size=2)
    with pytest.raises(ValueError, match="divisible by groups_rgb"):
        gm.nn.DiagonalBiLSTM(3, 4, groups_rgb=3)
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        gm.nn.DiagonalLSTM(3, 0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gm.nn.DiagonalLSTM(3, 4)(gm.randn(3, 4, 5))
