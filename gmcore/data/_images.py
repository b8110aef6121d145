"""Image datasets stored as integer levels (uint8), scaled or binarized per batch on the way out."""
import numpy as np

from .errors import DataError
from .loader import ArrayDataset

_BINARIZE = (None, False, True, "threshold", "stochastic")


def check_split(split):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def check_labels(labels, num_classes, source):
    """Raise ``DataError`` naming ``source``, the first bad value and its index unless every label
    lies in ``0..num_classes-1`` (a label past a model's class count would index past its
    embedding table mid-training)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be integers, got {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise DataError(f"{source}: label {int(labels[i])} at index {i} is outside "
                        f"0..{num_classes - 1}{more}")


class ImageArrayDataset(ArrayDataset):
    """Images ``(N, C, H, W)`` of integer levels ``0..num_levels-1`` plus int64 labels.

    Examples come out as ``(image, label)``. ``image`` is float32 in ``[0, 1]``
    (``level / (num_levels - 1)``) by default, or the raw uint8 levels with ``scale=False``.
    ``binarize="threshold"`` (or ``True``) gives ``1.0`` where the scaled value is ``> 0.5``;
    ``binarize="stochastic"`` draws ``Bernoulli(scaled value)`` once, at construction, from
    ``numpy.random.Generator(PCG64(seed))`` (models wanting a fresh draw every epoch binarize
    their batches themselves). A binarized set has ``num_levels == 2``.

    ``num_levels`` (alias ``bins``) is the number of discrete values a pixel can take: the
    metrics code needs it for bits/dim (17 for digits, 256 for 8-bit images).
    """

    def __init__(self, levels, labels, num_levels, name, scale=True, binarize=None, seed=0,
                 classes=None):
        if binarize not in _BINARIZE:
            raise ValueError(f"binarize must be None, True, 'threshold' or 'stochastic', got {binarize!r}")
        levels = np.asarray(levels)
        if levels.ndim != 4:
            raise ValueError(f"{name}: images must be (N, C, H, W), got shape {levels.shape}")
        if levels.shape[0] == 0:
            raise DataError(f"data set {name!r} has no images; an empty data set can't be trained "
                            "or evaluated")
        classes = list(classes) if classes is not None else [str(c) for c in range(10)]
        check_labels(labels, len(classes), f"data set {name!r}")
        top = num_levels - 1
        if binarize in (True, "threshold"):
            levels = (levels.astype(np.float64) / top > 0.5).astype(np.uint8)
            num_levels = 2
        elif binarize == "stochastic":
            rng = np.random.Generator(np.random.PCG64(seed))
            levels = (rng.random(levels.shape) < levels / top).astype(np.uint8)
            num_levels = 2
        levels = np.ascontiguousarray(levels, dtype=np.uint8)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if scale:
            inv = np.float32(1.0 / (num_levels - 1))

            def to_float(x, inv=inv):
                return x.astype(np.float32) * inv
            transforms = (to_float, None)
        else:
            transforms = None
        super().__init__(levels, labels, transforms=transforms, name=name)
        self.num_levels = int(num_levels)
        self.classes = classes
        self.scale = bool(scale)

    @property
    def bins(self):
        return self.num_levels

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def shape(self):
        return tuple(int(s) for s in self.arrays[0].shape[1:])

    @property
    def images(self):
        """Every image, as served (float32 in [0, 1], or uint8 levels when ``scale=False``)."""
        t = self.transforms[0]
        return self.arrays[0] if t is None else t(self.arrays[0])

    @property
    def labels(self):
        return self.arrays[1]

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, shape={self.shape}, "
                f"num_levels={self.num_levels})")
