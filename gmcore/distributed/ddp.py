"""Gradient averaging across ranks: :func:`average_gradients` (bucketed) and
:class:`DistributedDataParallel` (torch's wrapper: broadcast at start, averaged gradients after
every backward, ``no_sync()`` for accumulation).

Buckets: many small gradients are copied into one flat array per bucket (``bucket_cap_mb``, 25
MiB as torch) so that one message carries them; the buckets' non-blocking all-reduces are all
started before the first is waited on. They start after the backward pass, not during it:
gmcore's engine gives a leaf its gradient only once the whole graph has run, and an MPI library
without an asynchronous progress thread (MPICH's default) would not move the data while Python
computes anyway. What that costs is measured in ``benchmarks/bench_distributed.py``.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import autograd
from ..nn.module import Module

__all__ = ["DistributedDataParallel", "average_gradients"]


def _buckets(params, cap_bytes):
    """Parameters grouped by dtype and device into lists of at most ``cap_bytes`` each (a
    larger parameter gets a bucket of its own)."""
    groups: dict = {}
    for p in params:
        groups.setdefault((p.data.dtype.str, str(p.device)), []).append(p)
    out = []
    for ps in groups.values():
        bucket, size = [], 0
        for p in ps:
            nbytes = p.data.nbytes
            if bucket and size + nbytes > cap_bytes:
                out.append(bucket)
                bucket, size = [], 0
            bucket.append(p)
            size += nbytes
        if bucket:
            out.append(bucket)
    return out


def average_gradients(params, bucket_cap_mb: float = 25.0) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks (a missing gradient counts
    as zeros, so every rank sends the same buckets). Parameters must be listed in the same order
    on every rank.

    >>> import gmcore as gm, gmcore.distributed as dist
    >>> dist.init_process_group()   # world size 1 here: the gradients stay as they are
    >>> w = gm.ones(3, requires_grad=True); (w * 2).sum().backward()
    >>> dist.average_gradients([w]); w.grad.tolist()
    [2.0, 2.0, 2.0]
    """
    from . import _require, _mpi, _mpi_op, all_reduce_array

    g = _require()
    params = [p for p in params if p.requires_grad]
    if g.size == 1 or not params:
        return
    pending = []
    for bucket in _buckets(params, int(bucket_cap_mb * 2 ** 20)):
        xp = np if isinstance(bucket[0].data, np.ndarray) else __import__("cupy")
        flat = xp.concatenate([(p.grad.data if p.grad is not None else xp.zeros_like(p.data)).ravel()
                               for p in bucket])
        if isinstance(flat, np.ndarray):
            pending.append((bucket, flat, g.comm.Iallreduce(_mpi().IN_PLACE, flat, op=_mpi_op("sum"))))
        else:
            all_reduce_array(flat, "sum")
            pending.append((bucket, flat, None))
    from ..tensor import Tensor
    for bucket, flat, request in pending:
        if request is not None:
            request.Wait()
        flat /= g.size
        offset = 0
        for p in bucket:
            n = p.data.size
            view = flat[offset:offset + n].reshape(p.data.shape)
            if p.grad is None:
                p.grad = Tensor(view.copy())
            else:
                p.grad.data[...] = view
            offset += n


class DistributedDataParallel(Module):
    """``module`` replicated on every rank, its gradients averaged after each backward, as
    ``torch.nn.parallel.DistributedDataParallel``.

    Construction broadcasts rank 0's parameters and buffers, so every replica starts equal.
    Each rank feeds its own shard of the batch (:class:`gmcore.data.DistributedSampler`); once a
    backward through the wrapper's output is over, every parameter's ``.grad`` is the mean over
    the ranks, so the optimizers step alike. Inside ``with ddp.no_sync():`` gradients only
    accumulate locally (gradient accumulation); the first backward outside averages the total.
    With ``broadcast_buffers`` (the default, as torch) every training forward first copies rank
    0's buffers (batch norm running statistics) to the others, so the replicas stay equal;
    the batch statistics themselves are each rank's unless :class:`gmcore.nn.SyncBatchNorm`.

    >>> import gmcore as gm, gmcore.distributed as dist
    >>> dist.init_process_group()
    >>> model = dist.DistributedDataParallel(gm.nn.Linear(3, 1))
    >>> model(gm.ones(4, 3)).sum().backward()
    >>> model.module.weight.grad.shape
    gmcore.Size([1, 3])
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0, broadcast_buffers: bool = True):
        from . import _require, broadcast

        super().__init__()
        group = _require()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a gmcore.nn.Module, got {type(module).__name__}")
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.broadcast_buffers = bool(broadcast_buffers)
        self._sync = True
        self._queued = False
        if group.size > 1:
            for t in list(module.parameters()) + list(module.buffers()):
                broadcast(t, 0)
        self._hooks = [p.register_hook(self._on_gradient) for p in module.parameters() if p.requires_grad]

    def forward(self, *args, **kwargs):
        if self.broadcast_buffers and self.training:
            from . import broadcast
            for b in self.module.buffers():
                broadcast(b, 0)
        return self.module(*args, **kwargs)

    def _on_gradient(self, grad):
        # the first leaf gradient of a backward queues the averaging for its end
        if self._sync and not self._queued:
            self._queued = True
            autograd.queue_callback(self._average)
        return grad

    def _average(self):
        self._queued = False
        average_gradients(list(self.module.parameters()), self.bucket_cap_mb)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally, without communication."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous
