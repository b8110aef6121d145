"""Holding out part of a training set as a validation set (``gmcore train --val-split F``)."""
from __future__ import annotations

import copy

import numpy as np

from .loader import ArrayDataset
from .text import CharText


def validation_split(dataset, fraction: float, seed: int = 0):
    """``(fit, val)``: ``dataset`` with ``fraction`` of it held out, both of its own type.

    Array data sets (images, 2-D toys, audio clips) hold out ``round(fraction * N)`` examples
    drawn by ``seed`` (at least one, and at least one left to fit). Text holds out the last
    ``fraction`` of the training characters, as the test split is cut: random windows would
    share characters with their neighbours on the other side. Both halves keep every attribute
    of the original (levels, vocabulary, sample rate ...), so models use them like the original.

    >>> from gmcore.data import Toy2D
    >>> fit, val = validation_split(Toy2D("moons", n=100), 0.1, seed=0)
    >>> len(fit), len(val), type(val).__name__
    (90, 10, 'Toy2D')
    """
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    if isinstance(dataset, CharText):
        return _split_text(dataset, fraction)
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"cannot hold out a validation split of a {type(dataset).__name__}: "
                        "array data sets and text can be split")
    n = len(dataset)
    n_val = int(round(fraction * n))
    if not 1 <= n_val < n:
        raise ValueError(f"a validation fraction of {fraction} of the {n} examples of "
                         f"{getattr(dataset, 'name', 'the data set')!r} holds out {n_val}: "
                         "it must leave at least one to validate on and one to fit")
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A11D])).permutation(n)
    val_idx, fit_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return _rows(dataset, fit_idx), _rows(dataset, val_idx)


def _rows(dataset, idx):
    part = copy.copy(dataset)
    part.arrays = tuple(a[idx] for a in dataset.arrays)
    if isinstance(getattr(dataset, "paths", None), list):   # an image folder's file per example
        part.paths = [dataset.paths[i] for i in idx]
    return part


def _split_text(dataset, fraction):
    ids = dataset.ids
    cut = len(ids) - int(round(fraction * len(ids)))
    need = dataset.seq_len + 1
    if cut < need or len(ids) - cut < need:
        raise ValueError(f"a validation fraction of {fraction} of the {len(ids)} training "
                         f"characters leaves {cut} to fit and {len(ids) - cut} to validate; each "
                         f"needs at least seq_len + 1 = {need}")
    fit, val = copy.copy(dataset), copy.copy(dataset)
    fit.ids, val.ids = ids[:cut], ids[cut:]
    return fit, val
