"""Vector normalisation and similarity: ``normalize``, ``cosine_similarity``,
``pairwise_distance``. Composites of tensor ops (differentiable to any order)."""
from ...functional.pointwise import clamp
from ._util import check_float

__all__ = ["normalize", "cosine_similarity", "pairwise_distance"]


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """``input / max(||input||_p, eps)`` along ``dim`` (spectral norm's power iteration, VQ
    codebooks on the sphere). Vectors shorter than ``eps`` are divided by ``eps``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.normalize(gm.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=gm.float64)).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    check_float(input, "input", "normalize")
    denom = clamp(input.norm(p, dim, keepdim=True), min=eps)
    return input / denom


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """Cosine of the angle between ``x1`` and ``x2`` along ``dim`` (broadcast first); each
    norm is clamped below by ``eps``, as PyTorch.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.cosine_similarity(gm.tensor([[1.0, 0.0]]), gm.tensor([[1.0, 1.0]])).round(decimals=4)
    tensor([0.7071])
    """
    op = "cosine_similarity"
    check_float(x1, "x1", op)
    check_float(x2, "x2", op)
    if x1.dtype != x2.dtype:
        raise RuntimeError(f"{op}: x1 ({x1.dtype}) and x2 ({x2.dtype}) must have the same dtype")
    n1 = clamp(x1.norm(2, dim, keepdim=True), min=eps)
    n2 = clamp(x2.norm(2, dim, keepdim=True), min=eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """``||x1 - x2 + eps||_p`` over the last dim (PyTorch's definition, eps included).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> round(F.pairwise_distance(gm.tensor([[0.0, 0.0]]), gm.tensor([[3.0, 4.0]]))[0].item(), 4)
    5.0
    """
    check_float(x1, "x1", "pairwise_distance")
    check_float(x2, "x2", "pairwise_distance")
    return (x1 - x2 + eps).norm(p, -1, keepdim)
