"""``Dataset``, ``ArrayDataset`` / ``TensorDataset`` and ``DataLoader`` (PyTorch-like).

A dataset is anything with ``__len__`` and ``__getitem__(i)`` returning a tuple of NumPy arrays
or numbers. Datasets that hold whole arrays also offer ``get_batch(indices)``: the loader then
builds a batch with one fancy-indexing call per array instead of a Python loop over examples.

The loader's shuffle order for epoch ``e`` is a pure function of ``(seed, e)`` (NumPy's PCG64
seeded with ``SeedSequence([seed, e])``), and its position is a small JSON-able dict, so a run
resumed from ``state_dict()`` sees exactly the batches the interrupted run would have seen.
"""
import numpy as np

from .. import backend
from ..creation import _to_array
from ..tensor import Tensor
from .errors import DataError

__all__ = ["Dataset", "ArrayDataset", "TensorDataset", "DataLoader", "default_collate"]


class Dataset:
    """Base class (and protocol) for datasets: ``__len__`` and ``__getitem__(index)``.

    ``__getitem__`` returns a tuple of NumPy arrays or numbers (one example). Subclasses may
    add ``get_batch(indices)`` returning the tuple of stacked arrays for many indices at once.

    >>> import numpy as np
    >>> class Squares(Dataset):
    ...     def __len__(self):
    ...         return 4
    ...     def __getitem__(self, i):
    ...         return np.array([i, i * i], dtype=np.float32), i
    >>> [int(x) for x in Squares()[3][0]]
    [3, 9]
    """

    name = "dataset"

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")


def _check_index(index, n):
    i = int(index)
    if not -n <= i < n:
        raise IndexError(f"index {index} is out of range for a dataset of {n} examples")
    return i + n if i < 0 else i


class ArrayDataset(Dataset):
    """A dataset over arrays that share their first dimension (examples along axis 0).

    ``arrays`` holds the stored arrays (possibly compact, e.g. uint8). ``transforms`` is an
    optional tuple with one callable or ``None`` per array, applied to the indexed rows (to one
    example or a whole batch, so it must work on any leading shape): this keeps MNIST/CIFAR as
    uint8 in memory and converts each batch to float32 on the way out.

    >>> import numpy as np
    >>> ds = ArrayDataset(np.arange(6).reshape(3, 2), np.array([0, 1, 0]))
    >>> len(ds), ds[1][0].tolist(), int(ds[1][1])
    (3, [2, 3], 1)
    >>> [a.shape for a in ds.get_batch([2, 0])]
    [(2, 2), (2,)]
    """

    def __init__(self, *arrays, transforms=None, name="arrays"):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        arrays = tuple(a if backend._is_cupy_array(a) else np.asarray(a) for a in arrays)
        for k, a in enumerate(arrays):
            if a.ndim == 0:
                raise ValueError(f"array {k} is a scalar; every array needs an examples axis")
        n = arrays[0].shape[0]
        bad = [(k, a.shape[0]) for k, a in enumerate(arrays) if a.shape[0] != n]
        if bad:
            raise ValueError(f"arrays must share their first dimension: array 0 has {n} rows, "
                             + ", ".join(f"array {k} has {m}" for k, m in bad))
        if transforms is None:
            transforms = (None,) * len(arrays)
        transforms = tuple(transforms)
        if len(transforms) != len(arrays):
            raise ValueError(f"got {len(transforms)} transforms for {len(arrays)} arrays")
        self.arrays = arrays
        self.transforms = transforms
        self.name = name

    def __len__(self):
        return int(self.arrays[0].shape[0])

    def __getitem__(self, index):
        i = _check_index(index, len(self))
        return tuple(a[i] if t is None else t(a[i]) for a, t in zip(self.arrays, self.transforms))

    def get_batch(self, indices):
        """The examples at ``indices`` (an integer array), stacked: one tuple of arrays."""
        idx = np.asarray(indices, dtype=np.int64)
        return tuple(a[idx] if t is None else t(a[idx]) for a, t in zip(self.arrays, self.transforms))

    @property
    def shape(self):
        """The shape of one example's first array (e.g. ``(1, 8, 8)`` for digits images)."""
        return tuple(self[0][0].shape) if len(self) else tuple(self.arrays[0].shape[1:])


