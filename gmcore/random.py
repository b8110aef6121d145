"""Seeded randomness: ``manual_seed`` and ``Generator``.

A ``Generator`` wraps NumPy's PCG64 on the cpu and CuPy's generator on a GPU. The same seed gives
the same numbers on the same device (streams differ between cpu and cuda, as in PyTorch).
"""
import contextlib

import numpy as np

from . import backend

_DEFAULT_SEED = 0


class Generator:
    """A random number generator for one device.

    >>> import gmcore as gm
    >>> g = gm.Generator().manual_seed(7)
    >>> a = gm.randn(3, generator=g)
    >>> b = gm.randn(3, generator=gm.Generator().manual_seed(7))
    >>> bool((a == b).all())
    True
    """

    def __init__(self, device="cpu"):
        self.device = backend.as_device(device)
        self._seed = _DEFAULT_SEED
        self._rng = self._make(self._seed)
        self._shard = None   # (rank, world, global rows) under data-parallel training: see sharded()

    def _make(self, seed):
        if self.device.type == "cpu":
            return np.random.Generator(np.random.PCG64(seed))
        cp = backend.xp_for(self.device)
        with cp.cuda.Device(self.device.index):
            return cp.random.default_rng(seed)

    def manual_seed(self, seed):
        """Reset the stream to ``seed``; returns the generator."""
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self._seed = seed
        self._rng = self._make(seed)
        return self

    def seed(self):
        """Reseed from the operating system's entropy; returns the new seed."""
        s = int(np.random.SeedSequence().entropy % (2 ** 63))
        self.manual_seed(s)
        return s

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """A JSON-serialisable snapshot of the stream (cpu generators)."""
        if self.device.type != "cpu":
            raise NotImplementedError("get_state is available for cpu generators only")
        return {"seed": self._seed, "bit_generator": self._rng.bit_generator.state}

    def set_state(self, state):
        if self.device.type != "cpu":
            raise NotImplementedError("set_state is available for cpu generators only")
        self._seed = state["seed"]
        self._rng.bit_generator.state = state["bit_generator"]
        return self

    @contextlib.contextmanager
    def sharded(self, rank: int, world: int, rows: int):
        """Inside, a draw whose leading dimension is this rank's share of a ``rows``-example
        batch split across ``world`` ranks (rows ``rank, rank + world, ...``, as
        :class:`gmcore.data.DistributedSampler` deals them) is taken as those rows of the same
        draw over all ``rows``: each rank draws what a single process would for the whole batch
        and keeps its own examples' noise, and every rank's stream advances alike. Any other
        draw is drawn whole on every rank. Data-parallel training wraps each step in it, so its
        trajectory is the one-process run's.

        >>> import gmcore as gm
        >>> full = gm.Generator().manual_seed(3).normal((4, 2), 0.0, 1.0, "float64")
        >>> g = gm.Generator().manual_seed(3)
        >>> with g.sharded(rank=1, world=2, rows=4):
        ...     mine = g.normal((2, 2), 0.0, 1.0, "float64")
        >>> bool((mine == full[1::2]).all())
        True
        """
        if not (0 <= rank < world and rows >= 0):
            raise ValueError(f"sharded: rank {rank} of {world} ranks over {rows} rows is not a shard")
        previous, self._shard = self._shard, (int(rank), int(world), int(rows))
        try:
            yield self
        finally:
            self._shard = previous

    def _draw(self, draw, shape):
        """``draw(shape)``, or under :meth:`sharded` this rank's rows of the global draw."""
        if self._shard is not None:
            dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
            rank, world, rows = self._shard
            if dims and world > 1 and dims[0] == len(range(rank, rows, world)):
                whole = draw((rows,) + dims[1:])
                return backend.xp_for(self.device).ascontiguousarray(whole[rank::world])
        return draw(shape)

    # raw draws used by the factories; ``dtype`` is a NumPy dtype
    def normal(self, shape, mean, std, dtype):
        dtype = np.dtype(dtype).type
        if self.device.type == "cpu" and dtype in (np.float32, np.float64):
            out = self._draw(lambda s: self._rng.standard_normal(s, dtype=dtype), shape)
        else:
            out = self._draw(lambda s: self._rng.standard_normal(s).astype(dtype), shape)
        if std != 1.0:
            out *= std
        if mean != 0.0:
            out += mean
        return out

    def uniform(self, shape, low, high, dtype):
        dtype = np.dtype(dtype).type
        if self.device.type == "cpu" and dtype in (np.float32, np.float64):
            out = self._draw(lambda s: self._rng.random(s, dtype=dtype), shape)
        else:
            out = self._draw(lambda s: self._rng.random(s).astype(dtype), shape)
        if (low, high) != (0.0, 1.0):
            out *= (high - low)
            out += low
        return out

    def integers(self, low, high, shape, dtype):
        return self._draw(lambda s: self._rng.integers(low, high, size=s), shape).astype(dtype, copy=False)

    def permutation(self, n):
        if self.device.type == "cpu":
            return self._rng.permutation(n)
        # CuPy's Generator has no permutation: sorting uniform draws gives a uniform one
        return backend.xp_for(self.device).argsort(self._rng.random(n))


default_generator = Generator("cpu")
_cuda_generators = {}


def manual_seed(seed):
    """Seed every default generator (cpu and each CUDA device used so far); returns the cpu one.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0); a = gm.rand(2)
    >>> _ = gm.manual_seed(0); bool((a == gm.rand(2)).all())
    True
    """
    global _DEFAULT_SEED
    _DEFAULT_SEED = int(seed)
    default_generator.manual_seed(seed)
    for g in _cuda_generators.values():
        g.manual_seed(seed)
    return default_generator


def seed():
    return manual_seed(int(np.random.SeedSequence().entropy % (2 ** 63))).initial_seed()


def initial_seed():
    return default_generator.initial_seed()


def _generator_for(generator, device):
    """The generator to draw from: the one given (checked against the device) or the default."""
    device = backend.as_device(device)
    if generator is not None:
        if generator.device != device:
            raise RuntimeError(f"generator is on {generator.device} but the tensor is on {device}")
        return generator
    if device.type == "cpu":
        return default_generator
    g = _cuda_generators.get(device.index)
    if g is None:
        g = _cuda_generators[device.index] = Generator(device).manual_seed(_DEFAULT_SEED)
    return g
