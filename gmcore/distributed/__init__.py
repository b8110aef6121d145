"""Data-parallel training over MPI (CPU ranks) and NCCL (GPUs), with torch.distributed's names.

Start N processes with ``mpiexec -n N``; each calls :func:`init_process_group` (``gmcore train``
does it by itself when it finds it was started by mpiexec) and then sees its :func:`get_rank`
among :func:`get_world_size`. Collectives work in place on gmcore Tensors:

* ``backend="mpi"`` (the default): mpi4py's buffer calls on the arrays' memory (no pickling);
  a CuPy tensor goes through host memory.
* ``backend="nccl"``: ``cupy.cuda.nccl`` on device memory, its communicator set up over MPI
  (rank 0 makes the unique id and broadcasts it); one GPU per rank, ``cuda:<local rank>``.

mpi4py and an MPI library come from the ``dist`` extra (``pip install "gmcore[dist]"``, i.e.
``mpi4py`` and ``mpich``: a working ``mpiexec`` with no system packages). Without them a
single process still works (world size 1) and a launch under mpiexec is a clear error.

    mpiexec -n 2 python -c "import gmcore as gm, gmcore.distributed as dist; \\
        dist.init_process_group(); t = gm.ones(3) * dist.get_rank(); dist.all_reduce(t); \\
        print(dist.get_rank(), t.tolist())"

The pieces built on these: :class:`~gmcore.distributed.ddp.DistributedDataParallel` (gradient
averaging in buckets), :class:`gmcore.data.DistributedSampler`, :class:`gmcore.nn.SyncBatchNorm`.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["ReduceOp", "is_available", "is_initialized", "init_process_group", "destroy_process_group",
           "get_rank", "get_world_size", "get_backend", "barrier", "all_reduce", "broadcast",
           "all_reduce_array", "launched_world_size", "abort", "check_same", "DistributedError",
           "DistributedDataParallel"]

# Environment variables through which launchers announce the world size (MPICH/Hydra, Open MPI,
# MVAPICH, Intel MPI's PMI); read before MPI is imported, so a plain run never touches MPI.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


class DistributedError(RuntimeError):
    """A data-parallel set-up that cannot work: MPI missing, ranks that disagree."""


class ReduceOp:
    """Reduction operations, as ``torch.distributed.ReduceOp`` (strings work too)."""
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"


class _Group:
    def __init__(self, comm, backend, nccl=None):
        self.comm, self.backend, self.nccl = comm, backend, nccl
        self.rank, self.size = comm.Get_rank(), comm.Get_size()


_group: _Group | None = None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError("data-parallel gmcore needs mpi4py and an MPI library: "
                               "pip install \"gmcore[dist]\" (mpi4py and mpich)") from None
    return MPI


def launched_world_size() -> int:
    """How many ranks the launcher (mpiexec) started, from its environment; 1 for a plain run."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def is_available() -> bool:
    """Whether mpi4py can be imported (the ``dist`` extra is installed)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_initialized() -> bool:
    return _group is not None


def init_process_group(backend: str = "mpi") -> None:
    """Join the ranks started by mpiexec (``MPI.COMM_WORLD``); ``backend`` "mpi" or "nccl".
    Calling it again with the same backend does nothing."""
    global _group
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl', got {backend!r}")
    if _group is not None:
        if _group.backend != backend:
            raise DistributedError(f"the process group is already initialised with backend "
                                   f"{_group.backend!r}, not {backend!r}")
        return
    comm = _mpi().COMM_WORLD
    nccl = _nccl_communicator(comm) if backend == "nccl" else None
    _group = _Group(comm, backend, nccl)


def _nccl_communicator(comm):
    try:
        import cupy as cp
        from cupy.cuda import nccl
    except ImportError:
        raise DistributedError("backend 'nccl' needs CuPy with NCCL (cupy.cuda.nccl)") from None
    from .training import local_device
    # the communicator belongs to the current device: this rank's GPU on its node
    cp.cuda.Device(int(local_device("cuda", comm.Get_rank()).split(":")[1])).use()
    uid = np.zeros(128, dtype=np.uint8)
    if comm.Get_rank() == 0:
        uid[:] = np.frombuffer(bytes(bytearray(v % 256 for v in nccl.get_unique_id())), dtype=np.uint8)
    comm.Bcast(uid, root=0)
    uid_tuple = tuple(int(v) if v < 128 else int(v) - 256 for v in uid)   # NCCL's id: signed chars
    return nccl.NcclCommunicator(comm.Get_size(), uid_tuple, comm.Get_rank())


def destroy_process_group() -> None:
    """Forget the group (MPI itself stays initialised until the process ends, as mpi4py does)."""
    global _group
    _group = None


def _require():
    if _group is None:
        raise DistributedError("the process group is not initialised: call "
                               "gmcore.distributed.init_process_group() first")
    return _group


def get_rank() -> int:
    """This process's rank (0 when no group is initialised)."""
    return _group.rank if _group is not None else 0


def get_world_size() -> int:
    """How many ranks there are (1 when no group is initialised)."""
    return _group.size if _group is not None else 1


