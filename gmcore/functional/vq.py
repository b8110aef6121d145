"""Vector quantization: nearest codebook row and EMA cluster statistics (the ``vq`` kernel family).

Two kernel ops, each with these implementations (preference order per device):

=========== ====== ===================================================================
name        device where
=========== ====== ===================================================================
cpp         cpu    ``csrc/vq_cpu.cpp`` via ``gmcore._C`` (OpenMP, register-blocked tile)
numba       cpu    ``kernels/numba/vq.py``
reference   cpu    :func:`vq_nearest_reference`, :func:`vq_ema_stats_reference` (NumPy)
triton      cuda   ``kernels/triton/vq.py``
cuda        cuda   ``csrc/vq.cu`` via ``gmcore._C``
reference   cuda   the same reference functions on CuPy
=========== ====== ===================================================================

``nearest``: ``z`` (N, D), ``codebook`` (K, D), same float dtype -> int64 (N,) indices of the
nearest code in squared Euclidean distance, ties to the lowest index. ``ema_stats``: ``z``
(N, D), int64 ``indices`` (N,), ``K`` -> ``counts`` (K,) and ``sums`` (K, D) in z's dtype.

How distances are computed. ||z - c||^2 = ||z||^2 + ||c||^2 - 2 z.c; ||z||^2 is the same for
every code of a row, so every implementation minimises the score ``||c||^2 - 2 z.c`` with the
norms ||c||^2 precomputed once (O(K)). The fast implementations stream the codebook in tiles and
keep a running (best score, best index) per row: no N x K matrix, extra memory O(N + K*D) (the
codebook copy they pack, the norms, the output). The reference computes the same scores as a
matrix product, chunked over rows (4096 x K at a time) to bound its memory.

Ties and rounding. Within one implementation equal computed scores go to the lowest index
(strict ``<`` in increasing code order; ``argmin``'s first occurrence in the reference). The
cpp, numba and cuda kernels give duplicate codes bit-identical scores, so the lowest duplicate
wins; the reference (and Triton under its CPU interpreter) take the products from BLAS, which
may round identical columns differently, so there any duplicate may win. Between
implementations the scores differ by rounding (summation order, FMA), of order
``eps * (||z||^2 + ||c||^2)``, so two codes whose exact float64 distances are closer than that
may be swapped; each choice is then within rounding of the true minimum.

NaN and inf, the same in every implementation (``csrc/vq.h`` states the rules once):

* a row of ``z`` with a NaN or +-inf has no nearest code (its distance to every code is NaN or
  inf): the kernels give it index -1;
* a code with a NaN or +-inf is never chosen (its scores are NaN or +inf and lose every strict
  ``<`` against the running best, which starts at +inf); nor is a code whose squared norm
  overflows the dtype. A finite row that no code qualifies for also gets -1.

:func:`vq_nearest` (and so ``nn.VectorQuantizer``) turns any -1 into a ValueError naming the
number of such rows, since ``codebook[-1]`` would be a silent wrong result. A non-finite code
alone is no error: it goes unused, and ``nn.VectorQuantizer``'s dead-code restart replaces it.
"""

from __future__ import annotations

import numpy as np

from .. import backend, dispatch
from ..autograd import Function, once_differentiable
from ..tensor import Tensor
from .indexing import embedding

__all__ = ["vq_nearest", "vq_ema_stats", "VQNearest", "vq_nearest_reference", "vq_ema_stats_reference"]

_REF_CHUNK = 4096  # rows per matrix product in the reference: bounds its scratch at 4096 x K
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- reference implementations (the specification), NumPy and CuPy alike -----------------

