"""``Embedding``: a lookup table of learnable vectors (``torch.nn.Embedding``)."""
from __future__ import annotations

from .. import creation
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """Rows of ``weight`` (num_embeddings, embedding_dim) at integer indices:
    (*) -> (*, embedding_dim).

    ``weight`` starts N(0, 1) with the ``padding_idx`` row zeroed; that row gets no gradient.
    With ``max_norm``, rows looked up are first renormalised in place to norm <= max_norm
    (``norm_type``-norm), as PyTorch. ``scale_grad_by_freq`` and ``sparse`` are not supported.

    >>> import gmcore as gm
    >>> emb = gm.nn.Embedding(10, 3, padding_idx=0)
    >>> emb(gm.tensor([[0, 2], [4, 9]])).shape, emb.weight[0].tolist()
    (gmcore.Size([2, 2, 3]), [0.0, 0.0, 0.0])
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=None):
        super().__init__()
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Embedding: {name} must be a non-negative int, got {v!r}")
        if padding_idx is not None:
            if padding_idx > 0 and padding_idx >= num_embeddings:
                raise ValueError(f"Embedding: padding_idx ({padding_idx}) must be within "
                                 f"num_embeddings ({num_embeddings})")
            if padding_idx < 0:
                if padding_idx < -num_embeddings:
                    raise ValueError(f"Embedding: padding_idx ({padding_idx}) must be within "
                                     f"num_embeddings ({num_embeddings})")
                padding_idx += num_embeddings
        if scale_grad_by_freq:
            raise NotImplementedError("Embedding: scale_grad_by_freq=True is not supported")
        if sparse:
            raise NotImplementedError("Embedding: sparse gradients are not supported")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            self.weight = Parameter(creation.empty(num_embeddings, embedding_dim, dtype=dtype,
                                                   device=device), requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight shape {tuple(_weight.shape)} does not "
                                 f"match ({num_embeddings}, {embedding_dim})")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self):
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0
            self.weight._version.value += 1

    def _renorm_(self, input):
        """Scale the looked-up rows whose norm exceeds max_norm down to max_norm (in place,
        outside the graph, as torch.embedding_renorm_)."""
        w = self.weight.data
        xp = self.weight._xp()
        rows = xp.unique(xp.asarray(input.data).reshape(-1).astype("int64"))
        rows = rows[(rows >= -self.num_embeddings) & (rows < self.num_embeddings)]
        sel = w[rows]
        p = float(self.norm_type)
        norms = xp.linalg.norm(sel.astype("float64"), ord=p, axis=1) if p != float("inf") \
            else xp.abs(sel).max(axis=1)
        scale = xp.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), 1.0)
        w[rows] = (sel * scale[:, None]).astype(w.dtype)
        self.weight._version.value += 1

    def forward(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"Embedding: expected an integer gmcore Tensor, got "
                            f"{type(input).__name__}")
        if self.max_norm is not None:
            self._renorm_(input)
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is ``embeddings`` (2-D; shared, not copied); frozen
        (``requires_grad=False``) unless ``freeze=False``.

        >>> import gmcore as gm
        >>> emb = gm.nn.Embedding.from_pretrained(gm.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> emb(gm.tensor([1])).tolist(), emb.weight.requires_grad
        ([[3.0, 4.0]], False)
        """
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        rows, cols = embeddings.shape
        return cls(rows, cols, _weight=embeddings, _freeze=freeze, padding_idx=padding_idx,
                   max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
