"""add sub mul div neg pow matmul floor_divide remainder: broadcasting (hypothesis), gradients of
first and second order, PyTorch type promotion, and error messages."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmcore as gm
from gmcore.testing import assert_close, gradcheck, gradgradcheck
from helpers import broadcast_shapes, check_op

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _away_from_zero(a):
    return np.where(np.abs(a) < 0.3, 0.3 + np.abs(a), a)


def _positive(a):
    return np.abs(a) + 0.5


BINARY = {
    "add": (lambda a, b: a + b, np.add, {}),
    "add_alpha": (lambda a, b: gm.add(a, b, alpha=-2.5), lambda a, b: a - 2.5 * b, {}),
    "sub": (lambda a, b: a - b, np.subtract, {}),
    "sub_alpha": (lambda a, b: a.sub(b, alpha=3), lambda a, b: a - 3 * b, {}),
    "mul": (lambda a, b: a * b, np.multiply, {}),
    "div": (lambda a, b: a / b, np.divide, {"domain": _away_from_zero}),
    "pow": (lambda a, b: a ** b, np.power, {"domain": _positive}),
}


@fixture_ok
@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=broadcast_shapes(2, max_dims=3, max_side=4), seed=st.integers(0, 100))
def test_binary_broadcasting_with_gradients(device, name, shapes, seed):
    gm_fn, np_fn, kw = BINARY[name]
    check_op(gm_fn, np_fn, list(shapes), device=device, seed=seed, **kw)


@pytest.mark.parametrize("fn,np_fn,kw", [
    (lambda x: x + 2.5, lambda a: a + 2.5, {}),
    (lambda x: 2.5 - x, lambda a: 2.5 - a, {}),
    (lambda x: x * -3, lambda a: a * -3, {}),
    (lambda x: 3 / x, lambda a: 3 / a, {"domain": _away_from_zero}),
    (lambda x: x / 4, lambda a: a / 4, {}),
    (lambda x: -x, lambda a: -a, {}),
    (lambda x: gm.neg(x), lambda a: -a, {}),
    (lambda x: x ** 2, lambda a: a ** 2, {}),
    (lambda x: x ** 3.5, lambda a: a ** 3.5, {"domain": _positive}),
    (lambda x: x ** -1, lambda a: a ** -1.0, {"domain": _away_from_zero}),
    (lambda x: x ** 0, lambda a: a ** 0, {}),
    (lambda x: 2 ** x, lambda a: 2.0 ** a, {}),
    (lambda x: x.pow(2) - x.mul(x) + x.div(2) + x.add(1), lambda a: a / 2 + a + 1, {}),
], ids=["add_s", "rsub_s", "mul_s", "rdiv_s", "div_s", "neg", "neg_fn", "sq", "pow35", "inv",
        "pow0", "rpow", "methods"])
def test_scalar_operands(device, fn, np_fn, kw):
    check_op(fn, np_fn, [(3, 5)], device=device, **kw)


MATMUL_SHAPES = [
    ((4,), (4,)), ((4,), (4, 3)), ((2, 4), (4,)), ((3, 4), (4, 5)), ((5, 2, 3), (3, 4)),
    ((2, 3), (4, 3, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
    ((1, 1), (1, 1)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul_shapes(device, sa, sb):
    out = check_op(lambda a, b: a @ b, np.matmul, [sa, sb], device=device,
                   torch_fn=lambda a, b: a @ b)
    assert out.shape == np.matmul(np.ones(sa), np.ones(sb)).shape


@fixture_ok
@given(batch=broadcast_shapes(2, max_dims=2, max_side=3), n=st.integers(1, 3),
       k=st.integers(1, 3), m=st.integers(1, 3))
def test_matmul_broadcast_batches(device, batch, n, k, m):
    sa, sb = tuple(batch[0]) + (n, k), tuple(batch[1]) + (k, m)
    check_op(gm.matmul, np.matmul, [sa, sb], device=device)


def test_matmul_errors_and_integers():
    with pytest.raises(RuntimeError, match=r"shapes \(2, 3\) and \(4, 5\) cannot be multiplied"):
        gm.ones(2, 3) @ gm.ones(4, 5)
    with pytest.raises(RuntimeError, match="at least one dimension"):
        gm.matmul(gm.tensor(2.0), gm.ones(2))
    i = gm.tensor([[1, 2], [3, 4]])
    assert (i @ i).dtype == gm.int64 and (i @ i).tolist() == [[7, 10], [15, 22]]
    assert (i @ gm.ones(2, 2)).dtype == gm.float32


# (lhs, rhs, expected dtype of lhs + rhs / lhs * rhs), PyTorch's promotion rules
def _t(dtype, dim=1):
    return gm.ones(*([2] * dim), dtype=dtype)


PROMOTION = [
    ("f32 tensor + py float", lambda: (_t(gm.float32), 2.5), gm.float32),
    ("i64 tensor + py float", lambda: (_t(gm.int64), 2.5), gm.float32),
    ("py float + i64 tensor", lambda: (2.5, _t(gm.int64)), gm.float32),
    ("i32 tensor + py int", lambda: (_t(gm.int32), 7), gm.int32),
    ("i32 + f16 tensors", lambda: (_t(gm.int32), _t(gm.float16)), gm.float16),
    ("bool + True", lambda: (_t(gm.bool), True), gm.bool),
    ("bool tensor + py int", lambda: (_t(gm.bool), 3), gm.int64),
    ("bool tensor + py float", lambda: (_t(gm.bool), 0.5), gm.float32),
    ("u8 + i8 tensors", lambda: (_t(gm.uint8), _t(gm.int8)), gm.int16),
    ("0-d f64 with f32 tensor", lambda: (_t(gm.float64, 0), _t(gm.float32)), gm.float32),
    ("f16 tensor with 0-d f64", lambda: (_t(gm.float16), _t(gm.float64, 0)), gm.float16),
    ("i64 tensor with 0-d f64", lambda: (_t(gm.int64), _t(gm.float64, 0)), gm.float64),
    ("i32 tensor with 0-d i64", lambda: (_t(gm.int32), _t(gm.int64, 0)), gm.int32),
    ("two 0-d: i32, f64", lambda: (_t(gm.int32, 0), _t(gm.float64, 0)), gm.float64),
    ("f32 + f64 tensors", lambda: (_t(gm.float32), _t(gm.float64)), gm.float64),
]


@pytest.mark.parametrize("make,expected", [(m, e) for _, m, e in PROMOTION],
                         ids=[n for n, _, _ in PROMOTION])
def test_type_promotion(make, expected):
    a, b = make()
    assert (a + b).dtype == expected
    assert (a * b).dtype == expected
    if expected != gm.bool:
        assert (a - b).dtype == expected
    assert gm.result_type(a, b) == expected


def test_true_division_of_integers_gives_default_float():
    a, b = gm.tensor([7, -7]), gm.tensor([2, 2])
    q = a / b
    assert q.dtype == gm.float32 and q.tolist() == [3.5, -3.5]
    assert (gm.tensor([1], dtype=gm.int32) / 2).dtype == gm.float32
    assert (gm.tensor([True]) / gm.tensor([True])).dtype == gm.float32
    assert gm.true_divide(a, b).tolist() == [3.5, -3.5]
    assert (gm.tensor([1.0], dtype=gm.float64) / gm.tensor([2])).dtype == gm.float64


def test_floor_divide_and_remainder_follow_python_signs():
    a = np.array([7.0, -7.0, 7.5, -7.5, 0.0])
    for b in (2.0, -2.0):
        x = gm.tensor(a, dtype=gm.float64)
        assert (x // b).tolist() == np.floor_divide(a, b).tolist()
        assert (x % b).tolist() == np.remainder(a, b).tolist()
    i = gm.tensor([7, -7])
    assert (i // 2).tolist() == [3, -4] and (i // 2).dtype == gm.int64
    assert gm.remainder(i, -3).tolist() == [-2, -1]
    assert gm.floor_divide(gm.tensor([7, 8]), gm.tensor([2, 3])).tolist() == [3, 2]


def test_floor_divide_and_remainder_gradients():
    # away from the jumps: d(a mod b)/da = 1, d floor_divide = 0
    a = gm.tensor([0.3, 1.7, -2.2, 3.1], dtype=gm.float64, requires_grad=True)
    assert gradcheck(lambda t: gm.remainder(t, 1.5), (a,))
    (gm.floor_divide(a, 1.5).sum() + gm.remainder(a, 1.5).sum()).backward()
    assert a.grad.tolist() == [1.0, 1.0, 1.0, 1.0]
    from gmcore.functional import pointwise
    if hasattr(pointwise, "floor"):  # the divisor's gradient needs floor
        b = gm.tensor([1.5, 1.3, 0.9, 2.2], dtype=gm.float64, requires_grad=True)
        assert gradcheck(lambda s, t: gm.remainder(s, t), (a, b))


def test_pow_gradient_edge_cases():
    x = gm.tensor([0.0, 2.0, -1.5], dtype=gm.float64, requires_grad=True)
    (x ** 2).sum().backward()
    assert x.grad.tolist() == [0.0, 4.0, -3.0]
    x.grad = None
    (x ** 0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    from gmcore.functional import pointwise
    if hasattr(pointwise, "where") and hasattr(pointwise, "log"):
        e = gm.tensor([2.0, 1.0, 3.0], dtype=gm.float64, requires_grad=True)
        (gm.tensor([0.0, 2.0, 3.0], dtype=gm.float64) ** e).sum().backward()
        # d/de 0^e = 0 (the limit for e > 0), not NaN
        assert_close(e.grad, np.array([0.0, 2 * np.log(2.0), 27 * np.log(3.0)]))


def test_double_backward_of_products():
    a = gm.randn(3, 4, dtype=gm.float64, requires_grad=True)
    b = gm.randn(4, 2, dtype=gm.float64, requires_grad=True)
    assert gradgradcheck(lambda s, t: (s @ t) * (s @ t), (a, b))
    assert gradgradcheck(lambda s, t: s / (t.sum() + 10.0), (a, b))


def test_integer_pow_and_bool_ops():
    i = gm.tensor([1, 2, 3])
    assert (i ** 2).dtype == gm.int64 and (i ** 2).tolist() == [1, 4, 9]
    assert (i ** 0.5).dtype == gm.float32
    with pytest.raises((ValueError, RuntimeError), match="negative integer powers"):
        i ** gm.tensor([1, -1, 2])
    m = gm.tensor([True, False])
    assert (m + m).dtype == gm.bool and (m * m).tolist() == [True, False]


@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
                                lambda a, b: a / b, lambda a, b: a ** b,
                                lambda a, b: a // b, lambda a, b: a % b],
                         ids=["add", "sub", "mul", "div", "pow", "floordiv", "mod"])
def test_shape_mismatch_error_names_the_shapes(op):
    with pytest.raises(RuntimeError, match=r"size of tensor a \(3\) must match the size of "
                                           r"tensor b \(4\) at non-singleton dimension 1.*"
                                           r"\(2, 3\) and \(4,\)"):
        op(gm.ones(2, 3), gm.ones(4))


def test_requires_grad_bookkeeping():
    a = gm.ones(2, requires_grad=True)
    b = gm.ones(2)
    assert (a + b).requires_grad and not (b + b).requires_grad
    with gm.no_grad():
        assert not (a * 2).requires_grad
    y = a * b
    g, = gm.autograd.grad(y.sum(), a)
    assert g.tolist() == [1.0, 1.0]


# ---- bit shifts and reflected bitwise operators (issue 11.14) --------------------------------

SHIFT_DTYPES = ["uint8", "int8", "int16", "int32", "int64"]


@pytest.mark.parametrize("dtype", SHIFT_DTYPES)
def test_bit_shifts_match_torch(dtype):
    torch = pytest.importorskip("torch")
    info = np.iinfo(dtype)
    a = np.array([0, 1, 5, 77, info.max, info.min, info.max // 3], dtype=dtype)
    width = info.bits
    s = np.array([0, 1, 3, width - 1, width, width + 5, -1 if info.min else 7], dtype=dtype)
    ta, ts = torch.from_numpy(a.copy()), torch.from_numpy(s.copy())
    ga, gs = gm.tensor(a), gm.tensor(s)
    for got, want in [(ga << gs, ta << ts), (ga >> gs, ta >> ts),
                      (ga[:, None] << gs, ta[:, None] << ts),  # broadcast: every pair
                      (ga[:, None] >> gs, ta[:, None] >> ts),
                      (ga << 3, ta << 3), (ga >> 2, ta >> 2), (3 << gs[:4], 3 << ts[:4]),
                      (gm.bitwise_left_shift(ga, gs), torch.bitwise_left_shift(ta, ts)),
                      (gm.bitwise_right_shift(ga, 1), torch.bitwise_right_shift(ta, 1))]:
        assert got.dtype == getattr(gm, str(want.dtype).split(".")[1])
        assert got.tolist() == want.tolist()


def test_bit_shift_values_and_errors():
    u = gm.tensor([1, 200, 255], dtype=gm.uint8)
    assert (u << 1).tolist() == [2, 144, 254] and (u << 1).dtype == gm.uint8
    assert (u >> 4).tolist() == [0, 12, 15] and (u << 8).tolist() == [0, 0, 0]
    assert (gm.tensor([-16, 16]) >> 2).tolist() == [-4, 4]
    assert (gm.tensor([-16, 16]) >> 64).tolist() == [-1, 0]  # the sign fills every bit
    assert (gm.tensor([True, False]) << 1).tolist() == [2, 0]
    with pytest.raises(TypeError, match="integer"):
        gm.tensor([1.0]) << 1
    with pytest.raises(TypeError, match="integer"):
        gm.tensor([1]) << 1.5
    with pytest.raises(RuntimeError, match="size"):
        gm.tensor([1, 2]) << gm.tensor([1, 2, 3])


def test_reflected_bitwise_operators():
    t = gm.tensor([3, 5])
    assert (1 ^ t).tolist() == [2, 4] and (6 & t).tolist() == [2, 4]
    assert (8 | t).tolist() == [11, 13] and (1 << t).tolist() == [8, 32]
    assert (64 >> t).tolist() == [8, 2]
    b = gm.tensor([True, False])
    assert (True ^ b).tolist() == [False, True] and (True ^ b).dtype == gm.bool
    assert (b ^ 3).tolist() == [2, 3]  # promotes as torch, not a logical xor
    assert (b & b).dtype == gm.bool and (False | b).tolist() == [True, False]


@pytest.mark.parametrize("value", [-1, 300, -129])
def test_out_of_range_python_int_wraps_into_the_integer_dtype(value):
    # torch wraps an out-of-range Python int into the tensor's dtype; NumPy 2 raised OverflowError
    t = gm.tensor([1, 2, 200], dtype=gm.uint8)
    wrapped = value % 256
    assert (t ^ value).tolist() == [v ^ wrapped for v in (1, 2, 200)]
    assert (t & value).tolist() == [v & wrapped for v in (1, 2, 200)]
    assert (t + value).tolist() == [(v + wrapped) % 256 for v in (1, 2, 200)]
    assert (value | t).tolist() == [v | wrapped for v in (1, 2, 200)]
    s = gm.tensor([1, -2], dtype=gm.int8)
    as_int8 = np.array(wrapped, dtype=np.uint8).view(np.int8)   # two's complement: 300 -> 44
    with np.errstate(over="ignore"):
        assert (s * value).tolist() == (np.array([1, -2], dtype=np.int8) * as_int8).tolist()