def vq_nearest_reference(z, codebook):
    """int64 index of the nearest ``codebook`` row for each row of ``z`` (raw arrays).

    Scores ``||c||^2 - 2 z.c`` (the squared distance less ``||z||^2``) by a matrix product per
    chunk of rows; NaN scores become +inf so they never win; ``argmin`` takes the first (lowest)
    index among equal scores. -1 for a row with a NaN / inf and for a row whose best score is
    +inf (no finite code), as the module docstring says.
    """
    xp = backend.xp_of(z)
    n = z.shape[0]
    out = xp.empty(n, dtype=xp.int64)
    cn = (codebook * codebook).sum(axis=1)
    ct = codebook.T
    for i0 in range(0, n, _REF_CHUNK):
        s = z[i0:i0 + _REF_CHUNK] @ ct
        s *= -2
        s += cn
        s[xp.isnan(s)] = xp.inf
        arg = s.argmin(axis=1)
        found = xp.take_along_axis(s, arg[:, None], axis=1)[:, 0] < xp.inf
        found &= xp.isfinite(z[i0:i0 + _REF_CHUNK]).all(axis=1)
        out[i0:i0 + _REF_CHUNK] = xp.where(found, arg, -1)
    return out


def vq_ema_stats_reference(z, indices, num_codes):
    """``(counts, sums)``: rows per code and the sum of the rows of ``z`` per code (raw arrays).

    ``counts`` (K,) and ``sums`` (K, D) have z's dtype (counts feed EMA arithmetic directly).
    """
    xp = backend.xp_of(z)
    counts = xp.bincount(indices, minlength=num_codes).astype(z.dtype)
    sums = xp.zeros((num_codes, z.shape[1]), dtype=z.dtype)
    backend.scatter_add(sums, indices, z)
    return counts, sums


# ---- loaders -----------------------------------------------------------------------------------

def _load_cpp(op):
    def load():
        _C = dispatch.require_C()
        return _C.vq_nearest_cpu if op == "nearest" else _C.vq_ema_stats_cpu
    return load


def _load_numba(op):
    def load():
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"numba is not installed ({exc})") from None
        from ..kernels.numba import vq as nb
        return nb.vq_nearest if op == "nearest" else nb.vq_ema_stats
    return load


def _load_triton(op):
    def load():
        dispatch.require_cupy()
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"triton is not installed ({exc})") from None
        from ..kernels.triton import vq as tr
        return tr.vq_nearest if op == "nearest" else tr.vq_ema_stats
    return load


def _load_cuda(op):
    def load():
        cp = dispatch.require_cupy()
        _C = dispatch.require_C(cuda=True)

        def vq_nearest_cuda(z, codebook):
            n, d = z.shape
            k = codebook.shape[0]
            with z.device:
                out = cp.empty(n, dtype=cp.int64)
                cnorm = cp.empty(k, dtype=z.dtype)
                stream = cp.cuda.get_current_stream().ptr
                _C.vq_nearest_cuda(z.data.ptr, codebook.data.ptr, cnorm.data.ptr, out.data.ptr, n, k, d,
                                   z.dtype.name, stream)
            return out

        def vq_ema_stats_cuda(z, indices, num_codes):
            n, d = z.shape
            with z.device:
                counts = cp.empty(num_codes, dtype=z.dtype)
                sums = cp.empty((num_codes, d), dtype=z.dtype)
                if d == 0:
                    counts[...] = cp.bincount(indices, minlength=num_codes)
                    return counts, sums
                stream = cp.cuda.get_current_stream().ptr
                _C.vq_ema_stats_cuda(z.data.ptr, indices.data.ptr, counts.data.ptr, sums.data.ptr, n,
                                     num_codes, d, z.dtype.name, stream)
            return counts, sums

        return vq_nearest_cuda if op == "nearest" else vq_ema_stats_cuda
    return load


def _load_reference(op, cuda=False):
    def load():
        if cuda:
            dispatch.require_cupy()
        return vq_nearest_reference if op == "nearest" else vq_ema_stats_reference
    return load


# Preference order = registration order (fastest first, measured: benchmarks/bench_vq.py);
# GMCORE_KERNELS overrides (e.g. GMCORE_KERNELS=vq=numba).
for _op in ("nearest", "ema_stats"):
    dispatch.register("vq", _op, "cpu", "cpp", _load_cpp(_op))
    dispatch.register("vq", _op, "cpu", "numba", _load_numba(_op))
    dispatch.register("vq", _op, "cpu", "reference", _load_reference(_op))
    dispatch.register("vq", _op, "cuda", "triton", _load_triton(_op))
    dispatch.register("vq", _op, "cuda", "cuda", _load_cuda(_op))
    dispatch.register("vq", _op, "cuda", "reference", _load_reference(_op, cuda=True))
