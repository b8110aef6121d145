"""Linear algebra: ``einsum outer mm bmm dot mv inverse slogdet``.

``einsum`` is one Function whose backward for each operand is again an ``einsum`` (tensor
level), so gradients of any order work. ``inverse`` and ``slogdet`` are what Glow's invertible
1x1 convolution needs (log|det W| and its gradient W^-T).
"""
import collections
import string

import numpy as np

from .._dtype import result_type
from ..autograd import Function
from ..backend import xp_of
from ..tensor import Tensor

__all__ = ["einsum", "outer", "ger", "mm", "bmm", "dot", "mv", "inverse", "linalg_inv",
           "slogdet", "linalg_slogdet"]


# ---- einsum -------------------------------------------------------------------------------------

def _parse_term(term, ndim, k):
    """Letters of one input term; '...' becomes None placeholders for the broadcast dims."""
    bare = term.replace("...", "")
    if term.count("...") > 1 or (bare and not (bare.isalpha() and bare.isascii())):
        raise ValueError(f"einsum(): invalid subscript {term!r} for operand {k}: use letters "
                         "a-z, A-Z and at most one '...'")
    letters = term.replace("...", "")
    if "..." in term:
        n_ell = ndim - len(letters)
        if n_ell < 0:
            raise ValueError(f"einsum(): operand {k} has {ndim} dimension(s) but its subscript "
                             f"{term!r} names {len(letters)}")
        head, tail = term.split("...")
        return list(head), n_ell, list(tail)
    if len(letters) != ndim:
        raise ValueError(f"einsum(): the subscript {term!r} names {len(letters)} dimension(s) "
                         f"but operand {k} has {ndim} (and no '...' was given)")
    return list(term), 0, []


def _normalize(equation, operands):
    """Rewrite ``equation`` with explicit letters only (no '...', output given).

    Returns (input terms, output term, letter sizes).
    """
    eq = equation.replace(" ", "")
    if eq.count("->") > 1:
        raise ValueError(f"einsum(): more than one '->' in {equation!r}")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum(): the equation {equation!r} has {len(terms)} operand "
                         f"subscript(s) but {len(operands)} operand(s) were given")
    parsed = [_parse_term(t, op.ndim, k) for k, (t, op) in enumerate(zip(terms, operands))]
    n_ell = max((p[1] for p in parsed), default=0)
    used = set(eq)
    free = [c for c in string.ascii_letters if c not in used]
    ell = free[:n_ell]
    explicit = []
    for head, ne, tail in parsed:
        explicit.append("".join(head) + "".join(ell[n_ell - ne:]) + "".join(tail))
    if arrow:
        bare = rhs.replace("...", "")
        if rhs.count("...") > 1 or (bare and not (bare.isalpha() and bare.isascii())):
            raise ValueError(f"einsum(): invalid output subscript {rhs!r}")
        out = rhs.replace("...", "".join(ell))
        inputs_letters = set("".join(explicit))
        for c in out:
            if c not in inputs_letters:
                raise ValueError(f"einsum(): output subscript {c!r} does not appear in any input")
        if len(set(out)) != len(out):
            raise ValueError(f"einsum(): output subscript {rhs!r} repeats a letter")
    else:  # implicit mode: broadcast dims, then letters seen exactly once, sorted
        counts = collections.Counter("".join(t.replace("...", "") for t in terms))
        out = "".join(ell) + "".join(sorted(c for c, n in counts.items() if n == 1))
    for k, term in enumerate(explicit):
        for c in set(term):
            dims = [operands[k].shape[i] for i, t in enumerate(term) if t == c]
            if len(dims) > 1 and len(set(dims)) > 1:
                raise RuntimeError(f"einsum(): subscript {c!r} is repeated in operand {k} with "
                                   f"different sizes {dims}: a diagonal needs equal sizes")
    sizes = {}
    for k, (term, op) in enumerate(zip(explicit, operands)):
        for c, s in zip(term, op.shape):
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = s
            elif s != 1 and s != prev:
                raise RuntimeError(f"einsum(): subscript {c!r} has size {s} in operand {k} "
                                   f"(shape {tuple(op.shape)}), which does not broadcast with "
                                   f"the size {prev} seen before")
    return explicit, out, sizes