class TensorDataset(ArrayDataset):
    """PyTorch's ``TensorDataset``: gmcore Tensors (or arrays) sharing their first dimension.

    >>> import gmcore as gm
    >>> ds = TensorDataset(gm.zeros(5, 3), gm.arange(5))
    >>> len(ds), ds[4][0].shape, int(ds[4][1])
    (5, (3,), 4)
    """

    def __init__(self, *tensors):
        super().__init__(*[t.detach().data if isinstance(t, Tensor) else t for t in tensors],
                         name="tensors")


def default_collate(items):
    """Stack a list of examples (tuples of arrays / numbers) into a tuple of batch arrays.

    Python ints become int64, Python floats float64 (PyTorch's rule), arrays keep their dtype.

    >>> import numpy as np
    >>> x, y = default_collate([(np.zeros(2, np.float32), 1), (np.ones(2, np.float32), 0)])
    >>> x.shape, x.dtype, y.tolist(), y.dtype
    ((2, 2), dtype('float32'), [1, 0], dtype('int64'))
    """
    if not items:
        raise ValueError("default_collate got an empty list of examples")
    first = items[0]
    if not isinstance(first, (tuple, list)):
        return (_stack([first] + list(items[1:])),)
    width = len(first)
    for k, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != width:
            raise ValueError(f"example {k} has a different structure from example 0 "
                             f"(expected a tuple of {width} fields)")
    return tuple(_stack([item[j] for item in items]) for j in range(width))


def _stack(values):
    v0 = values[0]
    if isinstance(v0, Tensor):
        values = [v.detach().data for v in values]
        v0 = values[0]
    if isinstance(v0, bool):
        return np.asarray(values, dtype=np.bool_)
    if isinstance(v0, int):
        return np.asarray(values, dtype=np.int64)
    if isinstance(v0, float):
        return np.asarray(values, dtype=np.float64)
    if backend._is_cupy_array(v0):
        return backend.xp_of(v0).stack(values)
    shapes = {np.shape(v) for v in values}
    if len(shapes) > 1:
        raise ValueError(f"can't stack examples of different shapes {sorted(shapes)}; "
                         "pass a collate_fn that pads them")
    return np.stack([np.asarray(v) for v in values])


def _check_not_empty(dataset, batch_size, drop_last, n):
    """Refuse a loader that would give no batch: a training loop that restarts an exhausted
    loader (``while True: yield from loader``) would spin forever on it."""
    name = getattr(dataset, "name", None) or type(dataset).__name__
    if n == 0:
        raise DataError(f"data set {name!r} is empty (0 examples): there is nothing to load")
    if drop_last and n < batch_size:
        raise DataError(f"data set {name!r} has {n} examples, fewer than batch_size={batch_size}: "
                        "with drop_last=True every batch would be dropped")


def _resolve_seed(generator):
    """A 63-bit base seed from ``None`` (gmcore's default generator), an int, or a Generator."""
    if generator is None:
        from ..random import default_generator
        generator = default_generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        seed = int(generator)
        if seed < 0:
            raise ValueError(f"DataLoader seed must be non-negative, got {seed}")
        return seed
    if hasattr(generator, "integers"):  # gmcore.Generator: one draw, as torch draws its base seed
        return int(generator.integers(0, 2 ** 62, (), np.int64))
    raise TypeError(f"generator must be None, an int seed or a gmcore.Generator, "
                    f"got {type(generator).__name__}")


class DataLoader:
    """Batches of a dataset as tuples of gmcore Tensors on ``device``.

    Args:
        dataset: a ``Dataset`` (``__len__`` + ``__getitem__``); one with ``get_batch`` is
            batched by fancy indexing.
        batch_size: examples per batch.
        shuffle: a fresh seeded permutation every epoch.
        drop_last: drop the last, smaller batch.
        generator: ``None`` (a base seed drawn from gmcore's default generator, so
            ``gm.manual_seed`` fixes it), an ``int`` seed, or a ``gmcore.Generator``.
        device: where the batch tensors live (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        collate_fn: turns a list of examples into a tuple of arrays (default
            ``default_collate``); giving one disables the fancy-indexing fast path.
        sampler: the example indices of an epoch instead of the loader's own order (an
            iterable with ``__len__``; e.g. ``DistributedSampler``, whose ``set_epoch`` the
            loader calls at each epoch's start); excludes ``shuffle``.

    Each complete pass is an epoch; the epoch counter picks the shuffle order. ``state_dict()``
    gives ``{"epoch", "batch", "seed", ...}`` (JSON-able); ``load_state_dict`` makes the next
    ``iter`` continue from that batch. Starting a new ``iter`` while a pass is unfinished (e.g.
    after a ``break``) begins the next epoch, as in PyTorch.

    Unlike PyTorch, a loader that would yield no batch at all (an empty data set, or
    ``drop_last=True`` with fewer examples than ``batch_size``) is refused with a ``DataError``
    naming the data set: a loop that restarts the loader would otherwise spin forever.

    >>> import numpy as np
    >>> ds = ArrayDataset(np.arange(10, dtype=np.float32), np.arange(10))
    >>> loader = DataLoader(ds, batch_size=4, shuffle=True, generator=0)
    >>> [len(x) for x, y in loader]
    [4, 4, 2]
    >>> state = loader.state_dict(); state["epoch"], state["batch"]
    (1, 0)
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, generator=None,
                 device="cpu", collate_fn=None, sampler=None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True exclude each other (the sampler "
                             "gives the order; a DistributedSampler shuffles by itself)")
        if sampler is not None and not hasattr(sampler, "__len__"):
            raise TypeError(f"sampler must be an iterable of indices with __len__, got {type(sampler).__name__}")
        self.sampler = sampler
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        _check_not_empty(dataset, self.batch_size, self.drop_last, self._num_examples())
        self.device = backend.as_device(device)
        self.collate_fn = collate_fn
        self.seed = _resolve_seed(generator) if self.shuffle else 0
        self._epoch = 0
        self._batch = 0          # batches of the current epoch already handed out
        self._resume = False     # set by load_state_dict: the next iter continues mid-epoch

    # ---- order ----------------------------------------------------------------------------
    def _num_examples(self):
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def __len__(self):
        n = self._num_examples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self):
        return self._epoch

    def set_epoch(self, epoch):
        """Jump to the start of ``epoch`` (its shuffle order depends on it alone)."""
        self._epoch, self._batch, self._resume = int(epoch), 0, False

    def epoch_order(self, epoch):
        """The example indices of ``epoch`` in the order they are served (an int64 array)."""
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(int(epoch))
            return np.fromiter((int(i) for i in self.sampler), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, int(epoch)])))
        return rng.permutation(n).astype(np.int64)

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self):
        """The loader's position as a JSON-able dict."""
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.seed,
                "shuffle": self.shuffle, "batch_size": self.batch_size,
                "drop_last": self.drop_last, "num_examples": self._num_examples()}

    def load_state_dict(self, state):
        """Restore a position saved by ``state_dict`` (checked against this loader's setup)."""
        for key in ("shuffle", "batch_size", "drop_last", "num_examples"):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise ValueError(f"loader state was saved with {key}={state[key]!r} but this "
                                 f"loader has {key}={mine!r}; the batches would not match")
        batch = int(state["batch"])
        if not 0 <= batch <= len(self):
            raise ValueError(f"loader state batch={batch} is outside 0..{len(self)}")
        self.seed = int(state["seed"])
        self._epoch, self._batch, self._resume = int(state["epoch"]), batch, True

    # ---- iteration ------------------------------------------------------------------------
    def __iter__(self):
        if self._resume:
            self._resume = False
        elif self._batch > 0:    # the previous pass was left unfinished: that epoch is over
            self._epoch, self._batch = self._epoch + 1, 0
        return self._run(self._epoch, self._batch)

    def _run(self, epoch, start):
        order = self.epoch_order(epoch)
        n_batches = len(self)
        fast = self.collate_fn is None and hasattr(self.dataset, "get_batch")
        for b in range(start, n_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if fast:
                arrays = self.dataset.get_batch(idx)
            else:
                collate = self.collate_fn or default_collate
                arrays = collate([self.dataset[int(i)] for i in idx])
            batch = self._to_tensors(arrays)
            if self._epoch == epoch:     # another iter may have moved on; then stop counting
                self._batch = b + 1
                if b + 1 == n_batches:
                    self._epoch, self._batch = epoch + 1, 0
            yield batch
        if start >= n_batches and self._epoch == epoch:   # resumed exactly at an epoch's end
            self._epoch, self._batch = epoch + 1, 0

    def _to_tensors(self, obj):
        if isinstance(obj, Tensor):
            return obj if obj.device == self.device else obj.to(self.device)
        if isinstance(obj, dict):
            return {k: self._to_tensors(v) for k, v in obj.items()}
        if isinstance(obj, (tuple, list)):
            return tuple(self._to_tensors(v) for v in obj)
        if isinstance(obj, str):
            return obj
        return Tensor(_to_array(obj, None, self.device, copy=False))
