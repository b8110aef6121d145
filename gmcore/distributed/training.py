"""What ``gmcore train`` does differently under ``mpiexec -n N``: one object the loop asks.

* ``--batch-size`` stays the global batch: each rank takes every N-th row of it
  (:class:`gmcore.data.DistributedSampler`), so the ranks together see the one-process batches;
  random draws over the batch are sharded the same way (:meth:`gmcore.Generator.sharded`), so a
  two-rank run follows the one-process run's losses to float32 summation order.
* Gradients are averaged over the ranks in every optimizer update (bucketed all-reduce), for
  single-loss models and for the several networks of a GAN alike; logged losses are averaged.
  Buffers (batch norm statistics, EMA codebooks) are rank 0's at the start of every step, as
  torch's DDP; batch statistics are each rank's own unless ``--sync-batchnorm``.
* Rank 0 alone claims and writes the run folder (config.json, metrics, checkpoints, pictures);
  every rank resumes from the same checkpoint; evaluation is sharded and its sums reduced.
* The ranks must agree on the model and the configuration (checked at the start); a Ctrl-C
  stops all of them after the same step; a rank that fails ends all of them (``MPI.Abort``),
  and since checkpoints are written atomically none is left half-written.

With one process every method is the identity, so the loop has no special case.
"""
from __future__ import annotations

import contextlib
import json
import time

import numpy as np

__all__ = ["DataParallel", "for_training"]


class DataParallel:
    """The data-parallel context of one training process (world size 1: a plain run)."""

    def __init__(self, rank: int = 0, world: int = 1, sync_batchnorm: bool = False):
        self.rank, self.world = rank, world
        self.sync_batchnorm = sync_batchnorm
        self.comm_seconds = 0.0   # spent averaging gradients since the last log row

    def take_comm_seconds(self) -> float:
        """Seconds spent averaging gradients since the last call (for the log row)."""
        seconds, self.comm_seconds = self.comm_seconds, 0.0
        return seconds

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def batch_per_rank(self, batch_size: int) -> int:
        if batch_size % self.world:
            raise ValueError(f"--batch-size {batch_size} is the global batch and must divide evenly "
                             f"over the {self.world} ranks (e.g. {batch_size - batch_size % self.world or self.world})")
        return batch_size // self.world

    def describe(self, batch_size: int) -> dict:
        """What config.json records about the ranks."""
        return {"world_size": self.world, "batch_per_rank": self.batch_per_rank(batch_size),
                "sync_batchnorm": self.sync_batchnorm} if self.active else {}

    # ---- agreement -----------------------------------------------------------------------
    def agree(self, what: str, value) -> None:
        """Every rank must hold the same ``value`` (JSON-able): a clear error otherwise."""
        if self.active:
            from . import check_same
            check_same(what, json.dumps(value, sort_keys=True, default=str))

    def share_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (the run folder it claimed)."""
        if not self.active:
            return text
        from . import broadcast_text
        return broadcast_text(text, 0)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (a Ctrl-C seen by one of them)."""
        if not self.active:
            return bool(flag)
        from . import all_reduce_array
        return bool(all_reduce_array(np.array([1 if flag else 0], dtype=np.int64), "max")[0])

    def barrier(self) -> None:
        if self.active:
            from . import barrier
            barrier()

    # ---- the step ------------------------------------------------------------------------
    def sharded_randomness(self, batch_rows: int):
        """Around a step: batch-shaped draws of the default generator are this rank's rows of
        the one-process draw over the ``batch_rows`` global examples."""
        if not self.active:
            return contextlib.nullcontext()
        from ..random import default_generator
        return default_generator.sharded(self.rank, self.world, batch_rows)

    def broadcast_buffers(self, model) -> None:
        """Rank 0's buffers (batch norm statistics, EMA codebooks) to every rank before a step,
        as torch's DDP does by default (``broadcast_buffers=True``): replicas whose buffers
        moved apart on their own shards would otherwise drift apart for good."""
        if self.active:
            from . import broadcast
            for b in model.buffers():
                broadcast(b, 0)

    def average_gradients(self, params) -> None:
        if self.active:
            from .ddp import average_gradients
            start = time.perf_counter()
            average_gradients(params)
            self.comm_seconds += time.perf_counter() - start

    def mean_logs(self, sums: dict) -> dict:
        """The logged sums averaged over the ranks (every rank logs the same keys)."""
        if not self.active or not sums:
            return sums
        from . import all_reduce_array
        keys = sorted(sums)
        values = all_reduce_array(np.array([float(sums[k]) for k in keys], dtype=np.float64), "avg")
        return {k: float(v) for k, v in zip(keys, values)}

    def reduce_sum(self, *values: float) -> tuple:
        if not self.active:
            return values
        from . import all_reduce_array
        return tuple(float(v) for v in all_reduce_array(np.array(values, dtype=np.float64), "sum"))

    def fail(self, exc: BaseException, log) -> None:
        """A rank failed: say so and end every rank (the others would wait forever)."""
        if self.active:
            import sys
            print(f"gmcore train (rank {self.rank} of {self.world}): {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            from . import abort
            abort(1)


_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                         "PMIX_LOCAL_RANK")


def local_device(device: str, rank: int) -> str:
    """``cuda`` without an index becomes ``cuda:<this rank's index on its node>`` (one GPU per
    rank, as NCCL wants); anything else is kept."""
    import os
    if device != "cuda":
        return device
    for name in _LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return f"cuda:{int(os.environ[name])}"
    return f"cuda:{rank}"


def for_training(tcfg) -> DataParallel:
    """The context of this process: a plain run, or one rank of ``mpiexec -n N gmcore train``
    (found from the launcher's environment; mpi4py missing there is a clear error)."""
    from . import launched_world_size

    world = launched_world_size()
    if world <= 1:
        return DataParallel()
    from . import get_rank, get_world_size, init_process_group
    backend = "nccl" if str(tcfg.device).startswith("cuda") else "mpi"
    init_process_group(backend)
    if get_world_size() != world:
        from . import DistributedError
        raise DistributedError(f"the launcher announced {world} ranks but MPI sees {get_world_size()}: "
                               "is mpi4py built against the MPI library of this mpiexec?")
    return DataParallel(get_rank(), world, sync_batchnorm=bool(getattr(tcfg, "sync_batchnorm", False)))
