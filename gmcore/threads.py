"""``set_num_threads`` / ``get_num_threads``: one knob for the CPU thread pools gmcore uses.

gmcore's CPU work runs in three pools: OpenMP in the compiled ``gmcore._C`` kernels, numba's
parallel kernels, and the BLAS under NumPy's matmul. ``set_num_threads`` loads ``_C`` (when
built) to set its OpenMP count, sets numba's count when numba is loaded (else its start-up
size, ``NUMBA_NUM_THREADS``), and limits BLAS through threadpoolctl when that is installed;
no new dependency is imported at ``import gmcore`` time.
"""
import os
import sys

__all__ = ["set_num_threads", "get_num_threads"]

_requested = None  # the last set_num_threads(n), applied to pools that load afterwards


def set_num_threads(n):
    """Use ``n`` threads for gmcore's CPU kernels.

    Controls: the OpenMP threads of the compiled ``gmcore._C`` kernels (when ``_C`` is built
    with OpenMP), numba's parallel kernels (when numba is loaded; it is capped at the
    ``NUMBA_NUM_THREADS`` it started with; if numba is not loaded yet, it will start with
    ``n``), and the BLAS behind NumPy's matmul through ``threadpoolctl`` when that package is
    installed (otherwise BLAS keeps its own setting, e.g. ``OPENBLAS_NUM_THREADS``).

    >>> import gmcore as gm
    >>> before = gm.get_num_threads()
    >>> gm.set_num_threads(1); gm.get_num_threads()
    1
    >>> gm.set_num_threads(before)
    """
    global _requested
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _requested = n
    _apply(n)


def get_num_threads():
    """The thread count gmcore's CPU kernels use (the last ``set_num_threads``, else the
    OpenMP default of ``gmcore._C``, else ``OMP_NUM_THREADS`` or the CPU count)."""
    if _requested is not None:
        return _requested
    c = _loaded_C()
    if c is not None and hasattr(c, "omp_get_num_threads"):
        return int(c.omp_get_num_threads())
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def _loaded_C():
    return sys.modules.get("gmcore._C")


def _apply(n):
    try:
        from . import _C
    except ImportError:  # not built: no OpenMP pool of ours to set
        _C = None
    numba = sys.modules.get("numba")
    if numba is not None:
        # numba refuses counts above the pool it launched with (NUMBA_NUM_THREADS)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)  # read when numba starts its pool
    # After numba: starting numba's OpenMP threading layer calls omp_set_num_threads with its
    # pool size, which would undo ours in the libgomp that _C shares with it.
    if _C is not None and hasattr(_C, "omp_set_num_threads"):
        _C.omp_set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")  # stays in force: we keep no restorer

