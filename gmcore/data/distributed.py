"""``DistributedSampler``: each rank's share of a data set, as
``torch.utils.data.distributed.DistributedSampler``.

Every rank draws the same permutation for an epoch (from ``seed`` and the epoch alone: the rule
of gmcore's ``DataLoader``, ``SeedSequence([seed, epoch])``, not torch's generator) and takes
every ``num_replicas``-th index of it starting at its ``rank``. So with ``batch_size`` b per
rank, batch k of rank r holds rows r, r + R, r + 2R, ... of batch k of a single loader with
batch size R * b and the same seed: the ranks together see the one-process batches, example for
example, which is what makes data-parallel training follow the one-process trajectory.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Indices of ``dataset`` for one rank; pass it as ``DataLoader(..., sampler=...)``.

    ``drop_last=False`` pads the permutation with its first indices to a multiple of
    ``num_replicas`` (torch's rule), ``True`` drops its tail. The ``DataLoader`` calls
    ``set_epoch`` at the start of every epoch (torch leaves that to the user), so the order
    changes per epoch and a resumed loader finds it again.

    >>> import numpy as np
    >>> from gmcore.data import ArrayDataset, DataLoader, DistributedSampler
    >>> ds = ArrayDataset(np.arange(8))
    >>> s0 = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=False)
    >>> [int(i) for i in s0]
    [0, 2, 4, 6]
    >>> [x.tolist() for (x,) in DataLoader(ds, batch_size=2, sampler=s0)]
    [[0, 2], [4, 6]]
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        from .. import distributed as dist

        self.num_replicas = dist.get_world_size() if num_replicas is None else int(num_replicas)
        self.rank = dist.get_rank() if rank is None else int(rank)
        if self.num_replicas < 1:
            raise ValueError(f"num_replicas must be positive, got {self.num_replicas}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside 0..{self.num_replicas - 1}")
        self.dataset = dataset
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        self.total_size = n - n % self.num_replicas if drop_last else -(-n // self.num_replicas) * self.num_replicas
        self.num_samples = self.total_size // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch (an int64 array)."""
        n = len(self.dataset)
        if self.shuffle:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.epoch])))
            order = rng.permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.total_size > n:   # pad with the first indices, as torch
            order = np.concatenate([order, np.resize(order, self.total_size - n)])
        return order[:self.total_size][self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
