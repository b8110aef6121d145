"""Embedding backward (the ``embedding`` kernel family): the gradient of a row lookup.

(The module is private: a public ``gmcore.functional.embedding`` submodule would shadow the
``embedding`` function on the package once imported.)

``embedding(idx, weight)`` itself lives in ``gmcore/functional/indexing.py``; its backward,
when not recorded, runs the dispatched kernel below. Every implementation takes
``(idx, grad, num_weights, padding_idx)``: ``idx`` a C-contiguous int64 (n,) array, ``grad`` a
C-contiguous (n, D) float array, ``padding_idx`` a row that gets no gradient (-1: none), and
returns the (num_weights, D) sums of the gradient rows per index.

=========== ====== ==========================================================
name        device where
=========== ====== ==========================================================
cpp         cpu    ``csrc/embedding_cpu.cpp`` via ``gmcore._C`` (counting sort, OpenMP over rows)
reference   cpu    :func:`embedding_backward_reference` (NumPy: stable sort + ``add.reduceat``)
reference   cuda   :func:`embedding_backward_reference` (CuPy: ``cupyx.scatter_add``)
=========== ====== ==========================================================
"""
import numpy as np

from .. import backend, dispatch

__all__ = ["embedding_backward_reference", "embedding_backward"]

FAMILY = "embedding"
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def embedding_backward_reference(idx, grad, num_weights, padding_idx=-1):
    """Rows of ``grad`` summed per index into a (num_weights, D) array; ``padding_idx`` row 0.

    On NumPy the lookups are sorted (stably) and each run of equal indices summed with
    ``add.reduceat``: a sequence of contiguous row sums, several times faster than
    ``np.add.at``'s per-element loop.
    """
    xp = backend.xp_of(grad)
    gw = xp.zeros((num_weights, grad.shape[1]), dtype=grad.dtype)
    if idx.size:
        if xp is np:
            order = np.argsort(idx, kind="stable")
            s = idx[order]
            starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
            gw[s[starts]] = np.add.reduceat(grad[order], starts, axis=0)
        else:
            backend.scatter_add(gw, idx, grad)
    if padding_idx >= 0:
        gw[padding_idx] = 0
    return gw


def _load_cpp():
    _C = dispatch.require_C()
    if not hasattr(_C, "embedding_backward_cpu"):
        raise RuntimeError("gmcore._C has no embedding_backward_cpu (rebuild the extension)")
    return _C.embedding_backward_cpu


def _load_reference_cuda():
    dispatch.require_cupy()
    return embedding_backward_reference


dispatch.register(FAMILY, "backward", "cpu", "cpp", _load_cpp)
dispatch.register(FAMILY, "backward", "cpu", "reference", lambda: embedding_backward_reference)
dispatch.register(FAMILY, "backward", "cuda", "reference", _load_reference_cuda)


def embedding_backward(idx, grad, num_weights, padding_idx=None):
    """The weight gradient of ``weight[idx]`` given ``grad`` of shape ``idx.shape + (D,)``
    (raw arrays in, a raw (num_weights, D) array out), through the dispatched kernel."""
    xp = backend.xp_of(grad)
    D = grad.shape[-1]
    flat_idx = xp.ascontiguousarray(idx.reshape(-1), dtype=np.int64)
    g2 = xp.ascontiguousarray(grad.reshape(-1, D))
    pad = -1 if padding_idx is None else int(padding_idx)
    if g2.dtype in _KERNEL_DTYPES:
        impl = dispatch.get(FAMILY, "backward", backend.device_of(g2).type)
    else:  # kernels cover float32/float64
        impl = embedding_backward_reference
    return impl(flat_idx, g2, int(num_weights), pad)