def get_backend() -> str:
    return _require().backend


def barrier() -> None:
    """Wait until every rank gets here."""
    _require().comm.Barrier()


def abort(code: int = 1) -> None:
    """End every rank at once (after a failure on one of them: the others would wait forever in
    their next collective). Checkpoints are written atomically, so none is left half-written."""
    if _group is not None and _group.size > 1:
        _group.comm.Abort(code)


def _mpi_op(op):
    MPI = _mpi()
    return {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]


def _check_op(op) -> str:
    op = str(op).lower()
    if op not in ("sum", "avg", "max", "min"):
        raise ValueError(f"reduce op must be one of sum, avg, max, min, got {op!r}")
    return op


def all_reduce_array(a, op: str = "sum"):
    """Reduce a contiguous NumPy or CuPy array across ranks, in place; returns it."""
    g = _require()
    op = _check_op(op)
    if g.size == 1:
        return a
    if not a.flags.c_contiguous:
        raise ValueError("all_reduce: the array must be C-contiguous")
    if isinstance(a, np.ndarray):
        g.comm.Allreduce(_mpi().IN_PLACE, a, op=_mpi_op(op))
    elif g.nccl is not None:
        _nccl_all_reduce(g, a, op)
    else:   # a CuPy array over MPI: through host memory
        host = a.get()
        g.comm.Allreduce(_mpi().IN_PLACE, host, op=_mpi_op(op))
        a.set(host)
    if op == "avg":
        a /= g.size
    return a


def _nccl_all_reduce(g, a, op):
    import cupy as cp
    from cupy.cuda import nccl

    types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
             np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int64): nccl.NCCL_INT64,
             np.dtype(np.int32): nccl.NCCL_INT32}
    if a.dtype not in types:
        raise TypeError(f"all_reduce over NCCL: unsupported dtype {a.dtype}")
    ops = {"sum": nccl.NCCL_SUM, "avg": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
    stream = cp.cuda.get_current_stream()
    g.nccl.allReduce(a.data.ptr, a.data.ptr, a.size, types[a.dtype], ops[op], stream.ptr)


def all_reduce(tensor, op=ReduceOp.SUM) -> None:
    """Reduce ``tensor`` across ranks in place (``torch.distributed.all_reduce``).

    >>> import gmcore as gm, gmcore.distributed as dist
    >>> dist.init_process_group()   # one process: world size 1, nothing changes
    >>> t = gm.ones(2); dist.all_reduce(t); t.tolist()
    [1.0, 1.0]
    """
    a = tensor.data
    if not a.flags.c_contiguous:
        raise ValueError("all_reduce: the tensor must be contiguous")
    all_reduce_array(a, op)


def broadcast(tensor, src: int = 0) -> None:
    """Copy ``tensor`` from rank ``src`` to every rank, in place (``torch.distributed.broadcast``)."""
    g = _require()
    if not 0 <= src < g.size:
        raise ValueError(f"broadcast: src {src} is not a rank of a world of {g.size}")
    if g.size == 1:
        return
    a = tensor.data
    if not a.flags.c_contiguous:
        raise ValueError("broadcast: the tensor must be contiguous")
    if isinstance(a, np.ndarray):
        g.comm.Bcast(a, root=src)
    else:
        host = a.get()
        g.comm.Bcast(host, root=src)
        a.set(host)


def broadcast_text(text: str, src: int = 0) -> str:
    """``text`` of rank ``src`` on every rank (UTF-8 bytes through buffer calls: no pickling)."""
    g = _require()
    if g.size == 1:
        return text
    raw = text.encode("utf-8") if g.rank == src else b""
    n = np.array([len(raw)], dtype=np.int64)
    g.comm.Bcast(n, root=src)
    buf = np.frombuffer(raw, dtype=np.uint8).copy() if g.rank == src else np.empty(int(n[0]), np.uint8)
    g.comm.Bcast(buf, root=src)
    return buf.tobytes().decode("utf-8")


def check_same(what: str, text: str) -> None:
    """Raise :class:`DistributedError` on every rank when the ranks' ``text`` differ (e.g. their
    configurations as JSON); the message names the ranks that differ from rank 0."""
    g = _require()
    if g.size == 1:
        return
    mine = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    lengths = np.empty(g.size, dtype=np.int64)
    g.comm.Allgather(np.array([mine.size], dtype=np.int64), lengths)
    everything = np.empty(int(lengths.sum()), dtype=np.uint8)
    g.comm.Allgatherv(mine, [everything, lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    texts = [everything[offsets[r]:offsets[r + 1]].tobytes().decode("utf-8") for r in range(g.size)]
    differ = [r for r in range(1, g.size) if texts[r] != texts[0]]
    if differ:
        raise DistributedError(f"the ranks disagree on the {what}: rank(s) {differ} differ from rank 0 "
                               f"(rank 0: {texts[0][:300]}; rank {differ[0]}: {texts[differ[0]][:300]})")


from .ddp import DistributedDataParallel, average_gradients  # noqa: E402

__all__ += ["average_gradients"]