del _op


def _choose(op, array):
    """(name, implementation) for ``op`` on the array's device; other dtypes run the reference."""
    if array.dtype not in _KERNEL_DTYPES:
        return "reference", vq_nearest_reference if op == "nearest" else vq_ema_stats_reference
    return dispatch.choose("vq", op, backend.device_of(array).type)


def _refuse_unmatched(indices, z, codebook):
    """ValueError for rows the kernel gave -1 (a NaN / inf in the row, or no finite code).

    The happy path costs one min over the indices: on CUDA that is a device sync (gathering
    ``codebook[-1]`` instead would be a silent wrong result).
    """
    if indices.size == 0 or int(indices.min()) >= 0:
        return
    xp = backend.xp_of(indices)
    n = indices.shape[0]
    nonfinite = ~xp.isfinite(z).all(axis=1)
    n_bad = int(nonfinite.sum())
    if n_bad:
        raise ValueError(f"vq_nearest: {n_bad} of {n} rows of z contain NaN or inf (the first is row "
                         f"{int(nonfinite.argmax())}); such a row has no nearest code")
    bad_codes = int((~xp.isfinite(codebook).all(axis=1)).sum())
    raise ValueError(f"vq_nearest: {int((indices < 0).sum())} of {n} rows of z have no code at a finite "
                     f"distance ({bad_codes} of {codebook.shape[0]} codebook rows contain NaN or inf; "
                     f"the squared distances to the others overflow {z.dtype})")


# ---- the differentiable op -----------------------------------------------------------------

class VQNearest(Function):
    """Fused nearest-code lookup: ``(indices, codebook[indices])``.

    Forward runs the dispatched kernel for the indices and gathers the rows. The indices are
    non-differentiable and ``quantized`` depends on ``z`` only through them, so ``z`` gets no
    gradient. Backward of the gather: ``grad_codebook[c] = sum of grad_quantized over the rows
    that chose c`` -- exactly the ``sums`` of the ``ema_stats`` kernel applied to the incoming
    gradient, so it reuses that kernel (one pass). Once-differentiable; the reference path
    (``GMCORE_KERNELS=vq=reference``) stays fully differentiable.
    """

    @staticmethod
    def forward(ctx, z, codebook, impl):
        xp = backend.xp_of(z)
        z = xp.ascontiguousarray(z)
        codebook = xp.ascontiguousarray(codebook)
        indices = impl(z, codebook)
        _refuse_unmatched(indices, z, codebook)
        quantized = xp.take(codebook, indices, axis=0)
        ctx.mark_non_differentiable(indices)
        ctx.num_codes = codebook.shape[0]
        ctx.save_for_backward(indices)
        return indices, quantized

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_indices, grad_quantized):
        if not ctx.needs_input_grad[1]:
            return None, None, None
        (indices,) = ctx.saved_arrays
        xp = backend.xp_of(grad_quantized)
        g = xp.ascontiguousarray(grad_quantized)
        _, stats = _choose("ema_stats", g)
        _, grad_codebook = stats(g, indices, ctx.num_codes)
        return None, grad_codebook, None


def _check_pair(z, codebook):
    for name, t in (("z", z), ("codebook", codebook)):
        if not isinstance(t, Tensor):
            raise TypeError(f"vq_nearest: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"vq_nearest: {name} must be 2-D, got shape {tuple(t.shape)}")
        if t.data.dtype.kind != "f":
            raise TypeError(f"vq_nearest: {name} must be floating point, got {t.dtype}")
    if z.data.dtype != codebook.data.dtype:
        raise TypeError(f"vq_nearest: z and codebook must have the same dtype, got {z.dtype} and "
                        f"{codebook.dtype}")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"vq_nearest: z has D={z.shape[1]} features but the codebook rows have "
                         f"D={codebook.shape[1]}")
    if codebook.shape[0] == 0:
        raise ValueError("vq_nearest: the codebook is empty (K=0)")
    if z.device != codebook.device:
        raise RuntimeError(f"vq_nearest: z is on {z.device} but the codebook is on {codebook.device}")


