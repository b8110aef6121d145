"""One-line op tests (tinygrad's helper_test_op, Chainer's check_backward).

``check_op(gm_fn, np_fn, shapes)`` draws float64 inputs, then checks:
  1. forward in float64 against the NumPy reference ``np_fn`` (and float32 within float32 tols),
  2. the backward against finite differences (``gradcheck``: random directions + full Jacobian),
  3. the double backward (``gradgradcheck``) unless ``gradgrad=False``,
  4. forward and gradients against torch when it is installed and ``torch_fn`` is given.
"""
import importlib.util

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gmcore as gm
from gmcore.testing import assert_close, gradcheck, gradgradcheck

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def make_inputs(shapes, rng, low=-2.0, high=2.0, domain=None):
    arrays = [rng.uniform(low, high, size=s) for s in shapes]
    if domain is not None:
        arrays = [domain(a) for a in arrays]
    return arrays


def check_op(gm_fn, np_fn, shapes=None, *, device="cpu", seed=0, low=-2.0, high=2.0, domain=None,
             grad=True, gradgrad=True, torch_fn=None, grad_inputs=None, atol=1e-6, rtol=1e-5,
             fwd_atol=None, check_float32=True, arrays=None):
    """Test one op end to end; see the module docstring. Returns the float64 output tensor."""
    rng = np.random.default_rng(seed)
    if arrays is None:
        arrays = make_inputs(shapes, rng, low, high, domain)
    grad_inputs = range(len(arrays)) if grad_inputs is None else grad_inputs

    def tensors(dtype, requires_grad):
        return [gm.tensor(a, dtype=dtype, device=device,
                          requires_grad=requires_grad and i in grad_inputs)
                for i, a in enumerate(arrays)]

    # 1. forward, float64 and float32
    expected = np_fn(*[a.copy() for a in arrays])
    out64 = gm_fn(*tensors(gm.float64, False))
    _compare(out64, expected, atol=fwd_atol)
    if check_float32:
        out32 = gm_fn(*tensors(gm.float32, False))
        for o in _tuple(out32):
            if o.dtype.is_floating_point:
                assert o.dtype == gm.float32, f"float32 input gave {o.dtype}"
        _compare(out32, expected, atol=1e-4 if fwd_atol is None else max(fwd_atol, 1e-4),
                 rtol=1e-4)

    # 2./3. gradients
    if grad:
        inputs = tensors(gm.float64, True)
        assert gradcheck(gm_fn, inputs, atol=atol, rtol=rtol)
        if gradgrad:
            assert gradgradcheck(gm_fn, inputs, atol=atol, rtol=rtol)

    # 4. torch as a peer oracle
    if HAVE_TORCH and torch_fn is not None:
        _check_torch(gm_fn, torch_fn, arrays, grad_inputs, grad, device)
    return out64


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _compare(out, expected, atol=None, rtol=None):
    outs, exps = _tuple(out), _tuple(expected)
    assert len(outs) == len(exps), f"{len(outs)} outputs, expected {len(exps)}"
    for o, e in zip(outs, exps):
        e = np.asarray(e)
        kw = {}
        if o.dtype == gm.float64:
            kw = dict(rtol=1e-7 if rtol is None else rtol, atol=1e-7 if atol is None else atol)
        elif o.dtype.is_floating_point:
            kw = dict(rtol=rtol or 1e-4, atol=atol or 1e-4)
        assert_close(o, e.astype(o.data.dtype) if e.dtype.kind != o.data.dtype.kind else e,
                     check_dtype=False, **kw)


