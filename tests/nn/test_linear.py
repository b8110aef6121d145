"""linear against NumPy, gradients to second order, shape errors."""
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from helpers import check_op


def test_linear(device):
    check_op(F.linear, lambda x, w, b: x @ w.T + b, [(2, 3, 5), (4, 5), (4,)], device=device)
    check_op(lambda x, w: F.linear(x, w), lambda x, w: x @ w.T, [(3, 5), (2, 5)], device=device)
    check_op(lambda x, w: F.linear(x, w), lambda x, w: x @ w, [(3, 5), (5,)], device=device)


def test_linear_shape_error():
    with pytest.raises(RuntimeError, match=r"cannot be multiplied \(6x5 and 4x3\)"):
        F.linear(gm.randn(2, 3, 5), gm.randn(3, 4))


@pytest.mark.parametrize("in_shape", [(5, 4), (2, 3, 4), (4,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_function_gradients(device, in_shape, bias):
    shapes = [in_shape, (3, 4)] + ([(3,)] if bias else [])

    def ref(x, w, *b):
        return x @ w.T + (b[0] if b else 0)
    check_op(lambda x, w, *b: F.linear(x, w, *b), ref, shapes, device=device, torch_fn=(
        lambda x, w, *b: __import__("torch").nn.functional.linear(x, w, *b)))


def test_linear_mixed_dtypes_falls_back_to_promotion():
    x = gm.ones(2, 3, dtype=gm.float64)
    w = gm.ones(4, 3)
    assert F.linear(x, w).dtype == gm.float64