def vq_nearest(z, codebook):
    """Nearest codebook row of each row of ``z``: returns ``(indices, quantized)``.

    ``z`` (N, D) and ``codebook`` (K, D) share a float dtype and device. ``indices`` is int64 (N,),
    the argmin of the squared Euclidean distance (ties to the lowest index); ``quantized =
    codebook[indices]`` carries gradient to the codebook rows (``z`` gets none: use a
    straight-through estimator, as ``nn.VectorQuantizer`` does). The fast kernels never form the
    N x K distance matrix; see the module docstring for how distances round.

    A row of ``z`` with a NaN or inf raises a ValueError naming how many there are (every
    implementation; the kernels mark such rows -1). A codebook row with a NaN or inf is never
    chosen; when no code is left at a finite distance from some row, that raises too.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> codebook = gm.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    >>> idx, q = F.vq_nearest(gm.tensor([[0.9, 1.2], [-0.1, 0.2]]), codebook)
    >>> idx.tolist(), q.tolist()
    ([1, 0], [[1.0, 1.0], [0.0, 0.0]])
    >>> q.sum().backward(); codebook.grad.tolist()
    [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    >>> F.vq_nearest(gm.tensor([[0.9, float("nan")], [0.1, 0.2]]), codebook)
    Traceback (most recent call last):
        ...
    ValueError: vq_nearest: 1 of 2 rows of z contain NaN or inf (the first is row 0); such a row has no nearest code
    """
    _check_pair(z, codebook)
    name, impl = _choose("nearest", z.data)
    if name != "reference":
        return VQNearest.apply(z, codebook, impl)
    xp = backend.xp_of(z.data)
    zd, cd = xp.ascontiguousarray(z.data), xp.ascontiguousarray(codebook.data)
    found = vq_nearest_reference(zd, cd)
    _refuse_unmatched(found, zd, cd)
    indices = Tensor(found)
    return indices, embedding(indices, codebook)  # differentiable gather: double backward works


def vq_ema_stats(z, indices, num_codes):
    """Per-code ``(counts (K,), sums (K, D))`` of the rows of ``z`` (N, D) grouped by ``indices``.

    The scatter-add behind EMA codebook updates (``nn.VectorQuantizer``). Both results have z's
    dtype and carry no gradient. ``indices`` is an integer tensor of N entries in ``[0, K)``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> counts, sums = F.vq_ema_stats(gm.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
    ...                               gm.tensor([2, 0, 2]), 3)
    >>> counts.tolist(), sums.tolist()
    ([1.0, 0.0, 2.0], [[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])
    """
    if not isinstance(z, Tensor) or z.ndim != 2 or z.data.dtype.kind != "f":
        raise ValueError("vq_ema_stats: z must be a 2-D floating-point Tensor, got "
                         + (f"shape {tuple(z.shape)} {z.dtype}" if isinstance(z, Tensor) else type(z).__name__))
    num_codes = int(num_codes)
    if num_codes < 0:
        raise ValueError(f"vq_ema_stats: num_codes must be >= 0, got {num_codes}")
    xp = backend.xp_of(z.data)
    idx = indices.data if isinstance(indices, Tensor) else xp.asarray(indices)
    if backend.device_of(idx) != backend.device_of(z.data):
        raise RuntimeError(f"vq_ema_stats: indices are on {backend.device_of(idx)} but z is on {z.device}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"vq_ema_stats: indices must be an integer tensor, got {idx.dtype}")
    if idx.ndim != 1 or idx.shape[0] != z.shape[0]:
        raise ValueError(f"vq_ema_stats: indices must be 1-D with one entry per row of z ({z.shape[0]}), "
                         f"got shape {tuple(idx.shape)}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_codes):
        raise IndexError(f"vq_ema_stats: indices must lie in [0, {num_codes}), got values in "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    idx = xp.ascontiguousarray(idx, dtype=xp.int64)
    _, impl = _choose("ema_stats", z.data)
    counts, sums = impl(xp.ascontiguousarray(z.data), idx, num_codes)
    return Tensor(counts), Tensor(sums)