class _Einsum(Function):
    @staticmethod
    def forward(ctx, equation, *arrays):
        ctx.equation = equation
        ctx.save_for_backward(*arrays)
        xp = xp_of(arrays[0])
        # optimize=True contracts pairwise through BLAS (tensordot) instead of one C loop
        return xp.asarray(xp.einsum(equation, *arrays, optimize=len(arrays) > 1))

    @staticmethod
    def backward(ctx, g):
        ops = ctx.saved_tensors
        lhs, out = ctx.equation.split("->")
        terms = lhs.split(",")
        grads = [None]
        for k in range(len(ops)):
            grads.append(_einsum_grad(g, out, terms, ops, k) if ctx.needs_input_grad[k + 1]
                         else None)
        return tuple(grads)


def _einsum_grad(g, out, terms, ops, k):
    """Gradient for operand k: contract g with every other operand onto operand k's subscript.

    A letter repeated in operand k (a diagonal) is written once per extra occurrence as a fresh
    letter tied by an identity matrix; a letter that only operand k has (summed out there)
    comes back through a ones vector.
    """
    xp = g._xp()
    dt = g.data.dtype
    target = terms[k]
    size = {c: s for t, o in zip(terms, ops) for c, s in zip(t, o.shape)}
    used = set("".join(terms) + out)
    fresh = (c for c in string.ascii_letters if c not in used)
    in_terms = [out] + [t for j, t in enumerate(terms) if j != k]
    in_ops = [g] + [o for j, o in enumerate(ops) if j != k]
    result, seen = [], set()
    for c in target:
        if c in seen:
            f = next(fresh)
            in_terms.append(c + f)
            in_ops.append(Tensor(xp.eye(size[c], dtype=dt)))
            result.append(f)
        else:
            seen.add(c)
            result.append(c)
    present = set("".join(in_terms))
    for c in seen:
        if c not in present:
            in_terms.append(c)
            in_ops.append(Tensor(xp.ones(size[c], dtype=dt)))
    return einsum(",".join(in_terms) + "->" + "".join(result), *in_ops)


