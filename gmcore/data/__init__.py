"""Data for training: datasets that work offline and a seeded, resumable ``DataLoader``.

>>> import gmcore.data as gd
>>> train = gd.get_dataset("digits")
>>> loader = gd.DataLoader(train, batch_size=100, shuffle=True, generator=0)
>>> x, y = next(iter(loader))
>>> x.shape, x.dtype, y.dtype
(gmcore.Size([100, 1, 8, 8]), gmcore.float32, gmcore.int64)

Data sets (see ``DATASETS``): ``digits`` (embedded), ``mnist`` / ``cifar10`` / ``image_folder``
(files you bring), 2-D toys (``moons``, ``circles``, ``swiss_roll``, ``8gaussians``,
``checkerboard``), ``text`` (characters) and ``audio`` (mu-law clips). Importing this package
imports NumPy and the standard library only; Pillow is imported when an image folder is read.
"""
from .loader import Dataset, ArrayDataset, TensorDataset, DataLoader, default_collate
from .digits import Digits, load_digits_arrays, DIGITS_TRAIN_SIZE, DIGITS_TEST_SIZE
from .idx import read_idx, write_idx, MNIST
from .cifar import CIFAR10, load_cifar_batch
from ._unpickle import safe_load, PickleDataError
from .errors import DataError
from .image_folder import ImageFolder
from .toy2d import (Toy2D, make_moons, make_circles, make_swiss_roll, make_8gaussians,
                    make_checkerboard)
from .text import CharText
from .audio import Audio, mu_law_encode, mu_law_decode, read_wav, write_wav, synthetic_signal
from .registry import DATASETS, DatasetInfo, get_dataset
from .distributed import DistributedSampler
from .split import validation_split

__all__ = ["Dataset", "ArrayDataset", "TensorDataset", "DataLoader", "default_collate",
           "Digits", "load_digits_arrays", "DIGITS_TRAIN_SIZE", "DIGITS_TEST_SIZE",
           "read_idx", "write_idx", "MNIST", "CIFAR10", "load_cifar_batch", "safe_load",
           "ImageFolder", "Toy2D", "make_moons", "make_circles", "make_swiss_roll",
           "make_8gaussians", "make_checkerboard", "CharText", "Audio", "mu_law_encode",
           "mu_law_decode", "read_wav", "write_wav", "synthetic_signal", "DATASETS",
           "DatasetInfo", "get_dataset", "DataError", "PickleDataError", "DistributedSampler",
           "validation_split"]
