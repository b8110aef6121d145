"""sort, argsort, topk, searchsorted, bincount, unique (gmcore/functional/sorting.py)."""
import numpy as np
import pytest

import gmcore as gm
from helpers import HAVE_TORCH, check_op

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


@pytest.mark.parametrize("dim,descending", [(-1, False), (0, True), (1, False)])
def test_sort_values_grad(dim, descending):
    def np_sort(x):
        s = np.sort(x, axis=dim)
        return np.flip(s, axis=dim) if descending else s
    check_op(lambda x: gm.sort(x, dim, descending).values, np_sort, [(3, 5, 4)],
             torch_fn=lambda x: torch.sort(x, dim, descending).values)


@needs_torch
def test_sort_indices_stable_and_nan():
    x = gm.tensor([2.0, 1.0, float("nan"), 1.0, 2.0])
    assert gm.sort(x).indices.tolist() == [1, 3, 0, 4, 2]
    assert gm.sort(x, descending=True).indices.tolist() == [2, 0, 4, 1, 3]
    t = torch.tensor(x.numpy())
    assert gm.sort(x, stable=True).indices.tolist() == torch.sort(t, stable=True).indices.tolist()
    assert gm.sort(x, descending=True, stable=True).indices.tolist() == \
        torch.sort(t, descending=True, stable=True).indices.tolist()
    v, i = x.sort()
    assert type(v) is gm.Tensor and i.dtype == gm.int64
    assert gm.argsort(x, descending=True).tolist() == [2, 0, 4, 1, 3]


def test_sort_grad_goes_to_source_positions():
    x = gm.tensor([3.0, 1.0, 2.0], requires_grad=True)
    (gm.sort(x).values * gm.tensor([1.0, 10.0, 100.0])).sum().backward()
    assert x.grad.tolist() == [100.0, 1.0, 10.0]


@needs_torch
@pytest.mark.parametrize("largest", [True, False])
def test_topk(largest):
    def np_topk(x):
        s = np.sort(x, axis=1)
        return np.flip(s, axis=1)[:, :3] if largest else s[:, :3]
    check_op(lambda x: gm.topk(x, 3, dim=1, largest=largest).values, np_topk, [(4, 7)],
             torch_fn=lambda x: torch.topk(x, 3, dim=1, largest=largest).values)
    x = np.random.default_rng(1).normal(size=(4, 7))
    v, i = gm.tensor(x).topk(3, 1, largest)
    tv, ti = torch.tensor(x).topk(3, 1, largest)
    assert i.tolist() == ti.tolist() and np.allclose(v.numpy(), tv.numpy())


def test_topk_bad_k():
    with pytest.raises(RuntimeError, match="k .* must be an int in \\[0, 3\\]"):
        gm.topk(gm.ones(3), 4)


@needs_torch
@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_matches_torch(right):
    rng = np.random.default_rng(0)
    seq1 = np.sort(rng.integers(0, 6, size=9)).astype(np.float64)  # ties on purpose
    vals = rng.integers(-1, 8, size=(3, 4)).astype(np.float64)
    got = gm.searchsorted(gm.tensor(seq1), gm.tensor(vals), right=right)
    want = torch.searchsorted(torch.tensor(seq1), torch.tensor(vals), right=right)
    assert got.dtype == gm.int64 and got.tolist() == want.tolist()
    # batched over leading dims (spline-flow bins), short and long sequences
    for n in (5, 5000):
        seq = np.sort(rng.normal(size=(2, 3, n)), axis=-1)
        v = np.concatenate([rng.normal(size=(2, 3, 4)), seq[..., :2]], axis=-1)
        got = gm.searchsorted(gm.tensor(seq), gm.tensor(v), side="right" if right else "left")
        want = torch.searchsorted(torch.tensor(seq), torch.tensor(v), right=right)
        assert got.tolist() == want.tolist()


def test_searchsorted_errors_and_sorter():
    with pytest.raises(RuntimeError, match="leading dims"):
        gm.searchsorted(gm.zeros(2, 3), gm.zeros(3, 1))
    with pytest.raises(RuntimeError, match="contradict"):
        gm.searchsorted(gm.zeros(3), gm.zeros(1), right=True, side="left")
    seq = gm.tensor([3.0, 1.0, 2.0])
    assert gm.searchsorted(seq, gm.tensor([1.5]), sorter=gm.argsort(seq)).tolist() == [1]
    assert gm.searchsorted(gm.tensor([0.0, 1.0]), 0.5).item() == 1
    assert gm.searchsorted(gm.tensor([0.0, 1.0]), gm.tensor([0.5]), out_int32=True).dtype \
        == gm.int32


@needs_torch
def test_bincount():
    x = np.array([0, 3, 3, 1, 5])
    assert gm.bincount(gm.tensor(x)).tolist() == torch.bincount(torch.tensor(x)).tolist()
    assert gm.bincount(gm.tensor(x), minlength=8).tolist() == \
        torch.bincount(torch.tensor(x), minlength=8).tolist()
    w = np.array([0.5, 1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    got = gm.bincount(gm.tensor(x), gm.tensor(w))
    want = torch.bincount(torch.tensor(x), torch.tensor(w))
    assert got.dtype == gm.float32 and got.tolist() == want.tolist()
    assert gm.bincount(gm.tensor(x), gm.tensor([1, 2, 3, 4, 5])).dtype == gm.float64
    assert gm.bincount(gm.tensor(np.zeros(0, np.int64))).tolist() == []
    with pytest.raises(RuntimeError, match="non-negative"):
        gm.bincount(gm.tensor([1, -1]))
    with pytest.raises(RuntimeError, match="1-d integer"):
        gm.bincount(gm.tensor([1.0]))
    # the weighted count is differentiable in the weights
    check_op(lambda w: gm.bincount(gm.tensor(x), w), lambda w: np.bincount(x, w), [(5,)])


@needs_torch
def test_unique():
    x = np.array([[3, 1, 3], [2, 1, 0]])
    for kw in ({}, {"return_inverse": True}, {"return_counts": True},
               {"return_inverse": True, "return_counts": True}):
        got = gm.unique(gm.tensor(x), **kw)
        want = torch.unique(torch.tensor(x), **kw)
        got, want = (got, want) if kw else ((got,), (want,))
        for g, w in zip(got, want):
            assert g.tolist() == w.tolist()
    rows = np.array([[1, 2], [0, 5], [1, 2], [0, 1]])
    for dim in (0, 1):
        got = gm.unique(gm.tensor(rows), dim=dim, return_inverse=True, return_counts=True)
        want = torch.unique(torch.tensor(rows), dim=dim, return_inverse=True,
                            return_counts=True)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