def einsum(equation, *operands):
    """Einstein summation, as ``torch.einsum``: ``einsum('bij,bjk->bik', a, b)``.

    Supports '...' (broadcast dims), implicit output (no '->'), size-1 broadcasting of a
    subscript, repeated subscripts (diagonals, ``'ii->'`` is the trace) and any number of
    operands; operands of different dtypes are promoted. Differentiable to any order.

    >>> import gmcore as gm
    >>> a = gm.arange(6.0).reshape(2, 3)
    >>> gm.einsum('ij->ji', a).shape
    gmcore.Size([3, 2])
    >>> gm.einsum('ii->', gm.eye(3)).item()
    3.0
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise ValueError("einsum(): at least one operand is needed")
    for k, op in enumerate(operands):
        if not isinstance(op, Tensor):
            raise TypeError(f"einsum(): operand {k} is a {type(op).__name__}, expected a tensor")
    terms, out, sizes = _normalize(equation, operands)
    dt = result_type(*[o.data for o in operands])
    ops = []
    for term, op in zip(terms, operands):
        if op.data.dtype != dt.np:  # cast at tensor level: forward saves the very inputs
            op = op.to(dt)
        want = tuple(sizes[c] for c in term)
        if tuple(op.shape) != want:  # size-1 broadcasting (expand is a view; backward sums)
            op = op.expand(want)
        ops.append(op)
    return _Einsum.apply(",".join(terms) + "->" + out, *ops)


# ---- products -----------------------------------------------------------------------------------

def _need_ndim(t, n, name, what):
    if t.ndim != n:
        raise RuntimeError(f"{name}(): {what} must be a {n}-D tensor, got shape {tuple(t.shape)}")


def outer(input, vec2):
    """Outer product of two vectors: ``out[i, j] = input[i] * vec2[j]``.

    >>> import gmcore as gm
    >>> gm.outer(gm.tensor([1.0, 2.0]), gm.tensor([3.0, 4.0, 5.0])).tolist()
    [[3.0, 4.0, 5.0], [6.0, 8.0, 10.0]]
    """
    _need_ndim(input, 1, "outer", "input")
    _need_ndim(vec2, 1, "outer", "vec2")
    return input.unsqueeze(1) * vec2.unsqueeze(0)


ger = outer


def mm(input, mat2):
    """Matrix product of two 2-D tensors (no broadcasting; see ``matmul`` for that).

    >>> import gmcore as gm
    >>> gm.mm(gm.ones(2, 3), gm.ones(3, 4)).shape
    gmcore.Size([2, 4])
    """
    _need_ndim(input, 2, "mm", "input")
    _need_ndim(mat2, 2, "mm", "mat2")
    if input.shape[1] != mat2.shape[0]:
        raise RuntimeError(f"mm(): shapes {tuple(input.shape)} and {tuple(mat2.shape)} cannot "
                           f"be multiplied ({input.shape[1]} != {mat2.shape[0]})")
    return input @ mat2


def bmm(input, mat2):
    """Batched matrix product of (b, n, m) and (b, m, p) tensors (same batch, no broadcasting)."""
    _need_ndim(input, 3, "bmm", "input")
    _need_ndim(mat2, 3, "bmm", "mat2")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm(): batch sizes differ: {tuple(input.shape)} and "
                           f"{tuple(mat2.shape)}")
    if input.shape[2] != mat2.shape[1]:
        raise RuntimeError(f"bmm(): shapes {tuple(input.shape)} and {tuple(mat2.shape)} cannot "
                           f"be multiplied ({input.shape[2]} != {mat2.shape[1]})")
    return input @ mat2


def dot(input, other):
    """Inner product of two 1-D tensors of the same length (a 0-d result)."""
    _need_ndim(input, 1, "dot", "input")
    _need_ndim(other, 1, "dot", "other")
    if input.shape[0] != other.shape[0]:
        raise RuntimeError(f"dot(): the vectors have different lengths {input.shape[0]} and "
                           f"{other.shape[0]}")
    return input @ other


def mv(input, vec):
    """Matrix-vector product of a (n, m) matrix and a (m,) vector."""
    _need_ndim(input, 2, "mv", "input")
    _need_ndim(vec, 1, "mv", "vec")
    if input.shape[1] != vec.shape[0]:
        raise RuntimeError(f"mv(): shapes {tuple(input.shape)} and {tuple(vec.shape)} cannot be "
                           f"multiplied ({input.shape[1]} != {vec.shape[0]})")
    return input @ vec


# ---- inverse, slogdet ---------------------------------------------------------------------------

def _check_square(a, name):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise RuntimeError(f"{name}: expected a square matrix or a batch of square matrices, "
                           f"got shape {tuple(a.shape)}")
    if a.dtype.kind != "f":
        raise RuntimeError(f"{name}: expected a floating point input, got {a.dtype}")


class _Inverse(Function):
    @staticmethod
    def forward(ctx, a):
        _check_square(a, "linalg.inv")
        xp = xp_of(a)
        try:
            out = xp.linalg.inv(a)
        except np.linalg.LinAlgError as e:
            raise RuntimeError(f"linalg.inv: the input is singular (not invertible): {e}") \
                from None
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        # d(A^-1) = -A^-1 dA A^-1  =>  grad_A = -A^-T g A^-T (the saved output stays connected)
        inv, = ctx.saved_tensors
        t = inv.mT
        return -(t @ g @ t)


def inverse(input):
    """Inverse of a square matrix (or of each matrix in a batch).

    >>> import gmcore as gm
    >>> gm.inverse(gm.tensor([[2.0, 0.0], [0.0, 4.0]])).tolist()
    [[0.5, 0.0], [0.0, 0.25]]
    """
    return _Inverse.apply(input)


linalg_inv = inverse

slogdet_return_type = collections.namedtuple("slogdet", ["sign", "logabsdet"])


class _Slogdet(Function):
    @staticmethod
    def forward(ctx, a):
        _check_square(a, "linalg.slogdet")
        xp = xp_of(a)
        sign, logabs = xp.linalg.slogdet(a)
        sign, logabs = xp.asarray(sign, dtype=a.dtype), xp.asarray(logabs, dtype=a.dtype)
        ctx.mark_non_differentiable(sign)
        ctx.save_for_backward(a)
        return sign, logabs

    @staticmethod
    def backward(ctx, g_sign, g_logabs):
        # d log|det A| / dA = A^-T; written with inverse() so it is itself differentiable
        a, = ctx.saved_tensors
        return g_logabs.unsqueeze(-1).unsqueeze(-1) * inverse(a).mT


def slogdet(input):
    """``(sign, logabsdet)`` of the determinant of a square matrix (or a batch), as
    ``torch.linalg.slogdet``; ``logabsdet`` is differentiable (gradient ``A^-T``).

    >>> import gmcore as gm
    >>> s, l = gm.slogdet(gm.tensor([[-2.0, 0.0], [0.0, 3.0]]))
    >>> s.item(), round(l.item(), 4)
    (-1.0, 1.7918)
    """
    return slogdet_return_type(*_Slogdet.apply(input))


linalg_slogdet = slogdet