def _check_torch(gm_fn, torch_fn, arrays, grad_inputs, grad, device):
    import torch
    tdev = "cuda" if device != "cpu" else "cpu"
    tt = [torch.tensor(a, dtype=torch.float64, device=tdev,
                       requires_grad=grad and i in grad_inputs) for i, a in enumerate(arrays)]
    gt = [gm.tensor(a, dtype=gm.float64, device=device,
                    requires_grad=grad and i in grad_inputs) for i, a in enumerate(arrays)]
    t_out, g_out = _tuple(torch_fn(*tt)), _tuple(gm_fn(*gt))
    for t, g in zip(t_out, g_out):
        assert_close(g, t.detach().cpu().numpy(), rtol=1e-6, atol=1e-8, check_dtype=False)
    if grad:
        t_loss = sum((t * (k + 1)).sum() for k, t in enumerate(t_out) if t.requires_grad)
        g_loss = sum((g * (k + 1)).sum() for k, g in enumerate(g_out) if g.requires_grad)
        t_loss.backward()
        g_loss.backward()
        for t, g in zip(tt, gt):
            if t.grad is not None:
                assert_close(g.grad, t.grad.cpu().numpy(), rtol=1e-6, atol=1e-8,
                             check_dtype=False)


# ---- hypothesis strategies ------------------------------------------------------------------

def shapes(min_dims=0, max_dims=4, min_side=1, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcast_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4):
    """Tuples of mutually broadcastable shapes (MyGrad's strategy)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims,
                                             max_dims=max_dims, max_side=max_side).map(
        lambda s: s.input_shapes)


seeds = st.integers(0, 2 ** 16)


def fit_full_batch(model, x, steps, lr):
    """Adam on ``model.loss((x,))`` for ``steps`` full-batch steps; returns the losses."""
    opt = gm.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss((x,))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def write_fake_cifar(folder, per_batch: int = 6, seed: int = 0) -> None:
    """CIFAR-10 "python version" batches of random 3x32x32 images in ``folder`` (for the 32x32
    three-channel path of the image models; no real data is needed)."""
    import pickle

    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": [0] * per_batch}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))


def perturbed(model, scale: float = 0.3, seed: int = 0):
    """``model`` with seeded noise added to every weight, fan-in scaled, also to the
    zero-initialised output layers (so a fresh diffusion net's outputs vary); in eval mode."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = p.data + scale * rng.standard_normal(p.shape).astype(p.data.dtype) / np.sqrt(
            max(1, p.numel() // p.shape[0]))
    return model.eval()


def check_eval_and_sample(run, res, capsys, tmp_path, shape=(1, 8, 8)):
    """``gmcore eval RUN`` reproduces the run's own test figure ``res["test_bits"]`` and ``gmcore
    sample RUN --out s.npy`` writes three samples of ``shape``."""
    import json

    import pytest

    from gmcore import cli

    capsys.readouterr()
    assert cli.main(["eval", str(run), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits"] == pytest.approx(res["test_bits"], rel=1e-12)
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "3", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, *shape)


def logit_dependence(logits_fn, x):
    """D[c, i, j, c2, i2, j2] = sum over the batch of |d <r, logits at (c, i, j)> / d x[c2, i2, j2]|
    for ``logits_fn(x) -> (B, C, levels, H, W)`` and a random direction r over the levels (an
    exact zero is then a zero of every level's derivative, but for a measure-zero choice of r),
    one backward pass per (colour, pixel)."""
    C, H, W = x.shape[1:]
    D = np.zeros((C, H, W, C, H, W))
    rng = np.random.default_rng(7)
    for i in range(H):
        for j in range(W):
            for c in range(C):
                xg = x.detach().requires_grad_(True)
                out = logits_fn(xg)[:, c, :, i, j]
                (g,) = gm.autograd.grad((out * gm.tensor(rng.standard_normal(out.shape))).sum(), [xg])
                D[c, i, j] = np.abs(g.numpy()).sum(0)
    return D


def raster_colour_order(C, H, W):
    """A[c, i, j, c2, i2, j2]: what an autoregressive pixel model may read: pixel (i2, j2) is
    earlier in raster order, or it is (i, j) and colour c2 comes before c."""
    order = np.arange(H * W).reshape(H, W)
    before = order[None, :, :, None, None, None] > order[None, None, None, None, :, :]
    same = order[None, :, :, None, None, None] == order[None, None, None, None, :, :]
    colour_before = np.arange(C)[:, None, None, None, None, None] > np.arange(C)[None, None, None, :, None, None]
    return np.broadcast_to(before | (same & colour_before), (C, H, W, C, H, W))
