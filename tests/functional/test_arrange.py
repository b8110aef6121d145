"""diagonal, repeat_interleave, meshgrid (gmcore/functional/arrange.py)."""
import numpy as np
import pytest

import gmcore as gm
from helpers import HAVE_TORCH, check_op

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


@pytest.mark.parametrize("offset,d1,d2", [(0, 0, 1), (1, 0, 1), (-2, 1, 2), (1, 2, 0)])
def test_diagonal(offset, d1, d2):
    check_op(lambda x: gm.diagonal(x, offset, d1, d2),
             lambda x: np.diagonal(x, offset, d1, d2), [(4, 5, 3)],
             torch_fn=lambda x: torch.diagonal(x, offset, d1, d2))


def test_diagonal_is_a_view():
    x = gm.arange(9.0).reshape(3, 3)
    d = x.diagonal()
    assert d._version is x._version
    x.add_(1.0)
    assert d.tolist() == [1.0, 5.0, 9.0]
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        gm.diagonal(gm.ones(3))
    with pytest.raises(RuntimeError, match="same dimension"):
        gm.diagonal(gm.ones(3, 3), 0, 1, 1)


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_repeat_interleave_int_and_tensor(dim):
    check_op(lambda x: gm.repeat_interleave(x, 2, dim), lambda x: np.repeat(x, 2, axis=dim),
             [(3, 4)], torch_fn=lambda x: torch.repeat_interleave(x, 2, dim))
    if dim is not None:
        r = np.array([2, 0, 1] if dim == 0 else [1, 3, 0, 2])
        check_op(lambda x: gm.repeat_interleave(x, gm.tensor(r), dim),
                 lambda x: np.repeat(x, r, axis=dim), [(3, 4)],
                 torch_fn=lambda x: torch.repeat_interleave(x, torch.tensor(r), dim))


@needs_torch
def test_repeat_interleave_forms_and_errors():
    assert gm.repeat_interleave(gm.tensor([1, 0, 2])).tolist() == \
        torch.repeat_interleave(torch.tensor([1, 0, 2])).tolist()
    assert gm.tensor([[1, 2], [3, 4]]).repeat_interleave(gm.tensor([2]), 1).tolist() == \
        [[1, 1, 2, 2], [3, 3, 4, 4]]
    with pytest.raises(RuntimeError, match="size 1 or 2"):
        gm.repeat_interleave(gm.ones(2, 2), gm.tensor([1, 2, 3]), 0)
    with pytest.raises(RuntimeError, match="non-negative"):
        gm.repeat_interleave(gm.ones(2), -1)


@needs_torch
@pytest.mark.parametrize("indexing", ["ij", "xy"])
def test_meshgrid(indexing):
    a, b, c = np.arange(3.0), np.arange(4.0) + 10, np.arange(2.0) - 5
    got = gm.meshgrid(gm.tensor(a), gm.tensor(b), gm.tensor(c), indexing=indexing)
    want = torch.meshgrid(torch.tensor(a), torch.tensor(b), torch.tensor(c), indexing=indexing)
    for g, w in zip(got, want):
        assert g.tolist() == w.tolist()
    assert [g.tolist() for g in gm.meshgrid([gm.tensor(a)])] == [a.tolist()]
    check_op(lambda x, y: gm.meshgrid(x, y, indexing=indexing),
             lambda x, y: np.meshgrid(x, y, indexing=indexing), [(3,), (5,)],
             torch_fn=lambda x, y: torch.meshgrid(x, y, indexing=indexing))
    with pytest.raises(ValueError, match="indexing"):
        gm.meshgrid(gm.tensor(a), indexing="ji")
