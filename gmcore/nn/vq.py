"""``VectorQuantizer``: the bottleneck of VQ-VAE (van den Oord et al., 2017, "Neural Discrete
Representation Learning") and VQ-VAE-2, with EMA codebook updates and dead-code restarts.

The nearest-code search and the per-code statistics run on the ``vq`` kernel family
(:func:`gmcore.nn.functional.vq_nearest`, :func:`gmcore.nn.functional.vq_ema_stats`).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import no_grad
from ..random import _generator_for
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .parameter import Parameter

__all__ = ["VectorQuantizer"]


def _assign(tensor, values):
    """Overwrite a parameter/buffer in place (same object, version bumped for autograd checks)."""
    tensor.data[...] = values
    tensor._version.value += 1


class VectorQuantizer(Module):
    """Quantize vectors to the nearest of ``num_embeddings`` learned codes of size ``embedding_dim``.

    Input: ``(N, D)`` rows, or channels-first ``(B, D, *spatial)`` as a conv encoder produces
    (``(B, D, H, W)`` for images): each spatial position is one D-vector. Returns
    ``(quantized, loss, info)``:

    * ``quantized``: same shape as the input; the forward value is the nearest code, the gradient
      passes straight through to the input (``z + (q - z).detach()``, the straight-through
      estimator).
    * ``loss``: ``beta * ||z - sg(q)||^2`` (commitment), plus ``||sg(z) - q||^2`` (codebook loss)
      when ``ema=False``; both are means over the elements. With ``ema=True`` the codebook is not
      learned by gradient but by exponential moving averages (below), so only the commitment term
      remains.
    * ``info``: ``indices`` (int64, shape ``(N,)`` or ``(B, *spatial)``), ``perplexity`` (exp of the
      entropy of the batch's code histogram: 1 = one code used, K = all used evenly), ``usage``
      (fraction of the codes the batch used), ``counts`` (hits per code in the batch).

    EMA mode (training only, under ``no_grad``): with per-code batch counts ``n_c`` and sums
    ``s_c`` (one fused scatter-add kernel, ``vq_ema_stats``)::

        cluster_size <- decay * cluster_size + (1 - decay) * n_c
        embed_sum    <- decay * embed_sum    + (1 - decay) * s_c
        embedding_c   = embed_sum_c / ((cluster_size_c + eps) / (n + K eps) * n),  n = sum cluster_size

    (Laplace smoothing keeps unused codes from dividing by zero). ``cluster_size`` is kept in both
    modes as the usage tracker. Dead codes, those whose ``cluster_size`` falls below
    ``dead_code_threshold`` (expected hits per batch, decayed), are restarted in training mode
    from vectors of the current batch, drawn without replacement with probability proportional
    to their squared distance to their nearest code (k-means++'s rule, by Gumbel top-k), with
    ``generator`` (a :class:`gmcore.Generator`; the default generator of the device when None);
    0 disables it. Drawing by distance, rather than uniformly, matters on images: many vectors
    are copies of one (blank patches), and uniform draws restarted several codes on the same
    vector, where all but one died again at once.

    ``kmeans_init=True``: the first training-mode call seeds the codebook with k-means++
    (Arthur & Vassilvitskii, 2007) on that batch's vectors: the first code is a uniformly drawn
    vector, each next one a vector drawn with probability proportional to its squared distance to
    the nearest code chosen so far. Codes then start where the encoder's outputs are, instead of
    in a small box around zero that most vectors never reach (the usual cause of a collapsed
    codebook). A batch with fewer distinct vectors than codes gives duplicates, which go unused
    and are restarted like any dead code. The buffer ``initialized`` (in ``state_dict``) records
    that it happened, so a resumed run does not seed again.

    NaN and inf: an input vector with a NaN or inf raises a ValueError naming how many there are
    (from :func:`gmcore.nn.functional.vq_nearest`; on CUDA the check is one device sync). A code
    with a NaN or inf is never chosen, so its usage decays and the dead-code restart (when on)
    replaces it with a batch vector.

    Buffers ``cluster_size`` (K,) and, with ``ema=True``, ``embed_sum`` (K, D) are in
    ``state_dict``, as is the ``embedding`` (K, D) parameter (``requires_grad=False`` in EMA mode).

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> vq = gm.nn.VectorQuantizer(16, 4)
    >>> q, loss, info = vq(gm.randn(2, 4, 3, 3))       # channels-first (B, D, H, W)
    >>> q.shape, info["indices"].shape, loss.shape
    (gmcore.Size([2, 4, 3, 3]), gmcore.Size([2, 3, 3]), gmcore.Size([]))
    >>> sorted(vq.state_dict())
    ['cluster_size', 'embed_sum', 'embedding']
    """

    def __init__(self, num_embeddings, embedding_dim, beta=0.25, ema=True, decay=0.99, eps=1e-5,
                 dead_code_threshold=1e-2, generator=None, device=None, dtype=None, kmeans_init=False):
        super().__init__()
        if int(num_embeddings) < 1 or int(embedding_dim) < 1:
            raise ValueError(f"VectorQuantizer: num_embeddings and embedding_dim must be >= 1, got "
                             f"{num_embeddings} and {embedding_dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must be in [0, 1), got {decay}")
        if eps <= 0 or beta < 0 or dead_code_threshold < 0:
            raise ValueError("VectorQuantizer: eps must be > 0, beta and dead_code_threshold >= 0")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.beta, self.ema, self.decay, self.eps = float(beta), bool(ema), float(decay), float(eps)
        self.dead_code_threshold = float(dead_code_threshold)
        self.generator = generator
        k, d = self.num_embeddings, self.embedding_dim
        from .. import creation
        from . import init
        weight = creation.empty(k, d, device=device, dtype=dtype)
        init.uniform_(weight, -1.0 / k, 1.0 / k, generator=generator)  # as the VQ-VAE reference code
        self.embedding = Parameter(weight, requires_grad=not self.ema)
        # start every code "alive" (one expected hit per batch), so restarts wait for real disuse
        self.register_buffer("cluster_size", creation.ones(k, device=device, dtype=weight.dtype))
        if self.ema:
            self.register_buffer("embed_sum", Tensor(weight.data.copy()))
        self.kmeans_init = bool(kmeans_init)
        if self.kmeans_init:  # registered only when asked, so older state dicts still load
            self.register_buffer("initialized", creation.zeros((), device=device, dtype=weight.dtype))

    def extra_repr(self):
        return (f"{self.num_embeddings}, {self.embedding_dim}, beta={self.beta}, ema={self.ema}, "
                f"decay={self.decay}, dead_code_threshold={self.dead_code_threshold}"
                + (", kmeans_init=True" if self.kmeans_init else ""))

    # -- shapes --------------------------------------------------------------------------------
    def _flatten(self, z):
        if not isinstance(z, Tensor):
            raise TypeError(f"VectorQuantizer: expected a Tensor, got {type(z).__name__}")
        d = self.embedding_dim
        if z.ndim == 2:
            if z.shape[1] != d:
                raise ValueError(f"VectorQuantizer: (N, D) input must have D={d}, got shape {tuple(z.shape)}")
            return z, None
        if z.ndim < 3 or z.shape[1] != d:
            raise ValueError(f"VectorQuantizer: expected (N, {d}) or channels-first (B, {d}, *spatial), "
                             f"got shape {tuple(z.shape)}")
        moved = z.movedim(1, -1)  # (B, *spatial, D)
        return moved.reshape(-1, d), tuple(moved.shape)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, z):
        x, moved_shape = self._flatten(z)
        if self.training and self.kmeans_init and not bool(self.initialized.item()):
            with no_grad():
                self._kmeans_plus_plus(x.detach().data)
        indices, q = F.vq_nearest(x.detach(), self.embedding)
        commitment = F.mse_loss(x, q.detach())
        loss = self.beta * commitment
        if not self.ema:
            loss = loss + F.mse_loss(q, x.detach())
        quantized = x + (q - x).detach()  # straight-through: d quantized / d z = identity

        xp = backend.xp_of(indices.data)
        with no_grad():
            if self.training:
                counts = self._update(x.detach(), indices)
            else:
                counts = xp.bincount(indices.data, minlength=self.num_embeddings).astype(x.data.dtype)
            n = max(int(indices.shape[0]), 1)
            p = counts / n
            safe = xp.where(p > 0, p, 1)
            perplexity = Tensor(xp.exp(-(p * xp.log(safe)).sum()))
            usage = Tensor((counts > 0).mean(dtype=x.data.dtype))

        if moved_shape is not None:
            quantized = quantized.reshape(moved_shape).movedim(-1, 1)
            indices = indices.reshape(moved_shape[:-1])
        info = {"indices": indices, "perplexity": perplexity, "usage": usage, "counts": Tensor(counts)}
        return quantized, loss, info

    def _update(self, x, indices):
        """Training-mode state updates (EMA codebook, usage, dead-code restart); returns the counts."""
        counts, sums = F.vq_ema_stats(x, indices, self.num_embeddings)
        counts, sums = counts.data, sums.data
        a = 1.0 - self.decay
        cs = self.cluster_size.data * self.decay + a * counts
        _assign(self.cluster_size, cs)
        if self.ema:
            es = self.embed_sum.data * self.decay + a * sums
            _assign(self.embed_sum, es)
            total = cs.sum()
            k = self.num_embeddings
            smoothed = (cs + self.eps) / (total + k * self.eps) * total  # Laplace smoothing
            _assign(self.embedding, es / smoothed[:, None])
        if self.dead_code_threshold > 0 and x.shape[0] > 0:
            self._restart_dead(x.data, indices.data)
        return counts

    def _restart_dead(self, batch, indices):
        xp = backend.xp_of(batch)
        dead = xp.nonzero(self.cluster_size.data < self.dead_code_threshold)[0]
        n_dead = int(dead.shape[0])
        if n_dead == 0:
            return
        g = _generator_for(self.generator, self.embedding.device)
        with backend.device_context(self.embedding.device):
            u = g.uniform((batch.shape[0],), 1e-12, 1.0, np.float64)
        # Gumbel top-k: the n_dead largest of log(err) + Gumbel noise are a draw without
        # replacement with P ~ err; vectors that sit on a code (err = 0) come last
        err = ((batch - self.embedding.data[indices]) ** 2).sum(1).astype(np.float64)
        with np.errstate(divide="ignore"):
            keys = xp.log(err) - xp.log(-xp.log(u))
        pick = xp.argsort(-keys, kind="stable")[:n_dead]
        if n_dead > pick.shape[0]:  # fewer vectors than dead codes: reuse them
            pick = pick[xp.arange(n_dead) % pick.shape[0]]
        fresh = batch[pick]
        emb = self.embedding.data.copy()
        emb[dead] = fresh
        _assign(self.embedding, emb)
        cs = self.cluster_size.data.copy()
        cs[dead] = 1.0  # alive again: one expected hit per batch
        _assign(self.cluster_size, cs)
        if self.ema:
            es = self.embed_sum.data.copy()
            es[dead] = fresh  # embed_sum / cluster_size reproduces the new code
            _assign(self.embed_sum, es)

    def _kmeans_plus_plus(self, batch):
        """Seed the codebook from the (N, D) batch by k-means++ (see the class docstring)."""
        xp = backend.xp_of(batch)
        if not bool(xp.isfinite(batch).all()):
            return  # vq_nearest names the bad rows next; the seeding waits for a clean batch
        n, k = int(batch.shape[0]), self.num_embeddings
        if n == 0:
            return
        g = _generator_for(self.generator, self.embedding.device)
        with backend.device_context(self.embedding.device):
            u = g.uniform((k,), 0.0, 1.0, np.float64)
        u = u.get() if hasattr(u, "get") else u   # one transfer, then host floats in the loop
        x = batch.astype(np.float64)
        chosen = [min(int(u[0] * n), n - 1)]
        d2 = ((x - x[chosen[0]]) ** 2).sum(1)
        for i in range(1, k):
            cdf = xp.cumsum(d2)
            total = float(cdf[-1])
            if total > 0:  # P(j) = d2_j / total; a vector already chosen (d2 = 0) is never drawn
                j = min(int(xp.searchsorted(cdf, u[i] * total, side="right")), n - 1)
            else:          # every vector already is a code: a duplicate, restarted later as dead
                j = min(int(u[i] * n), n - 1)
            chosen.append(j)
            d2 = xp.minimum(d2, ((x - x[j]) ** 2).sum(1))
        centers = batch[xp.asarray(chosen)].astype(self.embedding.data.dtype)
        _assign(self.embedding, centers)
        if self.ema:
            _assign(self.embed_sum, centers)  # with cluster_size 1: embed_sum / size = the code
        _assign(self.cluster_size, xp.ones_like(self.cluster_size.data))
        _assign(self.initialized, xp.ones_like(self.initialized.data))

    @property
    def codebook(self):
        """The (K, D) code vectors (the ``embedding`` parameter)."""
        return self.embedding

    def dead_codes(self):
        """Number of codes currently below ``dead_code_threshold``."""
        return int((self.cluster_size.data < self.dead_code_threshold).sum())

