"""numba kernels (fast CPU path), one file per kernel family: ``<family>.py``.

Imported lazily by ``gmcore.dispatch`` loaders; compiled with ``@njit(parallel=True, cache=True)``.
"""
